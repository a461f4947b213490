"""``mmar bench codec``: mmar's codec next to Codec2 and Opus on the same clips.

For every clip x system: bitrate from the encoded file's bytes, PESQ-WB, STOI,
SI-SDR (and ViSQOL when ``visqol-python`` is installed), and the wall time of
encode + decode as a real-time factor (seconds per second of audio; < 1 is
faster than real time). The baselines' RTF includes starting two processes and
temp-file I/O, about 5-10 ms per call, which dominates on short clips.

All systems run side by side in one process on the same machine, so compare
RTFs within one table only (see DESIGN.md, "Measuring").
"""

from __future__ import annotations

import math
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol, runtime_checkable

import numpy as np

from ..atomic import write_json
from ..audio import read_mono
from ..errors import MmarError
from ..eval import metrics as M

SR = 16000


@runtime_checkable
class CodecSystem(Protocol):
    """Anything with a ``name`` and a 16 kHz round trip that also reports its encoded size.

    ``roundtrip(audio)`` takes float32 ``[N]`` mono at 16 kHz and returns the
    decoded float32 ``[N]`` at 16 kHz, time-aligned with the input, and the
    number of bytes of the encoded file (header and container included).
    """

    name: str

    def roundtrip(self, audio: np.ndarray) -> tuple[np.ndarray, int]: ...


@dataclass
class FunctionSystem:
    """Adapter: make a plain function a :class:`CodecSystem` (e.g. mmar's codec at one bitrate)."""

    name: str
    fn: Callable[[np.ndarray], tuple[np.ndarray, int]]
    nominal_kbps: float | None = None

    def roundtrip(self, audio: np.ndarray) -> tuple[np.ndarray, int]:
        """Call ``fn(audio [N]) -> (decoded [N], nbytes)``."""
        return self.fn(audio)


def load_clip(path: Path, sr: int = SR) -> np.ndarray:
    """Read an audio file (any soundfile format) as float32 mono ``[N]`` at ``sr``."""
    audio, _ = read_mono(path, sr)
    if audio.size == 0:
        raise MmarError(f"{path}: no audio samples")
    return audio


def machine_info() -> dict:
    """Where the numbers came from: CPU counts, torch threads, library and tool versions."""
    import shutil
    import subprocess

    info: dict = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "cpu_count": os.cpu_count(),
    }
    if hasattr(os, "sched_getaffinity"):
        info["cpus_usable"] = len(os.sched_getaffinity(0))
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
    except ImportError:  # pragma: no cover - torch is a hard dependency
        info["torch_threads"] = None
    if shutil.which("opusenc"):
        out = subprocess.run(["opusenc", "--version"], capture_output=True, text=True).stdout
        info["opusenc"] = out.splitlines()[0] if out else None
    info["visqol_mapper"] = M.visqol_mapper()
    return info


def _metric_fns(use_visqol: bool) -> dict[str, Callable[[np.ndarray, np.ndarray], float]]:
    """Metric name -> ``f(ref [N], deg [N]) -> float`` (16 kHz)."""
    fns: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
        "pesq_wb": lambda r, d: M.pesq_wb(r, d, SR),
        "stoi": lambda r, d: M.stoi(r, d, SR),
        "si_sdr": M.si_sdr,
    }
    if use_visqol:
        fns["visqol"] = lambda r, d: M.visqol(r, d, SR)
    return fns


def _mean(values: list[float | None]) -> float | None:
    """Mean of the non-None values (None if there are none)."""
    vals = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(vals)) if vals else None


AUDIO_SUFFIXES = {".wav", ".flac", ".ogg"}


def find_clips(root: Path, per_speaker: int | None = None) -> list[tuple[Path, str]]:
    """Benchmark clips under ``root`` with their speaker: ``root/<speaker>/…`` (a corpus split such
    as data/prep/test) or flat files named ``<speaker>_<n>.wav`` (``mmar.data.clips``). With
    ``per_speaker``, the first N files of each speaker in sorted order."""
    root = Path(root)
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES) if root.is_dir() else []
    taken: dict[str, int] = {}
    out = []
    for f in files:
        speaker = f.relative_to(root).parts[0] if f.parent != root else f.stem.rsplit("_", 1)[0]
        if per_speaker is None or taken.get(speaker, 0) < per_speaker:
            taken[speaker] = taken.get(speaker, 0) + 1
            out.append((f, speaker))
    return out


