"""``mmar codec encode | decode | info`` (``mmar bench codec`` is in :mod:`mmar.cli.bench`)."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from ..errors import MmarError
from . import print_info


def _codec(args):
    from ..tasks.codec import load_codec

    return load_codec(args.checkpoint, args.tokenizer)


def _lm(path, needed: bool = True):
    from ..tasks.codec_lm import load_lm

    return load_lm(path) if needed else None


def _models_for(args, header):
    from ..tasks.codec import models_for

    return models_for(header, args.checkpoint, args.lm_checkpoint, args.tokenizer)


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def _levels_kbps(codec, kbps: float) -> float:
    """``kbps`` if the codec has a level count for it; else an error giving the valid range."""
    tok = codec.model
    step = tok.codebook_bits * tok.frame_rate / 1000
    top = step * tok.num_codebooks
    if not (math.isfinite(kbps) and step - 1e-9 <= kbps <= top + 1e-9):
        raise MmarError(f"--bitrate must be {step:g}..{top:g} kbps (levels × {step:g}), got {kbps}")
    return kbps


def _encode(args: argparse.Namespace) -> int:
    from ..tasks.codec import encode_file

    codec = _codec(args)
    if args.lm and args.bitrate is not None:
        _warn("--bitrate is not used with --lm (the LM's coarse levels are sent)")
    kbps = _levels_kbps(codec, 1.5 if args.bitrate is None else args.bitrate)
    if args.rdo is not None and not args.lm:
        raise MmarError("--rdo needs --lm (it trades bits under the LM against distortion)")
    if args.rdo is not None and not (0 <= args.rdo < float("inf")):
        raise MmarError(f"--rdo must be a finite number ≥ 0, got {args.rdo}")
    lm = _lm(args.lm_checkpoint, args.lm)
    header = encode_file(codec, args.input, args.output, kbps, args.force, progress=not args.quiet, lm=lm, rdo=args.rdo)
    size = args.output.stat().st_size
    print(f"{args.output}: {header.duration:.2f} s, {header.levels} levels, {size} bytes, {8 * size / max(header.duration, 1e-9) / 1000:.2f} kbps")
    return 0


def _decode(args: argparse.Namespace) -> int:
    from ..coding.container import ContainerReader
    from ..tasks.codec import decode_file

    with ContainerReader(args.input) as r:
        codec, lm = _models_for(args, r.header)
    if args.coarse_only and lm is None:
        _warn("--coarse-only has no effect on a raw file (it holds every level it decodes)")
    header = decode_file(codec, args.input, args.output, args.force, progress=not args.quiet, lm=lm,
                         fine=not args.coarse_only)
    print(f"{args.output}: {header.duration:.2f} s at {header.input_rate} Hz")
    return 0


def _info(args: argparse.Namespace) -> int:
    """Fields from the header and one pass over the chunks' lengths and CRCs: no model is loaded,
    except with ``--crossentropy`` on an LM-coded file (then the coarse levels are decoded)."""
    from ..coding.container import payload_bits

    sizes = payload_bits(args.input)
    h = sizes.pop("header")
    info = {
        "file": str(args.input), "format_version": sizes["format_version"], "model": h.model, "weights": h.weights,
        "mode": h.mode, "sample_rate": h.sample_rate, "input_rate": h.input_rate, "duration": round(h.duration, 3),
        "levels": h.levels, "bits_per_code": h.bits, "frames": h.frames, "chunks": sizes["chunks"],
        "bytes": sizes["total_bytes"], "header_bytes": sizes["header_bytes"], "payload_bytes": sizes["payload_bytes"],
        "kbps": round(8 * sizes["total_bytes"] / max(h.duration, 1e-9) / 1000, 3),
        "bits_total": 8 * sizes["total_bytes"], "bits_raw": h.levels * h.bits * h.frames,
    }
    if h.mode == "lm":
        info["lm"], info["lm_weights"] = h.extra.get("lm"), h.extra.get("lmw")
        info["rdo_lambda"] = h.extra.get("rdo", 0.0)
        info["bits_model_crossentropy"] = round(_crossentropy(args), 1) if args.crossentropy else None
    print_info(info, args.json, 24)
    return 0


def _crossentropy(args: argparse.Namespace) -> float:
    """The LM's cross-entropy (bits) of an LM-coded file's symbols: decodes its coarse levels."""
    from tqdm import tqdm

    from ..coding.container import ContainerReader
    from ..tasks.codec import decode_stream

    with ContainerReader(args.input) as r:
        codec, lm = _models_for(args, r.header)
    stats: dict = {}
    with ContainerReader(args.input) as r, tqdm(total=round(r.header.duration, 1), unit="s", desc="cross-entropy", leave=False,
                                                 disable=r.header.duration < 60) as bar:
        for y in decode_stream(codec, r.header, r, lm, fine=False, stats=stats):
            bar.update(len(y) / r.header.input_rate)
    return stats.get("xent_bits", 0.0)


def _path_in(value: str) -> Path:
    p = Path(value)
    if not p.is_file():
        raise MmarError(f"no such file: {p}")
    return p


def _tokenizer_name(value: str) -> str:
    from ..tokenizers.base import tokenizer_names  # imported only when the flag is given: --help stays fast

    if value not in tokenizer_names(aliases=True):
        raise MmarError(f"unknown tokenizer {value!r}; choose from {', '.join(tokenizer_names(aliases=True))}")
    return value


def add_parser(sub) -> None:
    p = sub.add_parser("codec", help="speech codec: encode, decode, inspect .mmc files")
    csub = p.add_subparsers(dest="codec", required=True, parser_class=type(p))
    ck = dict(type=Path, default=None, help="codec checkpoint: a directory (default: speech-codec-16k from $MMAR_CHECKPOINTS "
                                           "or the shipped one; decoding: the shipped one the file names), or with --tokenizer encodec_24khz Meta's .th file")
    tok = dict(default="speech16k", type=_tokenizer_name, metavar="NAME",
               help="a registered tokenizer (default: speech16k, also called mmar; encodec_24khz needs --checkpoint)")
    lmck = dict(type=Path, default=None, help="LM checkpoint directory (default: speech-lm-16k from $MMAR_CHECKPOINTS or the shipped one; "
                                             "decoding: the shipped one the file names)")

    e = csub.add_parser("encode", help="audio file (wav, flac, ogg, mp3; any rate, any channels) → .mmc")
    e.add_argument("input", type=_path_in)
    e.add_argument("-o", "--output", type=Path, required=True)
    e.add_argument("-b", "--bitrate", type=float, default=None, help="kbps: 0.5..6 (default 1.5; levels = bitrate / 0.5)")
    e.add_argument("-f", "--force", action="store_true", help="overwrite the output")
    e.add_argument("-q", "--quiet", action="store_true")
    e.add_argument("--lm", action="store_true", help="LM coding: send the LM's coarse levels, range-coded (LMCodec); --bitrate is then not used")
    e.add_argument("--rdo", type=float, default=None, metavar="LAMBDA",
                   help="with --lm: choose codes by squared error + LAMBDA × bits (default: the LM's own λ; 0 = nearest codes, lossless)")
    e.add_argument("--checkpoint", **ck)
    e.add_argument("--tokenizer", **tok)
    e.add_argument("--lm-checkpoint", **lmck)
    e.set_defaults(func=_encode)

    d = csub.add_parser("decode", help=".mmc → audio at the original sample rate (.wav, .flac, .ogg)")
    d.add_argument("input", type=_path_in)
    d.add_argument("-o", "--output", type=Path, required=True)
    d.add_argument("-f", "--force", action="store_true")
    d.add_argument("-q", "--quiet", action="store_true")
    d.add_argument("--coarse-only", action="store_true", help="LM-coded files: decode the sent levels alone (no fine-token model)")
    d.add_argument("--checkpoint", **ck)
    d.add_argument("--tokenizer", **tok)
    d.add_argument("--lm-checkpoint", **lmck)
    d.set_defaults(func=_decode)

    i = csub.add_parser("info", help="what a .mmc file holds (model, duration, levels, bytes, kbps)")
    i.add_argument("input", type=_path_in)
    i.add_argument("--json", action="store_true")
    i.add_argument("--crossentropy", action="store_true",
                   help="LM-coded files: also the LM's cross-entropy of the coded symbols (decodes the coarse levels; slow)")
    i.add_argument("--checkpoint", **ck)
    i.add_argument("--tokenizer", **tok)
    i.add_argument("--lm-checkpoint", **lmck)
    i.set_defaults(func=_info)
