"""Speech metrics, the Codec2/Opus baselines and the codec bench (fast)."""

import json
import shutil
import subprocess

import numpy as np
import pytest
import soundfile as sf

from mmar.bench.codec import FunctionSystem, format_table, load_clip, run_codec_bench
from mmar.errors import MmarError
from mmar.eval import metrics as M
from mmar.eval.baselines import Codec2, Opus
from mmar.eval.spectrogram import log_mel
from synth import speechlike

SR = 16000
SENTENCES = ["The quick brown fox jumps over the lazy dog.", "Please call me back after nine tomorrow."]
needs_codec2 = pytest.mark.skipif(shutil.which("c2enc") is None or shutil.which("c2dec") is None,
                                  reason="c2enc/c2dec not installed (apt-get install codec2)")
needs_opus = pytest.mark.skipif(shutil.which("opusenc") is None or shutil.which("opusdec") is None,
                                reason="opusenc/opusdec not installed (apt-get install opus-tools)")


@pytest.fixture(scope="module")
def clip_paths(tmp_path_factory):
    """Two short speech clips: espeak-ng if installed, else the deterministic speech-like signal."""
    d = tmp_path_factory.mktemp("clips")
    paths = []
    for i, text in enumerate(SENTENCES):
        p = d / f"clip{i}.wav"
        if shutil.which("espeak-ng"):
            subprocess.run(["espeak-ng", "-s", "190", "-w", str(p), text], check=True, capture_output=True)
        else:
            sf.write(p, speechlike(2.0, SR, seed=i), SR)
        paths.append(p)
    return paths


@pytest.fixture(scope="module")
def speech(clip_paths):
    """float32 [N] at 16 kHz, about 2-3 s."""
    return load_clip(clip_paths[0])


def noisy(x, snr_db, seed=0):
    noise = np.random.default_rng(seed).standard_normal(len(x))
    noise *= np.sqrt(np.mean(x.astype(np.float64) ** 2) / np.mean(noise**2) / 10 ** (snr_db / 10))
    return (x + noise).astype(np.float32), noise.astype(np.float32)


def test_si_sdr_identity_noise_and_scale_invariance(speech):
    assert M.si_sdr(speech, speech) >= 100
    deg, noise = noisy(speech, 10.0)
    assert M.si_sdr(speech, deg) == pytest.approx(10.0, abs=0.5)
    assert M.si_sdr(speech, 0.25 * deg) == pytest.approx(M.si_sdr(speech, deg), abs=1e-6)
    assert M.si_sdr(speech, noise) < -15
    # lengths are trimmed to the shorter signal
    assert M.si_sdr(speech, np.concatenate([speech, np.ones(500, np.float32)])) >= 100


def test_metrics_reject_bad_input(speech):
    with pytest.raises(MmarError, match="silent"):
        M.si_sdr(np.zeros(1000, np.float32), speech[:1000])
    with pytest.raises(MmarError, match="1-D"):
        M.si_sdr(speech[None], speech[None])
    with pytest.raises(MmarError, match="NaN"):
        M.si_sdr(speech, np.full_like(speech, np.nan))
    with pytest.raises(MmarError, match="silent"):
        M.pesq_wb(np.zeros(SR, np.float32), speech[:SR])
    with pytest.raises(MmarError, match="too short"):
        M.pesq_wb(speech[:1000], speech[:1000])
    with pytest.raises(MmarError, match="too short"):
        M.stoi(speech[:2000], speech[:2000])


def test_pesq_and_stoi_rank_noise(speech):
    same = M.pesq_wb(speech, speech)
    assert same > 4.0
    deg, _ = noisy(speech, 5.0)
    assert M.pesq_wb(speech, deg) < same - 1.5
    assert M.stoi(speech, speech) > 0.99
    assert M.stoi(speech, deg) < M.stoi(speech, speech)


