"""``mmar image generate | infill | reconstruct | info`` (over :mod:`mmar.tasks.image`).

Input images: any size and mode Pillow reads (the first frame; alpha composited on white),
centre-cropped to a square and resized to 64×64 (Lanczos). Outputs are 64×64 PNGs (generate with
--num N > 1: one PNG tiling the N images, ceil(√N) per row), written atomically, never over an
existing file without -f. Checkpoints: --checkpoint (image-ar-64) and
--tokenizer-checkpoint (image-vq-64), else those names on the checkpoint search path
($MMAR_CHECKPOINTS, then the shipped ones). ``--tokenizer image_vae`` (generate, reconstruct,
info) takes the continuous path instead: the σ-VAE image-vae-64 and the diffusion-head model
image-diffusion-64 (:mod:`mmar.tasks.image_latent`).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from ..errors import MmarError
from . import print_info

MAX_NUM = 64


def _latent(args) -> bool:
    return getattr(args, "tokenizer", "image_vq") == "image_vae"


def _models(args, need_ar: bool = True):
    if _latent(args):
        from ..tasks.image_latent import check_vae_pair, load_image_latent, load_image_vae

        load_tok, load_ar, check = load_image_vae, load_image_latent, check_vae_pair
    else:
        from ..tasks.image import check_pair, load_image_ar, load_image_tokenizer

        load_tok, load_ar, check = load_image_tokenizer, load_image_ar, check_pair
    tok = load_tok(args.tokenizer_checkpoint)
    ar = load_ar(args.checkpoint) if need_ar else None
    if ar is not None:
        check(ar, tok)
    return ar, tok


def _sampling(args):
    from ..generation import SamplingConfig

    return SamplingConfig(temperature=args.temperature, top_k=50 if args.top_k is None else args.top_k,
                          top_p=1.0 if args.top_p is None else args.top_p, cfg_scale=args.cfg)


def _encode_decode(tok, image):
    """image float [1, 3, H, W] → its round trip through the tokenizer's codes (or latents)."""
    enc = tok.model.encode(image)
    return tok.model.decode(enc.codes) if enc.codes is not None else tok.model.decode_latents(enc.latents)


def _check_out(args) -> None:
    from ..atomic import check_target

    check_target(args.output, args.force)  # before any model work


def _caption(ar, text: str) -> str:
    from ..text.captions import words

    if text.strip() and not words(text):
        raise MmarError(f"caption {text!r:.60} has no words (an empty caption means unconditional)")
    ar.vocab.encode(text)  # too long → one error line
    return text


def _generate(args) -> int:
    import torch

    from ..tasks.image import generate_codes, save_png

    if not 1 <= args.num <= MAX_NUM:
        raise MmarError(f"--num must be 1..{MAX_NUM}, got {args.num}")
    if _latent(args) and (args.top_k is not None or args.top_p is not None):
        raise MmarError("--top-k and --top-p choose among codes; the image_vae path has none (use --temperature, --steps)")
    if not _latent(args) and args.steps is not None:
        raise MmarError("--steps sets the diffusion head's ODE steps; it needs --tokenizer image_vae")
    _check_out(args)
    ar, tok = _models(args)
    caption = _caption(ar, args.caption)
    with torch.no_grad():
        if _latent(args):
            from ..tasks.image_latent import generate_latents

            z = generate_latents(ar, [caption] * args.num, args.steps or 16, args.temperature, args.cfg, args.seed)
            images = tok.model.decode_latents(z)
        else:
            images = tok.model.decode(generate_codes(ar, [caption] * args.num, _sampling(args), args.seed))
    save_png(images, args.output, args.force)
    unknown = ar.vocab.unknown(caption)
    note = f" (unknown words: {' '.join(unknown)})" if unknown else ""
    print(f"{args.output}: {args.num} image(s) for {caption!r}{note}")
    return 0


def _box(value: str) -> tuple[int, int, int, int]:
    try:
        parts = tuple(int(v) for v in value.split(","))
    except ValueError:
        parts = ()
    if len(parts) != 4:
        raise MmarError(f"--box must be X0,Y0,X1,Y1 (four integers), got {value!r:.40}")
    return parts  # type: ignore[return-value]


