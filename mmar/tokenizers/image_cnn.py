"""The convolutional encoder and decoder both image tokenizers share (``image_vq``, ``image_vae``),
their common hyper-parameters, checked config loading, and image helpers (PSNR, uint8, losses).

A 2× space-to-depth stem (no convolution at full resolution: CPU cost), then residual GroupNorm
blocks per resolution, each stage after the first halving it. An image of side S becomes a grid
of side ``S / factor`` with ``factor = patch · 2 ** (len(channels) − 1)``; what the grid holds (FSQ
codes or σ-VAE latents) is the tokenizer's business.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import MmarError


@dataclass
class ImageCNNConfig:
    """Hyper-parameters of the encoder and decoder (a tokenizer's config extends these)."""

    image_size: int = 64
    patch: int = 2  # space-to-depth stem
    channels: list[int] = field(default_factory=lambda: [64, 128, 128])  # per resolution: 32 → 16 → 8
    res_blocks: int = 1  # residual blocks per resolution (encoder and decoder)
    groups: int = 8  # GroupNorm groups (the gcd with each channel count is used)

    @property
    def factor(self) -> int:
        """Pixels per grid cell along each side."""
        return self.patch * 2 ** (len(self.channels) - 1)

    @property
    def grid(self) -> tuple[int, int]:
        """(rows, cols) of the grid of an ``image_size`` square image."""
        return (self.image_size // self.factor,) * 2


def _norm(c: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(groups, c), c)


class ResBlock(nn.Module):
    """GroupNorm → SiLU → conv3 → GroupNorm → SiLU → conv3, residual. [B, C, H, W] → same."""

    def __init__(self, c: int, groups: int):
        super().__init__()
        self.n1, self.c1 = _norm(c, groups), nn.Conv2d(c, c, 3, padding=1)
        self.n2, self.c2 = _norm(c, groups), nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.c2(F.silu(self.n2(self.c1(F.silu(self.n1(x))))))


class Encoder(nn.Module):
    """Images [B, 3, H, W] in [−1, 1] → unbounded latents [B, d, H / f, W / f]."""

    def __init__(self, cfg: ImageCNNConfig, d: int):
        super().__init__()
        ch, g = cfg.channels, cfg.groups
        self.patch = cfg.patch
        self.stem = nn.Conv2d(3 * cfg.patch**2, ch[0], 3, padding=1)
        layers: list[nn.Module] = []
        for i, c in enumerate(ch):
            layers += [ResBlock(c, g) for _ in range(cfg.res_blocks)]
            if i + 1 < len(ch):
                layers.append(nn.Conv2d(c, ch[i + 1], 4, stride=2, padding=1))
        self.body = nn.Sequential(*layers)
        self.norm = _norm(ch[-1], g)
        self.out = nn.Conv2d(ch[-1], d, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(F.silu(self.norm(self.body(self.stem(F.pixel_unshuffle(x, self.patch))))))


class Decoder(nn.Module):
    """Latents [B, d, rows, cols] → images [B, 3, rows · f, cols · f] (unclamped, ~[0, 1])."""

    def __init__(self, cfg: ImageCNNConfig, d: int):
        super().__init__()
        ch, g = cfg.channels[::-1], cfg.groups
        self.inp = nn.Conv2d(d, ch[0], 3, padding=1)
        layers: list[nn.Module] = []
        for i, c in enumerate(ch):
            layers += [ResBlock(c, g) for _ in range(cfg.res_blocks)]
            if i + 1 < len(ch):
                layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c, ch[i + 1], 3, padding=1)]
        self.body = nn.Sequential(*layers)
        self.norm = _norm(ch[-1], g)
        self.patch = cfg.patch
        self.out = nn.Conv2d(ch[-1], 3 * cfg.patch**2, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return F.pixel_shuffle(self.out(F.silu(self.norm(self.body(self.inp(z))))), self.patch) * 0.5 + 0.5


def check_images(images: torch.Tensor, factor: int) -> None:
    """Raise :class:`MmarError` unless images is float [B, 3, H, W] with H, W multiples of ``factor``."""
    if images.dim() != 4 or images.shape[1] != 3 or images.shape[2] % factor or images.shape[3] % factor \
            or not images.is_floating_point():
        raise MmarError(f"image tokenizer takes float images [B, 3, H, W] with H and W multiples of {factor}, "
                        f"got {images.dtype} {tuple(images.shape)}")


# -- checked configs ---------------------------------------------------------------------------
INT_BOUNDS = {"image_size": (8, 4096), "patch": (1, 16), "res_blocks": (0, 16), "groups": (1, 64)}
LIST_BOUNDS = {"channels": ((1, 8), (1, 2048))}  # (length range, value range)


def checked_fields(cls: type, config: dict, where: str, ints: dict, lists: dict, floats: dict | None = None,
                   float_lists: dict | None = None) -> dict:
    """The fields of dataclass ``cls`` found in ``config``, each checked against its bounds
    (``ints``: name → (lo, hi); ``lists``: name → ((len lo, len hi), (lo, hi)) of integers;
    ``floats``: name → (lo, hi); ``float_lists``: name → ((len lo, len hi), (lo, hi))) before it
    sizes anything; :class:`MmarError` otherwise. Unknown keys (``kind``, ``name``) are ignored."""
    known = {f.name for f in fields(cls)}
    kw = {k: v for k, v in config.items() if k in known}
    is_int = lambda v: isinstance(v, int) and not isinstance(v, bool)  # noqa: E731
    is_num = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)  # noqa: E731
    for name, value in kw.items():
        if name in ints:
            lo, hi = ints[name]
            if not is_int(value) or not lo <= value <= hi:
                raise MmarError(f"{where}: field {name}={value!r:.40} must be an integer in [{lo}, {hi}]")
        elif name in (floats or {}):
            lo, hi = floats[name]
            if not is_num(value) or not lo <= value <= hi:
                raise MmarError(f"{where}: field {name}={value!r:.40} must be a number in [{lo}, {hi}]")
        else:
            (nlo, nhi), (lo, hi), check = (*lists[name], is_int) if name in lists else (*float_lists[name], is_num)
            if not isinstance(value, list) or not nlo <= len(value) <= nhi or any(not check(v) or not lo <= v <= hi for v in value):
                raise MmarError(f"{where}: field {name}={value!r:.60} must be a list of {nlo}–{nhi} numbers in [{lo}, {hi}]")
    return kw


def check_factor(cfg: ImageCNNConfig, where: str) -> None:
    """Raise :class:`MmarError` unless ``image_size`` is a multiple of the downsampling factor."""
    if cfg.image_size % cfg.factor:
        raise MmarError(f"{where}: image_size {cfg.image_size} is not a multiple of the downsampling factor {cfg.factor}")


# -- losses and measures -----------------------------------------------------------------------
def reconstruction_loss(rec: torch.Tensor, target: torch.Tensor, l1: float = 1.0, mse: float = 1.0,
                        grad: float = 0.0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """rec, target [B, 3, H, W] → (weighted loss, its terms): L1, MSE, and the L1 of the horizontal
    and vertical finite differences (a cheap edge loss against blur)."""
    terms = {"l1": F.l1_loss(rec, target), "mse": F.mse_loss(rec, target)}
    if grad:
        dx = lambda x: x[..., :, 1:] - x[..., :, :-1]  # noqa: E731
        dy = lambda x: x[..., 1:, :] - x[..., :-1, :]  # noqa: E731
        terms["grad"] = F.l1_loss(dx(rec), dx(target)) + F.l1_loss(dy(rec), dy(target))
    loss = l1 * terms["l1"] + mse * terms["mse"] + grad * terms.get("grad", 0.0)
    return loss, terms


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """images float [B, 3, H, W] in [0, 1] → uint8 [B, H, W, 3] (clamped, rounded)."""
    return (images.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()


def from_uint8(frames: np.ndarray) -> torch.Tensor:
    """uint8 images [..., H, W, 3] → float [..., 3, H, W] in [0, 1] (the inverse of :func:`to_uint8`)."""
    return torch.from_numpy(np.ascontiguousarray(frames)).movedim(-1, -3).float().div(255)


def psnr(rec: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB of images [B, 3, H, W] in [0, 1] → [B] (rec is clamped to [0, 1])."""
    mse = (rec.clamp(0, 1) - target).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(1.0 / mse.clamp_min(1e-10))
