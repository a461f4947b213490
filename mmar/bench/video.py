"""``mmar bench video``: the frame-autoregressive video model on test clips whose sprites were
never trained on (:class:`mmar.data.sprites.SpriteClips`, test split), in one run:

- **continuation**: from the first ``context`` true frames of a clip, ``horizon`` new frames; PSNR
  and SSIM against the true next frames (per horizon step and averaged), next to two baselines:
  repeat the last given frame, and shift it by the sprite's last observed motion; and the true
  frames' latents decoded, the most any model on these latents can score. Frames are decoded by
  the σ-VAE and, when there is one, the temporal decoder (``refiner``: each frame refined from
  the one before, the first from the last given frame); the ``*_plain*`` rows then show the
  σ-VAE's decoding alone;
- **sprite position error**: the distance (px) between the sprite's centre in generated and in
  true frames (:func:`mmar.data.sprites.sprite_track`);
- **caption adherence**: clips generated from the caption alone; the share whose measured motion
  (:func:`mmar.data.sprites.motion_of`) is the caption's;
- **speed**: seconds per frame with the context cache reused across denoising steps against
  recomputing the context at every step, for 4, 8 and 16 steps (the fastest of
  ``speed_repeats`` runs of each), and the largest difference between their outputs;
- **memory**: peak resident memory of a 1000-frame rollout against a 100-frame one, each in a fresh
  process (the sliding window keeps the cache a fixed size).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ..data.sprites import SpriteClips, motion_of, sprite_track
from ..tasks.image_latent import vae_for
from ..tasks.video import (VideoModel, frames_to_latents, generate_frames, latents_to_frames, load_video, motion_base,
                           refiner_for)
from .image import psnr, ssim


def shift_frame(frame: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """uint8 [H, W, 3] moved by (dy, dx) pixels, white where nothing comes in."""
    out = np.full_like(frame, 255)
    h, w = frame.shape[:2]
    ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
    xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
    out[yd, xd] = frame[ys, xs]
    return out


_ROLLOUT = """import resource, sys, torch
from pathlib import Path
from mmar.tasks.image_latent import vae_for
from mmar.tasks.video import generate_frames, load_video, motion_base, refiner_for
torch.set_num_threads(1)
vm = load_video(Path(sys.argv[1]) if sys.argv[1] else None)
tok = vae_for(vm, None)
generate_frames(vm, ["fox moves left"], int(sys.argv[2]), steps=int(sys.argv[3]), base=motion_base(vm, tok, refiner_for(tok)))
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def peak_memory_mib(checkpoint: Path | None, frames: int, steps: int) -> float:
    """Peak resident memory (MiB) of a fresh process that rolls out ``frames`` frames."""
    r = subprocess.run([sys.executable, "-c", _ROLLOUT, str(checkpoint or ""), str(frames), str(steps)],
                       capture_output=True, text=True, timeout=3600)
    if r.returncode:
        raise RuntimeError(r.stderr.strip().splitlines()[-1] if r.stderr.strip() else "rollout failed")
    return float(r.stdout.strip().splitlines()[-1])


