"""``mmar bench generate`` and ``mmar bench codec``: benchmarks that print a table and write JSON."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import MmarError


def _generate(args: argparse.Namespace) -> int:
    from ..atomic import write_json
    from ..bench.generate import format_table, run_generate_bench

    if args.frames < 1 or args.codebooks < 1:
        raise MmarError("--frames and --codebooks must be positive")
    result = run_generate_bench(args.frames, args.codebooks, args.preset, args.prompt_frames, args.seed)
    print(format_table(result))
    if args.json:
        write_json(result, args.json)
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("bench", help="benchmarks (print a table, write JSON)")
    bsub = p.add_subparsers(dest="bench", required=True, parser_class=type(p))
    g = bsub.add_parser("generate", help="kv-cache decoding vs full recomputation")
    g.add_argument("--frames", type=int, default=1000)
    g.add_argument("--codebooks", type=int, default=4)
    g.add_argument("--preset", default="small", choices=["debug", "small", "base"])
    g.add_argument("--prompt-frames", type=int, default=16)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--json", type=Path)
    g.set_defaults(func=_generate)
    from .codec import add_bench_parser

    add_bench_parser(bsub)
