"""Side-by-side log-mel spectrograms (original next to each codec's output) as one PNG."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from ..atomic import atomic_write
from ..errors import MmarError


def _hop(sr: int) -> int:
    """8 ms hop in samples."""
    return max(1, sr // 125)


def log_mel(audio: np.ndarray, sr: int, n_fft: int = 512, hop: int | None = None, n_mels: int = 80) -> np.ndarray:
    """Log-mel power spectrogram in dB, ``[n_mels, T]`` with ``T = 1 + (N - 1) // hop`` (hop = 8 ms)."""
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 1 or audio.size == 0:
        raise MmarError(f"spectrogram: expected non-empty mono audio [N], got shape {audio.shape}")
    hop = hop or _hop(sr)
    x = np.pad(audio, (n_fft // 2, n_fft // 2), mode="constant")
    n_frames = 1 + (len(audio) - 1) // hop
    idx = np.arange(n_fft)[None, :] + hop * np.arange(n_frames)[:, None]  # [T, n_fft]
    frames = x[idx] * np.hanning(n_fft).astype(np.float32)
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2  # [T, F]
    from ..tokenizers.spectral import mel_filterbank

    mel = mel_filterbank(n_fft, n_mels, sr, area_norm=False).numpy() @ power.T  # [n_mels, T], filters peak 1
    return 10.0 * np.log10(mel + 1e-10)


def save_spectrograms(rows: list[tuple[str, np.ndarray]], sr: int, path: Path, dynamic_range_db: float = 80.0) -> Path:
    """Write one titled log-mel panel per ``(title, audio [N])`` row into a PNG at ``path``.

    All panels share the colour scale (top = loudest bin of the first row, range
    ``dynamic_range_db``) and the time axis, so the codecs compare at a glance.
    The file is written to a temporary name and renamed, so it is never half-written.
    """
    if not rows:
        raise MmarError("spectrogram: nothing to plot")
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    specs = [(title, log_mel(audio, sr)) for title, audio in rows]
    vmax = float(specs[0][1].max())
    vmin = vmax - dynamic_range_db
    t_max = max(len(audio) for _, audio in rows) / sr
    fig, axes = plt.subplots(len(specs), 1, figsize=(10, 1.9 * len(specs) + 0.4), sharex=True,
                             squeeze=False, layout="constrained")
    for ax, (title, spec) in zip(axes[:, 0], specs):
        dur = spec.shape[1] * _hop(sr) / sr
        im = ax.imshow(spec, origin="lower", aspect="auto", vmin=vmin, vmax=vmax, cmap="magma",
                       extent=(0.0, dur, 0, spec.shape[0]), interpolation="nearest")
        ax.set_title(title, fontsize=9, loc="left")
        ax.set_ylabel("mel bin", fontsize=8)
        ax.set_xlim(0.0, t_max)
        ax.tick_params(labelsize=7)
    axes[-1, 0].set_xlabel("time (s)", fontsize=8)
    fig.colorbar(im, ax=axes[:, 0].tolist(), label="dB")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return atomic_write(path, lambda p: p.write_bytes(buf.getvalue()))
