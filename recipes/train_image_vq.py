"""Train the mmar image tokenizer (CNN encoder → FSQ → CNN decoder, 64×64 → 8×8 codes) on emoji.

    python -m mmar.data.emoji --out data/emoji        # once: render + split the emoji set
    python recipes/train_image_vq.py --config recipes/configs/image_vq_small.json --out runs/image_vq_small
    torchrun --nproc_per_node 2 recipes/train_image_vq.py --config ... --out ...   # DDP (gloo on CPU)

Resumes from ``<out>/state.safetensors`` when it exists. Writes ``metrics.csv`` (step, losses, lr,
seconds per step), ``valid.jsonl`` (validation PSNR of the reconstructions, next to the PSNR of an
upsampled 16×16 bicubic thumbnail as a reference; codebook usage and perplexity of the validation
codes) and, at the end, an inference checkpoint in ``<out>/export`` (``load_tokenizer("image_vq", <out>/export)``).

Config knobs: ``model`` (:class:`mmar.tokenizers.image_vq.ImageVQConfig`), ``data.root`` (the
folder :mod:`mmar.data.emoji` wrote), ``data.augment`` (null, or the keyword arguments of
:func:`mmar.data.emoji.augment`), ``train.loss`` (weights of L1, MSE and the image-gradient L1),
``train.device`` ("auto": the GPU when there is one), ``train.weight_ema`` (> 0: export an EMA of
the weights), ``optim.minutes`` (a wall-clock budget the LR schedule follows).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

from mmar.checkpoint import inference_state, save_pretrained, substate
from mmar.data.emoji import augment, load_split
from mmar.tokenizers.image_vq import ImageVQ, code_usage, config_from_dict, export_config, psnr, reconstruction_loss
from mmar.training import (Budget, MetricsLog, WeightEMA, append_jsonl, load_state, lr_at, optimizer_step, pick_device,
                           save_state, setup_distributed)


@torch.no_grad()
def evaluate(model: ImageVQ, images: torch.Tensor, batch: int = 128) -> dict[str, float]:
    """Validation images float [M, 3, H, W] → mean PSNR (dB) of the code round trip, codebook
    usage (distinct codes / V) and perplexity of the codes."""
    was_training = model.training
    model.eval()
    scores, counts = [], torch.zeros(model.codebook_size)
    for i in range(0, len(images), batch):
        x = images[i:i + batch]
        codes = model.encode(x).codes
        scores.append(psnr(model.decode(codes), x))
        counts += torch.bincount(codes.flatten().cpu(), minlength=model.codebook_size).float()
    model.train(was_training)
    usage, perplexity = code_usage(counts)
    return {"valid_psnr": float(torch.cat(scores).mean()), "codebook_usage": usage, "perplexity": perplexity}


def thumbnail_psnr(images: torch.Tensor, side: int = 16) -> float:
    """Mean PSNR of images [M, 3, H, W] downsampled to side×side (bicubic, antialiased) and back:
    the reference a tokenizer of 8×8 codes should beat."""
    small = F.interpolate(images, size=(side, side), mode="bicubic", antialias=True, align_corners=False)
    back = F.interpolate(small, size=images.shape[-2:], mode="bicubic", align_corners=False)
    return float(psnr(back, images).mean())


def train(cfg: dict, out: Path, data: Path | None = None, stop_after: int | None = None, progress: bool = True) -> dict:
    """Run (or resume) the recipe; returns the last logged metrics (with the final validation
    scores when the data has a validation split). ``stop_after`` ends the run early at that step
    (used to test that resuming equals an uninterrupted run)."""
    dist_info = setup_distributed()
    tc, oc, dc = cfg["train"], cfg["optim"], cfg["data"]
    device = pick_device(tc.get("device", "auto"))
    torch.manual_seed(tc["seed"])
    model = ImageVQ(config_from_dict(cfg["model"])).to(device)
    ema = WeightEMA(model, tc["weight_ema"]) if tc.get("weight_ema") else None
    root = Path(data or dc["root"])
    split = load_split(root, "train")
    images = torch.from_numpy(split.images).permute(0, 3, 1, 2).contiguous()  # uint8 [N, 3, H, W]
    flippable = split.flippable
    gen = torch.Generator().manual_seed(tc["seed"] * 1000 + dist_info.rank)
    optim = torch.optim.AdamW(model.parameters(), lr=oc["lr"], betas=tuple(oc["betas"]), weight_decay=oc["weight_decay"])
    out.mkdir(parents=True, exist_ok=True)
    state_path = out / "state.safetensors"
    step = load_state(state_path, model, optim, gen, ema) if state_path.exists() else 0
    valid = None
    if dist_info.main and (root / "valid.npz").exists():
        valid = load_split(root, "valid").tensors()[: dc.get("valid_max", 512)].to(device)
        if len(valid) == 0:
            valid = None
    if valid is not None and not (out / "valid.jsonl").exists():
        append_jsonl(out / "valid.jsonl", {"step": 0, "thumbnail16_psnr": thumbnail_psnr(valid.cpu()), "images": len(valid)})
    net = DDP(model, device_ids=[device] if device.type == "cuda" else None) if dist_info.world > 1 else model
    weights = tc.get("loss", {})
    total, metrics = oc["steps"], {}
    end = min(total, stop_after) if stop_after else total
    budget = Budget(end, oc.get("minutes"))
    bar = tqdm(total=end, initial=step, disable=not (progress and dist_info.main), desc="image_vq", dynamic_ncols=True)
    mlog = MetricsLog(out / "metrics.csv", ["loss", "l1", "mse", "grad", "lr"], tc["log_every"], step == 0, dist_info.main)
    while not budget.done(step):
        lr = lr_at(budget.schedule_step(step), oc["lr"], oc["warmup"], total)
        for group in optim.param_groups:
            group["lr"] = lr
        idx = torch.randint(0, len(images), (tc["batch_size"],), generator=gen)
        x = images[idx].float().div_(255)
        if dc.get("augment"):
            x = augment(x, flippable[idx], gen, **dc["augment"])
        x = x.to(device)
        rec, _ = net(x)
        loss, terms = reconstruction_loss(rec, x, **weights)
        optimizer_step(loss, optim, model.parameters(), oc["grad_clip"], ema, model)
        step += 1
        bar.update(1)
        if mlog.due(step):
            vals = {k: terms[k].item() if k in terms else 0.0 for k in ("l1", "mse", "grad")}
            metrics = {"step": step, "loss": loss.item(), **vals, "lr": lr}
            mlog.write(step, [f"{loss.item():.6f}", *(f"{v:.6f}" for v in vals.values()), f"{lr:.3e}"])
            bar.set_postfix(loss=f"{loss.item():.4f}")
        last = budget.done(step)
        if valid is not None and ((tc["eval_every"] and step % tc["eval_every"] == 0) or last):
            ev = evaluate(ema.model if ema is not None else model, valid)
            metrics.update(ev)
            append_jsonl(out / "valid.jsonl", {"step": step, **ev})
        if dist_info.main and (step % tc["save_every"] == 0 or last):
            save_state(state_path, model, optim, step, gen, {"config": cfg}, ema)
    bar.close()
    mlog.close()
    if dist_info.main and (step >= total or oc.get("minutes")):
        export((ema.model if ema is not None else model).cpu(), out / "export")
    return metrics


def export(model: ImageVQ, out: Path, name: str = "image-vq-64") -> Path:
    """Write the inference weights as an fp16 checkpoint directory (``kind: "image_vq"``)."""
    return save_pretrained(inference_state(model), export_config(model, name), out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True, type=Path)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--data", type=Path, help="emoji folder written by python -m mmar.data.emoji (overrides data.root)")
    ap.add_argument("--steps", type=int, help="override optim.steps")
    ap.add_argument("--minutes", type=float, help="override optim.minutes (a wall-clock budget the LR schedule follows)")
    ap.add_argument("--export-only", type=Path, metavar="DIR", help="export <out>/state.safetensors as it is to DIR and exit")
    args = ap.parse_args(argv)
    cfg = json.loads(args.config.read_text())
    if args.export_only:
        model = ImageVQ(config_from_dict(cfg["model"]))
        model.load_state_dict(substate(load_file(str(args.out / "state.safetensors")), "model."))
        print(export(model, args.export_only))
        return 0
    if args.steps:
        cfg["optim"]["steps"] = args.steps
    if args.minutes:
        cfg["optim"]["minutes"] = args.minutes
    print(json.dumps(train(cfg, args.out, args.data)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
