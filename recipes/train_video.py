"""Train the frame-autoregressive video model (video-64) on moving-sprite clips.

    python -m mmar.data.emoji --out data/emoji        # once: the sprites and their split
    python recipes/train_video.py --config recipes/configs/video_small.json \
        --tokenizer-checkpoint checkpoints/image-vae-64 --out runs/video_small
    torchrun --nproc_per_node 2 recipes/train_video.py --config ... --out ...   # DDP (gloo on CPU)

Step 1 renders ``data.clips`` training clips of ``data.frames`` frames (:class:`mmar.data.sprites.SpriteClips`,
train split: the test split's sprites are never seen) and ``data.valid_clips`` validation clips,
encodes every frame with the σ-VAE and caches the latents in ``<out>/latents.safetensors`` (keyed
by the VAE's weights and the data settings). Step 2 trains :class:`mmar.tasks.video.VideoNet` on
random windows of ``train.frames`` consecutive frames after the clip's caption, at the positions
they hold in the clip plus a random jump of up to ``train.position_jitter`` frames (the caption is
dropped to ``<null>`` with probability ``train.caption_dropout`` for CFG); ``train.clean_p`` of the frames
are clean context. With ``train.caption_windows`` p, a batch is instead, with probability p, the
clips' first ``train.caption_frames`` frames (default ``train.frames``) at their own positions, the
first clean with probability ``train.caption_first_clean`` (default 0) and none after it: only the
caption tells the motion, as in caption-only sampling (a clean first frame is what the second
frame sees there). With ``model.motion_base`` the cache also holds each frame's motion-predicted
base (:mod:`mmar.tasks.video_base`) and the model learns each frame's change from it. Resumes from ``<out>/state.safetensors``; ``metrics.csv`` logs the loss,
``valid.jsonl`` the loss on the validation clips with a fixed noise draw (on their first window,
and on their last, whose frames follow others: what ``model.memory`` sees). The export in
``<out>/export`` is a ``video`` checkpoint (``mmar video generate --checkpoint <out>/export``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

from mmar.checkpoint import inference_state, save_pretrained
from mmar.data.sprite_latents import load_data
from mmar.tasks.image_latent import load_image_vae
from mmar.tasks.video import export_config, from_config, load_video
from mmar.text.captions import CaptionVocab
from mmar.training import (Budget, MetricsLog, WeightEMA, append_jsonl, autocast, load_state, lr_at, optimizer_step,
                           pick_device, save_state, setup_distributed)

@torch.no_grad()
def valid_loss(net, vm, latents: torch.Tensor, captions: list[str], frames: int, clean_p: float, batch: int = 16,
               start: int = 0, bases: torch.Tensor | None = None) -> float:
    """The training loss on ``frames`` frames of validation clips from ``start`` (the frames before
    it: long-term context), with one fixed noise draw (``bases``: the clips' motion-predicted bases,
    for a ``motion_base`` model)."""
    was = net.training
    net.eval()
    gen, dev = torch.Generator().manual_seed(1234), next(net.parameters()).device
    total, n = 0.0, 0
    for i in range(0, len(latents), batch):
        z, older = latents[i:i + batch, start:start + frames], latents[i:i + batch, :start]
        prefix = vm.vocab.batch(captions[i:i + batch])
        base = None if bases is None else bases[i:i + batch, start:start + frames].to(dev)
        total += float(net(z.to(dev), prefix.to(dev), clean_p, gen, older.to(dev), base=base)) * len(z)
        n += len(z)
    net.train(was)
    return total / max(n, 1)


def train(cfg: dict, out: Path, data: Path | None = None, tokenizer: Path | None = None, stop_after: int | None = None,
          progress: bool = True, init: Path | None = None) -> dict:
    """Run (or resume) the recipe → the last logged metrics. ``stop_after`` ends early (resume test);
    ``init`` starts a new run from a video checkpoint's weights (same model, vocabulary and grid)."""
    dist_info = setup_distributed()
    mc, tc, oc, dc = cfg["model"], cfg["train"], cfg["optim"], cfg["data"]
    device = pick_device(tc.get("device", "auto"))
    root = Path(data or dc["root"])
    tok = load_image_vae(tokenizer or (Path(dc["tokenizer"]) if dc.get("tokenizer") else None))
    tok.model.to(device)  # encodes the clips there (seconds on a GPU)
    out.mkdir(parents=True, exist_ok=True)
    motion_base = mc.get("motion_base", False)
    d = load_data(tok, root, dc, tc["seed"], mc["caption_len"], out / "latents.safetensors" if dist_info.main else None,
                  motion_base)
    vocab = CaptionVocab.build(d["train_captions"], mc["caption_len"])
    config = export_config(mc, cfg["head"], vocab, tok.model.latent_dim, tuple(tok.cfg.grid), mc["window"], tok,
                           cfg.get("name", "video-64"), mc.get("local", 0), mc.get("residual", False), mc.get("memory", False),
                           motion_base)
    torch.manual_seed(tc["seed"])
    vm = from_config(config)
    model = vm.model.to(device)
    if init is not None:
        src = load_video(init)
        if src.vocab.itos != vocab.itos or src.grid != vm.grid or src.tokenizer_weights != vm.tokenizer_weights:
            raise SystemExit(f"--init {init}: its vocabulary, grid or σ-VAE differ from this run's")
        missing, unexpected = model.load_state_dict(src.model.state_dict(), strict=False)
        if unexpected or any(not k.startswith(("prev.", "longterm.")) for k in missing):  # only new maps may be new
            raise SystemExit(f"--init {init}: its weights do not fit this model ({(unexpected or missing)[:3]})")
    ema = WeightEMA(model, tc["weight_ema"]) if tc.get("weight_ema") else None
    train_lat, train_caps, train_base = d["train"], d["train_captions"], d.get("train_base")
    prefixes = vocab.batch(train_caps)
    gen = torch.Generator().manual_seed(tc["seed"] * 1000 + dist_info.rank)
    optim = torch.optim.AdamW(model.parameters(), lr=oc["lr"], betas=tuple(oc["betas"]), weight_decay=oc["weight_decay"])
    state_path = out / "state.safetensors"
    step = load_state(state_path, model, optim, gen, ema) if state_path.exists() else 0
    net = DDP(model, device_ids=[device] if device.type == "cuda" else None) if dist_info.world > 1 else model
    total, metrics, window = oc["steps"], {}, tc["frames"]
    end = min(total, stop_after) if stop_after else total
    budget = Budget(end, oc.get("minutes"))
    bar = tqdm(total=end, initial=step, disable=not (progress and dist_info.main), desc="video", dynamic_ncols=True)
    mlog = MetricsLog(out / "metrics.csv", ["loss", "lr"], tc["log_every"], step == 0, dist_info.main)
    while not budget.done(step):
        lr = lr_at(budget.schedule_step(step), oc["lr"], oc["warmup"], total)
        for group in optim.param_groups:
            group["lr"] = lr
        b = tc["batch_size"]
        idx = torch.randint(0, len(train_lat), (b,), generator=gen)
        start = torch.randint(0, train_lat.shape[1] - window + 1, (1,), generator=gen).item()
        clean_p, caption_only, frames = tc["clean_p"], False, window
        if tc.get("caption_windows") and torch.rand(1, generator=gen).item() < tc["caption_windows"]:
            # a clip's first frames from its caption alone (the first perhaps clean): what sets the motion
            start, caption_only, frames = 0, True, tc.get("caption_frames") or window
            clean_p = torch.zeros(frames)
            clean_p[0] = tc.get("caption_first_clean", 0.0)
        z, older = train_lat[idx, start:start + frames], train_lat[idx, :start]
        prefix = prefixes[idx].clone()
        prefix[torch.rand(b, generator=gen) < tc["caption_dropout"]] = vocab.null_batch(1)
        shift = start  # positions as in a rollout, plus a random jump so later frames are seen too
        if tc.get("position_jitter") and not caption_only:
            shift += int(torch.randint(0, tc["position_jitter"] + 1, (1,), generator=gen))
        with autocast(device):
            base = None if train_base is None else train_base[idx, start:start + frames].to(device)
            loss = net(z.to(device), prefix.to(device), clean_p, gen, older.to(device), shift, base)
        optimizer_step(loss, optim, model.parameters(), oc["grad_clip"], ema, model)
        step += 1
        bar.update(1)
        if mlog.due(step):
            metrics = {"step": step, "loss": loss.item(), "lr": lr}
            mlog.write(step, [f"{loss.item():.6f}", f"{lr:.3e}"])
            bar.set_postfix(loss=f"{loss.item():.4f}")
        last = budget.done(step)
        if dist_info.main and len(d["valid"]) and ((tc["eval_every"] and step % tc["eval_every"] == 0) or last):
            scored = ema.model if ema is not None else model
            late = d["valid"].shape[1] - window  # the last window, after frames that left it (long-term context)
            vb = d.get("valid_base")
            ev = {"valid_loss": valid_loss(scored, vm, d["valid"], d["valid_captions"], window, tc["clean_p"], bases=vb),
                  "valid_loss_late": valid_loss(scored, vm, d["valid"], d["valid_captions"], window, tc["clean_p"], start=late,
                                                bases=vb)}
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
    ap.add_argument("--data", type=Path, help="emoji folder written by python -m mmar.data.emoji (overrides data.root)")
    ap.add_argument("--tokenizer-checkpoint", type=Path, help="image_vae checkpoint directory (overrides data.tokenizer)")
    ap.add_argument("--init", type=Path, metavar="DIR", help="start a new run from this video checkpoint's weights")
    ap.add_argument("--steps", type=int, help="override optim.steps")
    ap.add_argument("--minutes", type=float, help="override optim.minutes (a wall-clock budget the LR schedule follows)")
    args = ap.parse_args(argv)
    cfg = json.loads(args.config.read_text())
    if args.steps:
        cfg["optim"]["steps"] = args.steps
    if args.minutes:
        cfg["optim"]["minutes"] = args.minutes
    print(json.dumps(train(cfg, args.out, args.data, args.tokenizer_checkpoint, init=args.init)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
