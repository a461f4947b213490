"""Compact train+valid audio that travels to a GPU machine (Ogg Opus, wideband).

    python -m mmar.data.pack --corpus data/prep --out data/gpu [--max-mib 24] [--kbps 16]

Per speaker, utterances (in a seeded random order) are joined with 0.25 s of silence into
files of about 60 s (``<out>/{train,valid}/<speaker>/NNN.opus``: fewer files, less container
overhead), encoded with ``opusenc`` (fixed stream serial, so reruns give the same bytes). When
the whole corpus would exceed ``--max-mib``, every speaker keeps the same share of its minutes
(a balanced, seeded subset). ``<out>/manifest.json`` copies the corpus manifest with the
packed minutes per speaker. :func:`mmar.audio.read_mono` (libsndfile) reads the files back at
16 kHz, and :class:`mmar.data.crops.CropDataset` accepts ``<out>/train``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

import numpy as np

from ..atomic import atomic_write, write_json
from ..errors import MmarError, command

RATE = 16000
CHUNK_S = 60.0
GAP_S = 0.25
OVERHEAD_BYTES = 1.03  # Ogg pages + Opus framing measured over the bitrate at 16 kb/s


def _bytes_per_second(kbps: float) -> float:
    return kbps * 1000 / 8 * OVERHEAD_BYTES


def _pack_speaker(src: Path, dst: Path, tmp: Path, quota_s: float, kbps: float, seed: int) -> dict:
    """Utterances of one speaker folder (seeded order, until ``quota_s``) → ~60 s Opus files."""
    import soundfile as sf

    files = sorted(src.glob("*.wav"))
    rng = np.random.default_rng([seed, zlib.crc32(src.name.encode())])
    used, chunk, pieces, k = 0.0, [], 0.0, 0
    dst.mkdir(parents=True, exist_ok=True)

    def flush() -> None:
        nonlocal chunk, pieces, k
        if not chunk:
            return
        wav = tmp / "c.wav"
        sf.write(str(wav), np.concatenate(chunk), RATE, subtype="PCM_16")
        serial = str(zlib.crc32(f"{src.name}/{k}".encode()) & 0x7FFFFFFF)
        atomic_write(dst / f"{k:03d}.opus", lambda p: subprocess.run(
            ["opusenc", "--quiet", "--bitrate", f"{kbps:g}", "--serial", serial, "--comp", "10", str(wav), str(p)], check=True),
            tmp_suffix=".opus")
        chunk, pieces, k = [], 0.0, k + 1

    for i in rng.permutation(len(files)):
        if used >= quota_s:
            break
        x, _ = sf.read(str(files[i]), dtype="float32")
        chunk += [x, np.zeros(int(GAP_S * RATE), np.float32)]
        used += len(x) / RATE
        pieces += len(x) / RATE + GAP_S
        if pieces >= CHUNK_S:
            flush()
    flush()
    return {"packed_minutes": round(used / 60, 3), "files": k}


def pack(corpus: Path, out: Path, max_mib: float = 24.0, kbps: float = 16.0, splits: tuple[str, ...] = ("train", "valid"),
         seed: int = 0) -> dict:
    """Write the packed corpus → its manifest."""
    if shutil.which("opusenc") is None:
        raise MmarError("opusenc not found: apt-get install opus-tools")
    manifest = Path(corpus) / "manifest.json"
    try:
        src_manifest = json.loads(manifest.read_text())
        speakers = {n: e for n, e in src_manifest["speakers"].items() if e["split"] in splits}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        raise MmarError(f"{manifest} is missing or damaged: build the corpus with python -m mmar.data.packaged_speech --out {corpus}") from None
    if not speakers:
        raise MmarError(f"no {'/'.join(splits)} speakers in {corpus}/manifest.json")
    total_s = sum(e["minutes"] * 60 + e["utterances"] * GAP_S for e in speakers.values())
    budget_s = max_mib * 2**20 * 0.98 / _bytes_per_second(kbps)
    share = min(1.0, budget_s / total_s)
    out = Path(out)
    if (out / "manifest.json").exists():
        old = json.loads((out / "manifest.json").read_text())
        if (old.get("corpus"), old["kbps"], old["max_mib"], old.get("seed")) == (src_manifest["options"], kbps, max_mib, seed):
            return old  # already packed from this corpus with these options
    def write_all(share: float) -> dict:
        if out.exists():
            shutil.rmtree(out)  # a pack is derived data: rebuilt whole
        packed = {}
        with tempfile.TemporaryDirectory() as tmp:
            for name, e in sorted(speakers.items()):
                packed[name] = dict(e, **_pack_speaker(Path(corpus) / e["split"] / name, out / e["split"] / name, Path(tmp),
                                                       e["minutes"] * 60 * share, kbps, seed))
        return packed

    for _ in range(4):  # the estimate ignores per-file overhead and VBR: shrink until it fits
        packed = write_all(share)
        size = sum(p.stat().st_size for p in out.rglob("*.opus"))
        if size <= max_mib * 2**20:
            break
        share *= 0.97 * max_mib * 2**20 / size
    m = {"version": src_manifest["version"] + "-opus", "corpus": src_manifest["options"], "seed": seed, "kbps": kbps, "share": round(share, 4), "max_mib": max_mib,
         "mib": round(size / 2**20, 2), "minutes": round(sum(e["packed_minutes"] for e in packed.values()), 2), "speakers": packed}
    write_json(m, out / "manifest.json")
    if size > max_mib * 2**20:
        raise MmarError(f"packed corpus is {size / 2**20:.1f} MiB > {max_mib} MiB: lower --kbps")
    return m


@command
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Pack train+valid speech as Opus for a GPU machine.")
    ap.add_argument("--corpus", type=Path, default=Path("data/prep"))
    ap.add_argument("--out", type=Path, default=Path("data/gpu"))
    ap.add_argument("--max-mib", type=float, default=24.0)
    ap.add_argument("--kbps", type=float, default=16.0)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    m = pack(args.corpus, args.out, args.max_mib, args.kbps, seed=args.seed)
    for name, e in m["speakers"].items():
        print(f"{e['split']:<6}{name:<24}{e['packed_minutes']:>7.1f} of {e['minutes']:>6.1f} min  {e['files']:>3} files")
    print(f"packed {m['minutes']:.1f} min ({m['share']:.0%} of the corpus) in {m['mib']:.1f} MiB at {m['kbps']:g} kb/s → {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
