"""The benchmark commands print a table and write JSON with the promised fields."""

import json
import shutil

import pytest
import soundfile as sf

from mmar.cli import main
from synth import speechlike


def test_bench_generate_reports_cache_vs_recompute(tmp_path, capsys):
    out = tmp_path / "g.json"
    assert main(["bench", "generate", "--frames", "12", "--codebooks", "2", "--preset", "debug", "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    for key in ("frames", "seconds_cached", "seconds_uncached", "speedup", "frames_per_second_cached", "identical", "max_abs_logit_diff"):
        assert key in r
    assert r["frames"] == 12 and r["identical"] is True and r["max_abs_logit_diff"] <= 1e-5
    assert "speedup" in capsys.readouterr().out


_TOOLS = ("opusenc", "opusdec", "c2enc", "c2dec")  # the baselines' command-line codecs


@pytest.mark.skipif(any(shutil.which(t) is None for t in _TOOLS),
                    reason=f"needs {', '.join(_TOOLS)} (apt install opus-tools codec2)")
def test_bench_codec_with_lm_rows(tiny_codec_dir, tiny_lm_dir, tmp_path, capsys):
    clips = tmp_path / "clips"
    for spk, seed in (("en_m", 0), ("fr_f", 1)):  # a corpus split: <speaker>/*.wav
        (clips / spk).mkdir(parents=True)
        for i in range(2):
            sf.write(clips / spk / f"{i}.wav", speechlike(2.0, seed=seed + 10 * i), 16000)
    out = tmp_path / "c.json"
    args = ["bench", "codec", "--clips", str(clips), "--checkpoint", str(tiny_codec_dir), "--lm-checkpoint", str(tiny_lm_dir),
            "--bitrates", "1.5", "--no-visqol", "--json", str(out), "--png", str(tmp_path / "s.png"), "--per-speaker", "1"]
    assert main(args) == 0
    r = json.loads(out.read_text())
    names = list(r["systems"])
    assert any("LM" in n and "fine" in n for n in names) and any("coarse only" in n for n in names)
    lm_row = next(v for k, v in r["mmar"].items() if "fine" in k)
    assert lm_row["bits"] > 0 and lm_row["xent_bits"] > 0 and 0 < lm_row["rtf_decode"]
    assert (tmp_path / "s.png").stat().st_size > 1000
    printed = capsys.readouterr().out
    assert "saving vs raw" in printed and "PESQ-WB per speaker" in printed
    assert [c["speaker"] for c in r["clips"]] == ["en_m", "fr_f"]  # one clip each (--per-speaker 1)
    for entry in r["systems"].values():
        assert set(entry["per_speaker"]) == {"en_m", "fr_f"} and entry["per_speaker"]["en_m"]["pesq_wb"] is not None
    assert main(["bench", "codec", "--clips", str(tmp_path / "none")]) == 2


@pytest.mark.parametrize("argv, message", [
    (["--temperature", "-1"], "temperature"),
    (["--top-p", "0"], "top-p"),
    (["--limit", "0"], "--limit"),
    (["--edit-samples", "9"], "--edit-samples"),
])
def test_bench_tts_refuses_bad_settings_in_one_line(tmp_path, capsys, argv, message):
    assert main(["bench", "tts", "--data", str(tmp_path), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and "Traceback" not in err


def test_bench_tts_names_a_missing_split(tmp_path, capsys):
    assert main(["bench", "tts", "--data", str(tmp_path), "--split", "valid", "--uncached", "0"]) == 2
    assert "no valid split" in capsys.readouterr().err
