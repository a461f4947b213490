"""One interface for every modality tokenizer.

A tokenizer turns a signal into discrete codes ``[B, K, T]`` (K codebooks, T frames) and
back. Results are dataclasses, never tuples whose length depends on flags.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch


@dataclass
class Encoded:
    """Output of :meth:`Tokenizer.encode`.

    codes: int64 [B, K, T] — K levels (codebooks) per frame, values in [0, codebook_size).
    """

    codes: torch.Tensor


@runtime_checkable
class Tokenizer(Protocol):
    """What every tokenizer (speech codec, image VQ, EnCodec backend) provides."""

    sample_rate: int  # signal samples per second (audio) — 0 for images
    frame_rate: int  # token frames per second of signal
    num_codebooks: int  # K: the most levels the tokenizer can emit
    codebook_size: int  # entries per codebook

    def encode(self, signal: torch.Tensor, levels: int | None = None) -> Encoded:
        """signal float [B, N] → codes int64 [B, levels, N // hop]."""
        ...

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes int64 [B, k, T] (any k ≤ num_codebooks) → signal float [B, T * hop]."""
        ...
