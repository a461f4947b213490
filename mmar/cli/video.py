"""``mmar video generate`` (over :mod:`mmar.tasks.video`).

Caption → frames, or a continuation of prompt frames: the prompt (an MP4/WebM/… video, an
animated GIF, or one still image) is read up to its first 256 frames, each centre-cropped to a
square and resized to 64×64 (Lanczos, alpha on white); the output file holds the prompt frames
followed by the N new ones, 64×64 at 8 frames per second, as H.264 MP4 or a looping GIF, written
atomically (never over an existing file without -f). Checkpoints: --checkpoint (default video-64 on
the checkpoint search path), --tokenizer-checkpoint (default: the shipped σ-VAE the model was
trained on). Each new frame is decoded by the σ-VAE and given back the detail of the frame shown
before it, moved by block motion (mmar.tokenizers.frame_refiner; --refiner DIR: a trained
correction on top; --no-refiner: each frame decoded on its own).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import MmarError

MAX_FRAMES = 2000
MOTION_TEMPERATURE = None  # frames that extrapolate a seen motion: None = as --temperature (video card)
MAX_PROMPT_FRAMES = 256


def _generate(args) -> int:
    import numpy as np
    import torch

    from ..atomic import check_target
    from ..tasks.image_latent import vae_for
    from ..tasks.video import frame_display, frames_to_latents, generate_frames, load_video, motion_base, refiner_for
    from ..text.captions import words
    from ..tokenizers.image_cnn import to_uint8
    from ..video_io import WRITE_SUFFIXES, read_frames, write_video

    if not 1 <= args.frames <= MAX_FRAMES:
        raise MmarError(f"--frames must be 1..{MAX_FRAMES}, got {args.frames}")
    if not 1 <= args.steps <= 100:
        raise MmarError(f"--steps must be 1..100, got {args.steps}")
    if args.output.suffix.lower() not in WRITE_SUFFIXES:
        raise MmarError(f"{args.output}: write .mp4 or .gif")
    if args.caption.strip() and not words(args.caption):
        raise MmarError(f"caption {args.caption!r:.60} has no words (an empty caption means unconditional)")
    if args.no_refiner and args.refiner is not None:
        raise MmarError("--refiner and --no-refiner contradict each other")
    check_target(args.output, args.force)
    vm = load_video(args.checkpoint)
    tok = vae_for(vm, args.tokenizer_checkpoint)
    refiner = refiner_for(tok, args.refiner, not args.no_refiner)
    vm.vocab.encode(args.caption)  # too long → one error line
    side = tok.cfg.image_size
    prompt_frames = np.zeros((0, side, side, 3), np.uint8)
    prompt = None
    with torch.no_grad():
        if args.prompt_frames is not None:
            prompt_frames = read_frames(args.prompt_frames, side, MAX_PROMPT_FRAMES)
            prompt = frames_to_latents(tok, prompt_frames[None])  # [1, K, C, rows, cols]
        new = []
        base = motion_base(vm, tok, refiner, prompt_frames[None], prompt)
        show = frame_display(base, tok, refiner, prompt_frames[None], prompt)
        generate_frames(vm, [args.caption], args.frames, prompt, args.steps, args.cfg, args.temperature, args.seed,
                        on_frame=lambda i, z: new.append(to_uint8(show(z))[0]), base=base,
                        motion_temperature=args.motion_temperature)
    frames = np.concatenate([prompt_frames, np.stack(new)])
    write_video(args.output, frames, args.fps, args.force)
    unknown = vm.vocab.unknown(args.caption)
    note = f" (unknown words: {' '.join(unknown)})" if unknown else ""
    print(f"{args.output}: {len(prompt_frames)} prompt + {args.frames} new frames for {args.caption!r}{note}")
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("video", help="video: caption → frames, or continue given frames",
                       description=__doc__.split("\n\n")[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    vsub = p.add_subparsers(dest="video", required=True, parser_class=type(p))
    g = vsub.add_parser("generate", help="caption (and optional prompt frames) → MP4 or GIF")
    g.add_argument("--caption", required=True, metavar="TEXT", help='e.g. "fox moves left" ("" = unconditional)')
    g.add_argument("--frames", type=int, required=True, metavar="N", help=f"new frames to generate (1..{MAX_FRAMES})")
    g.add_argument("-o", "--output", type=Path, required=True, help="OUT.mp4 or OUT.gif")
    g.add_argument("-f", "--force", action="store_true", help="overwrite the output")
    g.add_argument("--prompt-frames", type=Path, metavar="IN", help="video, GIF or image to continue (first 256 frames)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--steps", type=int, default=8, metavar="S", help="denoising steps per frame (default 8)")
    g.add_argument("--cfg", type=float, default=1.5, metavar="C", help="classifier-free guidance scale (1 = off)")
    g.add_argument("--temperature", type=float, default=1.0, metavar="T", help="scale of the starting noise")
    g.add_argument("--motion-temperature", type=float, default=MOTION_TEMPERATURE, metavar="T",
                   help="the same, for frames whose motion-predicted base extrapolates a seen motion "
                        "(models with motion_base; default: --temperature)")
    g.add_argument("--fps", type=int, default=8, choices=range(1, 61), metavar="FPS", help="frames per second (default 8)")
    g.add_argument("--checkpoint", type=Path, default=None, metavar="DIR", help="video model (default: video-64)")
    g.add_argument("--tokenizer-checkpoint", type=Path, default=None, metavar="DIR", help="σ-VAE (default: the one the model was trained on)")
    g.add_argument("--refiner", type=Path, default=None, metavar="DIR",
                   help="a trained temporal decoder (default: motion compensation, no weights)")
    g.add_argument("--no-refiner", action="store_true", help="decode each frame on its own with the σ-VAE")
    g.set_defaults(func=_generate)
