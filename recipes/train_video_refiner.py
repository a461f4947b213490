"""Train the temporal decoder of video latents (:class:`mmar.tokenizers.frame_refiner.FrameRefiner`)
on moving-sprite clips; the σ-VAE stays frozen, so the video model's latents do not change.

    python -m mmar.data.emoji --out data/emoji        # once: the sprites and their split
    python recipes/train_video_refiner.py --config recipes/configs/video_refiner.json \
        --tokenizer-checkpoint checkpoints/image-vae-64 --out runs/video_refiner

The clips and their latents are those of ``recipes/train_video.py`` (:mod:`mmar.data.sprite_latents`,
cached in ``<out>/latents.safetensors``; copy a video run's cache there to skip encoding). Each
step takes ``train.unroll`` consecutive frames of ``train.batch_size`` clips: the first is given as
it is, and each later one is decoded from its latents plus Gaussian noise of a random scale up to
``train.latent_noise`` (a generated frame's latents are not an encoder's), refined from the
refiner's own output for the frame before, and scored (L1 + MSE) against the true frame, so the
network learns to lean on its own earlier frames as it must when decoding. Resumes from
``<out>/state.safetensors``; ``metrics.csv`` logs the loss, ``valid.jsonl`` the PSNR of 8 frames
decoded after one given frame with and without the refiner (validation clips, encoder latents).
The export in ``<out>/export`` is a ``frame_refiner`` checkpoint.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from mmar.checkpoint import save_pretrained
from mmar.data.sprite_latents import load_data
from mmar.data.sprites import SpriteClips
from mmar.tasks.image_latent import load_image_vae
from mmar.tokenizers.frame_refiner import FrameRefiner, config_from_dict, decode_video, export_config
from mmar.tokenizers.image_cnn import from_uint8, psnr, reconstruction_loss
from mmar.training import Budget, MetricsLog, append_jsonl, load_state, lr_at, optimizer_step, save_state


def grids(lat: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Cached latents [..., N, C] → [..., C, rows, cols]."""
    return lat.transpose(-1, -2).reshape(*lat.shape[:-2], lat.shape[-1], *grid)


def pixels(clips: SpriteClips, idx: list[int], start: int | list[int], frames: int) -> torch.Tensor:
    """Frames ``start..start + frames`` of clips ``idx`` → float [B, frames, 3, H, W] in [0, 1]."""
    starts = [start] * len(idx) if isinstance(start, int) else start
    x = [clips.clip(i).frames[s:s + frames] for i, s in zip(idx, starts)]
    return from_uint8(np.stack(x))


@torch.no_grad()
def valid_psnr(refiner: FrameRefiner | None, decode, lat: torch.Tensor, clips: SpriteClips, grid, given: int = 3,
               frames: int = 8, batch: int = 16) -> float:
    """Mean PSNR of ``frames`` frames after frame ``given`` of the validation clips, decoded from
    their encoder latents (``refiner`` None: the plain VAE decoding; else refined, the previous
    frame being the true frame ``given``)."""
    was = refiner is not None and refiner.training
    if refiner is not None:
        refiner.eval()
    ref = []
    for i in range(0, len(lat), batch):
        idx = list(range(i, min(i + batch, len(lat))))
        x = pixels(clips, idx, given, frames + 1)
        z = grids(lat[idx, given:given + frames + 1], grid)
        out = decode_video(decode, refiner, z[:, 1:], x[:, 0], z[:, 0])
        ref.append(psnr(out.flatten(0, 1), x[:, 1:].flatten(0, 1)))
    if was:
        refiner.train()
    return float(torch.cat(ref).mean())


