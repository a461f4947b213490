"""Word timings of real recordings, offline, with pocketsphinx (its PyPI wheel bundles an
English acoustic model, language model and pronouncing dictionary: no MFA, no downloads).

:func:`align` gives each word's start and end in seconds: forced alignment of a transcript
(normalised first, :mod:`mmar.text.normalize`), or, with no transcript, recognition followed
by alignment of what was recognised. Speech editing uses the timings to find the codec frames
of the words to change.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from ..errors import MmarError, require
from .normalize import normalize

SAMPLE_RATE = 16000
FRAMES_PER_SECOND = 100  # pocketsphinx's frame rate
_NOT_WORDS = re.compile(r"^(<s>|</s>|<sil>|\[.*\]|\+\+.*\+\+)$")


@dataclass(frozen=True)
class Word:
    """A word and where it is: ``start`` and ``end`` in seconds."""

    text: str
    start: float
    end: float


def _decoder(**options):
    ps = require("pocketsphinx", "tts")
    return ps.Decoder(**{"samprate": SAMPLE_RATE, "loglevel": "ERROR", **options})


def _pcm(audio: np.ndarray) -> bytes:
    x = np.asarray(audio, dtype=np.float32)
    if x.ndim != 1 or not np.isfinite(x).all():
        raise MmarError("alignment needs finite mono audio [N]")
    return (np.clip(x, -1.0, 1.0) * 32767).astype("<i2").tobytes()


def recognise(audio: np.ndarray) -> str:
    """Mono float32 [N] at 16 kHz → the words pocketsphinx hears (lower case, may be empty)."""
    d = _decoder()
    d.start_utt()
    d.process_raw(_pcm(audio), full_utt=True)
    d.end_utt()
    words = [re.sub(r"\(\d+\)$", "", s.word) for s in d.seg()]
    return " ".join(w for w in words if not _NOT_WORDS.match(w))


def _aligned(audio: np.ndarray, transcript: str | None) -> list[tuple[str, int, int, list[tuple[str, int, int]]]]:
    """pocketsphinx's word alignment of the transcript (or of what it recognises when the
    transcript is None): [(word, start, duration, [(phone, start, duration)])] in its 10 ms frames.
    Copied out while the decoder lives (its entries point into it)."""
    text = recognise(audio) if transcript is None else normalize(transcript)
    words = re.findall(r"[a-z0-9']+", text.lower())
    if not words:
        return []
    d = _decoder(bestpath=False, loglevel="FATAL")
    unknown = [w for w in words if d.lookup_word(w) is None]
    if unknown:
        raise MmarError(f"words not in the pronouncing dictionary: {' '.join(sorted(set(unknown)))}")
    pcm = _pcm(audio)
    d.set_align_text(" ".join(words))
    try:
        for second_pass in (False, True):  # the first pass finds the words, the second their phones
            if second_pass:
                d.set_alignment()
            d.start_utt()
            d.process_raw(pcm, full_utt=True)
            d.end_utt()
        return [(e.name, e.start, e.duration, [(p.name, p.start, p.duration) for p in e]) for e in d.get_alignment()]
    except RuntimeError:  # no path through the transcript: the audio does not say it
        raise MmarError("the transcript could not be aligned with the audio") from None


def align(audio: np.ndarray, transcript: str | None = None) -> list[Word]:
    """Mono float32 [N] at 16 kHz (+ what is said) → the words with their times. Words missing
    from the pronouncing dictionary are an error that names them."""
    return [Word(re.sub(r"\(\d+\)$", "", name), start / FRAMES_PER_SECOND, (start + dur) / FRAMES_PER_SECOND)
            for name, start, dur, _ in _aligned(audio, transcript) if not _NOT_WORDS.match(name)]


@dataclass(frozen=True)
class PhoneAlignment:
    """Words, phones and which phones each word spans: ``phones`` [(ARPAbet phone, end seconds)]
    covering the audio from 0 to its end (silences as ``pau``), ``word_phones`` [(a, b)] the
    phone-index range of each of ``words``."""

    words: list[Word]
    phones: list[tuple[str, float]]
    word_phones: list[tuple[int, int]]


def align_phones(audio: np.ndarray, transcript: str | None = None, min_pause: float = 0.03) -> PhoneAlignment:
    """Like :func:`align`, down to the phones: silences between, before and after the words
    (longer than ``min_pause`` seconds) become ``pau`` phones, so the phones tile the audio."""
    from .arpabet import PAUSE, canonical

    end = len(audio) / SAMPLE_RATE
    words: list[Word] = []
    phones: list[tuple[str, float]] = []
    ranges: list[tuple[int, int]] = []
    t = 0.0
    for word, frame, _, parts in _aligned(audio, transcript):
        start = frame / FRAMES_PER_SECOND
        if start - t > min_pause:
            phones.append((PAUSE, start))
        t = start
        is_word = not _NOT_WORDS.match(word)
        first = len(phones)
        for phone, p_start, p_dur in parts:
            stop = (p_start + p_dur) / FRAMES_PER_SECOND
            name = PAUSE if phone.upper() in ("SIL", "+NSN+", "+SPN+") or not is_word else canonical(phone)
            if phones and phones[-1][0] == PAUSE and name == PAUSE:
                phones[-1] = (PAUSE, stop)
            else:
                phones.append((name, stop))
            t = stop
        if is_word:
            words.append(Word(re.sub(r"\(\d+\)$", "", word), start, t))
            ranges.append((first, len(phones)))
    if not words:
        return PhoneAlignment([], [], [])
    if end - t > min_pause:
        phones.append((PAUSE, end))
    else:
        phones[-1] = (phones[-1][0], end)
    return PhoneAlignment(words, phones, ranges)
