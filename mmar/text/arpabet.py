"""English text → ARPAbet phones, the phone set that TTS models and aligners share.

Why ARPAbet: the three sources of phone timings this package has all speak it — flite prints
its phones with end times (``-psdur``), pocketsphinx aligns phones of its CMU dictionary, and
that dictionary (shipped in the pocketsphinx wheel, 134 k words) turns words into phones at
inference. Training phones and inference phones therefore come from one set of 39 phones plus
:data:`PAUSE` (stress is dropped; flite's ``ax`` and ``axr`` become ``ah`` and ``er``).

:func:`text_phones` normalises the text (numbers, abbreviations: :mod:`mmar.text.normalize`),
looks every word up, spells words missing from the dictionary through espeak-ng's IPA
(:data:`IPA_TO_ARPABET`), and puts :data:`PAUSE` at the start, at clause punctuation and at the
end, as flite does.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

from ..errors import MmarError, require
from .normalize import normalize

PAUSE = "pau"
PHONES: tuple[str, ...] = (
    PAUSE, "aa", "ae", "ah", "ao", "aw", "ay", "b", "ch", "d", "dh", "eh", "er", "ey", "f", "g", "hh", "ih", "iy",
    "jh", "k", "l", "m", "n", "ng", "ow", "oy", "p", "r", "s", "sh", "t", "th", "uh", "uw", "v", "w", "y", "z", "zh")
ALIASES = {"ax": "ah", "axr": "er", "sil": PAUSE, "sp": PAUSE}
_WORD = re.compile(r"[a-z0-9']+|[,;:.!?]")
_BREAK = set(",;:.!?")

# espeak-ng IPA (en-us) → ARPAbet, longest symbols first when spelling an unknown word.
IPA_TO_ARPABET = {
    "aɪ": ["ay"], "aʊ": ["aw"], "eɪ": ["ey"], "oʊ": ["ow"], "ɔɪ": ["oy"], "ɑː": ["aa"], "ɑ": ["aa"], "æ": ["ae"],
    "ʌ": ["ah"], "ə": ["ah"], "ɐ": ["ah"], "ɔː": ["ao"], "ɔ": ["ao"], "ɛ": ["eh"], "ɜː": ["er"], "ɝ": ["er"],
    "ɚ": ["er"], "ᵻ": ["ih"], "ɪ": ["ih"], "iː": ["iy"], "i": ["iy"], "ʊ": ["uh"], "uː": ["uw"], "u": ["uw"],
    "b": ["b"], "tʃ": ["ch"], "d": ["d"], "ð": ["dh"], "f": ["f"], "ɡ": ["g"], "g": ["g"], "h": ["hh"],
    "dʒ": ["jh"], "k": ["k"], "l": ["l"], "m": ["m"], "n": ["n"], "ŋ": ["ng"], "p": ["p"], "ɹ": ["r"], "r": ["r"],
    "s": ["s"], "ʃ": ["sh"], "t": ["t"], "ɾ": ["t"], "θ": ["th"], "v": ["v"], "w": ["w"], "j": ["y"], "z": ["z"],
    "ʒ": ["zh"], "ʔ": ["t"], "x": ["k"], "oː": ["ow"], "eː": ["ey"], "a": ["aa"], "e": ["eh"], "o": ["ow"],
    "n̩": ["ah", "n"], "l̩": ["ah", "l"], "ɬ": ["l"], "ç": ["hh"], "ɑːɹ": ["aa", "r"], "ɔːɹ": ["ao", "r"],
    "ɛɹ": ["eh", "r"], "ɪɹ": ["ih", "r"], "ʊɹ": ["uh", "r"], "aɪɚ": ["ay", "er"], "iə": ["iy", "ah"],
}


def canonical(phone: str) -> str:
    """A phone as flite or pocketsphinx writes it (any case, stress digits) → one of :data:`PHONES`.
    :class:`MmarError` for a phone outside the set."""
    p = re.sub(r"\d+$", "", phone.strip().lower())
    p = ALIASES.get(p, p)
    if p not in PHONES:
        raise MmarError(f"unknown phone {phone!r:.20}")
    return p


def _dictionary_path() -> Path:
    ps = require("pocketsphinx", "tts")
    path = Path(ps.get_model_path()) / "en-us" / "cmudict-en-us.dict"
    if not path.is_file():
        raise MmarError(f"the pocketsphinx wheel lacks its dictionary ({path})")
    return path


@lru_cache(maxsize=1)
def dictionary() -> dict[str, tuple[str, ...]]:
    """The CMU pronouncing dictionary: word → phones (first pronunciation, stress dropped)."""
    out: dict[str, tuple[str, ...]] = {}
    for line in _dictionary_path().read_text(encoding="utf-8", errors="replace").splitlines():
        word, _, phones = line.partition(" ")
        if word and "(" not in word and word not in out:
            out[word] = tuple(canonical(p) for p in phones.split())
    return out


def spell_ipa(symbols: list[str]) -> list[str]:
    """espeak-ng IPA symbols of one word (stress marks allowed) → ARPAbet; symbols the table lacks
    are an error that names them."""
    out: list[str] = []
    longest = max(map(len, IPA_TO_ARPABET))
    for s in symbols:
        s = s.replace("ˈ", "").replace("ˌ", "")
        while s:  # greedy: the longest known symbol at the front
            n = next((n for n in range(min(longest, len(s)), 0, -1) if s[:n] in IPA_TO_ARPABET), 0)
            if n:
                out += IPA_TO_ARPABET[s[:n]]
            elif s[0] not in "ːˑ̃":  # length and nasal marks add no phone
                raise MmarError(f"no ARPAbet spelling for the sound {s!r:.12}")
            s = s[max(n, 1):]
    return out


def word_phones(word: str) -> tuple[str, ...]:
    """One lower-case word → its phones (dictionary, else espeak-ng's pronunciation)."""
    found = dictionary().get(word)
    if found is not None:
        return found
    from .phonemes import PAUSE as IPA_PAUSE, WORD, phonemize  # espeak-ng only for unknown words

    symbols = [s for s in phonemize(word) if s not in (WORD, IPA_PAUSE)]
    phones = spell_ipa(symbols)
    if not phones:
        raise MmarError(f"the word {word!r:.40} has nothing to pronounce")
    return tuple(phones)


def text_words(text: str) -> list[str]:
    """Normalised words and clause punctuation of a text, in order."""
    return _WORD.findall(normalize(text).lower())


def spoken_words(text: str) -> list[str]:
    """The normalised words of a text, without its punctuation."""
    return [w for w in text_words(text) if w[0].isalnum()]


def text_phones(text: str) -> list[str]:
    """Text → phones with :data:`PAUSE` at the start, at clause breaks and at the end.
    :class:`MmarError` when nothing in it can be pronounced."""
    phones = [PAUSE]
    for w in text_words(text):
        if w in _BREAK:
            if phones[-1] != PAUSE:
                phones.append(PAUSE)
        else:
            phones += word_phones(w.strip("'") or w)
    if phones[-1] != PAUSE:
        phones.append(PAUSE)
    if len(phones) < 3:
        raise MmarError("the text has nothing to pronounce")
    return phones
