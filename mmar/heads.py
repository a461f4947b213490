"""What goes into and comes out of the Transformer: for codebook streams K embedding tables
in and K classification heads out, each with its own vocabulary size; for continuous tokens
(VAE latents) the :class:`ContinuousHead` slot and its one implementation, the next-token
:class:`DiffusionHead` (flow matching or v-prediction).

Vocabulary of one codebook = its codes + the special ids of :class:`mmar.patterns.SpecialIds`
(:func:`codebook_vocab` builds it; nothing else adds special ids by hand). Codebooks may differ
in size (e.g. speech levels of 1024 codes next to an image codebook of 4096).

Both modules keep their K tables stacked in one ``weight`` [sum of vocab sizes, D], so one
gather embeds all K codebooks and one matmul scores all K heads.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

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

    def loss(self, hidden: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None,
             generator: torch.Generator | None = None) -> torch.Tensor:
        """hidden [B, S, D], target latents [B, S, latent_dim] (mask bool [B, S]) → scalar training loss."""
        raise NotImplementedError

    def sample(self, hidden: torch.Tensor, generator: torch.Generator | None = None, **options) -> torch.Tensor:
        """hidden [B, S, D] → sampled latents [B, S, latent_dim]."""
        raise NotImplementedError


@dataclass(frozen=True)
class DiffusionConfig:
    """Hyper-parameters of :class:`DiffusionHead`.

    objective: "flow" (rectified flow: x_t = (1 − t)·x + t·ε, the net predicts ε − x) or "v"
    (cosine schedule: x_t = cos(πt/2)·x + sin(πt/2)·ε, the net predicts v = cos·ε − sin·x).
    Both are sampled by integrating the same deterministic ODE from t = 1 to 0 in ``steps`` equal
    steps (Euler for flow, DDIM for v)."""

    latent_dim: int = 4  # C
    width: int = 256  # W of the MLP blocks
    depth: int = 3  # AdaLN residual MLP blocks
    objective: str = "flow"
    repeats: int = 4  # noise draws per token per training step (the head is cheap next to the trunk)

    def __post_init__(self):
        if self.objective not in ("flow", "v"):
            raise ValueError(f"diffusion objective must be 'flow' or 'v', got {self.objective!r}")


def time_grid(steps: int) -> list[float]:
    """The sampling times of ``steps`` ODE steps: ``steps + 1`` floats from 1 (noise) to 0."""
    return torch.linspace(1.0, 0.0, steps + 1).tolist()


def guide(pred: torch.Tensor, cfg_scale: float) -> torch.Tensor:
    """Classifier-free guidance: predictions [2B, ...] of [cond; uncond] rows → uncond + scale ·
    (cond − uncond) [B, ...]."""
    cond, uncond = pred.chunk(2)
    return uncond + cfg_scale * (cond - uncond)


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """t float [N] in [0, 1] → sinusoidal features [N, dim] (frequencies 1 … 10⁴ over 1000·t)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    angles = 1000.0 * t.float()[:, None] * freqs[None]
    return torch.cat([angles.cos(), angles.sin()], dim=-1)


class _AdaLNBlock(nn.Module):
    """x + gate(y) · MLP(LN(x) · (1 + scale(y)) + shift(y)): [N, W] with condition y [N, W] → [N, W]."""

    def __init__(self, width: int):
        super().__init__()
        self.norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        self.ada = nn.Linear(width, 3 * width)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        shift, scale, gate = self.ada(F.silu(y)).chunk(3, dim=-1)
        return x + gate * self.mlp(self.norm(x) * (1 + scale) + shift)