def _infill(args) -> int:
    import torch

    from ..tasks.image import infill_codes, load_image, load_mask, pixel_box_to_grid, pixel_mask_to_grid, region_spans, save_png

    _check_out(args)
    ar, tok = _models(args)
    loaded = load_image(args.input, tok.cfg.image_size)
    if args.box is not None:
        region = pixel_box_to_grid(args.box, loaded, ar.grid)
    else:
        region = pixel_mask_to_grid(load_mask(args.mask, loaded), loaded, ar.grid)
    caption = _caption(ar, args.caption)
    with torch.no_grad():
        codes = tok.model.encode(loaded.image).codes
        filled = infill_codes(ar, codes, region, [caption], _sampling(args), args.seed)
        images = tok.model.decode(filled)
    save_png(images, args.output, args.force)
    if args.box is not None:
        r0, c0, r1, c1 = region
        print(f"{args.output}: token rows {r0}..{r1 - 1}, columns {c0}..{c1 - 1} regenerated ({(r1 - r0) * (c1 - c0)} of {ar.tokens})")
    else:
        n = sum(b - a for a, b in region_spans(ar, region))
        print(f"{args.output}: {int(region.sum())} masked token cells, {n} of {ar.tokens} regenerated")
    return 0


def _reconstruct(args) -> int:
    import torch

    from ..tasks.image import load_image, save_png
    from ..tokenizers.image_cnn import psnr

    _check_out(args)
    _, tok = _models(args, need_ar=False)
    loaded = load_image(args.input, tok.cfg.image_size)
    with torch.no_grad():
        rec = _encode_decode(tok, loaded.image)
    save_png(rec, args.output, args.force)
    what = "latents" if _latent(args) else "codes"
    print(f"{args.output}: {tok.cfg.grid[0]}×{tok.cfg.grid[1]} {what}, PSNR {float(psnr(rec, loaded.image)[0]):.2f} dB vs the 64×64 input")
    return 0


