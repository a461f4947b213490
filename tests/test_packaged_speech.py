"""The speech corpus from Debian packages, the crop loader and the benchmark clips."""

import shutil

import numpy as np
import pytest
import soundfile as sf
import torch

from mmar.data import packaged_speech
from mmar.data.clips import make_clips
from mmar.data.crops import CropDataset, audio_files, load_mono
from mmar.errors import MmarError
from synth import speechlike


def have_packages() -> bool:
    return shutil.which("ffmpeg") is not None and all((packaged_speech.SOUNDS / s).is_dir() for v in packaged_speech.ASTERISK.values() for s in v) \
        and packaged_speech.FILLETS.is_dir() and shutil.which("espeak-ng") is not None


@pytest.mark.slow
@pytest.mark.skipif(not have_packages(), reason="needs the Debian packages in packaged_speech.APT_PACKAGES")
def test_corpus_builds_with_held_out_speakers(tmp_path):
    minutes = packaged_speech.build(tmp_path, synth_minutes=0.05, limit=2)
    train = {k.split("/")[1] for k in minutes if k.startswith("train/")}
    valid = {k.split("/")[1] for k in minutes if k.startswith("valid/")}
    assert {"en_US_f_Allison", "fillets_nl", "synth"} <= train and valid and not train & valid
    for f in audio_files(tmp_path):
        assert sf.info(str(f)).samplerate == 16000 and sf.info(str(f)).channels == 1
    assert packaged_speech.build(tmp_path) == minutes  # idempotent


def test_load_mono_resamples_and_downmixes(tmp_path):
    x = np.stack([speechlike(1.0, 44100), speechlike(1.0, 44100, seed=1)], 1)
    sf.write(tmp_path / "a.flac", x, 44100)
    y = load_mono(tmp_path / "a.flac", 16000)
    assert y.shape == (16000,) and y.dtype == np.float32
    with pytest.raises(MmarError, match="cannot read"):
        (tmp_path / "bad.wav").write_bytes(b"nope")
        load_mono(tmp_path / "bad.wav", 16000)


def test_crops_are_deterministic_given_the_generator(tmp_path):
    for i in range(3):
        sf.write(tmp_path / f"{i}.wav", speechlike(0.5 + i, seed=i), 16000)
    sf.write(tmp_path / "silence.wav", np.zeros(16000, np.float32), 16000)
    ds = CropDataset(tmp_path, 16000, 12000)
    assert len(ds.clips) == 3  # the silent file is skipped
    a = ds.batch(5, torch.Generator().manual_seed(0))
    b = ds.batch(5, torch.Generator().manual_seed(0))
    c = ds.batch(5, torch.Generator().manual_seed(1))
    assert a.shape == (5, 12000) and torch.equal(a, b) and not torch.equal(a, c)
    with pytest.raises(MmarError, match="no such data folder"):
        CropDataset(tmp_path / "missing", 16000, 100)


def test_benchmark_clips(tmp_path):
    for spk in ("a", "b"):
        (tmp_path / spk).mkdir()
        for i in range(6):
            sf.write(tmp_path / spk / f"{i}.wav", speechlike(1.2, seed=i), 16000)
    clips = make_clips([tmp_path / "a", tmp_path / "b"], tmp_path / "out", per_speaker=2, seconds=3.0)
    assert len(clips) == 4
    assert all(sf.info(str(c)).duration == pytest.approx(3.0) for c in clips)
