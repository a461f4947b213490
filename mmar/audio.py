"""Reading audio files: any format soundfile reads, any channel count, downmixed to mono.

Every reader in the package goes through here, so an unreadable file fails with one
:class:`MmarError` (``cannot read <path>: <reason>``) wherever it is read.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from .errors import MmarError


def _unreadable(path: Path, e: Exception) -> MmarError:
    first = (str(e).strip().splitlines() or [type(e).__name__])[0]
    return MmarError(f"cannot read {path}: {first}")


def read_mono(path: Path, sample_rate: int | None = None, max_seconds: float | None = None) -> tuple[np.ndarray, int]:
    """Read a whole file → (float32 [N] mono (channel mean), rate); with ``sample_rate``, resampled
    to it (soxr, HQ) and ``rate == sample_rate``. With ``max_seconds``, a missing, empty or longer
    file is refused from its header, before anything is read."""
    import soundfile as sf

    if max_seconds is not None:
        if not Path(path).is_file():
            raise MmarError(f"no such file: {path}")
        try:
            info = sf.info(str(path))
        except Exception as e:
            raise _unreadable(path, e) from None
        if info.frames <= 0 or info.samplerate <= 0:
            raise MmarError(f"{path} holds no audio")
        if info.frames / info.samplerate > max_seconds:
            raise MmarError(f"{path} lasts {info.frames / info.samplerate:.0f} s (at most {max_seconds:g} s)")
    try:
        x, rate = sf.read(str(path), dtype="float32", always_2d=True)  # [N, C]
    except Exception as e:  # soundfile raises LibsndfileError / RuntimeError / OSError
        raise _unreadable(path, e) from None
    x = x.mean(axis=1)
    if sample_rate is not None and rate != sample_rate:
        import soxr

        x, rate = soxr.resample(x, rate, sample_rate, quality="HQ").astype(np.float32), sample_rate
    return x, rate


def read_blocks(path: Path, block_seconds: float) -> tuple[Iterator[np.ndarray], int, int]:
    """Stream a file → (iterator of float32 [n] mono blocks of ``block_seconds``, rate, total samples),
    so memory stays bounded on long files. An empty file is an error, and so is one that
    cannot be read to its end (damaged or truncated partway)."""
    import soundfile as sf

    try:
        info = sf.info(str(path))
    except Exception as e:
        raise _unreadable(path, e) from None
    if info.frames <= 0:
        raise MmarError(f"{path} holds no audio")
    block = int(info.samplerate * block_seconds)

    def blocks() -> Iterator[np.ndarray]:
        it = sf.blocks(str(path), blocksize=block, dtype="float32", always_2d=True)
        while True:
            try:  # a file damaged partway fails here, mid-stream
                b = next(it)
            except StopIteration:
                return
            except Exception as e:
                raise _unreadable(path, e) from None
            yield b.mean(axis=1)

    return blocks(), info.samplerate, info.frames
