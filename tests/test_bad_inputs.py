"""Every bad input to ``mmar codec`` is one ``error:`` line and exit status 2: never a crash, a
traceback, a hang or unbounded memory; and decoded audio is what a user expects (no end click,
the input's level, a readable file)."""

import errno
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile as sf

from mmar.cli import main
from mmar.coding.container import ContainerReader, container_bytes
from mmar.coding.header import Header
from mmar.tasks.codec import decode_array, encode_array, load_codec
from synth import speechlike


@pytest.fixture
def run(tiny_codec_dir, capsys):
    """main([...]) with the tiny codec → (status, stderr)."""

    def call(*argv, ckpt=True):
        capsys.readouterr()
        rc = main(["codec", *map(str, argv), "-q", *(["--checkpoint", str(tiny_codec_dir)] if ckpt else [])])
        return rc, capsys.readouterr().err

    return call


def one_error(rc_err, *words):
    rc, err = rc_err
    assert rc == 2 and err.count("\n") == 1 and err.startswith("error:") and "Traceback" not in err, err
    assert all(w in err for w in words), err


@pytest.fixture
def mmc(run, wav_file, tmp_path):
    out = tmp_path / "a.mmc"
    assert run("encode", wav_file(1.0), "-o", out)[0] == 0
    return out


def forged(tmp_path, name="f.mmc", **kw) -> os.PathLike:
    """A file with a header of the tiny codec's identity and ``kw``'s fields, and no chunks."""
    fields = dict(model="tiny", weights="ab", sample_rate=16000, input_rate=16000, num_samples=16000, levels=2,
                  bits=6, frame_rate=50, chunk_frames=500, mode="raw", extra={})
    h = Header(**(fields | kw))
    p = tmp_path / name
    p.write_bytes(container_bytes(h, []))
    return p


# -- item 5 ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def shipped():
    return load_codec()  # a trained codec: the tiny test one outputs noise


@pytest.mark.parametrize("cut", [16000, 15950, 15900])
def test_no_click_when_the_input_ends_mid_sound(shipped, cut):
    codec = shipped
    for x in (speechlike(1.0)[:cut], 0.5 * np.sin(2 * np.pi * 220 * np.arange(cut) / 16000).astype(np.float32)):
        y, _ = decode_array(codec, encode_array(codec, x, 16000, 1.5))
        peak = np.abs(x).max()
        assert np.abs(y[-320:]).max() <= peak and np.abs(y).max() < 0.999


def test_decoded_level_matches_the_input(shipped):
    """Within 1 dB of the input's level, unless that would clip: then as loud as it gets without
    clipping (the decoded peak within 0.5 dB of full scale)."""
    codec = shipped
    x = speechlike(3.0)
    for rate, sig in ((16000, x), (8000, x[::2].copy()), (16000, 0.1 * x), (8000, 0.1 * x[::2])):
        data = encode_array(codec, sig, rate, 1.5)
        y, _ = decode_array(codec, data)
        db = 20 * np.log10(np.sqrt(np.mean(y.astype(np.float64) ** 2) / np.mean(sig.astype(np.float64) ** 2)))
        peak = np.abs(y).max()
        assert abs(db) <= 1.0 or (db < 0 and 10 ** (-0.5 / 20) <= peak <= 1.0), (rate, db, peak, ContainerReader(data).header.extra)


def test_gain_byte_round_trips_and_old_headers_read(tmp_path):
    for gain in (None, 3.5, -0.5, 20.0):
        h = Header(model="sc16k", weights="3e8eaeba", sample_rate=16000, input_rate=16000, num_samples=16000, levels=3,
                   bits=10, frame_rate=50, chunk_frames=500, mode="raw", extra={} if gain is None else {"gain": gain})
        data = container_bytes(h, [])
        assert ContainerReader(data).header == h and len(data) == 12 + 1 + (gain is not None)
    for bad in (0.0, 0.25, 64.0, float("nan")):
        with pytest.raises(Exception, match="gain"):
            container_bytes(Header(**(h.__dict__ | {"extra": {"gain": bad}})), [])


def test_decoded_files_get_the_umask_mode(mmc, run, tmp_path):
    old = os.umask(0o022)
    try:
        assert run("decode", mmc, "-o", tmp_path / "a.wav")[0] == 0
    finally:
        os.umask(old)
    assert (tmp_path / "a.wav").stat().st_mode & 0o777 == 0o644


