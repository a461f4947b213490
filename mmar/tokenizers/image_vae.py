"""The continuous image tokenizer: a σ-VAE (LatentLM) on the shared CNN; 64×64 RGB ↔ an 8×8 grid
of ``latent_dim``-dimensional latents.

σ-VAE: the encoder outputs a mean only. In training the decoder sees ``mean + σ · ε`` with one
σ ~ N(0, (noise_std / 0.8)²) drawn per image, and an L2 pull of the mean toward 0 replaces the KL
term, so the decoder learns to tolerate latent noise of any scale up to about ``noise_std``: the
errors of an autoregressive sampler of latents stay in the distribution the decoder knows.

Latents leave :meth:`ImageVAE.encode` normalised per channel (``(mean − latent_mean) /
latent_std``, statistics of the training images stored in the checkpoint), so a model of them sees
roughly unit-variance values; :meth:`ImageVAE.decode_latents` undoes it. Trained by
``recipes/train_image_tokenizer.py`` with a config of ``"kind": "image_vae"``; the checkpoint is
``image-vae-64`` (``kind: "image_vae"``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn as nn

from ..checkpoint import check_weights_fit, find_checkpoint, load_pretrained
from ..errors import MmarError
from .base import Encoded, LoadedTokenizer, Tokenizer, register_tokenizer
from .image_cnn import INT_BOUNDS, LIST_BOUNDS, Decoder, Encoder, ImageCNNConfig, check_factor, check_images, checked_fields

NAME = "image-vae-64"


@dataclass
class ImageVAEConfig(ImageCNNConfig):
    """Hyper-parameters of :class:`ImageVAE`: the shared CNN's, the latent size, the training noise
    scale, and the per-channel statistics that normalise latents (empty: identity)."""

    latent_dim: int = 4
    noise_std: float = 0.75  # σ-VAE: per-image noise scale σ ~ N(0, (noise_std / 0.8)²) in training
    latent_mean: list[float] = field(default_factory=list)
    latent_std: list[float] = field(default_factory=list)


class ImageVAE(nn.Module, Tokenizer):
    """Images float [B, 3, H, W] in [0, 1] ↔ normalised latents float [B, latent_dim, H / f, W / f]."""

    def __init__(self, cfg: ImageVAEConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or ImageVAEConfig()
        self.encoder = Encoder(cfg, cfg.latent_dim)
        self.decoder = Decoder(cfg, cfg.latent_dim)
        d = cfg.latent_dim
        mean = torch.tensor(cfg.latent_mean or [0.0] * d).view(1, d, 1, 1)
        std = torch.tensor(cfg.latent_std or [1.0] * d).view(1, d, 1, 1)
        self.register_buffer("_mean", mean, persistent=False)
        self.register_buffer("_std", std, persistent=False)

    num_codebooks = property(lambda self: 0, doc="K: none (continuous latents only).")
    codebook_size = property(lambda self: 0, doc="V: none (continuous latents only).")
    latent_dim = property(lambda self: self.cfg.latent_dim, doc="D: latent channels per grid cell.")

    def config_dict(self) -> dict:
        return asdict(self.cfg)

    def set_statistics(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Normalise latents with per-channel ``mean``, ``std`` [latent_dim] of raw encoder outputs."""
        self.cfg.latent_mean = [float(x) for x in mean]
        self.cfg.latent_std = [float(x) for x in std]
        self._mean.copy_(mean.view_as(self._mean))
        self._std.copy_(std.view_as(self._std))

    def forward(self, images: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Training pass: images [B, 3, H, W] in [0, 1] → (reconstruction [B, 3, H, W] unclamped,
        raw mean latents [B, d, rows, cols]). In training mode the decoder sees the mean plus
        noise of a random scale per image."""
        mean = self.encoder(images * 2 - 1)
        z = mean
        if self.training and self.cfg.noise_std > 0:
            b = mean.shape[0]
            sigma = torch.randn(b, 1, 1, 1, generator=generator).to(mean) * (self.cfg.noise_std / 0.8)
            z = mean + sigma * torch.randn(mean.shape, generator=generator).to(mean)
        return self.decoder(z), mean

    @torch.no_grad()
    def encode(self, images: torch.Tensor, levels: int | None = None) -> Encoded:
        """images float [B, 3, H, W] in [0, 1] → Encoded(latents float [B, d, H / f, W / f], normalised)."""
        if levels not in (None, 0):
            raise MmarError("the image VAE has no codebook levels (continuous latents only)")
        check_images(images, self.cfg.factor)
        raw = self.encoder(images.clamp(0, 1) * 2 - 1)
        return Encoded(latents=(raw - self._mean) / self._std)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        raise MmarError("the image VAE has no codes; decode its latents (decode_latents)")

    def codebooks(self) -> list[torch.Tensor]:
        return []

    def latents_from_codes(self, codes: torch.Tensor) -> torch.Tensor:
        raise MmarError("the image VAE has no codes")

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalised latents float [B, d, rows, cols] → images [B, 3, rows · f, cols · f] in [0, 1]."""
        if latents.dim() != 4 or latents.shape[1] != self.cfg.latent_dim or not latents.is_floating_point():
            raise MmarError(f"image latents must be float [B, {self.cfg.latent_dim}, rows, cols], "
                            f"got {latents.dtype} {tuple(latents.shape)}")
        return self.decoder(latents * self._std + self._mean).clamp(0, 1)


# -- checkpoint --------------------------------------------------------------------------------
def config_from_dict(config: dict, where: str = "config") -> ImageVAEConfig:
    """A config dict → a bounded :class:`ImageVAEConfig` (:class:`MmarError` otherwise)."""
    kw = checked_fields(ImageVAEConfig, config, where, {**INT_BOUNDS, "latent_dim": (1, 256)}, LIST_BOUNDS,
                        floats={"noise_std": (0.0, 10.0)},
                        float_lists={"latent_mean": ((0, 256), (-1e4, 1e4)), "latent_std": ((0, 256), (1e-6, 1e4))})
    cfg = ImageVAEConfig(**kw)
    for name in ("latent_mean", "latent_std"):
        if getattr(cfg, name) and len(getattr(cfg, name)) != cfg.latent_dim:
            raise MmarError(f"{where}: {name} must hold latent_dim={cfg.latent_dim} numbers")
    check_factor(cfg, where)
    return cfg


def export_config(model: ImageVAE, name: str = NAME) -> dict:
    """The config.json of an exported checkpoint."""
    return {"kind": "image_vae", "name": name, **model.config_dict()}


@register_tokenizer("image_vae", aliases=(NAME,))
def build_image_vae(path: Path | None) -> LoadedTokenizer:
    """An image-VAE checkpoint directory (default: the shipped ``image-vae-64``) → the tokenizer."""
    path = find_checkpoint(NAME, path)
    state, config, digest = load_pretrained(path, kind="image_vae")
    cfg = config_from_dict(config, str(path))
    check_weights_fit(path, lambda: ImageVAE(cfg), state, "an image VAE")
    model = ImageVAE(cfg)
    model.load_state_dict(state)
    name = config.get("name", path.name)
    return LoadedTokenizer(model.eval(), name if isinstance(name, str) else path.name, digest)


def latent_statistics(model: ImageVAE, images: torch.Tensor, batch: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std [latent_dim] of the raw encoder means of images float [M, 3, H, W]."""
    with torch.no_grad():
        raw = torch.cat([model.encoder(images[i:i + batch] * 2 - 1) for i in range(0, len(images), batch)])
    flat = raw.transpose(0, 1).flatten(1)
    return flat.mean(1), flat.std(1).clamp_min(1e-6)

