"""Rebuild ``speech_en.flac`` from the Debian package (apt-get install asterisk-core-sounds-en-g722 ffmpeg):

    python demos/samples/make_speech_en.py
"""

import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

from mmar.data.crops import load_mono
from mmar.data.packaged_speech import SOUNDS, decode_g722

PROMPTS = ("hello-world", "tt-weasels", "tt-monkeysintro", "queue-thankyou")


def main(out: Path = Path(__file__).with_name("speech_en.flac"), gap: float = 0.3) -> None:
    """Allison's prompts joined by ``gap`` s of silence → 16 kHz mono 16-bit FLAC."""
    pieces = []
    with tempfile.TemporaryDirectory() as tmp:
        for p in PROMPTS:
            wav = Path(tmp) / f"{p}.wav"
            decode_g722(SOUNDS / "en_US_f_Allison" / f"{p}.g722", wav)
            pieces += ([np.zeros(int(gap * 16000), np.float32)] if pieces else []) + [load_mono(wav, 16000)]
    audio = np.concatenate(pieces)
    sf.write(str(out), audio, 16000, subtype="PCM_16")
    print(f"{out}: {len(audio) / 16000:.2f} s, {out.stat().st_size} bytes")


if __name__ == "__main__":
    main()