@torch.no_grad()
def run_video_bench(data: Path, checkpoint: Path | None = None, tokenizer: Path | None = None, clips: int = 32,
                    context: int = 4, horizon: int = 8, steps: int = 8, cfg_scale: float = 1.5, seed: int = 0,
                    speed_frames: int = 4, speed_repeats: int = 3, memory: bool = True, log=print, split: str = "test",
                    temperature: float = 1.0, refiner: Path | None = None, use_refiner: bool = True,
                    motion_temperature: float | None = None) -> dict:
    """Score the model on ``clips`` clips of ``split`` (see the module doc; "valid" for decisions
    such as how long to train, "test" for what is reported) → results dict. Frames are decoded
    with the temporal decoder (:func:`mmar.tasks.video.refiner_for`: motion compensation, or the
    trained ``refiner``; ``use_refiner`` False: none)."""
    if split not in ("valid", "test"):
        raise ValueError(f"split must be 'valid' or 'test', got {split!r}")
    vm: VideoModel = load_video(checkpoint)
    tok = vae_for(vm, tokenizer)
    ref = refiner_for(tok, refiner, use_refiner)
    test = SpriteClips(data, split, frames=context + horizon, seed=seed, max_words=vm.vocab.max_len)
    cl = [test.clip(i) for i in range(clips)]
    truth = np.stack([c.frames for c in cl])  # [N, F, H, W, 3]
    captions = [c.caption for c in cl]
    log(f"continuation: {clips} clips, {context} given frames, {horizon} generated")
    z0 = frames_to_latents(tok, truth[:, :context])
    zg = torch.cat([generate_frames(vm, captions[i:i + 8], horizon, z0[i:i + 8], steps, cfg_scale, temperature, seed,
                                    base=motion_base(vm, tok, ref, truth[i:i + 8, :context], z0[i:i + 8]),
                                    motion_temperature=motion_temperature)
                    for i in range(0, clips, 8)])
    future = truth[:, context:]
    zf = torch.cat([frames_to_latents(tok, future[i:i + 8]) for i in range(0, clips, 8)])

    def decoded(z: torch.Tensor, refine: bool) -> np.ndarray:  # [N, horizon, H, W, 3], after the given frames
        return np.concatenate([latents_to_frames(tok, z[i:i + 8], ref if refine else None, truth[i:i + 8, :context], z0[i:i + 8])
                               for i in range(0, clips, 8)])

    last = truth[:, context - 1]
    centres = [sprite_track(c.frames[:context])[0] for c in cl]
    motion = [np.nan_to_num(c[-1] - c[-2]) if len(c) > 1 else np.zeros(2) for c in centres]
    systems = {"model": decoded(zg, True), **({"model_plain_decoder": decoded(zg, False)} if ref is not None else {}),
               "repeat_last": np.repeat(last[:, None], horizon, 1),
               "shift_by_last_motion": np.stack([np.stack([shift_frame(last[n], *(np.round(motion[n] * (k + 1)).astype(int)))
                                                           for k in range(horizon)]) for n in range(clips)]),
               # the true future's latents decoded: what a perfect latent model would score
               "vae_round_trip": decoded(zf, True), **({"vae_round_trip_plain": decoded(zf, False)} if ref is not None else {})}
    cont = {}
    for name, frames in systems.items():
        p = np.array([[psnr(frames[n, k], future[n, k]) for k in range(horizon)] for n in range(clips)])
        s = np.array([[ssim(frames[n, k], future[n, k]) for k in range(horizon)] for n in range(clips)])
        err = []
        for n in range(clips):
            a, b = sprite_track(frames[n])[0], sprite_track(future[n])[0]
            ok = ~np.isnan(a[:, 0]) & ~np.isnan(b[:, 0])
            err.append(float(np.linalg.norm(a[ok] - b[ok], axis=1).mean()) if ok.any() else np.nan)
        cont[name] = {"psnr": float(p.mean()), "ssim": float(s.mean()), "psnr_per_step": p.mean(0).tolist(),
                      "sprite_position_error_px": float(np.nanmean(err)) if not np.isnan(err).all() else None}
    log("caption adherence")
    adh, per_motion = [], {}
    for i in range(0, clips, 8):
        z = generate_frames(vm, captions[i:i + 8], horizon, None, steps, cfg_scale, temperature, seed,
                            base=motion_base(vm, tok, ref), motion_temperature=motion_temperature)
        for n, frames in enumerate(latents_to_frames(tok, z, ref)):
            c = cl[i + n]
            hit = motion_of(frames) == c.motion
            adh.append(hit)
            per_motion.setdefault(c.motion, []).append(hit)
    log("speed")
    speed = {}
    for s in (4, 8, 16):
        row = {}
        outs = {}
        for cached in (True, False):
            times = []
            for _ in range(speed_repeats):  # the fastest of a few runs: the least disturbed by the machine
                t0 = time.perf_counter()
                outs[cached] = generate_frames(vm, captions[:1], speed_frames, z0[:1], s, 1.0, 1.0, seed, cached=cached,
                                               base=motion_base(vm, tok, ref, truth[:1, :context], z0[:1]))
                times.append(time.perf_counter() - t0)
            row["cached" if cached else "recompute"] = min(times) / speed_frames
        row["speedup"] = row["recompute"] / row["cached"]
        row["max_abs_difference"] = float((outs[True] - outs[False]).abs().max())
        speed[str(s)] = row
    clip16 = []
    for _ in range(speed_repeats):
        t0 = time.perf_counter()
        generate_frames(vm, captions[:1], 16, None, 8, 1.0, 1.0, seed, base=motion_base(vm, tok, ref))
        clip16.append(time.perf_counter() - t0)
    clip16 = min(clip16)
    result = {"split": split, "clips": clips, "context": context, "horizon": horizon, "steps": steps, "cfg_scale": cfg_scale,
              "temperature": temperature, **({"motion_temperature": motion_temperature} if vm.model.motion_base else {}),
              "model": vm.model_id, "tokenizer": tok.model_id, "refiner": None if ref is None else str(refiner or "motion compensation"),
              "window": vm.window, "continuation": cont,
              "caption_adherence": float(np.mean(adh)),
              "caption_adherence_per_motion": {m: float(np.mean(v)) for m, v in sorted(per_motion.items())},
              "speed_seconds_per_frame": speed, "speed_repeats": speed_repeats, "seconds_16_frames_8_steps_no_cfg": clip16}
    if memory:
        log("memory: 100- and 1000-frame rollouts in fresh processes")
        m100, m1000 = (peak_memory_mib(checkpoint, n, 2) for n in (100, 1000))
        result["peak_memory_mib"] = {"100_frames": m100, "1000_frames": m1000, "ratio": m1000 / m100}
    return result


