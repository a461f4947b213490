"""Benchmark clips: held-out utterances concatenated into clips of a fixed length."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..atomic import atomic_write
from .crops import audio_files, load_mono


def make_clips(speaker_dirs: list[Path], out_dir: Path, per_speaker: int = 4, seconds: float = 10.0,
               sample_rate: int = 16000, gap: float = 0.2, seed: int = 0, min_rms: float = 1e-3) -> list[Path]:
    """Write ``per_speaker`` clips of about ``seconds`` for every folder in ``speaker_dirs``
    (utterances drawn without replacement, joined with ``gap`` s of silence) → the wav paths."""
    import soundfile as sf

    rng = np.random.default_rng(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for d in speaker_dirs:
        files = audio_files(d)
        order = rng.permutation(len(files))
        pos = 0
        for i in range(per_speaker):
            pieces, total = [], 0
            while total < seconds * sample_rate and pos < len(order):
                x = load_mono(files[order[pos]], sample_rate)
                pos += 1
                if len(x) < sample_rate // 2 or np.sqrt(np.mean(x**2)) < min_rms:
                    continue
                pieces += [x, np.zeros(int(gap * sample_rate), np.float32)]
                total += len(x) + int(gap * sample_rate)
            if not pieces:
                break
            clip = np.concatenate(pieces)[: int(seconds * sample_rate)]
            path = out_dir / f"{Path(d).name}_{i:02d}.wav"
            atomic_write(path, lambda p: sf.write(p, clip, sample_rate, subtype="PCM_16"), tmp_suffix=".wav")
            paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> int:
    """``python -m mmar.data.clips --out data/bench_clips DIR...``: the held-out benchmark clips."""
    import argparse

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("dirs", nargs="+", type=Path, help="one folder per held-out speaker")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--per-speaker", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=10.0)
    args = ap.parse_args(argv)
    for p in make_clips(args.dirs, args.out, args.per_speaker, args.seconds):
        print(p)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
