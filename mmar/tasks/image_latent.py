"""Caption → image through continuous tokens: the σ-VAE tokenizer (``image_vae``) + one
:class:`~mmar.transformer.CausalTransformer` + a next-token :class:`~mmar.heads.DiffusionHead`
+ :func:`mmar.generation.latent_loop` (LatentLM / causal MAR).

Layout of one example (the 8×8 latent grid read in raster order, T = 64 latents of C channels)::

    prefix: caption word ids [P]          (bidirectional, as in :mod:`mmar.tasks.image`)
    stream: z0 z1 … z62                   (latents enter through the trunk's linear adapter)
    hidden: position P − 1 + i predicts z_i: the diffusion head denoises z_i given that state

Captions are dropped to ``<null>`` in training for classifier-free guidance; sampling doubles
the batch ([cond; uncond]) and the head mixes the two predictions at every ODE step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn as nn

from ..checkpoint import checkpoint_for, find_checkpoint, load_task_model
from ..errors import MmarError
from ..generation import CachedStepper, UncachedStepper, hidden, latent_loop
from ..heads import DiffusionConfig, DiffusionHead
from ..text.captions import CaptionVocab
from ..tokenizers.base import LoadedTokenizer, load_tokenizer
from ..transformer import TRUNK_BOUNDS, CausalTransformer, TransformerConfig, checked_trunk
from .image import captions_prefix

if TYPE_CHECKING:
    from .video import VideoModel

NAME, TOKENIZER_NAME = "image-diffusion-64", "image-vae-64"
HEAD_BOUNDS = {"width": (8, 8192), "depth": (1, 64), "repeats": (1, 64)}


class LatentNet(nn.Module):
    """The trunk and its diffusion head as one module (one state dict, one DDP wrapper).

    forward(latents float [B, T, C], prefix int64 [B, P], generator) → the head's training loss
    for predicting every z_i from the caption and z_<i."""

    def __init__(self, trunk: CausalTransformer, head: DiffusionHead):
        super().__init__()
        self.trunk, self.head = trunk, head

    def forward(self, latents: torch.Tensor, prefix: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        h = self.trunk(latents=latents[:, :-1], prefix=prefix)  # [B, P + T − 1, D]
        return self.head.loss(h[:, prefix.shape[1] - 1 :], latents, generator=generator)


@dataclass
class ImageLatentAR:
    """A caption → latent-image model with its caption vocabulary, latent grid, and the identity
    of the VAE it was trained on."""

    model: LatentNet
    vocab: CaptionVocab
    grid: tuple[int, int]
    model_id: str = NAME
    weights: str = ""
    tokenizer_weights: str = ""

    @property
    def tokens(self) -> int:
        """T: latents per image (rows × cols)."""
        return self.grid[0] * self.grid[1]

    @property
    def latent_dim(self) -> int:
        return self.model.head.cfg.latent_dim

    def parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())


def export_config(model: dict, head: dict, vocab: CaptionVocab, latent_dim: int, grid: tuple[int, int],
                  tokenizer: LoadedTokenizer | None = None, name: str = NAME, kind: str = "image_latent", **more) -> dict:
    """The ``config.json`` of a latent model (kind ``image_latent``; the video model adds its
    ``window`` through ``more``): trunk fields (dim, n_layers, n_heads), head fields (width,
    depth, objective, repeats), latent size and grid, the vocabulary, the VAE's identity."""
    return {"kind": kind, "name": name,
            "model": {k: model[k] for k in TRUNK_BOUNDS if k in model},
            "head": {k: head[k] for k in (*HEAD_BOUNDS, "objective") if k in head},
            "latent_dim": latent_dim, "grid": list(grid), **more, "captions": vocab.to_dict(),
            "tokenizer": {"name": tokenizer.model_id, "weights": tokenizer.weights} if tokenizer else {}}


@dataclass
class LatentParts:
    """What a latent model's config describes, checked: trunk and head (fresh weights), vocabulary,
    grid, name and the VAE weights it was trained on."""

    trunk: CausalTransformer
    head: DiffusionHead
    vocab: CaptionVocab
    grid: tuple[int, int]
    name: str
    tokenizer_weights: str


