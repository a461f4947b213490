"""Train the zero-shot TTS / speech-editing model (tts-16k) on the TTS corpus.

    python -m mmar.data.tts_corpus --out data/tts       # once: synthesise, time and encode
    python recipes/train_tts.py --config recipes/configs/tts_small.json --out runs/tts_small
    torchrun --standalone --nproc_per_node 2 recipes/train_tts.py --config ... --out ...   # DDP (gloo on CPU)

Rows are utterances of ``data/tts/train.safetensors`` (codes of the codec's first K levels,
phones and their start frames), laid out by :func:`mmar.tasks.tts.training_batch`: a fraction
``train.edit`` become editing rows (1–3 spans of whole phones moved to the end), the rest plain
TTS rows. Batches hold ~``train.batch_tokens`` stream steps of utterances of similar length.
The loss is the per-level cross-entropy weighted by ``train.level_weights``.

Validation (``valid.jsonl``, every ``train.eval_every`` steps): per-level cross-entropy of the
valid split's plain rows, and the same with every row's phones swapped for another row's
(``ce0_wrong_text``): the gap says how much the model reads the text. Resumes from
``<out>/state.safetensors``; exports a ``tts`` checkpoint to ``<out>/export`` (with a default
voice: a train utterance of ``data.default_voice``).

Knobs: ``train.init`` (a TTS checkpoint of the same shape to start from instead of random
weights: e.g. the previous model, when only the codec changed), ``optim.minutes`` (a wall-clock
budget the LR schedule follows), ``train.weight_ema``,
``train.device`` ("auto": the GPU when there is one), ``train.cpu_bfloat16`` (bfloat16 autocast on
the CPU).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

from mmar.checkpoint import checkpoint_for, inference_state, load_pretrained, save_pretrained, substate
from mmar.tasks.codec import load_codec
from mmar.tasks.tts import TrainingLoss, export_config, from_config, training_batch
from mmar.training import (Budget, MetricsLog, WeightEMA, append_jsonl, autocast, load_state, lr_at, optimizer_step,
                           pick_device, save_state, setup_distributed)

Row = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def load_rows(root: Path, split: str, levels: int) -> tuple[list[Row], list[dict]]:
    """A corpus split → its utterances (codes int64 [K, T], phones [N], starts [N]) and metadata."""
    t = load_file(str(root / f"{split}.safetensors"))
    meta = json.loads((root / f"{split}.json").read_text())["utterances"]
    fo, po = t["frame_offsets"].tolist(), t["phone_offsets"].tolist()
    if t["codes"].shape[0] < levels:
        raise SystemExit(f"{root}: the corpus has {t['codes'].shape[0]} codec levels, the config wants {levels}")
    rows = [(t["codes"][:levels, fo[i] : fo[i + 1]].long(), t["phones"][po[i] : po[i + 1]].long(),
             t["starts"][po[i] : po[i + 1]].long()) for i in range(len(fo) - 1)]
    return rows, meta


def default_voice(rows: list[Row], meta: list[dict], name: str) -> dict:
    """The first train utterance of voice ``name`` (unshifted) lasting 2.5–4 s (else its longest
    under 4 s), as a JSON-able prompt; {} when the voice has none."""
    mine = [i for i, m in enumerate(meta) if m["name"] == name and rows[i][0].shape[1] <= 200]
    if not mine:
        return {}
    i = next((i for i in mine if rows[i][0].shape[1] >= 125), max(mine, key=lambda i: rows[i][0].shape[1]))
    codes, phones, starts = rows[i]
    return {"codes": codes.tolist(), "phones": phones.tolist(), "starts": starts.tolist(), "text": meta[i]["text"], "voice": name}


class LengthBatches:
    """Batches of ~``tokens`` stream steps from utterances of similar length (a random window of
    the length-sorted order), drawn from ``gen``."""

    def __init__(self, rows: list[Row], tokens: int, gen: torch.Generator):
        self.lengths = torch.tensor([r[0].shape[1] + 2 * len(r[1]) for r in rows])  # frames + markers + prefix
        self.order, self.tokens, self.gen = self.lengths.argsort(), tokens, gen

    def __call__(self) -> list[int]:
        i = int(torch.randint(0, len(self.order), (), generator=self.gen))
        n = max(1, self.tokens // int(self.lengths[self.order[i]]))
        lo = max(0, min(i - 2 * n, len(self.order) - 4 * n))
        window = self.order[lo : lo + 4 * n]
        return window[torch.randperm(len(window), generator=self.gen)[:n]].tolist()


@torch.no_grad()
def valid_ce(loss: TrainingLoss, tts, rows: list[Row], wrong_text: bool = False, batch: int = 16,
             edit: bool = False) -> list[float]:
    """Per-level cross-entropy (nats per step) of plain TTS rows; ``wrong_text``: each row's
    phones replaced by the next row's (its timings kept where they fit); ``edit``: every row an
    editing row instead, its spans drawn by a fixed seed (the same spans at every evaluation)."""
    was = loss.training
    loss.eval()
    dev = next(loss.parameters()).device
    total, n = torch.zeros(tts.levels), 0
    gen = torch.Generator().manual_seed(0)
    for i in range(0, len(rows), batch):
        part = rows[i : i + batch]
        if wrong_text:
            other = rows[i + 1 : i + batch + 1] + rows[:1]
            part = [(c, o[1].repeat(len(p) // len(o[1]) + 1)[: len(p)], s) for (c, p, s), o in zip(part, other)]
        stream, lengths, prefix = training_batch(tts, part, [edit] * len(part), gen)
        _, ce = loss(stream.to(dev), lengths.to(dev), prefix.to(dev))
        total += ce.cpu() * len(part)
        n += len(part)
    loss.train(was)
    return (total / max(n, 1)).tolist()


def checkpoint_config(cfg: dict, rows: list[Row], meta: list[dict], root: Path) -> dict:
    """The exported checkpoint's config: the model, the identity of the codec whose codes the
    corpus at ``root`` holds (as the corpus recorded it), a default voice."""
    mc, dc = cfg["model"], cfg["data"]
    weights, size = "", 1024
    if dc.get("codec_identity", True):
        weights = json.loads((root / "train.json").read_text()).get("codec_weights")
        if not weights:
            raise SystemExit(f"{root}: the corpus does not record its codec (built before codec_weights "
                             "was written): rebuild it with python -m mmar.data.tts_corpus")
        size = load_codec(checkpoint_for(weights)).model.codebook_size
    return export_config(mc, dc["levels"], weights, dc.get("max_phone_frames", 40),
                         default_voice(rows, meta, dc.get("default_voice", "slt")), cfg.get("name", "tts-16k"), size)


def init_from(model: torch.nn.Module, ckpt: Path) -> None:
    """Load the weights of the TTS checkpoint ``ckpt`` into ``model`` (same shapes, or an error)."""
    state = load_pretrained(ckpt, "tts")[0]
    mine = inference_state(model)
    wrong = sorted(k for k in mine if k not in state or state[k].shape != mine[k].shape)
    if wrong:
        raise SystemExit(f"train.init: {ckpt} does not fit this model (e.g. {wrong[0]})")
    model.load_state_dict({**model.state_dict(), **{k: state[k] for k in mine}})


def export_snapshot(cfg: dict, out: Path, dest: Path, data: Path | None = None) -> Path:
    """Export ``<out>/state.safetensors`` as it is (mid-run) to ``dest``."""
    root = Path(data or cfg["data"]["root"])
    rows, meta = load_rows(root, "train", cfg["data"]["levels"])
    config = checkpoint_config(cfg, rows, meta, root)
    tts = from_config(config)
    state = load_file(str(out / "state.safetensors"))
    tts.model.load_state_dict(substate(state, "model."))
    return save_pretrained(inference_state(tts.model), config, dest)


def train(cfg: dict, out: Path, data: Path | None = None, stop_after: int | None = None, progress: bool = True) -> dict:
    """Run (or resume) the recipe; returns the last logged metrics. ``stop_after`` ends the run
    early at that step (for the resume test)."""
    dist_info = setup_distributed()
    tc, oc, dc = cfg["train"], cfg["optim"], cfg["data"]
    device = pick_device(tc.get("device", "auto"))
    root = Path(data or dc["root"])
    levels = dc["levels"]
    rows, meta = load_rows(root, "train", levels)
    valid = load_rows(root, "valid", levels)[0][: dc.get("valid_max", 150)] if dist_info.main else []
    config = checkpoint_config(cfg, rows, meta, root)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(tc["seed"])
    tts = from_config(config)
    model = tts.model.to(device)
    if tc.get("init") and not (out / "state.safetensors").exists():  # before the EMA copies the weights
        init_from(model, Path(tc["init"]))
    ema = WeightEMA(model, tc["weight_ema"]) if tc.get("weight_ema") else None
    gen = torch.Generator().manual_seed(tc["seed"] * 1000 + dist_info.rank)
    optim = torch.optim.AdamW(model.parameters(), lr=oc["lr"], betas=tuple(oc["betas"]), weight_decay=oc["weight_decay"])
    state_path = out / "state.safetensors"
    step = load_state(state_path, model, optim, gen, ema) if state_path.exists() else 0
    objective = TrainingLoss(model, tc["level_weights"][:levels]).to(device)
    net = DDP(objective, device_ids=[device] if device.type == "cuda" else None) if dist_info.world > 1 else objective
    batches = LengthBatches(rows, tc["batch_tokens"], gen)
    total, metrics = oc["steps"], {}
    end = min(total, stop_after) if stop_after else total
    budget = Budget(end, oc.get("minutes"))
    bar = tqdm(total=end, initial=step, disable=not (progress and dist_info.main), desc="tts", dynamic_ncols=True)
    cols = ["loss"] + [f"ce{k}" for k in range(levels)] + ["lr"]
    mlog = MetricsLog(out / "metrics.csv", cols, tc["log_every"], step == 0, dist_info.main)
    while not budget.done(step):
        lr = lr_at(budget.schedule_step(step), oc["lr"], oc["warmup"], total)
        for group in optim.param_groups:
            group["lr"] = lr
        idx = batches()
        edit = (torch.rand(len(idx), generator=gen) < tc["edit"]).tolist()
        stream, lengths, prefix = training_batch(tts, [rows[i] for i in idx], edit, gen)
        with autocast(device, cpu_bfloat16=tc.get("cpu_bfloat16", False)):
            loss, ce = net(stream.to(device), lengths.to(device), prefix.to(device))
        optimizer_step(loss, optim, model.parameters(), oc["grad_clip"], ema, model)
        step += 1
        bar.update(1)
        if mlog.due(step):
            metrics = {"step": step, "loss": loss.item(), "lr": lr}
            mlog.write(step, [f"{loss.item():.5f}", *[f"{x:.4f}" for x in ce.tolist()], f"{lr:.3e}"])
            bar.set_postfix(loss=f"{loss.item():.3f}", ce0=f"{ce[0].item():.3f}")
        last = budget.done(step)
        if valid and ((tc["eval_every"] and step % tc["eval_every"] == 0) or last):
            scored = TrainingLoss(ema.model if ema is not None else model, tc["level_weights"][:levels]).to(device)
            ce_right, ce_wrong = valid_ce(scored, tts, valid), valid_ce(scored, tts, valid, wrong_text=True)
            ce_edit = valid_ce(scored, tts, valid, edit=True)
            ev = {**{f"valid_ce{k}": round(v, 4) for k, v in enumerate(ce_right)}, "ce0_wrong_text": round(ce_wrong[0], 4),
                  "valid_edit_ce0": round(ce_edit[0], 4)}
            metrics.update(ev)
            append_jsonl(out / "valid.jsonl", {"step": step, **ev})
        if dist_info.main and (step % tc["save_every"] == 0 or last):
            save_state(state_path, model, optim, step, gen, {"config": cfg}, ema)
    bar.close()
    mlog.close()
    if dist_info.main and (step >= total or oc.get("minutes")):
        save_pretrained(inference_state((ema.model if ema is not None else model).cpu()), config, out / "export")
    return metrics


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True, type=Path)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--data", type=Path, help="folder written by python -m mmar.data.tts_corpus (overrides data.root)")
    ap.add_argument("--steps", type=int, help="override optim.steps")
    ap.add_argument("--minutes", type=float, help="override optim.minutes (a wall-clock budget the LR schedule follows)")
    ap.add_argument("--init", type=Path, help="a TTS checkpoint of the same shape to start from (overrides train.init)")
    ap.add_argument("--export-only", type=Path, metavar="DIR", help="export <out>/state.safetensors as it is to DIR and exit")
    args = ap.parse_args(argv)
    cfg = json.loads(args.config.read_text())
    if args.export_only:
        print(export_snapshot(cfg, args.out, args.export_only, args.data))
        return 0
    if args.steps:
        cfg["optim"]["steps"] = args.steps
    if args.minutes:
        cfg["optim"]["minutes"] = args.minutes
    if args.init:
        cfg["train"]["init"] = str(args.init)
    print(json.dumps(train(cfg, args.out, args.data)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
