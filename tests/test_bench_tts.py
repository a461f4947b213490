"""``mmar bench tts``: the validation split rebuilds the waveforms the corpus encoded; the
benchmark runs end to end on a tiny corpus with the shipped model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pocketsphinx")
if not (shutil.which("flite") and Path("/usr/share/games/fortunes").is_dir()):
    pytest.skip("needs flite and fortunes (make deps)", allow_module_level=True)

from mmar.data import tts_corpus as C  # noqa: E402


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("tts")
    C.build(out, train=2, valid=6, test=2, workers=1, real=False, other=0.0)
    return out


def test_a_valid_row_rebuilds_the_audio_the_corpus_encoded(corpus):
    from safetensors.numpy import load_file

    rows = json.loads((corpus / "valid.json").read_text())["utterances"]
    split = load_file(corpus / "valid.safetensors")
    codes, offsets = split["codes"], split["frame_offsets"]
    k = next(i for i, m in enumerate(rows) if m["voice"] in C.TRAIN_VOICES)
    audio, _ = C.job_audio(rows[k])  # from the saved row alone: nothing the corpus drew is missing from it
    assert np.array_equal(C.encode(audio, codes.shape[0]), codes[:, offsets[k] : offsets[k + 1]])


def test_a_test_row_rebuilds_its_wav(corpus):
    """The editing rows' "new text read" baseline re-synthesises a test row with other words: the
    row alone must give back the voice (shift included) that the test wav holds."""
    from mmar.bench.tts import split_audio

    for items in split_audio(corpus, "test").values():
        m, wav = items[-1]
        audio, _ = C.job_audio(m)
        assert audio.shape == wav.shape and np.abs(audio - wav).max() < 1e-3


def test_bench_runs_end_to_end_and_keeps_the_unedited_audio(corpus):
    from mmar.bench.tts import format_table, run_tts_bench, split_audio
    from mmar.errors import MmarError
    from mmar.tasks.speak import Speaker

    valid = split_audio(corpus, "valid")
    assert valid and all(v in C.TRAIN_VOICES and len(items) > 1 for v, items in valid.items())  # unshifted, promptable
    with pytest.raises(MmarError, match="split"):
        split_audio(corpus, "train")
    r = run_tts_bench(Speaker.load(), corpus, limit=2, uncached=1, edit_samples=1, log=lambda *_: None)
    assert r["split"] == "test" and set(r["voices"]) == set(C.TEST_VOICES)
    for row in r["voices"].values():
        assert row["utterances"] == 2 and 0 <= row["tts_wer"] and row["dur_ratio"] > 0.3
        assert row["edit_failed"] == 2 or row["edit_outside"] < 0.05  # only the edited span changes
        assert row["edit_failed"] == 2 or 0 <= row["edit_reread_wer"]
    assert r["speed"]["cached"] > 0 and "split: test" in format_table(r)
