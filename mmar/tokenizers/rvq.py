"""Residual vector quantization with EMA codebooks, k-means init and dead-code restart.

Level k quantizes what levels < k left over, so the first levels carry the coarse
content and later ones refine it; decoding with the first n levels gives a lower bitrate.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn


def nearest(x: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """x [M, D], codebook [C, D] → index int64 [M] of the nearest code (squared L2)."""
    dist = codebook.pow(2).sum(-1)[None] - 2.0 * (x @ codebook.t())
    return dist.argmin(-1)


def kmeans(x: torch.Tensor, k: int, iters: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """x [M, D] → k centroids [k, D] (Lloyd's algorithm; init from random samples)."""
    idx = torch.randint(0, x.shape[0], (k,), generator=generator)
    centroids = x[idx].clone()
    for _ in range(iters):
        assign = nearest(x, centroids)
        counts = torch.bincount(assign, minlength=k).to(x.dtype)
        sums = torch.zeros_like(centroids).index_add_(0, assign, x)
        filled = counts > 0
        centroids[filled] = sums[filled] / counts[filled, None]
    return centroids


class EMACodebook(nn.Module):
    """One codebook [C, D] updated by exponential moving averages of its assigned vectors."""

    def __init__(self, size: int, dim: int, decay: float = 0.97, dead_threshold: float = 0.05):
        super().__init__()
        self.size, self.dim, self.decay, self.dead_threshold = size, dim, decay, dead_threshold
        self.register_buffer("codebook", torch.randn(size, dim) * 0.01)
        self.register_buffer("ema_count", torch.ones(size))
        self.register_buffer("ema_sum", self.codebook.clone())
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))

    def init_from(self, x: torch.Tensor, generator: torch.Generator | None = None) -> None:
        """k-means initialisation from residual vectors x [M, D]."""
        c = kmeans(x, self.size, iters=10, generator=generator)
        self.codebook.copy_(c)
        self.ema_sum.copy_(c)
        self.ema_count.fill_(1.0)
        self.initialized.fill_(True)

    def quantize(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x [M, D] → (indices int64 [M], quantized [M, D])."""
        idx = nearest(x, self.codebook)
        return idx, self.codebook[idx]

    @torch.no_grad()
    def update(self, x: torch.Tensor, idx: torch.Tensor, generator: torch.Generator | None = None) -> None:
        """EMA update from vectors x [M, D] assigned to idx [M]; restart codes whose count fell below threshold."""
        onehot_count = torch.bincount(idx, minlength=self.size).to(x.dtype)
        sums = torch.zeros_like(self.ema_sum).index_add_(0, idx, x)
        self.ema_count.mul_(self.decay).add_(onehot_count, alpha=1 - self.decay)
        self.ema_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
        n = self.ema_count.sum()
        count = (self.ema_count + 1e-5) / (n + self.size * 1e-5) * n  # Laplace smoothing
        self.codebook.copy_(self.ema_sum / count[:, None])
        dead = self.ema_count < self.dead_threshold
        n_dead = int(dead.sum())
        if n_dead:
            pick = torch.randint(0, x.shape[0], (n_dead,), generator=generator)
            self.codebook[dead] = x[pick]
            self.ema_sum[dead] = x[pick]
            self.ema_count[dead] = 1.0


@dataclass
class RVQOutput:
    """quantized: [B, D, T] sum of the first ``levels`` code vectors (straight-through in training);
    codes: int64 [B, K, T] for all K levels computed; commit: scalar commitment loss."""

    quantized: torch.Tensor
    codes: torch.Tensor
    commit: torch.Tensor


class ResidualVQ(nn.Module):
    """K EMA codebooks applied to residuals. Latents are [B, D, T]."""

    def __init__(self, levels: int, size: int, dim: int, decay: float = 0.97, dead_threshold: float = 0.05):
        super().__init__()
        self.levels, self.size, self.dim = levels, size, dim
        self.codebooks = nn.ModuleList(EMACodebook(size, dim, decay, dead_threshold) for _ in range(levels))

    @property
    def books(self) -> list[torch.Tensor]:
        """Each level's codebook vectors [size, D], in level order."""
        return [cb.codebook for cb in self.codebooks]

    @torch.no_grad()
    def init_kmeans(self, z: torch.Tensor, generator: torch.Generator | None = None) -> None:
        """Initialise every level by k-means on the residuals of latents z [B, D, T]."""
        r = z.transpose(1, 2).reshape(-1, self.dim)
        for cb in self.codebooks:
            cb.init_from(r, generator)  # k-means where z lives (the CPU, for a CPU generator)
            book = cb.codebook.to(r.device)
            r = r - book[nearest(r, book)]

    def forward(self, z: torch.Tensor, levels: int | None = None, update: bool = False, generator: torch.Generator | None = None) -> RVQOutput:
        """z [B, D, T] → RVQOutput. All K levels are encoded (and EMA-updated when ``update``);
        ``quantized`` sums only the first ``levels`` (quantizer dropout picks it per batch)."""
        b, d, t = z.shape
        levels = self.levels if levels is None else levels
        zf = z.transpose(1, 2).reshape(-1, d)
        r, out = zf, torch.zeros_like(zf)
        codes, commit = [], z.new_zeros(())
        for k, cb in enumerate(self.codebooks):
            idx, q = cb.quantize(r.detach())
            if update:
                cb.update(r.detach(), idx, generator)
            commit = commit + (r - q.detach()).pow(2).mean()
            if k < levels:
                out = out + q
            codes.append(idx)
            r = r - q
        quantized = zf + (out - zf).detach()  # straight-through estimator
        return RVQOutput(
            quantized=quantized.reshape(b, t, d).transpose(1, 2),
            codes=torch.stack(codes, 1).reshape(b, t, -1).transpose(1, 2),
            commit=commit / self.levels,
        )

    def encode(self, z: torch.Tensor, levels: int) -> torch.Tensor:
        """z [B, D, T] → codes int64 [B, levels, T] (only the first ``levels`` are computed)."""
        b, d, t = z.shape
        r = z.transpose(1, 2).reshape(-1, d)
        codes = []
        for cb in self.codebooks[:levels]:
            idx, q = cb.quantize(r)
            codes.append(idx)
            r = r - q
        return torch.stack(codes, 1).reshape(b, t, levels).transpose(1, 2)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes int64 [B, k, T] → quantized latents [B, D, T] (sum of the k levels' vectors)."""
        out = 0
        for k in range(codes.shape[1]):
            out = out + self.codebooks[k].codebook[codes[:, k]]  # [B, T, D]
        return out.transpose(1, 2)
