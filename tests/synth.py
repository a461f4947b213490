"""Deterministic test signals."""

import numpy as np


def speechlike(seconds: float, sr: int = 16000, seed: int = 0) -> np.ndarray:
    """A voiced, formant-ish test signal float32 [N]: harmonics with a wandering pitch, gated."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    f0 = 120 + 30 * np.sin(2 * np.pi * 0.7 * t + rng.uniform(0, 6))
    phase = 2 * np.pi * np.cumsum(f0) / sr
    x = sum(np.sin(h * phase) / h for h in range(1, 20))
    gate = (np.sin(2 * np.pi * 2.3 * t) > -0.3).astype(float)
    return (0.2 * x * gate + 0.003 * rng.standard_normal(len(t))).astype(np.float32)