def latent_parts(config: dict, where: str, kind: str, what: str, objectives: tuple[str, ...] = ("flow", "v"),
                 default_name: str = NAME) -> LatentParts:
    """A config dict of ``kind`` (see :func:`export_config`) → its :class:`LatentParts`, every field
    bounded before it sizes anything; :class:`MmarError` naming ``what`` otherwise."""
    if not isinstance(config, dict) or config.get("kind") != kind:
        found = config.get("kind") if isinstance(config, dict) else type(config).__name__
        raise MmarError(f"{where} holds a {found!r:.40} checkpoint, not a {what}")
    m = checked_trunk(config.get("model"), where)
    ints = lambda v, lo, hi: isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi  # noqa: E731
    head, c, grid = config.get("head"), config.get("latent_dim"), config.get("grid")
    if not (isinstance(head, dict) and all(ints(head[k], *HEAD_BOUNDS[k]) for k in HEAD_BOUNDS if k in head)
            and set(head) <= {*HEAD_BOUNDS, "objective"} and head.get("objective", "flow") in objectives
            and ints(c, 1, 256) and isinstance(grid, list) and len(grid) == 2 and all(ints(g, 1, 256) for g in grid)):
        raise MmarError(f"{where}: head (objective {' or '.join(objectives)}), latent_dim or grid malformed")
    vocab = CaptionVocab.from_dict(config.get("captions"), where)
    try:
        cfg = TransformerConfig(**m, vocab=(), head_vocab=(), latent_dim=c, prefix_vocab=len(vocab))
        if cfg.dim % cfg.n_heads or cfg.head_dim % 2:
            raise ValueError("dim must be a multiple of 2 × n_heads")
    except (TypeError, ValueError) as e:
        raise MmarError(f"{where}: {e}") from None
    tok = config.get("tokenizer") or {}
    return LatentParts(CausalTransformer(cfg), DiffusionHead(DiffusionConfig(latent_dim=c, **head), cfg.dim), vocab,
                       (grid[0], grid[1]), str(config.get("name", default_name))[:64], str(tok.get("weights", ""))[:16])


def from_config(config: dict, where: str = "config") -> ImageLatentAR:
    """A checked config dict (see :func:`export_config`) → an :class:`ImageLatentAR` with fresh weights."""
    p = latent_parts(config, where, "image_latent", "latent image model")
    return ImageLatentAR(LatentNet(p.trunk, p.head), p.vocab, p.grid, p.name, tokenizer_weights=p.tokenizer_weights)


def load_image_latent(path: Path | None = None) -> ImageLatentAR:
    """An ``image_latent`` checkpoint directory (default: ``image-diffusion-64`` on the checkpoint search path)."""
    return load_task_model(find_checkpoint(NAME, path), from_config, "latent image")


def load_image_vae(path: Path | None = None) -> LoadedTokenizer:
    """The ``image_vae`` tokenizer (default: ``image-vae-64`` on the checkpoint search path)."""
    return load_tokenizer("image_vae", find_checkpoint(TOKENIZER_NAME, path))


def vae_for(model: ImageLatentAR | VideoModel, path: Path | None = None) -> LoadedTokenizer:
    """The σ-VAE whose latents ``model`` learned: ``path`` if given, else the shipped checkpoint
    holding the weights its config names (:data:`mmar.checkpoint.SHIPPED`), else ``image-vae-64``;
    checked by :func:`check_vae_pair`."""
    tok = load_image_vae(checkpoint_for(model.tokenizer_weights, path))
    check_vae_pair(model, tok)
    return tok


def check_vae_pair(ar: ImageLatentAR | VideoModel, tok: LoadedTokenizer) -> None:
    """Raise :class:`MmarError` unless ``tok`` is the VAE whose latents ``ar`` (an image or video
    latent model) learned."""
    if ar.tokenizer_weights and not tok.speaks(ar.tokenizer_weights):
        raise MmarError(f"{ar.model_id} was trained on VAE weights {ar.tokenizer_weights}, not {tok.weights} ({tok.model_id})")
    if tok.model.latent_dim != ar.latent_dim or tuple(tok.model.cfg.grid) != ar.grid:
        raise MmarError(f"{tok.model_id} makes {tok.model.latent_dim}-channel latents on a {tok.model.cfg.grid} grid; "
                        f"{ar.model_id} models {ar.latent_dim} channels on {ar.grid}")


@torch.no_grad()
def generate_latents(ar: ImageLatentAR, captions: list[str], steps: int = 16, temperature: float = 1.0,
                     cfg_scale: float = 1.0, seed: int = 0, cached: bool = True) -> torch.Tensor:
    """One image per caption ("" = unconditional) → normalised latents float [B, C, rows, cols]
    (decode them with the VAE). ``steps``: ODE steps of the head per latent; ``temperature``
    scales the starting noise. ``cached=False`` runs the uncached reference (same latents, up to
    float rounding)."""
    if not (1 <= steps <= 1000 and math.isfinite(temperature) and temperature >= 0 and math.isfinite(cfg_scale)):
        raise MmarError("steps must be 1..1000, temperature ≥ 0 and the CFG scale finite")
    b = len(captions)
    prefix = captions_prefix(ar, captions, cfg_scale != 1.0)
    trunk, head = ar.model.trunk, ar.model.head
    rows = prefix.shape[0]
    stepper = CachedStepper(trunk, rows, prefix.shape[1] + ar.tokens, readout=hidden) if cached else \
        UncachedStepper(trunk, rows, readout=hidden)
    gen = torch.Generator().manual_seed(seed)
    first = stepper(prefix=prefix)[:, -1]

    def choose(step: int, h: torch.Tensor) -> torch.Tensor:
        return head.sample(h[:, None], gen, steps=steps, temperature=temperature, cfg_scale=cfg_scale)[:, 0]

    z = latent_loop(stepper, first, ar.tokens, choose)[:b]  # [B, T, C]
    return z.transpose(1, 2).reshape(b, ar.latent_dim, *ar.grid)
