"""Sweep the motion-search block size of the video decoder (:mod:`mmar.tokenizers.frame_refiner`)
on validation clips: one generation per seed (4 given frames → 8 new, as ``mmar bench video``),
decoded by the σ-VAE alone and with the moved detail at each block size; the true latents are
decoded the same ways (the round trip). Prints PSNR per motion and writes JSON with ``--json``.

    python recipes/video_decoder_sweep.py [--checkpoint DIR] [--seeds 0 1] [--blocks 8 16 32 64]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from mmar.atomic import write_json
from mmar.bench.image import psnr
from mmar.data.sprites import SpriteClips
from mmar.tasks.image_latent import vae_for
from mmar.tasks.video import frames_to_latents, generate_frames, latents_to_frames, load_video, motion_base, refiner_for


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", type=Path)
    ap.add_argument("--data", type=Path, default=Path("data/emoji"))
    ap.add_argument("--clips", type=int, default=32)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--blocks", type=int, nargs="+", default=[8, 16, 32, 64])
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    vm = load_video(args.checkpoint)
    tok = vae_for(vm, None)
    rows = []
    for seed in args.seeds:
        cl = [SpriteClips(args.data, "valid", frames=12, seed=seed, max_words=vm.vocab.max_len).clip(i) for i in range(args.clips)]
        truth, captions = np.stack([c.frames for c in cl]), [c.caption for c in cl]
        z0 = frames_to_latents(tok, truth[:, :4])
        latents = {"model": torch.cat([generate_frames(vm, captions[i:i + 8], 8, z0[i:i + 8], 8, 1.5, 1.0, seed,
                                                       base=motion_base(vm, tok, refiner_for(tok), truth[i:i + 8, :4], z0[i:i + 8]))
                                       for i in range(0, args.clips, 8)]),
                   "round_trip": frames_to_latents(tok, truth[:, 4:])}
        for block in [None, *args.blocks]:
            ref = None
            if block is not None:
                ref = refiner_for(tok)
                ref.block = block
            for what, z in latents.items():
                frames = latents_to_frames(tok, z, ref, truth[:, :4], z0)
                p = np.array([[psnr(frames[n, k], truth[n, 4 + k]) for k in range(8)] for n in range(args.clips)])
                per = {}
                for n, c in enumerate(cl):
                    per.setdefault(c.motion, []).append(float(p[n].mean()))
                row = {"seed": seed, "latents": what, "block": block, "psnr": float(p.mean()),
                       "per_motion": {m: float(np.mean(v)) for m, v in sorted(per.items())}}
                rows.append(row)
                print(json.dumps(row), flush=True)
    if args.json:
        write_json({"checkpoint": str(args.checkpoint or "video-64"), "clips": args.clips, "rows": rows}, args.json)
    return 0


if __name__ == "__main__":
    torch.set_num_threads(2)
    raise SystemExit(main())
