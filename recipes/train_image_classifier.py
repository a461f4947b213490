"""Train the emoji classifier whose features and labels score generated images (``mmar bench image``).

    python -m mmar.data.emoji --out data/emoji        # once
    python recipes/train_image_classifier.py --data data/emoji --out runs/emoji_classifier --minutes 8

Trains :class:`mmar.eval.image_classifier.EmojiClassifier` on the training split only (with the
augmentation of :func:`mmar.data.emoji.augment`, and half of each batch blurred: generated images
are blurry), cross-entropy on group + subgroup. Every
``--eval-every`` steps the validation split is scored and the weights with the best validation
subgroup accuracy are exported to ``<out>/export`` (the test split is never looked at).
Resumes from ``<out>/state.safetensors``; ``metrics.csv`` and ``valid.jsonl`` log the run.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from mmar.checkpoint import inference_state, save_pretrained
from mmar.data.emoji import augment, load_split
from mmar.eval.image_classifier import EmojiClassifier, export_config, topk_accuracy
from mmar.training import Budget, MetricsLog, append_jsonl, load_state, lr_at, optimizer_step, save_state


def labels(root: Path) -> tuple[list[str], list[str]]:
    """Sorted groups and subgroups of every emoji in the folder (all splits: the label set, not the data)."""
    entries = json.loads((root / "index.json").read_text())["entries"]
    return sorted({e["group"] for e in entries}), sorted({e["subgroup"] for e in entries})


def targets(entries: list[dict], groups: list[str], subgroups: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    return (torch.tensor([groups.index(e["group"]) for e in entries]),
            torch.tensor([subgroups.index(e["subgroup"]) for e in entries]))


def blur(x: torch.Tensor, gen: torch.Generator, p: float = 0.5) -> torch.Tensor:
    """Half the images [B, 3, H, W] go down to a random 12–32 px side and back up (bilinear): the
    classifier must judge blurry generated images, not only crisp renders."""
    side = int(torch.randint(12, 33, (1,), generator=gen))
    soft = F.interpolate(F.interpolate(x, size=(side, side), mode="bilinear", antialias=True, align_corners=False),
                         size=x.shape[-2:], mode="bilinear", align_corners=False)
    pick = (torch.rand(len(x), generator=gen) < p).view(-1, 1, 1, 1)
    return torch.where(pick, soft, x)


@torch.no_grad()
def evaluate(model: EmojiClassifier, images: torch.Tensor, g: torch.Tensor, s: torch.Tensor) -> dict:
    model.eval()
    _, gl, sl = model(images)
    model.train()
    return {"group_top1": topk_accuracy(gl, g, 1), "subgroup_top1": topk_accuracy(sl, s, 1),
            "subgroup_top5": topk_accuracy(sl, s, 5)}


def train(root: Path, out: Path, steps: int = 4000, minutes: float | None = None, batch: int = 64, lr: float = 2e-3,
          width: int = 32, feature_dim: int = 128, eval_every: int = 100, seed: int = 0, progress: bool = True,
          stop_after: int | None = None) -> dict:
    """Run (or resume) the recipe → the best validation scores (and the step they were reached)."""
    groups, subgroups = labels(root)
    split = load_split(root, "train")
    x_all = split.tensors()
    g_all, s_all = targets(split.entries, groups, subgroups)
    valid = load_split(root, "valid")
    vx, (vg, vs) = valid.tensors(), targets(valid.entries, groups, subgroups)
    torch.manual_seed(seed)
    model = EmojiClassifier(len(groups), len(subgroups), width, feature_dim)
    optim = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    gen = torch.Generator().manual_seed(seed)
    out.mkdir(parents=True, exist_ok=True)
    state_path = out / "state.safetensors"
    step = load_state(state_path, model, optim, gen) if state_path.exists() else 0
    best_path = out / "best.json"
    best = json.loads(best_path.read_text()) if best_path.exists() else {"subgroup_top1": -1.0}
    end = min(steps, stop_after) if stop_after else steps
    budget = Budget(end, minutes)
    mlog = MetricsLog(out / "metrics.csv", ["loss", "lr"], 10, step == 0)
    bar = tqdm(total=end, initial=step, disable=not progress, desc="classifier", dynamic_ncols=True)
    while not budget.done(step):
        rate = lr_at(budget.schedule_step(step), lr, 100, steps)
        for group in optim.param_groups:
            group["lr"] = rate
        idx = torch.randint(0, len(x_all), (batch,), generator=gen)
        x = blur(augment(x_all[idx], split.flippable[idx], gen), gen)
        _, gl, sl = model(x)
        loss = F.cross_entropy(gl, g_all[idx]) + F.cross_entropy(sl, s_all[idx])
        optimizer_step(loss, optim, model.parameters(), 1.0)
        step += 1
        bar.update(1)
        if mlog.due(step):
            mlog.write(step, [f"{loss.item():.5f}", f"{rate:.3e}"])
        last = budget.done(step)
        if step % eval_every == 0 or last:
            ev = evaluate(model, vx, vg, vs)
            append_jsonl(out / "valid.jsonl", {"step": step, **ev})
            if ev["subgroup_top1"] > best["subgroup_top1"]:
                best = {"step": step, **ev}
                save_pretrained(inference_state(model), export_config(groups, subgroups, width, feature_dim), out / "export")
                best_path.write_text(json.dumps(best))
            save_state(state_path, model, optim, step, gen, {})
    bar.close()
    mlog.close()
    return best


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("data/emoji"))
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--steps", type=int, default=4000)
    ap.add_argument("--minutes", type=float, default=None, help="wall-clock budget the LR schedule follows")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--eval-every", type=int, default=100)
    args = ap.parse_args(argv)
    print(json.dumps(train(args.data, args.out, args.steps, args.minutes, args.batch, args.lr, eval_every=args.eval_every)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