def format_video(r: dict) -> str:
    """The results as text tables."""
    mt = r.get("motion_temperature")
    lines = [f"continuation of {r['clips']} {r.get('split', 'test')} clips (sprites never trained on): {r['context']} given frames → "
             f"{r['horizon']} generated, {r['steps']} steps, CFG {r['cfg_scale']:g}, temperature {r.get('temperature', 1.0):g}"
             + ("" if mt is None else f" ({mt:g} once a motion is seen)") + ", "
             f"decoder: {r.get('tokenizer', 'σ-VAE')}" + (f" + {r['refiner']}" if r.get("refiner") else " alone"),
             f"{'system':<22}{'PSNR':>8}{'SSIM':>8}{'sprite err px':>15}"]
    for name, v in r["continuation"].items():
        e = v["sprite_position_error_px"]
        lines.append(f"{name:<22}{v['psnr']:>8.2f}{v['ssim']:>8.3f}{'' if e is None else f'{e:.1f}':>15}")
    m = r["continuation"]["model"]["psnr"] - r["continuation"]["repeat_last"]["psnr"]
    lines += [f"model − repeat_last: {m:+.2f} dB", "",
              f"caption adherence (motion measured from pixels = caption's): {100 * r['caption_adherence']:.1f} %  " +
              "  ".join(f"{k} {100 * v:.0f}%" for k, v in r["caption_adherence_per_motion"].items()), "",
              f"{'steps':>6}{'cached s/frame':>16}{'recompute':>11}{'speedup':>9}{'max |diff|':>12}"]
    for s, v in r["speed_seconds_per_frame"].items():
        lines.append(f"{s:>6}{v['cached']:>16.4f}{v['recompute']:>11.4f}{v['speedup']:>8.1f}×{v['max_abs_difference']:>12.1e}")
    lines.append(f"a 16-frame clip (8 steps, no CFG; the fastest of {r.get('speed_repeats', 1)} runs): {r['seconds_16_frames_8_steps_no_cfg']:.2f} s")
    if "peak_memory_mib" in r:
        p = r["peak_memory_mib"]
        lines.append(f"peak memory: 100 frames {p['100_frames']:.0f} MiB, 1000 frames {p['1000_frames']:.0f} MiB "
                     f"(ratio {p['ratio']:.3f})")
    return "\n".join(lines)

