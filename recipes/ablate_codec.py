"""Short codec ablations with the same wall-clock budget, scored on the validation split.

    python recipes/ablate_codec.py --config recipes/configs/codec_ablation.json --out runs/ablate

Each variant of the config's ``variants`` list is the base recipe (``base``, a train_codec
config path) with its overrides merged in, trained for ``steps`` steps (the same for every
variant: fair on a shared machine; the seconds per step are recorded, to compare per CPU-minute)
or, with ``minutes``, for that much wall time — optionally from a checkpoint (``init``) —
exported, and scored by real ``.mmc`` round trips of the validation utterances (``valid``: a
corpus split, <speaker>/*.wav; ``per_speaker`` files each) at each bitrate: PESQ-WB, STOI, kbps
from file bytes. A variant with ``"steps": 0`` and an ``init`` scores that checkpoint as it is
(the reference). Prints a table, writes
``<out>/ablation.json``; finished variants are not rerun. Only validation data is used: the
test split stays untouched for the final benchmark.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import numpy as np

from mmar.atomic import write_json
from mmar.audio import read_mono
from mmar.bench.codec import find_clips
from mmar.eval import metrics as M
from mmar.tasks.codec import decode_array, encode_array, load_codec

sys.path.insert(0, str(Path(__file__).parent))
import train_codec  # noqa: E402


def merge(base: dict, over: dict) -> dict:
    """Recursive dict merge: ``over``'s leaves replace ``base``'s."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def score(ckpt: Path, clips: list[tuple[Path, str]], bitrates: list[float]) -> dict:
    """Mean PESQ-WB / STOI / file kbps of ``.mmc`` round trips, per bitrate, over all clips and per speaker."""
    codec = load_codec(ckpt)
    out = {}
    for kbps in bitrates:
        rows = []
        for path, speaker in clips:
            x, sr = read_mono(path, 16000)
            data = encode_array(codec, x, sr, kbps)
            y, _ = decode_array(codec, data)
            rows.append((speaker, M.pesq_wb(x, y, 16000), M.stoi(x, y, 16000), 8 * len(data) / (len(x) / sr) / 1000))
        speakers = sorted({r[0] for r in rows})
        out[str(kbps)] = {
            "pesq_wb": float(np.mean([r[1] for r in rows])), "stoi": float(np.mean([r[2] for r in rows])),
            "kbps": float(np.mean([r[3] for r in rows])),
            "per_speaker_pesq_wb": {s: float(np.mean([r[1] for r in rows if r[0] == s])) for s in speakers},
        }
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True, type=Path)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--only", nargs="+", help="run these variants only")
    args = ap.parse_args(argv)
    cfg = json.loads(args.config.read_text())
    base = json.loads(Path(cfg["base"]).read_text())
    clips = find_clips(Path(cfg["valid"]), cfg.get("per_speaker"))
    result_path = args.out / "ablation.json"
    results = json.loads(result_path.read_text()) if result_path.exists() else {}
    for v in cfg["variants"]:
        name = v["name"]
        if name in results or (args.only and name not in args.only):
            continue
        init = Path(v["init"]) if v.get("init") else None
        steps, minutes = v.get("steps", cfg.get("steps")), v.get("minutes", cfg.get("minutes"))
        entry = {"about": v.get("about", ""), "steps": steps}
        if steps == 0:
            ckpt = init
        else:
            run = merge(base, v.get("config", {}))
            run["optim"]["steps"] = steps or run["optim"]["steps"]
            if minutes:
                run["optim"]["minutes"] = minutes
            t0 = time.monotonic()
            train_codec.train(run, args.out / name, run["data"]["train"], progress=False, init=init)
            entry["seconds_per_step"] = round((time.monotonic() - t0) / run["optim"]["steps"], 3)
            ckpt = args.out / name / "export"
        results[name] = {**entry, "scores": score(ckpt, clips, cfg["bitrates"])}
        write_json(results, result_path)
        print(name, json.dumps(results[name]["scores"]), flush=True)
    print(format_table(results, cfg["bitrates"]))
    return 0


def format_table(results: dict, bitrates: list[float]) -> str:
    head = "| variant | steps | s/step | " + " | ".join(f"PESQ-WB @{b} | STOI @{b} | kbps @{b}" for b in bitrates) + " |"
    lines = [head, "|---|---:|---:|" + "---:|" * (3 * len(bitrates))]
    for name, r in results.items():
        cells = [f"{r['scores'][str(b)]['pesq_wb']:.3f} | {r['scores'][str(b)]['stoi']:.3f} | {r['scores'][str(b)]['kbps']:.2f}"
                 for b in bitrates]
        lines.append(f"| {name} | {r.get('steps') or 0} | {r.get('seconds_per_step', '')} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
