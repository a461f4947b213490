"""``mmar codec encode | decode | info`` and ``mmar bench codec``."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from ..errors import MmarError


def _codec(args):
    from ..tasks.codec import load_codec

    return load_codec(args.checkpoint, args.tokenizer)


def _lm(path, needed: bool = True):
    from ..tasks.codec_lm import load_lm

    return load_lm(path) if needed else None


def _encode(args: argparse.Namespace) -> int:
    from ..tasks.codec import encode_file

    codec = _codec(args)
    if args.rdo is not None and not args.lm:
        raise MmarError("--rdo needs --lm (it trades bits under the LM against distortion)")
    if args.rdo is not None and not (0 <= args.rdo < float("inf")):
        raise MmarError(f"--rdo must be a finite number ≥ 0, got {args.rdo}")
    lm = _lm(args.lm_checkpoint, args.lm)
    header = encode_file(codec, args.input, args.output, args.bitrate, args.force, progress=not args.quiet, lm=lm, rdo=args.rdo)
    size = args.output.stat().st_size
    print(f"{args.output}: {header.duration:.2f} s, {header.levels} levels, {size} bytes, {8 * size / max(header.duration, 1e-9) / 1000:.2f} kbps")
    return 0


def _decode(args: argparse.Namespace) -> int:
    from ..coding.container import ContainerReader
    from ..tasks.codec import decode_file

    with ContainerReader(args.input) as r:
        lm = _lm(args.lm_checkpoint, r.header.mode == "lm")
    header = decode_file(_codec(args), args.input, args.output, args.force, progress=not args.quiet, lm=lm,
                         fine=not args.coarse_only)
    print(f"{args.output}: {header.duration:.2f} s at {header.input_rate} Hz")
    return 0


def _info(args: argparse.Namespace) -> int:
    from ..coding.container import payload_bits

    sizes = payload_bits(args.input)
    h = sizes.pop("header")
    frames = math.ceil(h.num_samples / (h.sample_rate // h.frame_rate))
    info = {
        "file": str(args.input), "model": h.model, "weights": h.weights, "mode": h.mode,
        "sample_rate": h.sample_rate, "input_rate": h.input_rate, "duration": round(h.duration, 3),
        "levels": h.levels, "bits_per_code": h.bits, "frames": frames, "chunks": sizes["chunks"],
        "bytes": sizes["total_bytes"], "payload_bytes": sizes["payload_bytes"],
        "kbps": round(8 * sizes["total_bytes"] / max(h.duration, 1e-9) / 1000, 3),
        "bits_total": 8 * sizes["total_bytes"], "bits_raw": h.levels * h.bits * frames,
    }
    if h.mode == "lm":  # the model's cross-entropy of the coded symbols needs the model
        from ..coding.container import ContainerReader
        from ..tasks.codec import decode_stream, load_codec

        stats: dict = {}
        with ContainerReader(args.input) as r:
            for _ in decode_stream(load_codec(args.checkpoint, args.tokenizer), r.header, r, _lm(args.lm_checkpoint), fine=False, stats=stats):
                pass
        info["bits_model_crossentropy"] = round(stats.get("xent_bits", 0.0), 1)
        info["lm"] = h.extra.get("lm")
        info["rdo_lambda"] = h.extra.get("rdo", 0.0)
    if args.json:
        print(json.dumps(info, indent=1))
    else:
        for k, v in info.items():
            print(f"{k:<14} {v}")
    return 0


def _path_in(value: str) -> Path:
    p = Path(value)
    if not p.is_file():
        raise MmarError(f"no such file: {p}")
    return p


def add_parser(sub) -> None:
    p = sub.add_parser("codec", help="speech codec: encode, decode, inspect .mmc files")
    csub = p.add_subparsers(dest="codec", required=True, parser_class=type(p))
    ck = dict(type=Path, default=None, help="codec checkpoint: a directory (default: the shipped speech-codec-16k), "
                                           "or with --tokenizer encodec_24khz Meta's .th file")
    tok = dict(default="mmar", choices=["mmar", "encodec_24khz"], help="which codec (encodec_24khz: pip install 'mmar[encodec]' "
                                                                     "is not needed; weights come from --checkpoint)")
    lmck = dict(type=Path, default=None, help="LM checkpoint directory (default: the shipped speech-lm-16k)")

    e = csub.add_parser("encode", help="audio file (wav, flac, ogg, mp3; any rate, any channels) → .mmc")
    e.add_argument("input", type=_path_in)
    e.add_argument("-o", "--output", type=Path, required=True)
    e.add_argument("-b", "--bitrate", type=float, default=1.5, help="kbps: 1.5, 3 or 6 (levels = bitrate / 0.5)")
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
    i.add_argument("--checkpoint", **ck)
    i.add_argument("--tokenizer", **tok)
    i.add_argument("--lm-checkpoint", **lmck)
    i.set_defaults(func=_info)


def _bench_codec(args: argparse.Namespace) -> int:
    from ..bench.codec_systems import mmar_systems
    from ..atomic import write_json
    from ..bench.codec import format_table, run_codec_bench
    from ..eval.baselines import default_baselines

    clips = sorted(p for p in args.clips.iterdir() if p.suffix.lower() in {".wav", ".flac", ".ogg"}) if args.clips.is_dir() else []
    if not clips:
        raise MmarError(f"no audio clips in {args.clips}")
    ours = mmar_systems(args.checkpoint, args.bitrates, args.lm_checkpoint)
    result = run_codec_bench(clips, ours + default_baselines(), None, args.png, visqol=False if args.no_visqol else None, log=print)
    result["mmar"] = {s.name: s.summary() for s in ours}
    print(format_table(result))
    print("\nmmar timing and coding (real-time factors per direction; LM rows: payload bits vs the model's cross-entropy and vs raw packing)")
    for name, st in result["mmar"].items():
        extra = f"  bits/xent {st['bits_over_xent']:.4f}  saving vs raw {100 * st['saving_vs_raw']:.1f}%" if "xent_bits" in st else ""
        print(f"  {name:<34} encode RTF {st['rtf_encode']:.4f}  decode RTF {st['rtf_decode']:.4f}{extra}")
    if args.json:
        write_json(result, args.json)
    return 0


def add_bench_parser(bsub) -> None:
    c = bsub.add_parser("codec", help="mmar codec vs Codec2 and Opus on the same clips (PESQ-WB, STOI, SI-SDR, RTF)")
    c.add_argument("--clips", type=Path, required=True, help="folder of speech clips")
    c.add_argument("--bitrates", type=float, nargs="+", default=[1.5, 3.0, 6.0])
    c.add_argument("--checkpoint", type=Path, default=None)
    c.add_argument("--lm-checkpoint", type=Path, default=None, help="adds the LM-coded rows (default: the shipped LM, if present)")
    c.add_argument("--json", type=Path)
    c.add_argument("--png", type=Path, help="spectrograms of the first clip")
    c.add_argument("--no-visqol", action="store_true", help="skip ViSQOL (slow: ~3 s per clip and system)")
    c.set_defaults(func=_bench_codec)
