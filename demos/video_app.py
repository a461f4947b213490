"""Gradio demo of mmar's video: a caption (and optionally first frames: a video, GIF or image) →
a clip, one frame at a time with a progress bar.

    python demos/video_app.py [--checkpoint DIR] [--tokenizer-checkpoint DIR] [--refiner DIR | --no-refiner] [--port 7862]

It binds to 127.0.0.1 only and refuses uploads over 10 MB. The endpoint's API name is
``/generate`` (for ``gradio_client``); it returns an MP4 (H.264) path. Needs ``pip install "mmar[demo,video]"``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from mmar.cli.video import MOTION_TEMPERATURE
from mmar.errors import command, gradio_errors, require
from mmar.tasks.image_latent import vae_for
from mmar.tasks.video import frame_display, frames_to_latents, generate_frames, load_video, motion_base, refiner_for
from mmar.tokenizers.image_cnn import to_uint8
from mmar.video_io import read_frames, write_video

MAX_UPLOAD = "10mb"
MAX_FRAMES = 64
MAX_PROMPT_FRAMES = 32


def build_app(checkpoint: Path | None = None, tokenizer_checkpoint: Path | None = None, refiner: Path | None = None,
              use_refiner: bool = True):
    """The Gradio Blocks app over the video model, σ-VAE and temporal decoder found at these paths
    (or by name; ``use_refiner`` False: plain per-frame decoding)."""
    gr = require("gradio", "demo")
    vm = load_video(checkpoint)
    tok = vae_for(vm, tokenizer_checkpoint)
    ref = refiner_for(tok, refiner, use_refiner)
    out_dir = Path(tempfile.mkdtemp(prefix="mmar_video_"))
    errors_to_gradio = gradio_errors(gr)

    @errors_to_gradio
    def generate(caption: str, prompt_path: str | None, frames: int, steps: int, cfg: float, seed: int,
                 progress=gr.Progress()):
        n = max(1, min(MAX_FRAMES, int(frames)))
        side = tok.cfg.image_size
        first = np.zeros((0, side, side, 3), np.uint8)
        prompt = None
        vm.vocab.encode(caption or "")  # too long → one error line
        with torch.no_grad():
            if prompt_path:
                first = read_frames(Path(prompt_path), side, MAX_PROMPT_FRAMES)
                prompt = frames_to_latents(tok, first[None])
            new: list[np.ndarray] = []
            base = motion_base(vm, tok, ref, first[None], prompt)
            show = frame_display(base, tok, ref, first[None], prompt)

            def done(i: int, z: torch.Tensor) -> None:
                new.append(to_uint8(show(z))[0])
                progress((i + 1) / n, desc=f"frame {i + 1} of {n}")

            progress(0, desc="frame 1")
            generate_frames(vm, [caption or ""], n, prompt, max(1, min(50, int(steps))), float(cfg), 1.0, int(seed),
                            on_frame=done, base=base, motion_temperature=MOTION_TEMPERATURE)
        path = out_dir / f"clip_{int(seed)}_{abs(hash((caption, prompt_path, n, steps, cfg))) % 10**8}.mp4"
        return str(write_video(path, np.concatenate([first, np.stack(new)]), force=True))

    with gr.Blocks(title="mmar video") as app:
        gr.Markdown("# mmar video\nOne causal Transformer over σ-VAE latents of 64×64 frames, one frame at a time; "
                    "the clean frames' kv-cache is reused by every denoising step. Captions like "
                    "\"fox moves left\", \"red apple grows\", \"star appears\".")
        with gr.Row():
            with gr.Column():
                caption = gr.Textbox(value="grinning face moves down", label="caption (empty: unconditional)")
                prompt = gr.File(label="first frames (optional: MP4, GIF or an image)", type="filepath",
                                 file_types=[".mp4", ".webm", ".gif", ".png", ".jpg", ".jpeg", ".webp"])
                frames = gr.Slider(1, MAX_FRAMES, value=16, step=1, label="new frames")
                steps = gr.Slider(1, 50, value=8, step=1, label="denoising steps per frame")
                cfg = gr.Slider(1.0, 4.0, value=1.5, step=0.1, label="CFG scale")
                seed = gr.Number(value=0, precision=0, label="seed")
                go = gr.Button("Generate", variant="primary")
            video = gr.Video(label="clip (prompt frames, then the new ones)", elem_id="clip", autoplay=True, loop=True)
        go.click(generate, [caption, prompt, frames, steps, cfg, seed], video, api_name="generate")
    return app


@command
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", type=Path, help="video model (default: video-64 on the checkpoint search path)")
    ap.add_argument("--tokenizer-checkpoint", type=Path, help="σ-VAE (default: image-vae-64)")
    ap.add_argument("--refiner", type=Path, help="a trained temporal decoder (default: motion compensation, no weights)")
    ap.add_argument("--no-refiner", action="store_true", help="decode each frame on its own with the σ-VAE")
    ap.add_argument("--port", type=int, default=7862)
    args = ap.parse_args(argv)
    app = build_app(args.checkpoint, args.tokenizer_checkpoint, args.refiner, not args.no_refiner)
    app.queue().launch(server_name="127.0.0.1", server_port=args.port, max_file_size=MAX_UPLOAD)
    return 0


if __name__ == "__main__":
    sys.exit(main())
