"""Gradio demo of mmar's speech: the codec round trip, zero-shot TTS, and speech editing.

    python demos/speech_app.py [--checkpoint DIR] [--codec-checkpoint DIR] [--port 7862]

It binds to 127.0.0.1 only, refuses uploads over 10 MB and audio over 30 s (a voice prompt uses
its first 8 s). Endpoints for ``gradio_client``: ``/codec``, ``/tts``, ``/recognise``, ``/edit``.
Needs ``pip install "mmar[demo,tts]"``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from mmar.errors import MmarError, command, gradio_errors, require

MAX_UPLOAD = "10mb"
MAX_SECONDS = 30.0
RATE = 16000


def _load(path: str | None, what: str) -> np.ndarray:
    from mmar.audio import read_mono

    if not path:
        raise MmarError(f"upload or record {what} first")
    return read_mono(Path(path), RATE, MAX_SECONDS)[0]


def build_app(checkpoint: Path | None = None, codec_checkpoint: Path | None = None):
    """The Gradio Blocks app over the TTS model and codec found at these paths (or by name)."""
    gr = require("gradio", "demo")
    from mmar.tasks.codec import decode_array, encode_array, load_codec
    from mmar.tasks.speak import SAMPLING, Speaker, default_voice, edit, say, voice_from_audio
    from mmar.text.align import recognise

    sp = Speaker.load(checkpoint, codec_checkpoint)
    round_trip_codec = load_codec()  # the round trip shows the default codec; TTS uses the one its model learnt

    errors_to_gradio = gradio_errors(gr)

    @errors_to_gradio
    def codec(path: str | None, kbps: float):
        audio = _load(path, "speech")
        data = encode_array(round_trip_codec, audio, RATE, float(kbps))
        decoded, _ = decode_array(round_trip_codec, data)
        seconds = len(audio) / RATE
        return (RATE, decoded), f"{len(data)} bytes for {seconds:.2f} s: {8 * len(data) / seconds / 1000:.2f} kbps (header included)"

    @errors_to_gradio
    def tts(text: str, prompt: str | None, prompt_text: str, seed: int, samples: int, progress=gr.Progress()):
        progress(0, desc="reading the voice")
        if prompt:
            voice, said, _ = voice_from_audio(sp, _load(prompt, "the voice prompt"), prompt_text.strip() or None)
        else:
            voice, said = default_voice(sp), sp.tts.default_voice.get("text", "")
        progress(0.3, desc="speaking")
        audio, _ = say(sp, text, voice, max(1, min(4, int(samples))), SAMPLING, int(seed))
        return (RATE, audio), said

    @errors_to_gradio
    def transcribe(path: str | None):
        text = recognise(_load(path, "a recording"))
        if not text:
            raise MmarError("no words recognised")
        return text, text

    @errors_to_gradio
    def edit_speech(path: str | None, original: str, new: str, seed: int, progress=gr.Progress()):
        progress(0, desc="aligning and regenerating")
        audio, info = edit(sp, _load(path, "a recording"), new, original.strip() or None, SAMPLING, int(seed))
        spans = ", ".join(f"{a:.2f}–{b:.2f} s" for a, b in info["spans_after_s"])
        return (RATE, audio), f"{info['from']!r} → {info['to']!r}; regenerated {spans}"

    with gr.Blocks(title="mmar speech") as app:
        gr.Markdown("# mmar speech\nA causal RVQ codec at 1.5–6 kbps, and one Transformer over phones + codec tokens "
                    "for zero-shot TTS and speech editing (English).")
        with gr.Tab("TTS"):
            text = gr.Textbox(value="The quick brown fox jumps over the lazy dog.", label="text")
            with gr.Row():
                prompt = gr.Audio(type="filepath", sources=["upload", "microphone"], label="voice prompt (optional, ≤ 8 s used)")
                prompt_text = gr.Textbox(label="what the prompt says (optional: recognised)")
            with gr.Row():
                seed = gr.Number(value=0, precision=0, label="seed")
                samples = gr.Slider(1, 4, value=1, step=1, label="candidates (best by recognition)")
            go = gr.Button("Speak", variant="primary")
            spoken = gr.Audio(label="speech", elem_id="tts_out", type="numpy")
            heard = gr.Textbox(label="the prompt's words")
            go.click(tts, [text, prompt, prompt_text, seed, samples], [spoken, heard], api_name="tts")
        with gr.Tab("Edit"):
            source = gr.Audio(type="filepath", sources=["upload", "microphone"], label="recording (≤ 30 s)")
            recog = gr.Button("Recognise")
            original = gr.Textbox(label="what it says")
            new = gr.Textbox(label="what it should say")
            seed2 = gr.Number(value=0, precision=0, label="seed")
            recog.click(transcribe, [source], [original, new], api_name="recognise")
            edited = gr.Audio(label="edited", type="numpy")
            note = gr.Textbox(label="what changed")
            gr.Button("Edit", variant="primary").click(edit_speech, [source, original, new, seed2], [edited, note], api_name="edit")
        with gr.Tab("Codec"):
            upload = gr.Audio(type="filepath", sources=["upload", "microphone"], label="speech (≤ 30 s)")
            kbps = gr.Radio([1.5, 3.0, 6.0], value=1.5, label="kbps")
            decoded = gr.Audio(label="decoded", type="numpy")
            size = gr.Textbox(label="file size")
            gr.Button("Encode + decode").click(codec, [upload, kbps], [decoded, size], api_name="codec")
    return app


@command
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", type=Path, help="TTS model (default: tts-16k on the checkpoint search path)")
    ap.add_argument("--codec-checkpoint", type=Path, help="the codec for TTS and editing (default: the shipped one the TTS model learnt)")
    ap.add_argument("--port", type=int, default=7862)
    args = ap.parse_args(argv)
    app = build_app(args.checkpoint, args.codec_checkpoint)
    app.queue().launch(server_name="127.0.0.1", server_port=args.port, max_file_size=MAX_UPLOAD)
    return 0


if __name__ == "__main__":
    sys.exit(main())
