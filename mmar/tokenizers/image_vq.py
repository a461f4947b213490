"""A small image tokenizer: CNN encoder → FSQ → CNN decoder; 64×64 RGB ↔ an 8×8 grid of codes.

One codebook (K = 1) of ∏ ``levels`` entries (FSQ ``[8, 5, 5, 5]`` = 1000 by default): no
codebook parameters, no collapse (shared/research/image-cpu-experiment.md: this design matched a
16×16 thumbnail's PSNR on unseen emoji after 7 CPU minutes). Each of the ``len(channels) − 1``
stages halves the resolution, so the grid is ``image_size / 2 ** (len(channels) − 1)`` a side.

Images are float [B, 3, H, W] in [0, 1] (H, W multiples of the downsampling factor); codes are
int64 [B, 1, rows, cols]. Trained by ``recipes/train_image_vq.py`` (L1 + MSE + an image-gradient
L1, :func:`reconstruction_loss`); the checkpoint is ``image-vq-64`` (``kind: "image_vq"``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..checkpoint import check_weights_fit, find_checkpoint, load_pretrained
from ..errors import MmarError
from .base import Encoded, LoadedTokenizer, Tokenizer, register_tokenizer
from .fsq import FSQ


@dataclass
class ImageVQConfig:
    """Hyper-parameters of :class:`ImageVQ` (the checkpoint's config.json holds these)."""

    image_size: int = 64
    patch: int = 2  # space-to-depth stem: no convolution runs at full resolution (CPU cost)
    channels: list[int] = field(default_factory=lambda: [64, 128, 128])  # per resolution: 32 → 16 → 8
    res_blocks: int = 1  # residual blocks per resolution (encoder and decoder)
    levels: list[int] = field(default_factory=lambda: [8, 5, 5, 5])  # FSQ levels: 1000 codes
    groups: int = 8  # GroupNorm groups (must divide every channel count)

    @property
    def factor(self) -> int:
        """Pixels per code along each side."""
        return self.patch * 2 ** (len(self.channels) - 1)

    @property
    def grid(self) -> tuple[int, int]:
        """(rows, cols) of codes for an ``image_size`` square image."""
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
    """Images [B, 3, H, W] in [−1, 1] → unbounded latents [B, d, H / f, W / f] (d = len(levels))."""

    def __init__(self, cfg: ImageVQConfig):
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
        self.out = nn.Conv2d(ch[-1], len(cfg.levels), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(F.silu(self.norm(self.body(self.stem(F.pixel_unshuffle(x, self.patch))))))


class Decoder(nn.Module):
    """Quantized latents [B, d, rows, cols] → images [B, 3, rows · f, cols · f] (unclamped, ~[0, 1])."""

    def __init__(self, cfg: ImageVQConfig):
        super().__init__()
        ch, g = cfg.channels[::-1], cfg.groups
        self.inp = nn.Conv2d(len(cfg.levels), ch[0], 3, padding=1)
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


class ImageVQ(nn.Module, Tokenizer):
    """The mmar image tokenizer: images float [B, 3, H, W] in [0, 1] ↔ codes int64 [B, 1, H / f, W / f]."""

    def __init__(self, cfg: ImageVQConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or ImageVQConfig()
        self.encoder = Encoder(cfg)
        self.quantizer = FSQ(cfg.levels)
        self.decoder = Decoder(cfg)

    num_codebooks = property(lambda self: 1, doc="K: one codebook.")
    codebook_size = property(lambda self: self.quantizer.codebook_size, doc="V: ∏ FSQ levels.")
    latent_dim = property(lambda self: self.quantizer.dim, doc="D: FSQ dimensions per code.")

    def config_dict(self) -> dict:
        return asdict(self.cfg)

    def _check(self, images: torch.Tensor) -> None:
        f = self.cfg.factor
        if images.dim() != 4 or images.shape[1] != 3 or images.shape[2] % f or images.shape[3] % f \
                or not images.is_floating_point():
            raise MmarError(f"image tokenizer takes float images [B, 3, H, W] with H and W multiples of {f}, "
                            f"got {images.dtype} {tuple(images.shape)}")

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Training pass: images [B, 3, H, W] in [0, 1] → (reconstruction [B, 3, H, W] unclamped,
        quantized latents [B, d, rows, cols] with a straight-through gradient)."""
        q = self.quantizer(self.encoder(images * 2 - 1))
        return self.decoder(q), q

    @torch.no_grad()
    def encode(self, images: torch.Tensor, levels: int | None = None) -> Encoded:
        """images float [B, 3, H, W] in [0, 1] → Encoded(codes int64 [B, 1, H / f, W / f])."""
        if levels not in (None, 1):
            raise MmarError(f"the image tokenizer has one codebook; asked for {levels} levels")
        self._check(images)
        z = self.encoder(images.clamp(0, 1) * 2 - 1)
        return Encoded(self.quantizer.encode(z).unsqueeze(1))

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes int64 [B, 1, rows, cols] → images float [B, 3, rows · f, cols · f] in [0, 1]."""
        return self.decode_latents(self.latents_from_codes(codes))

    def codebooks(self) -> list[torch.Tensor]:
        """The implicit FSQ codebook: [[V, d]]."""
        return [self.quantizer.codebook()]

    def latents_from_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """codes int64 [B, 1, rows, cols] in [0, V) → quantized latents float [B, d, rows, cols] in [−1, 1]."""
        if codes.dim() != 4 or codes.shape[1] != 1 or codes.dtype != torch.long:
            raise MmarError(f"image codes must be int64 [B, 1, rows, cols], got {codes.dtype} {tuple(codes.shape)}")
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= self.codebook_size):
            raise MmarError(f"image codes must lie in [0, {self.codebook_size})")
        return self.quantizer.indices_to_codes(codes[:, 0])

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Quantized latents float [B, d, rows, cols] (codes, or estimates of them) → images [B, 3, H, W] in [0, 1]."""
        return self.decoder(latents).clamp(0, 1)


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


def code_usage(counts: torch.Tensor) -> tuple[float, float]:
    """Occurrences of each code [V] → (share of codes used, perplexity of their distribution)."""
    p = counts.double() / counts.sum().clamp_min(1)
    nz = p[p > 0]
    return float((counts > 0).double().mean()), float(torch.exp(-(nz * nz.log()).sum()))


def psnr(rec: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB of images [B, 3, H, W] in [0, 1] → [B] (rec is clamped to [0, 1])."""
    mse = (rec.clamp(0, 1) - target).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(1.0 / mse.clamp_min(1e-10))


# -- checkpoint --------------------------------------------------------------------------------
_INT_BOUNDS = {"image_size": (8, 4096), "patch": (1, 16), "res_blocks": (0, 16), "groups": (1, 64)}
_LIST_BOUNDS = {"channels": ((1, 8), (1, 2048)), "levels": ((1, 16), (2, 64))}  # (length range, value range)
MAX_CODEBOOK = 1 << 20


def config_from_dict(config: dict, where: str = "config") -> ImageVQConfig:
    """A config dict → an :class:`ImageVQConfig` whose every field has its type and lies in range
    (:class:`MmarError` otherwise), so a damaged or hostile config cannot make a builder allocate
    without bound. Unknown keys (``kind``, ``name``) are ignored."""
    known = {f.name for f in fields(ImageVQConfig)}
    kw = {k: v for k, v in config.items() if k in known}
    for name, value in kw.items():
        if name in _INT_BOUNDS:
            lo, hi = _INT_BOUNDS[name]
            if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
                raise MmarError(f"{where}: field {name}={value!r:.40} must be an integer in [{lo}, {hi}]")
        else:
            (nlo, nhi), (lo, hi) = _LIST_BOUNDS[name]
            if not isinstance(value, list) or not nlo <= len(value) <= nhi or any(
                    isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi for v in value):
                raise MmarError(f"{where}: field {name}={value!r:.60} must be a list of {nlo}–{nhi} integers in [{lo}, {hi}]")
    cfg = ImageVQConfig(**kw)
    if math.prod(cfg.levels) > MAX_CODEBOOK:
        raise MmarError(f"{where}: FSQ levels {cfg.levels} give more than {MAX_CODEBOOK} codes")
    if cfg.image_size % cfg.factor:
        raise MmarError(f"{where}: image_size {cfg.image_size} is not a multiple of the downsampling factor {cfg.factor}")
    return cfg


def _config(path: Path, config: dict, state: dict[str, torch.Tensor]) -> ImageVQConfig:
    """Bounded config whose model has exactly the weights' shapes (checked on the meta device)."""
    cfg = config_from_dict(config, str(path))
    check_weights_fit(path, lambda: ImageVQ(cfg), state, "an image tokenizer")
    return cfg


def export_config(model: ImageVQ, name: str = "image-vq-64") -> dict:
    """The config.json of an exported checkpoint."""
    return {"kind": "image_vq", "name": name, **model.config_dict()}


@register_tokenizer("image_vq", aliases=("image-vq-64",))
def build_image_vq(path: Path | None) -> LoadedTokenizer:
    """An image-tokenizer checkpoint directory (default: the shipped ``image-vq-64``) → the tokenizer."""
    path = find_checkpoint("image-vq-64", path)
    state, config, digest = load_pretrained(path, kind="image_vq")
    model = ImageVQ(_config(path, config, state))
    model.load_state_dict(state)
    name = config.get("name", path.name)
    return LoadedTokenizer(model.eval(), name if isinstance(name, str) else path.name, digest)
