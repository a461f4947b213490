"""Listenable samples of a TTS checkpoint for its model card: a few test sentences in unseen voices
and the default voice, and one edit, as WAV files plus one PNG of their spectrograms.

    python recipes/tts_samples.py --checkpoint runs/tts_small/export --data data/tts \
        --out runs/tts_samples --png checkpoints/tts-16k/spectrograms.png
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

from mmar.atomic import atomic_write
from mmar.audio import read_mono
from mmar.errors import command
from mmar.tasks.speak import RATE, Speaker, default_voice, edit, say, voice_from_audio
from mmar.text.align import recognise


def spectrogram(x: np.ndarray, n_fft: int = 512, hop: int = 160) -> np.ndarray:
    """Log-magnitude STFT [freq, frames] in dB."""
    pad = np.pad(x, (n_fft // 2, n_fft // 2))
    frames = np.lib.stride_tricks.sliding_window_view(pad, n_fft)[::hop] * np.hanning(n_fft)
    return 20 * np.log10(np.abs(np.fft.rfft(frames, axis=1)).T + 1e-5)


@command
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", type=Path)
    ap.add_argument("--data", type=Path, default=Path("data/tts"))
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--png", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    sp = Speaker.load(args.checkpoint)
    utts = json.loads((args.data / "test.json").read_text())["utterances"]
    wavs = sorted((args.data / "test_wav").glob("*.wav"))
    args.out.mkdir(parents=True, exist_ok=True)
    panels = []
    for k, (i, prompt) in enumerate([(0, 2), (3, 5), (4, None)]):  # test utterances alternate awb, awb_up5
        text = utts[i]["text"]
        if prompt is None:
            voice, who = default_voice(sp), "default voice"
        else:
            voice, _, _ = voice_from_audio(sp, read_mono(wavs[prompt], RATE)[0], utts[prompt]["text"])
            who = f"prompt: {utts[prompt]['name']}"
        audio, _ = say(sp, text, voice, 1, seed=args.seed)
        sf.write(args.out / f"tts_{k}.wav", audio, RATE)
        panels.append((f"TTS ({who}): {text}\nheard: {recognise(audio)}", audio))
    original = read_mono(wavs[6], RATE)[0]
    words = utts[6]["text"].rstrip(".!?").split()
    new = " ".join(words[:-1] + ["tomorrow"])
    edited, info = edit(sp, original, new, utts[6]["text"], seed=args.seed)
    sf.write(args.out / "edit_before.wav", original, RATE)
    sf.write(args.out / "edit_after.wav", edited, RATE)
    panels += [(f"edit, before: {info['from']}", original),
               (f"edit, after: {info['to']} (regenerated {info['spans_after_s']} s)\nheard: {recognise(edited)}", edited)]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(panels), 1, figsize=(10, 2.3 * len(panels)))
    for ax, (title, x) in zip(axes, panels):
        ax.imshow(spectrogram(x), origin="lower", aspect="auto", cmap="magma", vmin=-60, vmax=40,
                  extent=[0, len(x) / RATE, 0, RATE / 2000])
        ax.set_title(title, fontsize=8, loc="left")
        ax.set_ylabel("kHz")
    axes[-1].set_xlabel("seconds")
    fig.tight_layout()
    atomic_write(args.png, lambda p: fig.savefig(p, format="png", dpi=80), tmp_suffix=".png")
    for title, _ in panels:
        print(title.replace("\n", " | "))
    return 0


if __name__ == "__main__":
    sys.exit(main())
