"""Word alignment with pocketsphinx: forced alignment of a transcript, recognition without one,
and one-line errors for words it cannot say or audio that does not say them."""

import shutil
import subprocess

import numpy as np
import pytest

from mmar.errors import MmarError

pytest.importorskip("pocketsphinx")
pytestmark = pytest.mark.skipif(shutil.which("flite") is None, reason="needs flite to make speech")


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    import soundfile as sf
    import soxr

    wav = tmp_path_factory.mktemp("align") / "gf.wav"
    subprocess.run(["flite", "-voice", "rms", "-t", "go forward ten meters", "-o", str(wav)], check=True)
    x, sr = sf.read(wav, dtype="float32")
    return soxr.resample(x, sr, 16000).astype(np.float32)


def test_forced_alignment_gives_ordered_words_inside_the_audio(speech):
    from mmar.text.align import align

    words = align(speech, "Go forward 10 meters!")  # normalised: "10" is said "ten"
    assert [w.text for w in words] == ["go", "forward", "ten", "meters"]
    seconds = len(speech) / 16000
    assert all(0 <= a.start < a.end <= b.start + 1e-9 for a, b in zip(words, words[1:]))
    assert 0 <= words[0].start and words[-1].end <= seconds + 0.01


def test_recognition_then_alignment(speech):
    from mmar.text.align import align, recognise

    assert recognise(speech) == "go forward ten meters"
    assert [w.text for w in align(speech)] == ["go", "forward", "ten", "meters"]


def test_alignment_errors(speech):
    from mmar.text.align import align

    with pytest.raises(MmarError, match="not in the pronouncing dictionary: zzqx"):
        align(speech, "go forward zzqx meters")
    with pytest.raises(MmarError, match="could not be aligned"):
        align(np.zeros(16000, np.float32), "hello world")
    with pytest.raises(MmarError, match="finite mono"):
        align(np.full(100, np.nan, np.float32), "hello")