def run_codec_bench(clips: list[Path], systems: list[CodecSystem], json_path: Path | None = None,
                    png_path: Path | None = None, visqol: bool | None = None,
                    log: Callable[[str], None] | None = None, speakers: list[str] | None = None) -> dict:
    """Round-trip every clip through every system and score it.

    Args:
        clips: audio files (resampled to 16 kHz mono).
        speakers: each clip's speaker (same length as ``clips``): adds per-speaker means.
        systems: :class:`CodecSystem` objects with distinct names.
        json_path: if given, write the results there (atomically).
        png_path: if given, write log-mel spectrograms of the first clip: original + every system.
        visqol: score ViSQOL too; None = only if ``visqol-python`` is installed.
        log: called with one progress line per clip x system (e.g. ``print``).

    Returns:
        ``{"systems": {name: {"nominal_kbps", "mean": {...}, "per_clip": [...]}}, "clips": [...],
        "metrics": [...], "machine": {...}}``. Per-clip records hold ``nbytes``, ``kbps``, each
        metric (None where it failed, with the reason under ``errors``), ``wall_s`` and ``rtf``.
    """
    if not clips:
        raise MmarError("bench codec: no clips given")
    if not systems:
        raise MmarError("bench codec: no systems given")
    names = [s.name for s in systems]
    if len(set(names)) != len(names):
        raise MmarError(f"bench codec: system names must be distinct, got {names}")
    use_visqol = M.visqol_available() if visqol is None else visqol
    fns = _metric_fns(use_visqol)
    results: dict = {
        "metrics": list(fns),
        "clips": [],
        "systems": {s.name: {"nominal_kbps": getattr(s, "nominal_kbps", None), "per_clip": []} for s in systems},
        "machine": machine_info(),
    }
    first_rows: list[tuple[str, np.ndarray]] = []
    for ci, clip in enumerate(clips):
        audio = load_clip(Path(clip))
        seconds = len(audio) / SR
        results["clips"].append({"path": str(clip), "seconds": seconds, "speaker": speakers[ci] if speakers else None})
        if ci == 0:
            first_rows.append((f"original: {Path(clip).name}", audio))
        for system in systems:
            t0 = time.perf_counter()
            decoded, nbytes = system.roundtrip(audio)
            wall = time.perf_counter() - t0
            decoded = np.asarray(decoded, dtype=np.float32)
            if decoded.ndim != 1:
                raise MmarError(f"{system.name}: roundtrip returned shape {decoded.shape}, expected [N]")
            rec: dict = {"clip": str(clip), "nbytes": int(nbytes), "kbps": 8.0 * nbytes / seconds / 1000.0,
                         "len_out": len(decoded), "wall_s": wall, "rtf": wall / seconds, "errors": {}}
            for mname, fn in fns.items():
                try:
                    rec[mname] = fn(audio, decoded)
                except MmarError as e:
                    rec[mname] = None
                    rec["errors"][mname] = str(e)
            results["systems"][system.name]["per_clip"].append(rec)
            if ci == 0:
                first_rows.append((f"{system.name}: {rec['kbps']:.2f} kbps", decoded))
            if log is not None:
                scores = " ".join(f"{k}={rec[k]:.3f}" if rec[k] is not None else f"{k}=n/a" for k in fns)
                log(f"[{ci + 1}/{len(clips)}] {Path(clip).name} {system.name}: {rec['kbps']:.2f} kbps {scores} "
                    f"rtf={rec['rtf']:.3f}")
    for entry in results["systems"].values():
        per = entry["per_clip"]
        entry["mean"] = {k: _mean([r[k] for r in per]) for k in ["kbps", *fns, "rtf"]}
        total_s = sum(c["seconds"] for c in results["clips"])
        entry["mean"]["kbps_pooled"] = 8.0 * sum(r["nbytes"] for r in per) / total_s / 1000.0
        if speakers:
            entry["per_speaker"] = {spk: {k: _mean([r[k] for r, s in zip(per, speakers) if s == spk]) for k in ["kbps", *fns]}
                                    for spk in dict.fromkeys(speakers)}
    if png_path is not None:
        from ..eval.spectrogram import save_spectrograms

        save_spectrograms(first_rows, SR, Path(png_path))
        results["png"] = str(png_path)
    if json_path is not None:
        results["json"] = str(json_path)
        write_json(results, Path(json_path))
    return results


_COLUMNS = [("kbps", "kbps", "{:.2f}"), ("pesq_wb", "PESQ-WB", "{:.2f}"), ("stoi", "STOI", "{:.3f}"),
            ("si_sdr", "SI-SDR", "{:.1f}"), ("visqol", "ViSQOL", "{:.2f}"), ("rtf", "RTF", "{:.3f}")]


def format_table(results: dict) -> str:
    """Means per system as a fixed-width text table (ViSQOL column only if it was scored)."""
    cols = [c for c in _COLUMNS if c[0] in ("kbps", "rtf") or c[0] in results["metrics"]]
    header = ["system", *(c[1] for c in cols)]
    rows = []
    for name, entry in results["systems"].items():
        mean = entry["mean"]
        rows.append([name, *("n/a" if mean.get(k) is None else fmt.format(mean[k]) for k, _, fmt in cols)])
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))  # noqa: E731
    n = len(results["clips"])
    secs = sum(c["seconds"] for c in results["clips"])
    out = [f"{n} clip{'s' if n != 1 else ''}, {secs:.1f} s of audio; means per clip; "
           f"kbps from file bytes; RTF = (encode + decode time) / duration",
           line(header), "  ".join("-" * w for w in widths), *map(line, rows)]
    speakers = list(dict.fromkeys(c["speaker"] for c in results["clips"] if c.get("speaker")))
    if speakers and "pesq_wb" in results["metrics"]:
        out += ["", "PESQ-WB per speaker (mean over its clips)", *_per_speaker_table(results, speakers, "pesq_wb")]
    return "\n".join(out)


def _per_speaker_table(results: dict, speakers: list[str], metric: str) -> list[str]:
    systems = list(results["systems"])
    rows = [["speaker", *systems]]
    for spk in speakers:
        vals = [results["systems"][name]["per_speaker"][spk][metric] for name in systems]
        rows.append([spk, *("n/a" if v is None else f"{v:.2f}" for v in vals)])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