class DiffusionHead(ContinuousHead):
    """Next-token diffusion (LatentLM/MAR): a small AdaLN MLP that, given the Transformer's hidden
    state h [D] at a position, denoises the continuous token that position predicts.

    y = time_embedding(t) + Linear(h); x enters through Linear(C → W), passes ``depth`` AdaLN
    blocks, leaves through a modulated LayerNorm and Linear(W → C). The AdaLN and output layers
    start at zero (DiT), so an untrained head predicts 0.
    """

    def __init__(self, cfg: DiffusionConfig, cond_dim: int):
        super().__init__()
        self.cfg = cfg
        w = cfg.width
        self.inp = nn.Linear(cfg.latent_dim, w)
        self.time = nn.Sequential(nn.Linear(256, w), nn.SiLU(), nn.Linear(w, w))
        self.cond = nn.Linear(cond_dim, w)
        self.blocks = nn.ModuleList(_AdaLNBlock(w) for _ in range(cfg.depth))
        self.final_norm = nn.LayerNorm(w, elementwise_affine=False, eps=1e-6)
        self.final_ada = nn.Linear(w, 2 * w)
        self.out = nn.Linear(w, cfg.latent_dim)
        for m in [*(b.ada for b in self.blocks), self.final_ada, self.out]:
            nn.init.zeros_(m.weight)
            nn.init.zeros_(m.bias)

    def predict(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """Noisy tokens x [N, C], times t [N] in [0, 1], hidden states cond [N, D] → the objective's
        prediction [N, C] (ε − x for flow, v for v)."""
        y = self.time(timestep_embedding(t, 256).to(x.dtype)) + self.cond(cond)
        h = self.inp(x)
        for block in self.blocks:
            h = block(h, y)
        shift, scale = self.final_ada(F.silu(y)).chunk(2, dim=-1)
        return self.out(self.final_norm(h) * (1 + scale) + shift)

    def _mix(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(signal weight a, noise weight s) at times t [N] → two [N, 1] tensors: x_t = a·x + s·ε."""
        t = t[:, None]
        if self.cfg.objective == "flow":
            return 1 - t, t
        return torch.cos(t * math.pi / 2), torch.sin(t * math.pi / 2)

    def loss(self, hidden: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None,
             generator: torch.Generator | None = None) -> torch.Tensor:
        """hidden [B, S, D], target latents [B, S, C] (mask bool [B, S]: which positions count) →
        mean squared error of the prediction, each token drawn ``repeats`` times with its own t, ε."""
        cond, x = hidden.flatten(0, 1), target.flatten(0, 1).to(hidden.dtype)
        if mask is not None:
            keep = mask.flatten().to(hidden.device)
            cond, x = cond[keep], x[keep]
        r = self.cfg.repeats
        cond, x = cond.repeat(r, 1), x.repeat(r, 1)
        t = torch.rand(x.shape[0], generator=generator).to(x)
        eps = torch.randn(x.shape, generator=generator).to(x)
        a, s = self._mix(t)
        xt = a * x + s * eps
        want = eps - x if self.cfg.objective == "flow" else a * eps - s * x
        return F.mse_loss(self.predict(xt, t, cond).float(), want.float())

    @torch.no_grad()
    def sample(self, hidden: torch.Tensor, generator: torch.Generator | None = None, steps: int = 16,
               temperature: float = 1.0, cfg_scale: float = 1.0) -> torch.Tensor:
        """hidden [B, S, D] → latents [B, S, C], integrating from noise ε · ``temperature`` at t = 1
        to t = 0 in ``steps`` steps. With ``cfg_scale`` ≠ 1 the rows are [cond; uncond] halves
        ([2B', S, D]); the prediction is uncond + scale · (cond − uncond), and both halves receive
        the same sample (the convention of :mod:`mmar.generation`)."""
        b, s, _ = hidden.shape
        guided = cfg_scale != 1.0
        cond = hidden[: b // 2] if guided else hidden
        n = cond.shape[0] * s
        x = torch.randn(n, self.cfg.latent_dim, generator=generator).to(hidden) * temperature
        h = hidden.flatten(0, 1)
        grid = time_grid(steps)
        for i in range(steps):
            t = torch.full((n,), grid[i], device=x.device, dtype=x.dtype)
            if guided:
                pred = guide(self.predict(torch.cat([x, x]), torch.cat([t, t]), h), cfg_scale)
            else:
                pred = self.predict(x, t, h)
            x = self.step(x, pred, grid[i], grid[i + 1])
        x = x.view(-1, s, self.cfg.latent_dim)
        return torch.cat([x, x]) if guided else x

    def step(self, x: torch.Tensor, pred: torch.Tensor, t: float, t_next: float) -> torch.Tensor:
        """One ODE step of x [..., C] from time t to t_next < t, given the head's prediction ``pred``
        [..., C] at (x, t) (its objective's: ε − x for flow, v for v)."""
        if self.cfg.objective == "flow":
            return x + (t_next - t) * pred  # dx/dt = ε − x
        a, s = math.cos(t * math.pi / 2), math.sin(t * math.pi / 2)
        x0, eps = a * x - s * pred, s * x + a * pred  # DDIM through the v parametrisation
        return math.cos(t_next * math.pi / 2) * x0 + math.sin(t_next * math.pi / 2) * eps