# -- item 6 ------------------------------------------------------------------------------------
@pytest.mark.parametrize("suffix, rate", [(".ogg", 256000), (".flac", 700000)])
def test_output_rate_the_format_cannot_hold(run, tmp_path, suffix, rate):
    src = forged(tmp_path, input_rate=rate, extra={"ni": rate})
    one_error(run("decode", src, "-o", tmp_path / f"x{suffix}"), "Hz")
    assert not list(tmp_path.glob("*x*"))


def test_forged_ni_is_refused(run, tmp_path):
    with pytest.raises(Exception, match="do not match"):
        forged(tmp_path, input_rate=44100, extra={"ni": 10})
    h = forged(tmp_path, input_rate=44100, extra={"ni": 44100}).read_bytes()
    # num_samples 16000 → 16001 with the ni delta kept: the header's CRC is recomputed, the fields disagree
    from mmar.coding import header_v2 as hdr

    p = tmp_path / "g.mmc"
    good = Header(model="sc16k", weights="3e8eaeba", sample_rate=16000, input_rate=44100, num_samples=16000, levels=3,
                  bits=10, frame_rate=50, chunk_frames=500, mode="raw", extra={"ni": 44100})
    raw = bytearray(hdr.encode_v2(good, b"MMAC\x02"))
    assert raw[-3] == hdr._zigzag(0)  # the ni delta byte, before the CRC
    raw[-3] = hdr._zigzag(-60)
    raw[-2:] = hdr.struct.pack("<H", hdr.binascii.crc_hqx(bytes(raw[:-2]), 0xFFFF))
    p.write_bytes(bytes(raw) + b"\x00")
    assert h and run("decode", p, "-o", tmp_path / "g.wav")[0] == 2


def test_tiny_lm_file_costs_no_minutes(run, tmp_path, tiny_lm_dir):
    lm = ["--lm-checkpoint", tiny_lm_dir]
    big = dict(num_samples=1 << 40, mode="lm", chunk_frames=3000, extra={"lm": "x", "lmw": "ab"})
    for kw in (big, big | {"chunk_frames": 500}):
        p = tmp_path / "lm.mmc"
        h = Header(**{**dict(model="tiny", weights="ab", sample_rate=16000, input_rate=16000, levels=2, bits=6,
                             frame_rate=50), **kw})
        p.write_bytes(container_bytes(h, [b""] * 50))
        t = time.monotonic()
        rc_err = run("decode", p, "-o", tmp_path / "lm.wav", *lm)
        assert rc_err[0] == 2 and time.monotonic() - t < 30


def test_lm_chunk_with_data_left_over_is_refused(tiny_codec_dir, tiny_lm_dir):
    from mmar.errors import ContainerError
    from mmar.tasks.codec_lm import load_lm

    codec, lm = load_codec(tiny_codec_dir), load_lm(tiny_lm_dir)
    r = ContainerReader(encode_array(codec, speechlike(1.0), 16000, 1.5, lm=lm))
    payloads = r.read_all()
    with pytest.raises(ContainerError, match="chunk 0"):
        decode_array(codec, container_bytes(r.header, [payloads[0] + bytes(range(64))] + payloads[1:]), lm=lm)


def test_decode_into_missing_readonly_or_full_places(run, mmc, wav_file, tmp_path, monkeypatch):
    assert run("decode", mmc, "-o", tmp_path / "new" / "a.wav")[0] == 0  # missing directories are made
    if os.geteuid() != 0:  # root writes anywhere
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        one_error(run("decode", mmc, "-o", ro / "a.wav"), "cannot write")
    one_error(run("decode", mmc, "-o", "/proc/nonexistent/a.wav"), "cannot write")

    def full(*_a):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    one_error(run("decode", mmc, "-o", tmp_path / "b.wav"), "No space left")
    one_error(run("encode", wav_file(1.0), "-o", tmp_path / "b.mmc"), "No space left")
    assert not list(tmp_path.glob(".*tmp*"))


