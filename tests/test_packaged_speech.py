"""Speech corpus v2 from Debian packages, augmentation, the Opus pack, the crop loader and the benchmark clips."""

import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from mmar.data import packaged_speech
from mmar.data.augment import augment, median_f0, pitch_shift
from mmar.data.clips import make_clips
from mmar.data.crops import CropDataset, audio_files, load_mono
from mmar.data.speech_sources import all_sources
from mmar.errors import MmarError
from synth import speechlike

CACHE = Path(__file__).resolve().parent.parent / "data" / "cache"  # the pocketsphinx sdist, when `make data` fetched it


def have_packages() -> bool:
    return shutil.which("ffmpeg") is not None and shutil.which("espeak-ng") is not None and \
        all(s.root.is_dir() for s in all_sources(CACHE) if "pocketsphinx" not in s.package)


needs_packages = pytest.mark.skipif(not have_packages(), reason="needs the Debian packages in packaged_speech.APT_PACKAGES")
OPTS = dict(synth_minutes=0.05, limit=2, augment_minutes=0.2, cache=CACHE, allow_network=False)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("corpus") / "prep"
    return out, packaged_speech.build(out, **OPTS)


@needs_packages
def test_corpus_has_three_disjoint_splits_and_an_honest_manifest(corpus):
    out, m = corpus
    by_split = {s: {n for n, e in m["speakers"].items() if e["split"] == s} for s in ("train", "valid", "test")}
    assert all(by_split.values())
    persons = {s: {m["speakers"][n]["person"] for n in names} for s, names in by_split.items()}
    assert not persons["train"] & persons["valid"] and not persons["train"] & persons["test"] and not persons["valid"] & persons["test"]
    assert {"it_IT_m_Carlo", "ru_RU_f_IvrvoiceRU"} <= by_split["valid"]
    test = [m["speakers"][n] for n in by_split["test"]]
    assert len({e["language"] for e in test}) >= 3 and "female" in {e["sex"] for e in test}
    if (CACHE / "pocketsphinx-5.1.1" / "UNPACKED").exists():  # offline and uncached, the English male speakers are absent
        assert "male" in {e["sex"] for e in test} and len(test) >= 4
    kinds = {m["speakers"][n]["kind"] for n in by_split["train"]}
    assert kinds == {"real", "synthetic", "augmented"}
    for name, e in m["speakers"].items():
        files = sorted((out / e["split"] / name).glob("*.wav"))
        assert len(files) == e["utterances"]
        infos = [sf.info(str(f)) for f in files]
        assert all(i.samplerate == 16000 and i.channels == 1 and i.subtype == "PCM_16" for i in infos)
        assert sum(i.frames for i in infos) / 16000 / 60 == pytest.approx(e["minutes"], abs=1e-3)
        if e["split"] == "test":
            assert all(1.0 <= i.frames / 16000 <= 10.0 for i in infos)
    assert packaged_speech.build(out, **OPTS) == m  # idempotent
    with pytest.raises(MmarError, match="other options"):
        packaged_speech.build(out, **dict(OPTS, limit=3))


@needs_packages
def test_corpus_rebuilds_bit_for_bit(corpus, tmp_path):
    out, m = corpus
    again = tmp_path / "prep"
    assert packaged_speech.build(again, **OPTS)["speakers"] == m["speakers"]
    a, b = audio_files(out), audio_files(again)
    assert [p.relative_to(out) for p in a] == [p.relative_to(again) for p in b]
    assert all(x.read_bytes() == y.read_bytes() for x, y in zip(a, b))


def _voice(f0: float, seconds: float = 1.5, sr: int = 16000) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    phase = 2 * np.pi * np.cumsum(f0 * (1 + 0.03 * np.sin(2 * np.pi * 3 * t))) / sr
    x = sum(np.sin(k * phase) / k for k in range(1, 20))
    return (0.3 * x / np.abs(x).max()).astype(np.float32)


@pytest.mark.parametrize("semitones", [-5.0, 4.0])
def test_pitch_shift_moves_f0_and_keeps_length(semitones):
    x = _voice(150.0)
    y = pitch_shift(x, semitones)
    assert y.shape == x.shape and y.dtype == np.float32
    assert median_f0(y) == pytest.approx(median_f0(x) * 2 ** (semitones / 12), rel=0.04)


def test_augment_keeps_length_and_is_seeded():
    x = _voice(200.0, 1.0)
    outs = [augment(x, np.random.default_rng(s)) for s in range(8)]
    assert all(o.shape == x.shape and o.dtype == np.float32 and np.isfinite(o).all() and np.abs(o).max() <= 1 for o in outs)
    assert np.array_equal(augment(x, np.random.default_rng(3)), outs[3]) and not np.array_equal(outs[0], outs[1])


@needs_packages
@pytest.mark.skipif(shutil.which("opusenc") is None, reason="needs opusenc (opus-tools)")
def test_pack_loads_back_under_its_cap(corpus, tmp_path):
    from mmar.data.pack import pack

    out, _ = corpus
    m = pack(out, tmp_path / "gpu", max_mib=1.0, kbps=16)
    files = audio_files(tmp_path / "gpu")
    assert files and all(f.suffix == ".opus" for f in files)
    assert sum(f.stat().st_size for f in files) <= 1.0 * 2**20
    assert {e["split"] for e in m["speakers"].values()} == {"train", "valid"}
    x = load_mono(files[0], 16000)
    assert x.dtype == np.float32 and len(x) > 16000
    ds = CropDataset(tmp_path / "gpu" / "train", 16000, 8000)
    assert ds.batch(2, torch.Generator().manual_seed(0)).shape == (2, 8000)


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


def test_pack_without_a_corpus_is_one_error_line(tmp_path, capsys):
    from mmar.data import pack

    assert pack.main(["--corpus", str(tmp_path / "none"), "--out", str(tmp_path / "gpu")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "manifest.json" in err and err.count("\n") == 1
