"""What goes into and comes out of the Transformer for codebook streams: K embedding tables
in, K classification heads out, each with its own vocabulary size, and the slot for a
continuous (diffusion / flow) head.

Vocabulary of one codebook = its codes + the special ids of :class:`mmar.patterns.SpecialIds`
(:func:`codebook_vocab` builds it; nothing else adds special ids by hand). Codebooks may differ
in size (e.g. speech levels of 1024 codes next to an image codebook of 4096).

Both modules keep their K tables stacked in one ``weight`` [sum of vocab sizes, D], so one
gather embeds all K codebooks and one matmul scores all K heads.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .patterns import SpecialIds


def codebook_vocab(codebook_size: int, num_codebooks: int, ids: SpecialIds | None = None) -> tuple[int, ...]:
    """Vocabulary sizes of ``num_codebooks`` codebooks of ``codebook_size`` codes plus the special ids
    (default :class:`SpecialIds` of that size), e.g. ``codebook_vocab(1024, 3) == (1029, 1029, 1029)``."""
    ids = ids or SpecialIds(codebook_size)
    if ids.codebook_size != codebook_size:
        raise ValueError(f"special ids are for codebook size {ids.codebook_size}, not {codebook_size}")
    return (codebook_size + ids.count,) * num_codebooks


def codebook_size_of(vocab: int, ids: SpecialIds | None = None) -> int:
    """Codes in a codebook whose vocabulary (codes + special ids) has ``vocab`` entries: the
    inverse of :func:`codebook_vocab` (default special ids)."""
    return vocab - (ids or SpecialIds(0)).count


def _offsets(vocab: tuple[int, ...]) -> torch.Tensor:
    return torch.tensor([0, *vocab[:-1]], dtype=torch.long).cumsum(0)


class CodebookEmbedding(nn.Module):
    """K embedding tables summed per step: codes int64 [B, K, S] (code k < vocab[k]) → [B, S, D]."""

    def __init__(self, vocab: tuple[int, ...], dim: int):
        super().__init__()
        self.vocab = tuple(vocab)
        self.weight = nn.Parameter(torch.empty(sum(self.vocab), dim))
        self.register_buffer("offsets", _offsets(self.vocab), persistent=False)

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        return F.embedding(codes + self.offsets[None, :, None], self.weight).sum(1)


class CodebookHeads(nn.Module):
    """K linear heads: hidden [B, S, D] → logits [B, S, K, max(vocab)].

    A head with a smaller vocabulary than the largest is padded with -inf (probability 0), so
    sampling and softmax over the last axis need no special case.
    """

    def __init__(self, vocab: tuple[int, ...], dim: int):
        super().__init__()
        self.vocab = tuple(vocab)
        self.weight = nn.Parameter(torch.empty(sum(self.vocab), dim))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        b, s, _ = hidden.shape
        flat = F.linear(hidden, self.weight)  # [B, S, sum V]
        v = max(self.vocab)
        if all(x == v for x in self.vocab):
            return flat.view(b, s, len(self.vocab), v)
        parts = [F.pad(p, (0, v - p.shape[-1]), value=float("-inf")) for p in flat.split(self.vocab, dim=-1)]
        return torch.stack(parts, dim=2)


class ContinuousHead(nn.Module):
    """The slot for a head that models continuous tokens (next-token diffusion or flow matching,
    LatentLM/MAR style) under the Transformer: conditioned on a hidden state [B, S, D], it
    learns and samples latents [B, S, latent_dim]. Subclasses implement both methods."""

    def loss(self, hidden: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """hidden [B, S, D], target latents [B, S, latent_dim] → scalar training loss."""
        raise NotImplementedError

    def sample(self, hidden: torch.Tensor, generator: torch.Generator | None = None, **options) -> torch.Tensor:
        """hidden [B, S, D] → sampled latents [B, S, latent_dim]."""
        raise NotImplementedError
