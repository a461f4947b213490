"""Text front end: normalisation says numbers and money in words; espeak-ng phonemes with word
and pause marks; a vocabulary that never drops a symbol silently."""

import shutil

import pytest

from mmar.errors import MmarError
from mmar.text.normalize import number_words, normalize, ordinal_words, split_sentences
from mmar.text.phonemes import PAUSE, WORD, PhonemeVocab, phonemize


@pytest.mark.parametrize("n, words", [(0, "zero"), (13, "thirteen"), (40, "forty"), (105, "one hundred five"),
                                      (1200, "one thousand two hundred"), (2_000_017, "two million seventeen")])
def test_number_words(n, words):
    assert number_words(n) == words


def test_ordinals_money_percent_titles():
    assert [ordinal_words(n) for n in (1, 2, 3, 12, 20, 21, 100)] == [
        "first", "second", "third", "twelfth", "twentieth", "twenty first", "one hundredth"]
    assert normalize("Mr. Smith paid $3.50 on the 21st, 12% of 1,200 & more.") == (
        "mister Smith paid three dollars fifty cents on the twenty first, twelve percent of one thousand two hundred and more.")
    assert normalize("I said no.") == "I said no."  # not an abbreviation at a sentence end
    assert normalize("pi is 3.14, £1 and €2.01") == "pi is three point one four, one pound and two euros one cent"
    assert normalize("9" * 30) == " ".join(["nine"] * 30)  # too long for words: digit by digit, never an overflow


def test_split_sentences_bounds_length_and_keeps_every_word():
    text = "One. Two! " + "word, " * 30 + "end. " + "a" * 120
    pieces = split_sentences(text, 50)
    assert all(len(p) <= 50 for p in pieces)
    assert " ".join(pieces).replace(" ", "") == text.replace(" ", "")


needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng")


@needs_espeak
def test_phonemize_marks_words_pauses_and_stress():
    p = phonemize("Hello world. Okay?")
    assert p[:5] == ["h", "ə", "l", "ˈ", "oʊ"] and WORD in p and PAUSE in p
    assert phonemize("It costs $3.50")[-1] == "s"  # "... fifty cents", said in words


@needs_espeak
def test_phonemize_errors_are_one_line():
    for bad, kw in (("   ", {}), ("hi", {"voice": "zz-nope"}), ("a " * 20_000, {})):
        with pytest.raises(MmarError) as e:
            phonemize(bad, **kw)
        assert "\n" not in str(e.value)


def test_vocab_round_trip_and_unknown_symbols():
    v = PhonemeVocab.build([["h", "ə", WORD], ["ə", "l"]])
    assert v.decode(v.encode(["h", "ə", "l"])) == ["h", "ə", "l"]
    assert PhonemeVocab.from_dict(v.to_dict()) == v
    with pytest.raises(MmarError, match="never saw: zz"):
        v.encode(["h", "zz"])
    assert v.encode(["zz"], unknown="map") == [v.unk]
    for bad in ({"symbols": ["a", "b"]}, {"symbols": ["<pad>", "<unk>", "a", "a"]}, {"x": 1}, []):
        with pytest.raises(MmarError):
            PhonemeVocab.from_dict(bad)
