"""A small word tokenizer for captions (image and video prompts), built from the training names.

Words are the lower-cased runs of letters and digits of the NFKC-normalised text ("Flag: United
States" → ``flag united states``; "t-shirt" → ``t shirt``). Three ids come first:

- ``<pad>`` (0) fills a caption to the fixed length ``max_len`` (captions are left-aligned, so
  every row of a batch has the same prefix length and the model sees the padding as part of the
  prefix, in training and at inference alike);
- ``<null>`` (1) is the whole caption of classifier-free guidance's unconditional rows (and of
  caption dropout in training): ``[<null>, <pad>, …]``;
- ``<unk>`` (2) stands for every word the vocabulary lacks: unknown words are never dropped.

A caption longer than ``max_len`` words is an error at inference (:meth:`CaptionVocab.encode`
with ``truncate=False``); training truncates (``truncate=True``). The vocabulary travels in the
model's checkpoint config (:meth:`CaptionVocab.to_dict` / :meth:`CaptionVocab.from_dict`).
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch

from ..errors import MmarError

PAD, NULL, UNK = "<pad>", "<null>", "<unk>"
SPECIALS = (PAD, NULL, UNK)
MAX_WORDS = 1 << 20  # a config may not list more (a damaged or hostile config stays bounded)
MAX_LEN = 256

_WORD = re.compile(r"[^\W_]+")


def words(text: str) -> list[str]:
    """The lower-case words of ``text``: runs of letters and digits after NFKC normalisation."""
    return _WORD.findall(unicodedata.normalize("NFKC", text).lower())


@dataclass
class CaptionVocab:
    """Word ↔ id table: ``itos[i]`` is the word of id i (the three specials first); captions are
    ``max_len`` ids, left-aligned and padded with ``<pad>``."""

    itos: list[str]
    max_len: int
    stoi: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self):
        if list(self.itos[:3]) != list(SPECIALS) or len(set(self.itos)) != len(self.itos):
            raise MmarError(f"a caption vocabulary starts with {', '.join(SPECIALS)} and lists each word once")
        if not 1 <= self.max_len <= MAX_LEN:
            raise MmarError(f"caption length must be 1..{MAX_LEN}, got {self.max_len}")
        self.stoi = {w: i for i, w in enumerate(self.itos)}

    pad = property(lambda self: 0, doc="id of <pad>")
    null = property(lambda self: 1, doc="id of <null> (the unconditional caption)")
    unk = property(lambda self: 2, doc="id of <unk>")

    def __len__(self) -> int:
        return len(self.itos)

    @classmethod
    def build(cls, captions: Iterable[str], max_len: int, min_count: int = 1) -> CaptionVocab:
        """The words of ``captions`` seen at least ``min_count`` times, sorted (deterministic)."""
        counts = Counter(w for c in captions for w in words(c))
        kept = sorted(w for w, n in counts.items() if n >= min_count and w not in SPECIALS)
        return cls([*SPECIALS, *kept], max_len)

    def encode(self, text: str, truncate: bool = False) -> list[int]:
        """Caption → exactly ``max_len`` ids. No words (an empty caption) → the ``<null>`` caption.
        More than ``max_len`` words: truncated with ``truncate``, else :class:`MmarError`."""
        ws = words(text)
        if not ws:
            return [self.null] + [self.pad] * (self.max_len - 1)
        if len(ws) > self.max_len:
            if not truncate:
                raise MmarError(f"caption has {len(ws)} words; this model reads at most {self.max_len}")
            ws = ws[: self.max_len]
        ids = [self.stoi.get(w, self.unk) for w in ws]
        return ids + [self.pad] * (self.max_len - len(ids))

    def batch(self, texts: Iterable[str], truncate: bool = False) -> torch.Tensor:
        """Captions → int64 [B, max_len]."""
        return torch.tensor([self.encode(t, truncate) for t in texts], dtype=torch.long).view(-1, self.max_len)

    def null_batch(self, n: int) -> torch.Tensor:
        """n unconditional captions: int64 [n, max_len]."""
        return self.batch([""] * n)

    def decode(self, ids: Iterable[int]) -> str:
        """ids → the words they hold (``<pad>`` and ``<null>`` left out, ``<unk>`` kept)."""
        return " ".join(self.itos[i] for i in ids if i not in (self.pad, self.null))

    def unknown(self, text: str) -> list[str]:
        """The words of ``text`` that map to ``<unk>``."""
        return [w for w in words(text) if w not in self.stoi]

    def to_dict(self) -> dict:
        return {"words": list(self.itos), "max_len": self.max_len}

    @classmethod
    def from_dict(cls, d: object, where: str = "config") -> CaptionVocab:
        """The inverse of :meth:`to_dict`, checked (types, sizes) → :class:`MmarError` when malformed."""
        ok = isinstance(d, dict) and isinstance(d.get("words"), list) and 3 <= len(d["words"]) <= MAX_WORDS \
            and all(isinstance(w, str) and len(w) <= 100 for w in d["words"]) \
            and isinstance(d.get("max_len"), int) and not isinstance(d.get("max_len"), bool)
        if not ok:
            raise MmarError(f"{where}: malformed caption vocabulary")
        return cls(list(d["words"]), d["max_len"])