@pytest.mark.skipif(not M.visqol_available(), reason="visqol-python not installed (pip install 'mmar[visqol]')")
def test_visqol_ranks_noise(speech):
    x = speech[: int(1.5 * SR)]
    assert M.visqol(x, x) > 4.0
    assert M.visqol(x, noisy(x, 5.0)[0]) < M.visqol(x, x) - 1.0


def _spec_corr(x, y, shift):
    """Correlation of log-mel spectrograms of x and y delayed by ``shift`` samples."""
    y = y[shift:] if shift >= 0 else np.concatenate([np.zeros(-shift, np.float32), y])
    n = min(len(x), len(y))
    return np.corrcoef(log_mel(x[:n], SR).ravel(), log_mel(y[:n], SR).ravel())[0, 1]


@needs_codec2
@pytest.mark.parametrize("mode", [1600, 3200])
def test_codec2_roundtrip_length_bytes_alignment(speech, mode):
    x = np.tile(speech, 3)[: 3 * SR]  # exactly 3 s
    y, nbytes = Codec2(mode).roundtrip(x)
    assert y.shape == x.shape and y.dtype == np.float32
    expected = 3 * mode / 8  # 600 or 1200 bytes of frames, plus a 7-byte header and the padded tail
    assert expected <= nbytes <= expected + 40
    # delay is compensated: zero shift matches better than the uncompensated 20 ms either way
    assert _spec_corr(x, y, 0) > max(_spec_corr(x, y, 320), _spec_corr(x, y, -320))


@needs_opus
@pytest.mark.parametrize("kbps", [6, 8])
def test_opus_roundtrip_length_bytes_alignment(speech, kbps):
    x = np.tile(speech, 3)[: 3 * SR]
    y, nbytes = Opus(kbps).roundtrip(x)
    assert y.shape == x.shape and y.dtype == np.float32
    assert 0.7 * 3 * kbps * 125 < nbytes < 3 * kbps * 125 + 600  # VBR around target + Ogg headers
    c = np.correlate(y[2000:-2000], x[2000 - 40 : -2000 + 40], mode="valid")  # lags -40..40
    assert abs(int(np.argmax(c)) - 40) <= 2
    assert M.pesq_wb(x, y) > 1.3


def test_missing_binary_is_actionable(monkeypatch, speech):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(MmarError, match="c2enc not found: apt-get install codec2"):
        Codec2(1600).roundtrip(speech)
    with pytest.raises(MmarError, match="opusenc not found: apt-get install opus-tools"):
        Opus(6).roundtrip(speech)
    with pytest.raises(MmarError):
        Opus(4)


def test_bench_identity_writes_json_and_png(clip_paths, tmp_path):
    ident = FunctionSystem("identity", lambda a: (a.copy(), 2 * len(a)))
    half = FunctionSystem("half-gain", lambda a: (0.5 * a, len(a)))
    lines = []
    res = run_codec_bench(clip_paths, [ident, half], tmp_path / "r" / "bench.json", tmp_path / "r" / "spec.png",
                          visqol=False, log=lines.append)
    assert len(lines) == 4
    data = json.loads((tmp_path / "r" / "bench.json").read_text())
    assert data["metrics"] == ["pesq_wb", "stoi", "si_sdr"]
    assert data["machine"]["cpu_count"] >= 1 and "torch_threads" in data["machine"]
    m = data["systems"]["identity"]["mean"]
    assert m["kbps"] == pytest.approx(256.0) and m["pesq_wb"] > 4.0 and m["stoi"] > 0.99 and m["si_sdr"] > 100
    assert data["systems"]["half-gain"]["mean"]["si_sdr"] > 100  # scale-invariant
    assert len(data["systems"]["identity"]["per_clip"]) == 2
    assert (tmp_path / "r" / "spec.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = format_table(res)
    assert "identity" in table and "PESQ-WB" in table and "ViSQOL" not in table
    assert not list((tmp_path / "r").glob("*.tmp"))
    with pytest.raises(MmarError, match="distinct"):
        run_codec_bench(clip_paths, [ident, ident], None, None, visqol=False)
