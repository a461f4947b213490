"""Frame-rate signal processing shared by the speech codec and its losses.

Causal framing: frame ``t`` covers samples ``[(t+1)*hop - n_fft, (t+1)*hop)``, i.e. it
ends where frame ``t`` of the codec ends, so analysis needs no lookahead.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def hann(n: int, device=None) -> torch.Tensor:
    """Periodic Hann window [n] (float32)."""
    return torch.hann_window(n, periodic=True, dtype=torch.float32, device=device)


def causal_frames(x: torch.Tensor, n_fft: int, hop: int) -> torch.Tensor:
    """x [B, (n_fft - hop) + T*hop] (already left-padded) → frames [B, T, n_fft]."""
    return x.unfold(-1, n_fft, hop)


def log_magnitude(frames: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    """frames [B, T, n_fft] → log-magnitude spectrum [B, n_fft//2+1, T]."""
    spec = torch.fft.rfft(frames * window, dim=-1)
    return torch.log(spec.abs().clamp_min(1e-5)).transpose(1, 2)


def overlap_add(frames: torch.Tensor, hop: int) -> torch.Tensor:
    """frames [B, T, L] (L a multiple of hop) → signal [B, (T-1)*hop + L], summed where they overlap."""
    b, t, length = frames.shape
    return F.fold(
        frames.transpose(1, 2), output_size=(1, (t - 1) * hop + length), kernel_size=(1, length), stride=(1, hop)
    ).reshape(b, -1)


def mel_filterbank(n_fft: int, n_mels: int, sample_rate: int, f_min: float = 0.0, f_max: float | None = None,
                   area_norm: bool = True) -> torch.Tensor:
    """Triangular HTK-mel filterbank [n_mels, n_fft//2+1], float32: area-normalised (Slaney style),
    or with ``area_norm=False`` peak 1 per filter."""
    f_max = f_max or sample_rate / 2

    def hz_to_mel(f):
        return 2595.0 * math.log10(1.0 + f / 700.0)

    mels = torch.linspace(hz_to_mel(f_min), hz_to_mel(f_max), n_mels + 2)
    hz = 700.0 * (10 ** (mels / 2595.0) - 1.0)
    bins = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    lower, center, upper = hz[:-2, None], hz[1:-1, None], hz[2:, None]
    up = (bins[None] - lower) / (center - lower)
    down = (upper - bins[None]) / (upper - center)
    fb = torch.clamp(torch.minimum(up, down), min=0.0)
    return fb * (2.0 / (upper - lower)) if area_norm else fb


class MultiResolutionLoss(torch.nn.Module):
    """L1 between log-mel spectrograms at several resolutions, plus log-|STFT| L1 at one.

    forward(pred [B, N], target [B, N]) → scalar loss (mean over resolutions).
    """

    def __init__(self, sample_rate: int = 16000, n_ffts: tuple[int, ...] = (256, 512, 1024, 2048), n_mels: tuple[int, ...] = (32, 64, 80, 128)):
        super().__init__()
        self.n_ffts = n_ffts
        for i, (n, m) in enumerate(zip(n_ffts, n_mels)):
            self.register_buffer(f"fb{i}", mel_filterbank(n, m, sample_rate), persistent=False)
            self.register_buffer(f"win{i}", hann(n), persistent=False)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        total = pred.new_zeros(())
        both = torch.cat([pred, target])
        for i, n in enumerate(self.n_ffts):
            spec = torch.stft(both, n, n // 4, window=getattr(self, f"win{i}"), return_complex=True).abs()
            mel = torch.log(torch.matmul(getattr(self, f"fb{i}"), spec).clamp_min(1e-5))
            p, t = mel.chunk(2)
            total = total + (p - t).abs().mean()
            if i == len(self.n_ffts) - 2:  # one linear-frequency term keeps harmonics sharp
                ls = torch.log(spec.clamp_min(1e-5))
                lp, lt = ls.chunk(2)
                total = total + (lp - lt).abs().mean()
        return total / len(self.n_ffts)
