"""Gradio demo of mmar's images: caption → samples, infill what a brush paints over (or a box) of
an image, and the tokenizer's reconstruction.

    python demos/image_app.py [--checkpoint DIR] [--tokenizer-checkpoint DIR] [--port 7861]

It binds to 127.0.0.1 only and refuses uploads over 5 MB. Every endpoint has an API name
(``/generate``, ``/infill``, ``/reconstruct``) for ``gradio_client``. Needs ``pip install "mmar[demo]"``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from mmar.errors import MmarError, command, gradio_errors, require
from mmar.generation import SamplingConfig
from mmar.tokenizers.image_cnn import to_uint8
from mmar.tasks.image import (check_pair, generate_codes, infill_codes, load_image, load_image_ar, load_image_tokenizer,
                              pixel_box_to_grid, pixel_mask_to_grid)

MAX_UPLOAD = "5mb"
MAX_COUNT = 16


def _box(text: str) -> tuple[int, int, int, int]:
    try:
        box = tuple(int(v) for v in text.replace(" ", "").split(","))
    except ValueError:
        box = ()
    if len(box) != 4:
        raise MmarError(f"box must be X0,Y0,X1,Y1 in pixels, got {text!r:.40}")
    return box


def build_app(checkpoint: Path | None = None, tokenizer_checkpoint: Path | None = None):
    """The Gradio Blocks app over the image model and tokenizer found at these paths (or by name)."""
    gr = require("gradio", "demo")
    tok = load_image_tokenizer(tokenizer_checkpoint)
    ar = load_image_ar(checkpoint)
    check_pair(ar, tok)

    errors_to_gradio = gradio_errors(gr)

    @errors_to_gradio
    def generate(caption: str, cfg: float, temperature: float, top_k: int, seed: int, count: int, progress=gr.Progress()):
        progress(0, desc="sampling")
        n = max(1, min(MAX_COUNT, int(count)))
        sampling = SamplingConfig(temperature=float(temperature), top_k=int(top_k), cfg_scale=float(cfg))
        codes = generate_codes(ar, [caption or ""] * n, sampling, int(seed))
        with torch.no_grad():
            return list(to_uint8(tok.model.decode(codes)))

    @errors_to_gradio
    def infill(editor: dict | None, box: str, caption: str, seed: int):
        background = (editor or {}).get("background")
        if background is None:
            raise MmarError("upload an image first")
        with tempfile.TemporaryDirectory() as tmp:  # the uploaded pixels go through the CLI's reader
            path = Path(tmp) / "in.png"
            Image.fromarray(np.asarray(background, dtype=np.uint8)).save(path)
            loaded = load_image(path, tok.cfg.image_size)
        if box.strip():
            region = pixel_box_to_grid(_box(box), loaded, ar.grid)
        else:
            strokes = [np.asarray(layer) for layer in (editor.get("layers") or []) if layer is not None]
            if not strokes:
                raise MmarError("draw over the part to regenerate, or give a box")
            mask = np.any([s[..., 3] > 0 if s.ndim == 3 and s.shape[-1] == 4 else s.astype(bool).any(-1) if s.ndim == 3
                           else s > 0 for s in strokes], axis=0)
            region = pixel_mask_to_grid(mask, loaded, ar.grid)
        with torch.no_grad():
            codes = tok.model.encode(loaded.image).codes
            filled = infill_codes(ar, codes, region, [caption or ""], SamplingConfig(top_k=50, cfg_scale=1.5), int(seed))
            return to_uint8(tok.model.decode(filled))[0]

    @errors_to_gradio
    def reconstruct(image_path: str | None):
        if not image_path:
            raise MmarError("upload an image first")
        loaded = load_image(Path(image_path), tok.cfg.image_size)
        with torch.no_grad():
            return to_uint8(tok.model.decode(tok.model.encode(loaded.image).codes))[0]

    with gr.Blocks(title="mmar images") as app:
        gr.Markdown("# mmar images\nOne causal Transformer over 8×8 VQ tokens of 64×64 emoji. "
                    "Captions are emoji names (\"fox face\", \"red apple\") or CLDR short names (\"fox\").")
        with gr.Tab("Generate"):
            caption = gr.Textbox(value="fox face", label="caption (empty: unconditional)")
            with gr.Row():
                cfg = gr.Slider(1.0, 4.0, value=1.5, step=0.1, label="CFG scale")
                temperature = gr.Slider(0.1, 1.5, value=1.0, step=0.05, label="temperature")
                top_k = gr.Slider(0, 500, value=50, step=1, label="top-k (0: off)")
                seed = gr.Number(value=0, precision=0, label="seed")
                count = gr.Slider(1, MAX_COUNT, value=4, step=1, label="images")
            go = gr.Button("Generate", variant="primary")
            gallery = gr.Gallery(label="samples", columns=4, elem_id="samples")
            go.click(generate, [caption, cfg, temperature, top_k, seed, count], gallery, api_name="generate")
        with gr.Tab("Infill"):
            with gr.Row():
                source = gr.ImageEditor(type="numpy", label="image: brush over the part to regenerate",
                                        brush=gr.Brush(colors=["#ff00ff"], color_mode="fixed"), layers=False)
                filled = gr.Image(label="infilled", elem_id="infilled")
            box = gr.Textbox(value="", label="or a box X0,Y0,X1,Y1 in the image's pixels (used when given)")
            caption2 = gr.Textbox(value="", label="caption (optional)")
            seed2 = gr.Number(value=0, precision=0, label="seed")
            gr.Button("Infill", variant="primary").click(infill, [source, box, caption2, seed2], filled, api_name="infill")
        with gr.Tab("Reconstruct"):
            with gr.Row():
                original = gr.Image(type="filepath", label="image")
                rebuilt = gr.Image(label="through the tokenizer", elem_id="rebuilt")
            gr.Button("Reconstruct").click(reconstruct, [original], rebuilt, api_name="reconstruct")
    return app


@command
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", type=Path, help="image model (default: image-ar-64 on the checkpoint search path)")
    ap.add_argument("--tokenizer-checkpoint", type=Path, help="image tokenizer (default: image-vq-64)")
    ap.add_argument("--port", type=int, default=7861)
    args = ap.parse_args(argv)
    app = build_app(args.checkpoint, args.tokenizer_checkpoint)
    app.queue().launch(server_name="127.0.0.1", server_port=args.port, max_file_size=MAX_UPLOAD)
    return 0


if __name__ == "__main__":
    sys.exit(main())
