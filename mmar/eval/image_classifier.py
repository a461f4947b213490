"""The project's own emoji classifier and the measures built on its features: caption accuracy
of generated images (top-1 / top-5 Unicode group and subgroup), a Fréchet distance (FD, not FID:
the features are this network's, trained here, not Inception's) and sample diversity.

A small CNN (4 stride-2 convolution stages with GroupNorm, global average pooling) maps a 64×64
image to ``feature_dim`` features, and two linear heads to the 9 groups and the ~100 subgroups of
``data/emoji``. Trained on the training split only (``recipes/train_image_classifier.py``); the
checkpoint is ``emoji-classifier`` (``kind: "image_classifier"``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..checkpoint import find_checkpoint, load_task_model
from ..errors import MmarError

NAME = "emoji-classifier"
MAX_LABELS = 10_000


class EmojiClassifier(nn.Module):
    """images float [B, 3, 64, 64] in [0, 1] → (features [B, F], group logits [B, G], subgroup logits [B, S])."""

    def __init__(self, groups: int, subgroups: int, width: int = 32, feature_dim: int = 128):
        super().__init__()
        chans = [3, width, 2 * width, 4 * width, 8 * width]
        layers: list[nn.Module] = []
        for a, b in zip(chans, chans[1:]):
            layers += [nn.Conv2d(a, b, 3, stride=2, padding=1), nn.GroupNorm(8, b), nn.SiLU(),
                       nn.Conv2d(b, b, 3, padding=1), nn.GroupNorm(8, b), nn.SiLU()]
        self.body = nn.Sequential(*layers)
        self.proj = nn.Linear(chans[-1], feature_dim)
        self.group = nn.Linear(feature_dim, groups)
        self.subgroup = nn.Linear(feature_dim, subgroups)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """images [B, 3, H, W] in [0, 1] → features [B, F] (the FD and diversity space)."""
        return self.proj(self.body(images * 2 - 1).mean((2, 3)))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        f = self.features(images)
        g = F.silu(f)
        return f, self.group(g), self.subgroup(g)


@dataclass
class LoadedClassifier:
    model: EmojiClassifier
    groups: list[str]
    subgroups: list[str]
    weights: str = ""

    @torch.no_grad()
    def run(self, images: torch.Tensor, batch: int = 256) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """images float [N, 3, 64, 64] in [0, 1] → (features [N, F], group logits [N, G], subgroup logits [N, S])."""
        outs = [self.model(images[i:i + batch].float()) for i in range(0, len(images), batch)]
        return tuple(torch.cat(part) for part in zip(*outs))  # type: ignore[return-value]


def export_config(groups: list[str], subgroups: list[str], width: int, feature_dim: int) -> dict:
    return {"kind": "image_classifier", "name": NAME, "groups": groups, "subgroups": subgroups,
            "width": width, "feature_dim": feature_dim}


def from_config(config: dict, where: str = "config") -> LoadedClassifier:
    """A checked config → a :class:`LoadedClassifier` with fresh weights."""
    if not isinstance(config, dict) or config.get("kind") != "image_classifier":
        raise MmarError(f"{where} is not an image classifier checkpoint")
    g, s, w, f = (config.get(k) for k in ("groups", "subgroups", "width", "feature_dim"))
    labels_ok = lambda x: isinstance(x, list) and 1 <= len(x) <= MAX_LABELS and all(isinstance(v, str) for v in x)  # noqa: E731
    ints = lambda v, lo, hi: isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi  # noqa: E731
    if not (labels_ok(g) and labels_ok(s) and ints(w, 8, 512) and w % 8 == 0 and ints(f, 2, 4096)):
        raise MmarError(f"{where}: groups, subgroups, width or feature_dim malformed")
    return LoadedClassifier(EmojiClassifier(len(g), len(s), w, f), g, s)


def load_classifier(path: Path | None = None) -> LoadedClassifier:
    """The ``emoji-classifier`` checkpoint (default: on the checkpoint search path)."""
    return load_task_model(find_checkpoint(NAME, path), from_config, "image classifier")


def topk_accuracy(logits: torch.Tensor, labels: torch.Tensor, k: int) -> float:
    """Share of rows of logits [N, C] whose label [N] is among the k largest."""
    k = min(k, logits.shape[1])
    return float((logits.topk(k, dim=1).indices == labels[:, None]).any(1).float().mean())


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to features a [N, F] and b [M, F]:
    |μa − μb|² + tr(Σa + Σb − 2 (Σa^½ Σb Σa^½)^½), in float64 via symmetric eigendecompositions."""
    a, b = a.double(), b.double()
    if len(a) < 2 or len(b) < 2:
        raise ValueError("a Fréchet distance needs at least 2 samples on each side")
    mu = (a.mean(0) - b.mean(0)).pow(2).sum()
    ca, cb = torch.cov(a.T), torch.cov(b.T)

    def sqrtm(m: torch.Tensor) -> torch.Tensor:
        vals, vecs = torch.linalg.eigh((m + m.T) / 2)
        return (vecs * vals.clamp_min(0).sqrt()) @ vecs.T

    ra = sqrtm(ca)
    cross = torch.linalg.eigvalsh(ra @ cb @ ra).clamp_min(0).sqrt().sum()
    return float(mu + ca.trace() + cb.trace() - 2 * cross)


def mean_pairwise_distance(features: torch.Tensor) -> float:
    """Mean Euclidean distance between distinct rows of features [N, F] (N ≥ 2)."""
    n = len(features)
    if n < 2:
        return math.nan
    d = torch.cdist(features.double(), features.double())
    return float(d.sum() / (n * (n - 1)))