def _info(args) -> int:
    from ..checkpoint import find_checkpoint
    from ..tasks import image, image_latent

    latent = _latent(args)
    _, tok = _models(args, need_ar=False)
    rows, cols = tok.cfg.grid
    info = {"tokenizer": tok.model_id, "tokenizer_weights": tok.weights, "image_size": tok.cfg.image_size,
            "grid": f"{rows}x{cols}"}
    if latent:
        info |= {"latent_channels": tok.model.latent_dim, "floats_per_image": rows * cols * tok.model.latent_dim}
    else:
        bits = math.ceil(math.log2(tok.model.codebook_size))
        info |= {"codes": tok.model.codebook_size, "bits_per_code": bits, "bits_per_image": rows * cols * bits}
    info["tokenizer_parameters"] = sum(p.numel() for p in tok.model.parameters())
    task = image_latent if latent else image
    try:
        ar_path = find_checkpoint(task.NAME, args.checkpoint)
    except MmarError:
        if args.checkpoint is not None:
            raise
        ar_path = None
    if ar_path is None:
        info["model"] = None
    elif latent:
        ar = image_latent.load_image_latent(ar_path)
        image_latent.check_vae_pair(ar, tok)
        c, h = ar.model.trunk.cfg, ar.model.head.cfg
        info |= {"model": ar.model_id, "model_weights": ar.weights, "model_parameters": ar.parameters(),
                 "model_size": f"dim {c.dim}, {c.n_layers} layers, {c.n_heads} heads",
                 "head": f"{h.objective}, width {h.width}, {h.depth} blocks", "steps_per_image": ar.tokens,
                 "caption_words": len(ar.vocab) - 3, "caption_max_words": ar.vocab.max_len}
    else:
        ar = image.load_image_ar(ar_path)
        image.check_pair(ar, tok)
        c = ar.model.cfg
        info |= {"model": ar.model_id, "model_weights": ar.weights, "model_parameters": ar.parameters(),
                 "model_size": f"dim {c.dim}, {c.n_layers} layers, {c.n_heads} heads", "steps_per_image": ar.tokens,
                 "caption_words": len(ar.vocab) - 3, "caption_max_words": ar.vocab.max_len, "max_spans": ar.ids.max_spans}
    print_info(info, args.json, 22, none="not found")
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("image", help="images: caption → image, infill a box, tokenizer round trip, sizes",
                       description=__doc__.split("\n\n")[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    isub = p.add_subparsers(dest="image", required=True, parser_class=type(p))
    ck = dict(type=Path, default=None, metavar="DIR",
              help="image model checkpoint (default: image-ar-64, or image-diffusion-64 with --tokenizer image_vae)")
    tk = dict(type=Path, default=None, metavar="DIR",
              help="image tokenizer checkpoint (default: image-vq-64, or image-vae-64 with --tokenizer image_vae)")
    kind = dict(choices=["image_vq", "image_vae"], default="image_vq",
                help="image_vq: VQ codes and the token model (default); image_vae: σ-VAE latents and the diffusion-head model")

    def common(q, sampling: bool = True, latent: bool = False):
        q.add_argument("-o", "--output", type=Path, required=True, help="PNG to write")
        q.add_argument("-f", "--force", action="store_true", help="overwrite the output")
        q.add_argument("--tokenizer-checkpoint", **tk)
        if latent:
            q.add_argument("--tokenizer", **kind)
        if sampling:
            q.add_argument("--checkpoint", **ck)
            q.add_argument("--seed", type=int, default=0, help="sampling seed (default 0; same seed, same image)")
            q.add_argument("--cfg", type=float, default=1.5, metavar="S",
                           help="classifier-free guidance scale (default 1.5; 1 = off; high values can collapse: measure)")
            q.add_argument("--temperature", type=float, default=1.0, metavar="T", help="0 = greedy (default 1)")
            q.add_argument("--top-k", type=int, default=None, metavar="K", help="image_vq: 0 = off (default 50)")
            q.add_argument("--top-p", type=float, default=None, metavar="P", help="image_vq: 1 = off (default)")

    g = isub.add_parser("generate", help="caption → 64×64 PNG",
                        description="Sample images for a caption. An empty caption (\"\") means unconditional. "
                                    "Words the model never saw become <unk> (and are listed). With --num N > 1 the "
                                    "N samples are tiled in one PNG, ceil(sqrt(N)) per row.")
    g.add_argument("--caption", required=True, metavar="TEXT", help="e.g. \"fox face\" (Unicode or CLDR names work)")
    g.add_argument("--num", type=int, default=1, metavar="N", help=f"images (1..{MAX_NUM}); N > 1 writes one PNG grid")
    g.add_argument("--steps", type=int, default=None, metavar="S",
                   help="image_vae: ODE steps of the diffusion head per latent (default 16)")
    common(g, latent=True)
    g.set_defaults(func=_generate)

    f = isub.add_parser("infill", help="regenerate a box or a brushed mask of an image (the rest is kept, token for token)",
                        description="Regenerate the image tokens under a box or a mask, keeping every other token. Both "
                                    "are in input pixels; they are mapped through the centre crop and 64×64 resize to "
                                    "every 8×8-pixel token cell they touch. Output: the 64×64 decoded result.")
    f.add_argument("input", type=Path, help="image file (any size and mode)")
    where = f.add_mutually_exclusive_group(required=True)
    where.add_argument("--box", type=_box, metavar="X0,Y0,X1,Y1",
                       help="pixels of the input, x1/y1 exclusive: 0 <= X0 < X1 <= width, 0 <= Y0 < Y1 <= height")
    where.add_argument("--mask", type=Path, metavar="MASK.png",
                       help="an image the size of the input, white (and opaque) where to regenerate; a brush mask. "
                            "Its cells' runs in raster order become spans; beyond 8 runs, the closest merge")
    f.add_argument("--caption", default="", metavar="TEXT", help="what the image shows (default: none, unconditional)")
    common(f)
    f.set_defaults(func=_infill)

    r = isub.add_parser("reconstruct", help="image → tokens → 64×64 PNG (the tokenizer round trip)")
    r.add_argument("input", type=Path, help="image file (any size and mode)")
    common(r, sampling=False, latent=True)
    r.set_defaults(func=_reconstruct)

    i = isub.add_parser("info", help="sizes: grid, codes, bits per image, parameters")
    i.add_argument("--checkpoint", **ck)
    i.add_argument("--tokenizer-checkpoint", **tk)
    i.add_argument("--tokenizer", **kind)
    i.add_argument("--json", action="store_true")
    i.set_defaults(func=_info)
