"""Text → phonemes with espeak-ng (offline), and the phoneme vocabulary a model stores.

:func:`phonemize` normalises the text (:mod:`mmar.text.normalize`) and asks the ``espeak-ng``
program (Debian ``espeak-ng``) for IPA with a phoneme separator, one clause per line. The
result is a flat list of symbols: phonemes (``"h"``, ``"oʊ"``), stress marks as symbols of
their own (``"ˈ"``, ``"ˌ"``), :data:`WORD` between words and :data:`PAUSE` between clauses.

:class:`PhonemeVocab` maps symbols to ids and is saved in a checkpoint's config. A symbol it
does not know is an error, or with ``unknown="map"`` its ``<unk>`` id: never silently dropped.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass

from ..errors import MmarError
from .normalize import normalize

WORD, PAUSE = " ", "|"
STRESS = ("ˈ", "ˌ")
SPECIALS = ("<pad>", "<unk>")
MAX_TEXT_CHARS = 20_000


def phonemize(text: str, voice: str = "en-us") -> list[str]:
    """Text → phoneme symbols (see the module doc). Raises :class:`MmarError` if espeak-ng is
    missing, rejects the voice, or the text is empty or longer than :data:`MAX_TEXT_CHARS`."""
    if shutil.which("espeak-ng") is None:
        raise MmarError("espeak-ng not found: apt-get install espeak-ng")
    text = normalize(text)
    if not text:
        raise MmarError("the text is empty")
    if len(text) > MAX_TEXT_CHARS:
        raise MmarError(f"the text is {len(text)} characters long (at most {MAX_TEXT_CHARS}: split it into sentences)")
    run = subprocess.run(["espeak-ng", "-q", "--ipa", "--sep=_", "-v", voice, "--stdin"], input=text,
                         capture_output=True, text=True, timeout=60)
    if run.returncode != 0 or run.stderr.strip():
        raise MmarError(f"espeak-ng failed for voice {voice!r}: {(run.stderr.strip() or 'no output').splitlines()[0]}")
    out: list[str] = []
    for line in filter(None, (ln.strip() for ln in run.stdout.splitlines())):
        if out:
            out.append(PAUSE)
        for i, word in enumerate(line.split()):
            if i:
                out.append(WORD)
            for ph in filter(None, word.split("_")):
                while ph[:1] in STRESS:
                    out.append(ph[0])
                    ph = ph[1:]
                if ph:
                    out.append(ph)
    return out


@dataclass(frozen=True)
class PhonemeVocab:
    """Symbols ↔ ids; ids 0 and 1 are ``<pad>`` and ``<unk>``."""

    symbols: tuple[str, ...]

    @classmethod
    def build(cls, sequences: list[list[str]]) -> PhonemeVocab:
        """All symbols seen in ``sequences``, sorted (deterministic), after the specials."""
        seen = sorted({s for seq in sequences for s in seq} - set(SPECIALS))
        return cls((*SPECIALS, *seen))

    @property
    def pad(self) -> int:
        return 0

    @property
    def unk(self) -> int:
        return 1

    def encode(self, symbols: list[str], unknown: str = "error") -> list[int]:
        """Symbols → ids; an unknown symbol raises (``unknown="error"``) or becomes ``<unk>`` (``"map"``)."""
        index = {s: i for i, s in enumerate(self.symbols)}
        missing = sorted({s for s in symbols if s not in index})
        if missing and unknown != "map":
            raise MmarError(f"phonemes this model never saw: {' '.join(missing)} (try another voice or language)")
        return [index.get(s, self.unk) for s in symbols]

    def decode(self, ids: list[int]) -> list[str]:
        return [self.symbols[i] for i in ids]

    def to_dict(self) -> dict:
        return {"symbols": list(self.symbols)}

    @classmethod
    def from_dict(cls, d: dict) -> PhonemeVocab:
        """Inverse of :meth:`to_dict`; checks that it came from one."""
        symbols = d.get("symbols") if isinstance(d, dict) else None
        if not (isinstance(symbols, list) and symbols[:2] == list(SPECIALS) and all(isinstance(s, str) for s in symbols)
                and len(set(symbols)) == len(symbols) and len(symbols) <= 4096):
            raise MmarError("bad phoneme vocabulary in the checkpoint config")
        return cls(tuple(symbols))
