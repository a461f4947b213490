"""Random training crops from a folder of audio files, held in memory as int16.

Crops come only from a caller-supplied ``torch.Generator``, so a training loop that stores
the generator's state resumes exactly where it stopped.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..audio import read_mono
from ..errors import MmarError

AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".opus", ".mp3"}


def audio_files(root: Path) -> list[Path]:
    """All audio files under ``root`` (recursive, sorted), or the single file ``root``."""
    root = Path(root)
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise MmarError(f"no such data folder: {root}")
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)


def load_mono(path: Path, sample_rate: int) -> np.ndarray:
    """Read any soundfile-readable file → float32 [N] mono at ``sample_rate`` (see :func:`mmar.audio.read_mono`)."""
    return read_mono(path, sample_rate)[0]


class CropDataset:
    """Clips of one or more folders, sampled as random fixed-length crops with random gain.

    Files quieter than ``min_rms`` (silence prompts) are skipped. A clip shorter than the
    crop is placed at a random offset in zeros.
    """

    def __init__(self, roots: list[Path] | Path, sample_rate: int, crop_samples: int,
                 gain_db: tuple[float, float] = (-18.0, 0.0), min_rms: float = 1e-3):
        roots = [roots] if isinstance(roots, (str, Path)) else roots
        files = [f for r in roots for f in audio_files(Path(r))]
        self.clips: list[np.ndarray] = []
        for f in files:
            x = load_mono(f, sample_rate)
            if len(x) and float(np.sqrt(np.mean(x**2))) >= min_rms:
                self.clips.append((np.clip(x, -1, 1) * 32767).astype(np.int16))
        if not self.clips:
            raise MmarError(f"no usable audio in {', '.join(map(str, roots))}")
        self.crop, self.gain_db = crop_samples, gain_db
        lengths = torch.tensor([max(len(c), 1) for c in self.clips], dtype=torch.float64)
        self.weights = lengths / lengths.sum()  # long clips are picked proportionally more often

    @property
    def seconds(self) -> float:
        return sum(len(c) for c in self.clips)

    def batch(self, batch_size: int, generator: torch.Generator) -> torch.Tensor:
        """→ float32 [batch_size, crop_samples], drawn with ``generator`` only."""
        idx = torch.multinomial(self.weights, batch_size, replacement=True, generator=generator).tolist()
        u = torch.rand(batch_size, 2, generator=generator, dtype=torch.float64).tolist()
        out = np.zeros((batch_size, self.crop), dtype=np.float32)
        lo, hi = self.gain_db
        for b, (i, (r_off, r_gain)) in enumerate(zip(idx, u)):
            clip = self.clips[i]
            if len(clip) >= self.crop:
                start = int(r_off * (len(clip) - self.crop + 1))
                piece, at = clip[start : start + self.crop], 0
            else:
                piece, at = clip, int(r_off * (self.crop - len(clip) + 1))
            gain = 10 ** ((lo + (hi - lo) * r_gain) / 20) / 32768
            out[b, at : at + len(piece)] = piece.astype(np.float32) * gain
        return torch.from_numpy(out)
