"""The TTS corpus's voices: flite's own timings, and pocketsphinx-aligned speech (other
synthesisers, real recordings) trimmed to its words with phones that tile it."""

import shutil
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from mmar.data import tts_corpus as C
from mmar.text.arpabet import PAUSE

pytest.importorskip("pocketsphinx")
needs_flite = pytest.mark.skipif(not shutil.which("flite"), reason="flite not installed")
TEXT = "Nothing is as easy as it looks to a stranger."


@needs_flite
def test_aligned_speech_is_trimmed_to_its_words_and_tiled_by_phones():
    with tempfile.TemporaryDirectory() as tmp:
        audio, _ = C.speak(dict(voice="awb", text=TEXT, f0=None, stretch=1.0), Path(tmp))
    padded = np.concatenate([np.zeros(16000, np.float32), audio, np.zeros(24000, np.float32)])
    cut, timings = C._aligned(padded, TEXT)
    ends = [t for _, t in timings]
    assert len(cut) < len(audio) + 2 * C.EDGE * 16000 + 1  # the padding is gone but EDGE seconds
    assert ends == sorted(ends) and ends[-1] == pytest.approx(len(cut) / 16000, abs=1e-3)
    words = [p for p, _ in timings if p != PAUSE]
    assert words[:3] == ["n", "ah", "th"]  # "nothing", in the dictionary's phones
    assert timings[0][0] == PAUSE and timings[0][1] == pytest.approx(C.EDGE, abs=0.03)
    assert C._aligned(padded, "completely different words were never spoken here at all today") is None


def test_jobs_mix_voices_and_keep_test_and_valid_as_they_were():
    texts = [f"sentence number {i} is here." for i in range(400)]
    train = C.jobs("train", texts, 3, 0, other=0.25, real=False)
    voices = Counter(j["voice"] for j in train)
    assert set(voices) == {"kal16", "rms", "slt", "espeak", "festival_kal"}
    assert 0.18 < (voices["espeak"] + voices["festival_kal"]) / len(train) < 0.32
    assert all("+" in j["variant"] for j in train if j["voice"] == "espeak")
    for split in ("valid", "test"):  # other voices and recordings are for training only
        assert C.jobs(split, texts[:20], 3, 0, other=1.0, real=True) == C.jobs(split, texts[:20], 3, 0)
    assert C.jobs("train", texts, 3, 0, other=0.0) == C.jobs("train", texts, 3, 0, other=0.0)  # reproducible


@pytest.mark.skipif(not C.allison_prompts(), reason="asterisk-core-sounds-en(-g722) not installed")
def test_real_prompts_come_with_transcripts_and_three_copies():
    prompts = C.allison_prompts()
    assert len(prompts) > 500 and all(not t.startswith("[") for _, t in prompts)
    train = C.jobs("train", ["one two three four."], 3, 0, real=True)
    real = [j for j in train if j["voice"] == "allison"]
    assert len(real) == 3 * len(prompts)
    shifts = [j["shift"] for j in real[:3]]
    assert shifts[0] == 0 and -7 <= shifts[1] <= -3 and 2 <= abs(shifts[2]) <= 6
