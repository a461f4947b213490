"""``mmar tts`` and ``mmar edit`` on a tiny random TTS model with the shipped codec: outputs, and
every bad input as one error line with exit status 2."""

import os
import stat

import numpy as np
import pytest
import soundfile as sf

from mmar.cli import main
from test_tts import make_tts_checkpoint

pytest.importorskip("pocketsphinx")
SAMPLE = os.path.join(os.path.dirname(__file__), "..", "demos", "samples", "speech_en.flac")


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return make_tts_checkpoint(tmp_path_factory.mktemp("tts_cli"))


@pytest.fixture
def run(ckpt, capsys):
    def call(*argv):
        code = main([*map(str, argv), "--checkpoint", str(ckpt)])
        out, err = capsys.readouterr()
        return code, out, err

    return call


@pytest.fixture(scope="module")
def short_clip(tmp_path_factory):
    """The first ~3 s of the bundled real-speech sample, at 16 kHz."""
    from mmar.audio import read_mono

    x = read_mono(SAMPLE, 16000)[0][:48000]
    p = tmp_path_factory.mktemp("clip") / "clip.wav"
    sf.write(p, x, 16000)
    return p


def test_tts_default_voice_writes_a_readable_wav(run, tmp_path):
    out = tmp_path / "a.wav"
    code, stdout, err = run("tts", "--text", "Hello there. How are you today?", "-o", out, "--seed", "3")
    assert code == 0, err
    x, sr = sf.read(out)
    assert sr == 16000 and len(x) > 1600 and np.abs(x).max() > 0
    assert stat.S_IMODE(out.stat().st_mode) & 0o044 == 0o044  # readable by others
    assert "2 sentence(s)" in stdout
    code, _, err = run("tts", "--text", "Hello.", "-o", out)
    assert code == 2 and "exists" in err


def test_tts_with_a_prompt_and_best_of_n(run, tmp_path, short_clip):
    out = tmp_path / "b.wav"
    code, stdout, err = run("tts", "--text", "Good morning.", "--prompt", short_clip, "-o", out, "--num-samples", "2")
    assert code == 0, err
    assert "voice prompt says" in stdout and sf.info(out).samplerate == 16000


def test_a_long_prompt_is_cut_at_a_word_and_said_so(run, tmp_path):
    code, stdout, err = run("tts", "--text", "Yes.", "--prompt", SAMPLE, "-o", tmp_path / "c.wav")  # 9.5 s
    assert code == 0, err
    assert "cut to its words within 8 s" in stdout


def test_edit_keeps_the_rest(run, tmp_path, short_clip):
    from mmar.text.align import recognise

    x = sf.read(short_clip, dtype="float32")[0]
    words = recognise(x).split()
    assert len(words) >= 3
    new = " ".join(words[:-1] + ["water"])
    out = tmp_path / "e.wav"
    code, stdout, err = run("edit", short_clip, "--from", " ".join(words), "--to", new, "-o", out, "--num-samples", "2")
    assert code == 0, err
    y = sf.read(out, dtype="float32")[0]
    head = int(float(stdout.split("regenerated ")[1].split("–")[0]) * 16000) - 400  # before the first span's fade
    assert head > 0 and np.abs(y[:head] - x[:head]).max() < 2e-4  # the original, to 16-bit rounding


@pytest.mark.parametrize("argv, message", [
    (["tts", "--text", "   "], "empty"),
    (["tts", "--text", "!!! ???"], "nothing to pronounce"),
    (["tts", "--text", "hi", "--num-samples", "0"], "num-samples"),
    (["edit", SAMPLE, "--to", "hi", "--num-samples", "99"], "num-samples"),
    (["tts", "--text", "hi", "--prompt-text", "x"], "needs --prompt"),
    (["tts", "--text", "hi", "--temperature", "-1"], "temperature"),
])
def test_tts_bad_inputs(run, tmp_path, argv, message):
    code, _, err = run(*argv, "-o", tmp_path / "x.wav")
    assert code == 2 and message in err and err.count("\n") == 1
    assert not (tmp_path / "x.wav").exists()


def test_bad_audio_inputs(run, tmp_path, short_clip):
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(16000, np.float32), 16000)
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"RIFF\x00\x00not audio at all")
    x = sf.read(short_clip, dtype="float32")[0]
    for argv, message in [
        (["tts", "--text", "hi", "--prompt", silent], "silent"),
        (["tts", "--text", "hi", "--prompt", junk], "cannot read"),
        (["tts", "--text", "hi", "--prompt", tmp_path / "missing.wav"], "no such file"),
        (["edit", silent, "--to", "hello"], "silent"),
        (["edit", junk, "--to", "hello"], "cannot read"),
        (["edit", short_clip, "--from", "one two three", "--to", "one two three"], "same words"),
        (["edit", short_clip, "--to", "..."], "no words"),
    ]:
        code, _, err = run(*argv, "-o", tmp_path / "y.wav")
        assert code == 2 and message in err and err.count("\n") == 1, (argv, err)
    long = tmp_path / "long.wav"
    sf.write(long, np.tile(x, 12), 16000)  # 36 s
    code, _, err = run("edit", long, "--to", "hello", "-o", tmp_path / "z.wav")
    assert code == 2 and "at most 30" in err
