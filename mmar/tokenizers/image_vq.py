"""A small image tokenizer: CNN encoder → FSQ → CNN decoder; 64×64 RGB ↔ an 8×8 grid of codes.

One codebook (K = 1) of ∏ ``levels`` entries (FSQ ``[8, 5, 5, 5]`` = 1000 by default): no
codebook parameters, no collapse (shared/research/image-cpu-experiment.md: this design matched a
16×16 thumbnail's PSNR on unseen emoji after 7 CPU minutes). Each of the ``len(channels) − 1``
stages halves the resolution, so the grid is ``image_size / 2 ** (len(channels) − 1)`` a side.

Images are float [B, 3, H, W] in [0, 1] (H, W multiples of the downsampling factor); codes are
int64 [B, 1, rows, cols]. Trained by ``recipes/train_image_tokenizer.py`` (L1 + MSE + an image-gradient
L1, :func:`~mmar.tokenizers.image_cnn.reconstruction_loss`); the checkpoint is ``image-vq-64`` (``kind: "image_vq"``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn as nn

from ..checkpoint import check_weights_fit, find_checkpoint, load_pretrained
from ..errors import MmarError
from .base import Encoded, LoadedTokenizer, Tokenizer, register_tokenizer
from .fsq import FSQ
from .image_cnn import INT_BOUNDS, LIST_BOUNDS, Decoder, Encoder, ImageCNNConfig, check_factor, check_images, checked_fields


@dataclass
class ImageVQConfig(ImageCNNConfig):
    """Hyper-parameters of :class:`ImageVQ` (the checkpoint's config.json holds these): the shared
    CNN's (:class:`~mmar.tokenizers.image_cnn.ImageCNNConfig`) and the FSQ levels."""

    levels: list[int] = field(default_factory=lambda: [8, 5, 5, 5])  # FSQ levels: 1000 codes


class ImageVQ(nn.Module, Tokenizer):
    """The mmar image tokenizer: images float [B, 3, H, W] in [0, 1] ↔ codes int64 [B, 1, H / f, W / f]."""

    def __init__(self, cfg: ImageVQConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or ImageVQConfig()
        self.encoder = Encoder(cfg, len(cfg.levels))
        self.quantizer = FSQ(cfg.levels)
        self.decoder = Decoder(cfg, len(cfg.levels))

    num_codebooks = property(lambda self: 1, doc="K: one codebook.")
    codebook_size = property(lambda self: self.quantizer.codebook_size, doc="V: ∏ FSQ levels.")
    latent_dim = property(lambda self: self.quantizer.dim, doc="D: FSQ dimensions per code.")

    def config_dict(self) -> dict:
        return asdict(self.cfg)

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
        check_images(images, self.cfg.factor)
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


def code_usage(counts: torch.Tensor) -> tuple[float, float]:
    """Occurrences of each code [V] → (share of codes used, perplexity of their distribution)."""
    p = counts.double() / counts.sum().clamp_min(1)
    nz = p[p > 0]
    return float((counts > 0).double().mean()), float(torch.exp(-(nz * nz.log()).sum()))


# -- checkpoint --------------------------------------------------------------------------------
MAX_CODEBOOK = 1 << 20


def config_from_dict(config: dict, where: str = "config") -> ImageVQConfig:
    """A config dict → an :class:`ImageVQConfig` whose every field has its type and lies in range
    (:class:`MmarError` otherwise), so a damaged or hostile config cannot make a builder allocate
    without bound. Unknown keys (``kind``, ``name``) are ignored."""
    cfg = ImageVQConfig(**checked_fields(ImageVQConfig, config, where, INT_BOUNDS,
                                         {**LIST_BOUNDS, "levels": ((1, 16), (2, 64))}))
    if math.prod(cfg.levels) > MAX_CODEBOOK:
        raise MmarError(f"{where}: FSQ levels {cfg.levels} give more than {MAX_CODEBOOK} codes")
    check_factor(cfg, where)
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