def train(cfg: dict, out: Path, data_root: Path | None = None, tokenizer: Path | None = None, stop_after: int | None = None,
          progress: bool = True) -> dict:
    """Run (or resume) the recipe ``cfg`` into ``out`` → the last metrics."""
    dc, oc, tc = cfg["data"], cfg["optim"], cfg["train"]
    root = Path(data_root or dc["root"])
    out.mkdir(parents=True, exist_ok=True)
    tok = load_image_vae(tokenizer or (Path(dc["tokenizer"]) if dc.get("tokenizer") else None))
    vae = tok.model.eval().requires_grad_(False)
    d = load_data(tok, root, dc, tc["seed"], dc.get("caption_words", 12), out / "latents.safetensors")
    train_clips = SpriteClips(root, "train", frames=dc["frames"], seed=tc["seed"])
    valid_clips = SpriteClips(root, "valid", frames=dc["frames"], seed=tc["seed"])
    grid = tuple(vae.cfg.grid)
    decode = vae.decode_latents
    torch.manual_seed(tc["seed"])
    refiner = FrameRefiner(config_from_dict(cfg["model"], "config.model"))
    optim = torch.optim.AdamW(refiner.parameters(), lr=oc["lr"], betas=tuple(oc["betas"]), weight_decay=oc["weight_decay"])
    gen = torch.Generator().manual_seed(tc["seed"])
    state_path, step = out / "state.safetensors", 0
    if state_path.is_file():
        step = load_state(state_path, refiner, optim, gen)
    total, metrics, unroll = oc["steps"], {}, tc["unroll"]
    end = min(total, stop_after) if stop_after else total
    budget = Budget(end, oc.get("minutes"))
    bar = tqdm(total=end, initial=step, disable=not progress, desc="refiner", dynamic_ncols=True)
    mlog = MetricsLog(out / "metrics.csv", ["loss", "psnr", "lr"], tc["log_every"], step == 0)
    train_lat = d["train"]
    plain = valid_psnr(None, decode, d["valid"], valid_clips, grid) if len(d["valid"]) else None
    while not budget.done(step):
        lr = lr_at(budget.schedule_step(step), oc["lr"], oc["warmup"], total)
        for group in optim.param_groups:
            group["lr"] = lr
        b = tc["batch_size"]
        idx = torch.randint(0, len(train_lat), (b,), generator=gen).tolist()
        start = torch.randint(0, dc["frames"] - unroll + 1, (b,), generator=gen).tolist()
        x = pixels(train_clips, idx, start, unroll)
        z = grids(torch.stack([train_lat[i, s:s + unroll] for i, s in zip(idx, start)]), grid)
        sigma = torch.rand(b, 1, 1, 1, 1, generator=gen) * tc["latent_noise"]
        noisy = z[:, 1:] + sigma * torch.randn(z[:, 1:].shape, generator=gen)
        with torch.no_grad():
            base = decode(torch.cat([z[:, :1], noisy], 1).flatten(0, 1)).view_as(x)
        prev, prev_base, outs = x[:, 0], base[:, 0], []
        for k in range(1, unroll):
            prev = refiner(base[:, k], prev, prev_base)
            prev_base = base[:, k]
            outs.append(prev)
        rec = torch.stack(outs, 1).flatten(0, 1)
        loss, _ = reconstruction_loss(rec, x[:, 1:].flatten(0, 1), **tc["loss"])
        optimizer_step(loss, optim, refiner.parameters(), oc["grad_clip"])
        step += 1
        bar.update(1)
        if mlog.due(step):
            p = float(psnr(rec.detach(), x[:, 1:].flatten(0, 1)).mean())
            metrics = {"step": step, "loss": loss.item(), "psnr": p, "lr": lr}
            mlog.write(step, [f"{loss.item():.6f}", f"{p:.2f}", f"{lr:.3e}"])
            bar.set_postfix(loss=f"{loss.item():.4f}", psnr=f"{p:.1f}")
        last = budget.done(step)
        if len(d["valid"]) and ((tc["eval_every"] and step % tc["eval_every"] == 0) or last):
            ev = {"valid_psnr": valid_psnr(refiner, decode, d["valid"], valid_clips, grid), "valid_psnr_plain": plain}
            metrics.update(ev)
            append_jsonl(out / "valid.jsonl", {"step": step, **ev})
        if step % tc["save_every"] == 0 or last:
            save_state(state_path, refiner, optim, step, gen, {"config": cfg})
    bar.close()
    mlog.close()
    if step >= total or oc.get("minutes"):
        save_pretrained(refiner.state_dict(), export_config(refiner, tok.model_id, tok.weights), out / "export")
    return metrics


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True, type=Path)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--data", type=Path, help="emoji folder written by python -m mmar.data.emoji (overrides data.root)")
    ap.add_argument("--tokenizer-checkpoint", type=Path, help="image_vae checkpoint directory (overrides data.tokenizer)")
    ap.add_argument("--minutes", type=float, help="wall-clock budget (overrides optim.minutes)")
    args = ap.parse_args(argv)
    cfg = json.loads(args.config.read_text())
    if args.minutes is not None:
        cfg["optim"]["minutes"] = args.minutes
    print(json.dumps(train(cfg, args.out, args.data, args.tokenizer_checkpoint)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
