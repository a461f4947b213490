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

from mmar.atomic import write_json
from mmar.bench.codec import find_clips, run_codec_bench
from mmar.bench.codec_systems import MmarCodecSystem
from mmar.tasks.codec import load_codec

sys.path.insert(0, str(Path(__file__).parent))
import train_codec  # noqa: E402


def merge(base: dict, over: dict) -> dict:
    """Recursive dict merge: ``over``'s leaves replace ``base``'s."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def score(ckpt: Path, clips: list[tuple[Path, str]], bitrates: list[float]) -> dict:
    """``mmar bench codec``'s round trips of ``clips`` (path, speaker) with the checkpoint at each
    bitrate → per bitrate: mean PESQ-WB, STOI, file kbps, and PESQ-WB per speaker."""
    codec = load_codec(ckpt)
    systems = [MmarCodecSystem(codec, kbps) for kbps in bitrates]
    r = run_codec_bench([c for c, _ in clips], systems, visqol=False, speakers=[s for _, s in clips])
    out = {}
    for system in systems:
        entry = r["systems"][system.name]
        out[str(system.kbps)] = {"pesq_wb": entry["mean"]["pesq_wb"], "stoi": entry["mean"]["stoi"], "kbps": entry["mean"]["kbps"],
                                 "per_speaker_pesq_wb": {spk: m["pesq_wb"] for spk, m in entry["per_speaker"].items()}}
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
