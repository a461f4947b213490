"""Train an mmar image tokenizer on emoji: ``image_vq`` (CNN encoder → FSQ → CNN decoder, 64×64 →
8×8 codes) or, with ``"kind": "image_vae"`` in the config, the σ-VAE (64×64 → 8×8 latents).

    python -m mmar.data.emoji --out data/emoji        # once: render + split the emoji set
    python recipes/train_image_tokenizer.py --config recipes/configs/image_vq_small.json --out runs/image_vq_small
    python recipes/train_image_tokenizer.py --config recipes/configs/image_vae_small.json --out runs/image_vae_small
    torchrun --nproc_per_node 2 recipes/train_image_tokenizer.py --config ... --out ...   # DDP (gloo on CPU)

Resumes from ``<out>/state.safetensors`` when it exists. Writes ``metrics.csv`` (step, losses, lr,
seconds per step), ``valid.jsonl`` (validation PSNR of the reconstructions, next to the PSNR of an
upsampled 16×16 bicubic thumbnail as a reference; for FSQ, codebook usage and perplexity of the
validation codes) and, at the end, an inference checkpoint in ``<out>/export``
(``load_tokenizer(kind, <out>/export)``; a VAE's export stores the per-channel statistics of the
training latents, which normalise them).

Config knobs: ``kind`` ("image_vq", the default, or "image_vae"), ``model``
(:class:`~mmar.tokenizers.image_vq.ImageVQConfig` or :class:`~mmar.tokenizers.image_vae.ImageVAEConfig`),
``data.root`` (the folder :mod:`mmar.data.emoji` wrote), ``data.source`` ("emoji", the default:
the renders; "sprites": ``data.frames_per_clip`` random frames of each of ``data.clips`` clips of
:mod:`mmar.data.sprites` from the same split, what a video model's tokenizer sees), ``data.augment`` (null, or the keyword arguments of
:func:`mmar.data.emoji.augment`), ``train.loss`` (weights of L1, MSE and the image-gradient L1, and
for the VAE ``pull``: the weight of the L2 pull of the latent means toward 0),
``train.device`` ("auto": the GPU when there is one), ``train.weight_ema`` (> 0: export an EMA of
the weights), ``optim.minutes`` (a wall-clock budget the LR schedule follows).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

from mmar.checkpoint import inference_state, load_pretrained, save_pretrained, substate
from mmar.data.emoji import augment, load_split
from mmar.tokenizers import image_vae, image_vq
from mmar.tokenizers.image_cnn import psnr, reconstruction_loss
from mmar.training import (Budget, MetricsLog, WeightEMA, append_jsonl, load_state, lr_at, optimizer_step, pick_device,
                           save_state, setup_distributed)


KINDS = {"image_vq": (image_vq.ImageVQ, image_vq.config_from_dict, image_vq.export_config, "image-vq-64"),
         "image_vae": (image_vae.ImageVAE, image_vae.config_from_dict, image_vae.export_config, "image-vae-64")}


def build(cfg: dict):
    """The untrained tokenizer a recipe config describes (``kind`` picks the family)."""
    kind = cfg.get("kind", "image_vq")
    if kind not in KINDS:
        raise ValueError(f"unknown tokenizer kind {kind!r}; choose from {', '.join(KINDS)}")
    cls, from_dict, _, _ = KINDS[kind]
    return cls(from_dict(cfg["model"]))


@torch.no_grad()
def evaluate(model, images: torch.Tensor, batch: int = 128) -> dict[str, float]:
    """Validation images float [M, 3, H, W] → mean PSNR (dB) of the round trip through the codes
    (or latents); for FSQ also codebook usage (distinct codes / V) and perplexity of the codes."""
    was_training = model.training
    model.eval()
    vq = isinstance(model, image_vq.ImageVQ)
    scores, counts = [], torch.zeros(model.codebook_size)
    for i in range(0, len(images), batch):
        x = images[i:i + batch]
        enc = model.encode(x)
        scores.append(psnr(model.decode(enc.codes) if vq else model.decode_latents(enc.latents), x))
        if vq:
            counts += torch.bincount(enc.codes.flatten().cpu(), minlength=model.codebook_size).float()
    model.train(was_training)
    out = {"valid_psnr": float(torch.cat(scores).mean())}
    if vq:
        out["codebook_usage"], out["perplexity"] = image_vq.code_usage(counts)
    return out


def thumbnail_psnr(images: torch.Tensor, side: int = 16) -> float:
    """Mean PSNR of images [M, 3, H, W] downsampled to side×side (bicubic, antialiased) and back:
    the reference a tokenizer of 8×8 codes should beat."""
    small = F.interpolate(images, size=(side, side), mode="bicubic", antialias=True, align_corners=False)
    back = F.interpolate(small, size=images.shape[-2:], mode="bicubic", align_corners=False)
    return float(psnr(back, images).mean())


def source_images(root: Path, split: str, dc: dict, seed: int = 0, limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The images of a split → (uint8 [N, 3, H, W], flippable bool [N]): emoji renders, or with
    ``data.source`` "sprites", frames of that split's sprite clips (reproducible from ``seed``);
    ``limit``: at most that many sprite frames."""
    source = dc.get("source", "emoji")
    if source == "emoji":
        s = load_split(root, split)
        return torch.from_numpy(s.images).permute(0, 3, 1, 2).contiguous(), s.flippable
    if source != "sprites":
        raise SystemExit(f"data.source must be emoji or sprites, not {source!r}")
    from mmar.data.sprites import SpriteClips

    clips = SpriteClips(root, split, frames=16, size=dc.get("size", 64))
    n, per = int(dc.get("clips", 1500)), int(dc.get("frames_per_clip", 4))
    n = min(n, -(-limit // per)) if limit else n
    rng = np.random.default_rng([seed, ("train", "valid", "test").index(split)])
    frames = np.concatenate([clips.clip(i).frames[rng.choice(16, per, replace=False)] for i in range(n)])
    return torch.from_numpy(frames).permute(0, 3, 1, 2).contiguous(), torch.zeros(len(frames), dtype=torch.bool)


def init_from(model: torch.nn.Module, ckpt: Path, kind: str) -> None:
    """Start from the weights of the ``kind`` checkpoint ``ckpt`` (same shapes, or an error)."""
    try:
        missing, unexpected = model.load_state_dict(load_pretrained(ckpt, kind)[0], strict=False)
    except RuntimeError as e:  # a shape differs
        raise SystemExit(f"--init {ckpt}: its weights do not fit this model ({str(e).splitlines()[-1].strip()[:80]})") from None
    needed = set(inference_state(model))
    if unexpected or needed & set(missing):
        raise SystemExit(f"--init {ckpt}: its weights do not fit this model ({(unexpected or sorted(needed & set(missing)))[:3]})")


def train(cfg: dict, out: Path, data: Path | None = None, stop_after: int | None = None, progress: bool = True,
          init: Path | None = None) -> dict:
    """Run (or resume) the recipe; returns the last logged metrics (with the final validation
    scores when the data has a validation split). ``stop_after`` ends the run early at that step
    (used to test that resuming equals an uninterrupted run); ``init`` starts a new run from a
    checkpoint of the same kind and shape."""
    dist_info = setup_distributed()
    tc, oc, dc = cfg["train"], cfg["optim"], cfg["data"]
    device = pick_device(tc.get("device", "auto"))
    torch.manual_seed(tc["seed"])
    model = build(cfg)
    if init is not None and not (out / "state.safetensors").exists():
        init_from(model, init, cfg.get("kind", "image_vq"))
    model = model.to(device)
    ema = WeightEMA(model, tc["weight_ema"]) if tc.get("weight_ema") else None
    root = Path(data or dc["root"])
    images, flippable = source_images(root, "train", dc, tc["seed"])  # uint8 [N, 3, H, W]
    gen = torch.Generator().manual_seed(tc["seed"] * 1000 + dist_info.rank)
    optim = torch.optim.AdamW(model.parameters(), lr=oc["lr"], betas=tuple(oc["betas"]), weight_decay=oc["weight_decay"])
    out.mkdir(parents=True, exist_ok=True)
    state_path = out / "state.safetensors"
    step = load_state(state_path, model, optim, gen, ema) if state_path.exists() else 0
    valid = None
    if dist_info.main and (root / "valid.npz").exists():
        valid_max = dc.get("valid_max", 512)
        valid = source_images(root, "valid", dc, tc["seed"], valid_max)[0][:valid_max].float().div(255).to(device)
        if len(valid) == 0:
            valid = None
    if valid is not None and not (out / "valid.jsonl").exists():
        append_jsonl(out / "valid.jsonl", {"step": 0, "thumbnail16_psnr": thumbnail_psnr(valid.cpu()), "images": len(valid)})
    net = DDP(model, device_ids=[device] if device.type == "cuda" else None) if dist_info.world > 1 else model
    weights = dict(tc.get("loss", {}))
    pull = weights.pop("pull", 0.0)
    total, metrics = oc["steps"], {}
    end = min(total, stop_after) if stop_after else total
    budget = Budget(end, oc.get("minutes"))
    bar = tqdm(total=end, initial=step, disable=not (progress and dist_info.main), desc=cfg.get("kind", "image_vq"), dynamic_ncols=True)
    mlog = MetricsLog(out / "metrics.csv", ["loss", "l1", "mse", "grad", "pull", "lr"], tc["log_every"], step == 0, dist_info.main)
    while not budget.done(step):
        lr = lr_at(budget.schedule_step(step), oc["lr"], oc["warmup"], total)
        for group in optim.param_groups:
            group["lr"] = lr
        idx = torch.randint(0, len(images), (tc["batch_size"],), generator=gen)
        x = images[idx].float().div_(255)
        if dc.get("augment"):
            x = augment(x, flippable[idx], gen, **dc["augment"])
        x = x.to(device)
        rec, z = net(x, generator=gen) if isinstance(model, image_vae.ImageVAE) else net(x)
        loss, terms = reconstruction_loss(rec, x, **weights)
        if pull:
            terms["pull"] = z.pow(2).mean()
            loss = loss + pull * terms["pull"]
        optimizer_step(loss, optim, model.parameters(), oc["grad_clip"], ema, model)
        step += 1
        bar.update(1)
        if mlog.due(step):
            vals = {k: terms[k].item() if k in terms else 0.0 for k in ("l1", "mse", "grad", "pull")}
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
        export((ema.model if ema is not None else model).cpu(), out / "export", images)
    return metrics


def export(model, out: Path, images: torch.Tensor | None = None, name: str | None = None) -> Path:
    """Write the inference weights as an fp16 checkpoint directory (``kind`` of the model). A VAE
    first takes its latent statistics from ``images`` (uint8 [N, 3, H, W], the training split)."""
    kind = "image_vae" if isinstance(model, image_vae.ImageVAE) else "image_vq"
    _, _, export_config, default = KINDS[kind]
    if kind == "image_vae":
        if images is None:
            raise ValueError("a VAE export needs the training images for its latent statistics")
        model.eval()
        model.set_statistics(*image_vae.latent_statistics(model, images.float().div(255)))
    return save_pretrained(inference_state(model), export_config(model, name or default), out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True, type=Path)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--data", type=Path, help="emoji folder written by python -m mmar.data.emoji (overrides data.root)")
    ap.add_argument("--steps", type=int, help="override optim.steps")
    ap.add_argument("--minutes", type=float, help="override optim.minutes (a wall-clock budget the LR schedule follows)")
    ap.add_argument("--init", type=Path, metavar="DIR", help="start a new run from this tokenizer checkpoint's weights")
    ap.add_argument("--export-only", type=Path, metavar="DIR", help="export <out>/state.safetensors as it is to DIR and exit")
    args = ap.parse_args(argv)
    cfg = json.loads(args.config.read_text())
    if args.export_only:
        model = build(cfg)
        model.load_state_dict(substate(load_file(str(args.out / "state.safetensors")), "model."))
        images = source_images(Path(args.data or cfg["data"]["root"]), "train", cfg["data"], cfg["train"]["seed"])[0]
        print(export(model, args.export_only, images))
        return 0
    if args.steps:
        cfg["optim"]["steps"] = args.steps
    if args.minutes:
        cfg["optim"]["minutes"] = args.minutes
    print(json.dumps(train(cfg, args.out, args.data, init=args.init)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
