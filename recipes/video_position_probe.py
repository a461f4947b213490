"""Does a video model lose quality only because its frames sit further from the caption than in
training? Continue validation clips from 12 given frames, once with all 12 as the prompt and once
with only the last ``window`` − 1: the first new frame sees the same frames either way, but its
position (frames after the caption) is 12 instead of ``window`` − 1. A model trained on windows of
8 frames never saw positions past 8.

    python recipes/video_position_probe.py [--checkpoint DIR]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from mmar.bench.image import psnr as image_psnr
from mmar.data.sprites import SpriteClips
from mmar.tasks.image_latent import vae_for
from mmar.tasks.video import frames_to_latents, generate_frames, latents_to_frames, load_video, motion_base, refiner_for


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Mean over clips of the PSNR (dB) of uint8 frames a, b [N, ..., H, W, 3]."""
    return float(np.mean([image_psnr(x, y) for x, y in zip(a, b)]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", type=Path)
    ap.add_argument("--data", type=Path, default=Path("data/emoji"))
    ap.add_argument("--clips", type=int, default=32)
    args = ap.parse_args()
    vm = load_video(args.checkpoint)
    tok = vae_for(vm, None)
    clips = [SpriteClips(args.data, "valid", frames=16, seed=0, max_words=vm.vocab.max_len).clip(i) for i in range(args.clips)]
    truth, captions = np.stack([c.frames for c in clips]), [c.caption for c in clips]
    z0 = frames_to_latents(tok, truth[:, :12])
    print(f"{args.clips} validation clips, 4 frames generated after 12, 8 steps, CFG 1.5, seed 0")
    for k in (12, vm.window - 1):
        out = np.concatenate([latents_to_frames(tok, generate_frames(
            vm, captions[i:i + 8], 4, z0[i:i + 8, 12 - k:], 8, 1.5, 1.0, 0,
            base=motion_base(vm, tok, refiner_for(tok), truth[i:i + 8, 12 - k:12], z0[i:i + 8, 12 - k:])))
                              for i in range(0, args.clips, 8)])
        frames = [round(psnr(out[:, j], truth[:, 12 + j]), 2) for j in range(4)]
        print(f"prompt: last {k:>2} frames (new frames at positions {k}–{k + 3}): PSNR {psnr(out, truth[:, 12:]):.2f} dB, by frame {frames}")
    return 0


if __name__ == "__main__":
    torch.set_num_threads(2)
    raise SystemExit(main())
