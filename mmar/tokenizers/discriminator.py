"""A multi-scale complex-STFT discriminator and its losses, for adversarial codec training.

Each scale reads the real and imaginary parts of one STFT as a two-channel image
[B, 2, frames, bins] and stacks 2-D convolutions (kernel 3 × 9, dilated in time, strided by 2
in frequency, weight-normalised, leaky ReLU 0.2) down to one logit per cell, as in EnCodec's
MS-STFT discriminator (shared/research/codec.md §1.7). The losses are the hinge losses and a
feature-matching L1 on every hidden feature map, each map's L1 divided by the mean magnitude of
the real one, so the losses stay near 1 whatever the layer's scale.

Training only: nothing here is saved in a codec checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.parametrizations import weight_norm

# one scale's output: logits [B, 1, frames, bins'] and its hidden feature maps
Judgement = tuple[torch.Tensor, list[torch.Tensor]]


@dataclass(frozen=True)
class DiscriminatorConfig:
    n_ffts: tuple[int, ...] = (1024, 512, 256)
    filters: int = 32
    dilations: tuple[int, ...] = (1, 2, 4)

    def __post_init__(self):
        if not self.n_ffts or any(n < 16 or n & (n - 1) for n in self.n_ffts):
            raise ValueError(f"n_ffts must be powers of two ≥ 16, got {self.n_ffts}")
        if not 1 <= self.filters <= 512 or not self.dilations or any(not 1 <= d <= 16 for d in self.dilations):
            raise ValueError("filters must be 1..512 and dilations 1..16")


class STFTDiscriminator(nn.Module):
    """One scale: audio [B, N] → (logits [B, 1, frames, bins'], feature maps)."""

    def __init__(self, n_fft: int, filters: int = 32, dilations: tuple[int, ...] = (1, 2, 4)):
        super().__init__()
        self.n_fft, self.hop = n_fft, n_fft // 4
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        convs = [nn.Conv2d(2, filters, (3, 9), padding=(1, 4))]
        convs += [nn.Conv2d(filters, filters, (3, 9), stride=(1, 2), dilation=(d, 1), padding=(d, 4)) for d in dilations]
        convs.append(nn.Conv2d(filters, filters, 3, padding=1))
        self.convs = nn.ModuleList(weight_norm(c) for c in convs)
        self.out = weight_norm(nn.Conv2d(filters, 1, 3, padding=1))

    def forward(self, audio: torch.Tensor) -> Judgement:
        spec = torch.stft(audio, self.n_fft, self.hop, window=self.window, return_complex=True)  # [B, bins, frames]
        z = torch.stack([spec.real, spec.imag], 1).transpose(2, 3)  # [B, 2, frames, bins]
        feats = []
        for conv in self.convs:
            z = F.leaky_relu(conv(z), 0.2)
            feats.append(z)
        return self.out(z), feats


class MultiScaleSTFTDiscriminator(nn.Module):
    """One :class:`STFTDiscriminator` per FFT size: audio [B, N] → one judgement per scale."""

    def __init__(self, cfg: DiscriminatorConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or DiscriminatorConfig()
        self.scales = nn.ModuleList(STFTDiscriminator(n, cfg.filters, cfg.dilations) for n in cfg.n_ffts)

    def forward(self, audio: torch.Tensor) -> list[Judgement]:
        return [scale(audio) for scale in self.scales]


def discriminator_loss(real: list[Judgement], fake: list[Judgement]) -> torch.Tensor:
    """Hinge loss of the discriminator (judgements of real audio and of detached reconstructions):
    mean over scales of relu(1 − D(real)) + relu(1 + D(fake))."""
    terms = [F.relu(1 - r).mean() + F.relu(1 + f).mean() for (r, _), (f, _) in zip(real, fake)]
    return torch.stack(terms).mean()


def generator_losses(real: list[Judgement], fake: list[Judgement]) -> tuple[torch.Tensor, torch.Tensor]:
    """(adversarial, feature matching) losses of the generator: hinge −D(fake) averaged over
    scales, and the L1 between each fake feature map and the (detached) real one over the real
    map's mean magnitude, averaged over maps."""
    adv = torch.stack([-f.mean() for f, _ in fake]).mean()
    fm = [F.l1_loss(ff, rf.detach()) / rf.detach().abs().mean().clamp_min(1e-8)
          for (_, rfs), (_, ffs) in zip(real, fake) for rf, ff in zip(rfs, ffs)]
    return adv, torch.stack(fm).mean()