def test_output_that_is_a_directory_device_or_the_input(run, mmc, wav_file, tmp_path):
    (tmp_path / "d.wav").mkdir()
    one_error(run("decode", mmc, "-o", tmp_path / "d.wav", "-f"), "not a regular file")
    one_error(run("decode", mmc, "-o", "/dev/null", "-f"), "not a regular file")
    src = wav_file(1.0)
    before = src.read_bytes()
    one_error(run("encode", src, "-o", src, "-f"), "input")
    assert src.read_bytes() == before


def test_long_output_name(run, mmc, tmp_path):
    name = "x" * 250 + ".wav"  # legal; its temp sibling's name would not be
    assert run("decode", mmc, "-o", tmp_path / name)[0] == 0
    one_error(run("decode", mmc, "-o", tmp_path / ("y" * 300 + ".wav")), "File name too long")


def test_truncated_flac_input(run, tmp_path):
    p = tmp_path / "t.flac"
    sf.write(p, speechlike(20.0), 16000)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2] + bytes(range(256)) * 40)
    rc, err = run("encode", p, "-o", tmp_path / "t.mmc")
    assert rc == 0 or (rc == 2 and err.count("\n") == 1 and "Traceback" not in err)


@pytest.mark.parametrize("rate", ["nan", "inf", "1e400", "0.1", "100"])
def test_bitrate_out_of_range(run, wav_file, tmp_path, rate):
    one_error(run("encode", wav_file(1.0), "-o", tmp_path / "a.mmc", "--bitrate", rate), "--bitrate must be")


def test_ignored_flags_are_warned_about(run, mmc, tmp_path):
    rc, err = run("decode", mmc, "-o", tmp_path / "c.wav", "--coarse-only")
    assert rc == 0 and err.startswith("warning:") and "--coarse-only" in err


@pytest.mark.parametrize("config", ['{"kind": "speech_codec", ', '{"kind": "speech_codec", "hop": "320"}',
                                    '{"kind": "speech_codec", "dec_dim": 10000000}', '[1, 2]',
                                    '{"kind": "speech_codec", "dec_dim": 1000000, "dec_blocks": 1000}'])
def test_bad_checkpoint_config(run, wav_file, tmp_path, tiny_codec_dir, config):
    ck = tmp_path / "ck"
    shutil.copytree(tiny_codec_dir, ck)
    (ck / "config.json").write_text(config)
    rc, err = run("encode", wav_file(1.0), "-o", tmp_path / "a.mmc", "--checkpoint", ck, ckpt=False)
    one_error((rc, err))


def test_info_on_a_rate_below_the_frame_rate(tmp_path):
    with pytest.raises(Exception, match="whole number of frames"):
        forged(tmp_path, sample_rate=20, frame_rate=50)


def test_non_finite_input_samples(run, tmp_path):
    x = speechlike(1.0)
    x[8000] = np.nan
    p = tmp_path / "n.wav"
    sf.write(p, x, 16000, subtype="FLOAT")
    one_error(run("encode", p, "-o", tmp_path / "n.mmc"), "0.500 s")


def test_sigterm_leaves_no_temp_file(tiny_codec_dir, tmp_path):
    """A decode (which writes its output progressively) killed by SIGTERM or SIGHUP while its
    temp file exists exits 128 + signal, without a traceback, and leaves no file behind."""
    src, mmc = tmp_path / "long.wav", tmp_path / "long.mmc"
    sf.write(src, np.tile(speechlike(10.0), 60), 16000)  # 10 min
    from mmar.cli import main

    assert main(["codec", "encode", str(src), "-o", str(mmc), "-q", "--checkpoint", str(tiny_codec_dir)]) == 0
    code = "import sys; from mmar.cli import main; sys.exit(main(sys.argv[1:]))"
    for sig in (signal.SIGTERM, signal.SIGHUP):
        out = tmp_path / f"o{int(sig)}.wav"
        p = subprocess.Popen([sys.executable, "-c", code, "codec", "decode", str(mmc), "-o", str(out), "-q",
                              "--checkpoint", str(tiny_codec_dir)], stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while not list(tmp_path.glob(f"*o{int(sig)}.wav*tmp*")) and p.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        assert p.poll() is None, "the decode ended before its temp file was seen"
        p.send_signal(sig)
        _, err = p.communicate(timeout=60)
        assert p.returncode == 128 + sig and "Traceback" not in err, (p.returncode, err)
        assert not out.exists() and not [f for f in tmp_path.iterdir() if f"o{int(sig)}" in f.name]
