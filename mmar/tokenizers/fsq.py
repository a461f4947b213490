"""Finite scalar quantization (FSQ, Mentzer et al. 2023): bound each of d latent dimensions,
round it to one of ``levels[i]`` values. The implicit codebook is the grid of all ∏ levels
combinations; no codebook parameters, no auxiliary losses, no collapse by construction.

Per dimension with L levels (half width h = L // 2):

- bound: ``tanh(z + shift) · (L − 1)(1 + eps) / 2 − offset`` (offset 0.5 for even L, 0 for odd),
  so rounding gives the integers ``−h … L − 1 − h``;
- quantize: round with a straight-through gradient, then divide by h → codes in [−1, 1];
- index: mixed radix over the dims, ``Σ (q_i + h_i) · basis_i`` with ``basis = cumprod([1] + levels[:-1])``.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn


class FSQ(nn.Module):
    """levels: one level count per latent dimension (each ≥ 2), e.g. ``[8, 5, 5, 5]`` = 1000 codes."""

    def __init__(self, levels: list[int] | tuple[int, ...], eps: float = 1e-3):
        super().__init__()
        if not levels or any(int(n) < 2 for n in levels):
            raise ValueError(f"FSQ levels must be a non-empty list of integers ≥ 2, got {levels!r}")
        self.levels = [int(n) for n in levels]
        self.eps = eps
        lv = torch.tensor(self.levels, dtype=torch.long)
        self.register_buffer("_levels", lv, persistent=False)
        self.register_buffer("_basis", torch.cumprod(torch.tensor([1] + self.levels[:-1]), 0), persistent=False)
        self.register_buffer("_half", (lv // 2).float(), persistent=False)

    @property
    def dim(self) -> int:
        """d: latent dimensions quantized together."""
        return len(self.levels)

    @property
    def codebook_size(self) -> int:
        """V = ∏ levels."""
        return math.prod(self.levels)

    @staticmethod
    def _shape(v: torch.Tensor, ndim: int) -> torch.Tensor:
        """Per-dimension constants v [d] laid along dim 1 of an ``ndim``-dimensional [B, d, *grid]."""
        return v.view(1, -1, *([1] * (ndim - 2)))

    def bound(self, z: torch.Tensor) -> torch.Tensor:
        """z float [B, d, *grid] → values in (−h − offset, h − offset + ...), ready for rounding."""
        lv = self._shape(self._levels.to(z.dtype), z.dim())
        half_l = (lv - 1) * (1 + self.eps) / 2
        offset = (1 - lv % 2) * 0.5
        shift = torch.atanh(offset / half_l)
        return torch.tanh(z + shift) * half_l - offset

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """z float [B, d, *grid] → quantized codes float [B, d, *grid] in [−1, 1] (straight-through gradient)."""
        b = self.bound(z)
        q = b + (torch.round(b) - b).detach()
        return q / self._shape(self._half.to(z.dtype), z.dim())

    def codes_to_indices(self, codes: torch.Tensor) -> torch.Tensor:
        """Quantized codes float [B, d, *grid] (as :meth:`forward` returns) → indices int64 [B, *grid] in [0, V)."""
        n = codes.dim()
        q = torch.round(codes * self._shape(self._half.to(codes.dtype), n)).long() + self._shape(self._half.long(), n)
        return (q * self._shape(self._basis, n)).sum(dim=1)

    def indices_to_codes(self, indices: torch.Tensor) -> torch.Tensor:
        """indices int64 [B, *grid] in [0, V) → codes float32 [B, d, *grid] in [−1, 1]."""
        idx = indices.long().unsqueeze(1)
        n = idx.dim()
        q = (idx // self._shape(self._basis, n)) % self._shape(self._levels, n) - self._shape(self._half.long(), n)
        return q.float() / self._shape(self._half, n)

    def encode(self, z: torch.Tensor) -> torch.Tensor:
        """Unbounded latents float [B, d, *grid] → indices int64 [B, *grid]."""
        return self.codes_to_indices(self.forward(z))

    def codebook(self) -> torch.Tensor:
        """The implicit codebook: float32 [V, d], row i = the code of index i."""
        return self.indices_to_codes(torch.arange(self.codebook_size, device=self._levels.device))
