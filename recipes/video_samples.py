"""The sample sheet of a video checkpoint's model card: the first ``--clips`` clips of a split,
three rows each (four with ``--plain``): the true 12 frames; the 4 given frames, then 8
generated; (the same 8 decoded without the temporal decoder;) 12 frames from the caption alone
(seed 0, 8 steps, CFG 1.5, as ``mmar bench video``).

    python recipes/video_samples.py --checkpoint DIR --out DIR/samples.png [--split test] [--refiner DIR] [--plain]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from mmar.atomic import atomic_write
from mmar.data.sprites import SpriteClips
from mmar.tasks.image_latent import vae_for
from mmar.tasks.video import frames_to_latents, generate_frames, latents_to_frames, load_video, motion_base, refiner_for

GAP, LABEL = 2, 14  # pixels between frames; height of a caption line


def sheet(rows: list[tuple[str, list[np.ndarray]]], size: int = 64, frames: int = 12) -> Image.Image:
    """(caption, [uint8 [frames, H, W, 3] rows, as many for each clip]) per clip → one image."""
    w = frames * (size + GAP) + GAP
    h_clip = LABEL + len(rows[0][1]) * (size + GAP) + GAP
    img = Image.new("RGB", (w, len(rows) * h_clip), "white")
    draw = ImageDraw.Draw(img)
    for c, (caption, strips) in enumerate(rows):
        y0 = c * h_clip
        draw.text((GAP, y0 + 1), caption, fill="black")
        for r, strip in enumerate(strips):
            for f, frame in enumerate(strip):
                img.paste(Image.fromarray(frame), (GAP + f * (size + GAP), y0 + LABEL + r * (size + GAP)))
    return img


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--data", type=Path, default=Path("data/emoji"))
    ap.add_argument("--split", default="test", choices=["valid", "test"])
    ap.add_argument("--clips", type=int, default=6)
    ap.add_argument("--refiner", type=Path, help="a trained temporal decoder (default: motion compensation, no weights)")
    ap.add_argument("--plain", action="store_true", help="add a row: the continuation decoded frame by frame")
    args = ap.parse_args()
    vm = load_video(args.checkpoint)
    tok = vae_for(vm, None)
    ref = refiner_for(tok, args.refiner)
    clips = [SpriteClips(args.data, args.split, frames=12, seed=0, max_words=vm.vocab.max_len).clip(i) for i in range(args.clips)]
    truth, captions = np.stack([c.frames for c in clips]), [c.caption for c in clips]
    z0 = frames_to_latents(tok, truth[:, :4])
    zc = generate_frames(vm, captions, 8, z0, 8, 1.5, 1.0, 0, base=motion_base(vm, tok, ref, truth[:, :4], z0))
    cont = latents_to_frames(tok, zc, ref, truth[:, :4], z0)
    plain = latents_to_frames(tok, zc) if args.plain else None
    alone = latents_to_frames(tok, generate_frames(vm, captions, 12, None, 8, 1.5, 1.0, 0, base=motion_base(vm, tok, ref)), ref)
    rows = [(captions[i], [truth[i], np.concatenate([truth[i, :4], cont[i]]),
                           *([np.concatenate([truth[i, :4], plain[i]])] if args.plain else []), alone[i]])
            for i in range(args.clips)]
    atomic_write(args.out, lambda p: sheet(rows).save(p, format="PNG"), tmp_suffix=".png")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    torch.set_num_threads(2)
    raise SystemExit(main())
