"""``mmar bench generate|codec|image|video|tts``: benchmarks that print a table and write JSON."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import MmarError
from .video import MOTION_TEMPERATURE


def _generate(args: argparse.Namespace) -> int:
    from ..atomic import write_json
    from ..bench.generate import format_table, run_generate_bench

    if args.frames < 1 or args.codebooks < 1:
        raise MmarError("--frames and --codebooks must be positive")
    result = run_generate_bench(args.frames, args.codebooks, args.preset, args.prompt_frames, args.seed, progress=True)
    print(format_table(result))
    if args.json:
        write_json(result, args.json)
    return 0


def _bench_codec(args: argparse.Namespace) -> int:
    from ..atomic import write_json
    from ..bench.codec import find_clips, format_table, run_codec_bench
    from ..bench.codec_systems import mmar_systems
    from ..eval.baselines import default_baselines

    if args.per_speaker is not None and args.per_speaker < 1:
        raise MmarError("--per-speaker must be at least 1")
    found = find_clips(args.clips, args.per_speaker)
    if not found:
        raise MmarError(f"no audio clips in {args.clips}")
    clips, speakers = [c for c, _ in found], [s for _, s in found]
    ours = mmar_systems(args.checkpoint, args.bitrates, args.lm_checkpoint, use_lm=not args.no_lm, lm_floats=args.lm_floats)
    for path in args.compare or []:  # other codec checkpoints, side by side in the same run
        ours += mmar_systems(path, args.bitrates, args.lm_checkpoint, label=f"[{path.name}] ", lm_default_only=True,
                             use_lm=not args.no_lm)
    result = run_codec_bench(clips, ours + default_baselines(), None, args.png, visqol=False if args.no_visqol else None,
                             log=print, speakers=speakers)
    result["mmar"] = {s.name: s.summary() for s in ours}
    print(format_table(result))
    print("\nmmar timing and coding (real-time factors per direction; LM rows: payload bits vs the model's cross-entropy and vs raw packing)")
    for name, st in result["mmar"].items():
        extra = f"  bits/xent {st['bits_over_xent']:.4f}  saving vs raw {100 * st['saving_vs_raw']:.1f}%" if "xent_bits" in st else ""
        print(f"  {name:<34} encode RTF {st['rtf_encode']:.4f}  decode RTF {st['rtf_decode']:.4f}{extra}")
    if args.json:
        write_json(result, args.json)
    return 0


def _add_codec_parser(bsub) -> None:
    c = bsub.add_parser("codec", help="mmar codec vs Codec2 and Opus on the same clips (PESQ-WB, STOI, SI-SDR, RTF)")
    c.add_argument("--clips", type=Path, required=True,
                   help="folder of speech clips: <speaker>/*.wav (e.g. data/prep/test) or flat <speaker>_<n>.wav")
    c.add_argument("--per-speaker", type=int, metavar="N", help="the first N clips of each speaker (sorted)")
    c.add_argument("--bitrates", type=float, nargs="+", default=[1.5, 3.0, 6.0])
    c.add_argument("--checkpoint", type=Path, default=None)
    c.add_argument("--lm-checkpoint", type=Path, default=None, help="adds the LM-coded rows (default: the shipped LM, if present)")
    c.add_argument("--no-lm", action="store_true", help="raw codec rows only (the LM rows take most of the time)")
    c.add_argument("--lm-floats", action="store_true",
                   help="also the LM's default mode coded with the LM in floats (files not portable across CPUs), as a baseline")
    c.add_argument("--compare", type=Path, nargs="+", metavar="DIR",
                   help="more codec checkpoints to score in the same run (raw rows + the LM's default mode, if it speaks their codes)")
    c.add_argument("--json", type=Path)
    c.add_argument("--png", type=Path, help="spectrograms of the first clip")
    c.add_argument("--no-visqol", action="store_true", help="skip ViSQOL (slow: ~3 s per clip and system)")
    c.set_defaults(func=_bench_codec)


def _bench_image(args: argparse.Namespace) -> int:
    from ..atomic import write_json
    from ..bench.image import format_table, run_image_bench
    from ..checkpoint import find_checkpoint

    if args.limit is not None and args.limit < 1:
        raise MmarError("--limit must be at least 1")
    if args.generation is not None and not 1 <= args.generation <= 1000:
        raise MmarError("--generation must be 1..1000")
    paths = args.paths.split(",")
    if not paths or any(p not in ("image_vq", "image_vae") for p in paths):
        raise MmarError(f"--paths takes image_vq and/or image_vae, comma-separated, got {args.paths!r:.40}")
    vae = None
    if "image_vae" in paths:
        from ..tasks.image_latent import TOKENIZER_NAME, load_image_vae

        vae = load_image_vae(find_checkpoint(TOKENIZER_NAME, args.vae_checkpoint))
    result = run_image_bench(args.data, args.tokenizer_checkpoint, args.split, args.limit, log=print, vae=vae)
    print(format_table(result))
    if args.generation:
        from ..bench.image_generation import format_generation, run_generation_bench, vae_path, vq_path
        from ..eval.image_classifier import load_classifier

        makers = {"image_vq": lambda: vq_path(args.checkpoint, args.tokenizer_checkpoint),
                  "image_vae": lambda: vae_path(args.latent_checkpoint, args.vae_checkpoint, args.steps)}
        result["generation"] = run_generation_bench(args.data, [makers[p]() for p in paths], load_classifier(args.classifier),
                                                    args.generation, log=print, png=args.png, held_out=args.held_out)
        print("\n" + format_generation(result["generation"]))
    if args.json:
        write_json(result, args.json)
    return 0


def _bench_tts(args: argparse.Namespace) -> int:
    from ..atomic import write_json
    from ..bench.tts import format_table, run_tts_bench
    from ..tasks.speak import Speaker
    from ..tasks.tts import check_sampling
    from .tts import sampling_from_args

    if args.limit is not None and args.limit < 1:
        raise MmarError("--limit must be at least 1")
    if not 1 <= args.edit_samples <= 8:
        raise MmarError("--edit-samples must be 1..8")
    sampling = sampling_from_args(args)
    check_sampling(sampling)
    sp = Speaker.load(args.checkpoint, args.codec_checkpoint)
    result = run_tts_bench(sp, args.data, args.limit, args.uncached, args.seed, sampling,
                           edit_samples=args.edit_samples, split=args.split)
    print(format_table(result))
    if args.json:
        write_json(result, args.json)
    return 0


def _bench_video(args: argparse.Namespace) -> int:
    from ..atomic import write_json
    from ..bench.video import format_video, run_video_bench

    if not 1 <= args.clips <= 10_000 or not 2 <= args.context <= 256 or not 1 <= args.horizon <= 256:
        raise MmarError("--clips must be 1..10000, --context 2..256 and --horizon 1..256")
    if args.no_refiner and args.refiner is not None:
        raise MmarError("--refiner and --no-refiner contradict each other")
    result = run_video_bench(args.data, args.checkpoint, args.tokenizer_checkpoint, args.clips, args.context, args.horizon,
                             args.steps, args.cfg, args.seed, memory=not args.no_memory, split=args.split,
                             temperature=args.temperature, refiner=args.refiner, use_refiner=not args.no_refiner,
                             motion_temperature=args.motion_temperature)
    print(format_video(result))
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
    _add_codec_parser(bsub)
    i = bsub.add_parser("image", help="image tokenizers vs JPEG and WebP at the same bytes; with --generation, caption → image for both paths")
    i.add_argument("--data", type=Path, default=Path("data/emoji"), help="emoji renders (python -m mmar.data.emoji)")
    i.add_argument("--split", default="test", choices=["train", "valid", "test"])
    i.add_argument("--tokenizer-checkpoint", type=Path, default=None, help="image_vq checkpoint (default: image-vq-64)")
    i.add_argument("--limit", type=int, help="the first N images only")
    i.add_argument("--generation", type=int, metavar="N", help="also caption → image for N train and N test captions")
    i.add_argument("--checkpoint", type=Path, default=None, help="token image model for --generation (default: image-ar-64)")
    i.add_argument("--paths", default="image_vq,image_vae",
                   help="image paths to score, comma-separated: image_vq (codes), image_vae (latents); default both")
    i.add_argument("--vae-checkpoint", type=Path, default=None, help="image_vae tokenizer (default: image-vae-64)")
    i.add_argument("--latent-checkpoint", type=Path, default=None,
                   help="latent image model for --generation (default: image-diffusion-64)")
    i.add_argument("--steps", type=int, default=16, help="diffusion-head ODE steps per latent (image_vae path)")
    i.add_argument("--classifier", type=Path, default=None, help="emoji classifier for --generation (default: emoji-classifier)")
    i.add_argument("--held-out", choices=("test", "valid"), default="test",
                   help="with --generation: the unseen captions' split (valid for decisions such as ablations)")
    i.add_argument("--png", type=Path, help="with --generation: sample grids (captions × seeds) as <stem>_<path>.png")
    i.add_argument("--json", type=Path)
    i.set_defaults(func=_bench_image)
    v = bsub.add_parser("video", help="video continuation, caption adherence, cache-reuse speed and rollout memory on test clips")
    v.add_argument("--data", type=Path, default=Path("data/emoji"), help="emoji renders (the sprites; python -m mmar.data.emoji)")
    v.add_argument("--checkpoint", type=Path, default=None, help="video model (default: video-64)")
    v.add_argument("--tokenizer-checkpoint", type=Path, default=None, help="σ-VAE (default: the one the model was trained on)")
    v.add_argument("--refiner", type=Path, default=None, help="a trained temporal decoder (default: motion compensation, no weights)")
    v.add_argument("--no-refiner", action="store_true", help="decode each frame on its own with the σ-VAE")
    v.add_argument("--clips", type=int, default=32)
    v.add_argument("--split", choices=("test", "valid"), default="test",
                   help="sprites never trained on: valid for decisions, test for reporting")
    v.add_argument("--context", type=int, default=4, help="true frames given")
    v.add_argument("--horizon", type=int, default=8, help="frames generated")
    v.add_argument("--steps", type=int, default=8)
    v.add_argument("--cfg", type=float, default=1.5)
    v.add_argument("--temperature", type=float, default=1.0, help="scale of the starting noise")
    v.add_argument("--motion-temperature", type=float, default=MOTION_TEMPERATURE,
                   help="the same, for frames whose base extrapolates a seen motion (motion_base models; default: --temperature)")
    v.add_argument("--seed", type=int, default=0)
    v.add_argument("--no-memory", action="store_true", help="skip the 100- vs 1000-frame rollout memory runs")
    v.add_argument("--json", type=Path)
    v.set_defaults(func=_bench_video)
    t = bsub.add_parser("tts", help="zero-shot TTS and editing on unseen sentences and voices (WER, similarity, RTF)")
    t.add_argument("--data", type=Path, default=Path("data/tts"), help="TTS corpus (python -m mmar.data.tts_corpus)")
    t.add_argument("--limit", type=int, help="the first N utterances of each voice")
    t.add_argument("--uncached", type=int, default=3, help="sentences timed without the kv-cache (slow)")
    t.add_argument("--split", choices=("test", "valid"), default="test",
                   help="test: unseen sentences and voices, for reporting; valid: the train voices on the valid sentences, for decisions")
    t.add_argument("--temperature", type=float, default=None, help="default: 1 (mmar.tasks.speak.SAMPLING)")
    t.add_argument("--top-k", type=int, default=None, help="0 = off; default: 50")
    t.add_argument("--top-p", type=float, default=None, help="1 = off; default: 0.8")
    t.add_argument("--edit-samples", type=int, default=4, help="N of the best-of-N editing row")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--checkpoint", type=Path, default=None, help="tts checkpoint (default: tts-16k)")
    t.add_argument("--codec-checkpoint", type=Path, default=None)
    t.add_argument("--json", type=Path)
    t.set_defaults(func=_bench_tts)
