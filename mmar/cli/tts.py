"""``mmar tts`` and ``mmar edit`` (over :mod:`mmar.tasks.speak`).

Output: 16 kHz mono 16-bit WAV (the codec's rate), written atomically, never over an existing
file without -f. Input audio: any file soundfile reads, downmixed and resampled to 16 kHz.
Checkpoints: --checkpoint (default tts-16k) and --codec-checkpoint (default: the shipped codec whose
weights the TTS config names), found on the checkpoint search path ($MMAR_CHECKPOINTS, then the
shipped ones).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import MmarError

if TYPE_CHECKING:
    from ..generation import SamplingConfig

MAX_SAMPLES = 8
MAX_INPUT_SECONDS = 600.0  # read no more than this from any input file


def _speaker(args):
    from ..tasks.speak import Speaker

    return Speaker.load(args.checkpoint, args.codec_checkpoint)


def sampling_from_args(args: argparse.Namespace) -> SamplingConfig:
    """--temperature/--top-k/--top-p over :data:`mmar.tasks.speak.SAMPLING` (the defaults)."""
    from dataclasses import replace

    from ..tasks.speak import SAMPLING

    given = {k: getattr(args, k) for k in ("temperature", "top_k", "top_p") if getattr(args, k) is not None}
    return replace(SAMPLING, **given)


def _read(path: Path):
    from ..audio import read_mono

    return read_mono(path, 16000, MAX_INPUT_SECONDS)[0]


def _write(path: Path, audio, force: bool) -> None:
    import soundfile as sf

    from ..atomic import atomic_write, check_target

    check_target(path, force)
    atomic_write(path, lambda p: sf.write(str(p), audio.clip(-1, 1), 16000, subtype="PCM_16", format="WAV"), tmp_suffix=".wav")


def _tts(args) -> int:
    from ..atomic import check_target
    from ..tasks.speak import default_voice, say, voice_from_audio

    _check_samples(args)
    if not args.text.strip():
        raise MmarError("--text is empty")
    check_target(args.output, args.force)
    sp = _speaker(args)
    if args.prompt is not None:
        voice, said, cut = voice_from_audio(sp, _read(args.prompt), args.prompt_text)
        if cut:
            print(f"note: the voice prompt was cut to its words within 8 s: {said!r}")
        elif args.prompt_text is None:
            print(f"voice prompt says: {said!r}")
    else:
        if args.prompt_text is not None:
            raise MmarError("--prompt-text needs --prompt")
        voice = default_voice(sp)
    audio, records = say(sp, args.text, voice, args.num_samples, sampling_from_args(args), args.seed)
    _write(args.output, audio, args.force)
    print(f"{args.output}: {len(audio) / 16000:.2f} s, {len(records)} sentence(s)")
    return 0


def _check_samples(args) -> None:
    if not 1 <= args.num_samples <= MAX_SAMPLES:
        raise MmarError(f"--num-samples must be 1..{MAX_SAMPLES}, got {args.num_samples}")


def _edit(args) -> int:
    from ..atomic import check_target
    from ..tasks.speak import edit

    _check_samples(args)
    check_target(args.output, args.force)
    sp = _speaker(args)
    audio, info = edit(sp, _read(args.input), args.to, args.from_text, sampling_from_args(args), args.seed,
                       num_samples=args.num_samples)
    _write(args.output, audio, args.force)
    spans = ", ".join(f"{a:.2f}–{b:.2f} s" for a, b in info["spans_after_s"])
    print(f"{args.output}: {info['from']!r} → {info['to']!r}; regenerated {spans}")
    return 0


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--output", type=Path, required=True, help="output .wav (16 kHz)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--temperature", type=float, default=None, help="default: 1 (mmar.tasks.speak.SAMPLING)")
    p.add_argument("--top-k", type=int, default=None, help="0 = off; default: 50")
    p.add_argument("--top-p", type=float, default=None, help="1 = off; default: 0.8")
    p.add_argument("--checkpoint", type=Path, help="tts checkpoint directory (default: tts-16k)")
    p.add_argument("--codec-checkpoint", type=Path, help="speech codec checkpoint (default: the shipped one whose codes the TTS model learnt)")
    p.add_argument("-f", "--force", action="store_true", help="overwrite the output")


def add_parser(sub) -> None:
    p = sub.add_parser("tts", help="text → speech in a voice (zero-shot from a prompt, or the default voice)",
                       description="Speak --text in the voice of --prompt (its words: --prompt-text, else recognised) "
                                   "or in the checkpoint's default voice. Long text is split into sentences.")
    p.add_argument("--text", required=True)
    p.add_argument("--prompt", type=Path, help="a recording of the voice to speak in (≤ 8 s are used)")
    p.add_argument("--prompt-text", help="what the prompt says (default: recognised with pocketsphinx)")
    p.add_argument("--num-samples", type=int, default=1,
                   help="draw N candidates per sentence in one batch and keep the one pocketsphinx understands best")
    _common(p)
    p.set_defaults(func=_tts)

    e = sub.add_parser("edit", help="change the words of a recording: only the changed words are regenerated",
                       description="Regenerate the words that differ between --from (default: recognised) and --to; "
                                   "the rest of the recording is kept.")
    e.add_argument("input", type=Path)
    e.add_argument("--to", required=True, help="the new transcript")
    e.add_argument("--from", dest="from_text", help="what the recording says (default: recognised with pocketsphinx)")
    e.add_argument("--num-samples", type=int, default=1,
                   help="draw N edits in one batch and keep the one pocketsphinx hears closest to --to")
    _common(e)
    e.set_defaults(func=_edit)
