"""The .mmc container (v2 written, v1 read), its header, raw bit packing, atomic writes, damage."""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import struct
import sys
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from hypothesis import given, settings
from hypothesis import strategies as st

from mmar.atomic import AtomicFile, atomic_write
from mmar.coding.bitpack import pack_codes, packed_size, unpack_codes
from mmar.coding.container import (
    ContainerReader,
    ContainerWriter,
    Header,
    container_bytes,
    payload_bits,
    read_container,
)
from mmar.coding.header import CODEC_IDS, LM_IDS, RATES, decode_v2, encode_v2
from mmar.errors import ContainerError, MmarError

ROOT = Path(__file__).resolve().parents[1]
V1_DATA = Path(__file__).parent / "data" / "v1"
PREFIX = b"MMAC\x02"


def make_header(**kw) -> Header:
    """A user-trained codec (explicit identity), 44.1 kHz input, 100-frame chunks."""
    h = dict(model="mmar-speech-16k", weights="0123456789abcdef", sample_rate=16000, input_rate=44100,
             num_samples=96000, levels=4, bits=10, frame_rate=50, chunk_frames=100, mode="raw", extra={"ni": 264600})
    h.update(kw)
    return Header(**h)


def shipped_header(seconds: float, input_rate: int = 16000, lm: bool = False, rdo: float | None = None) -> Header:
    """What mmar.tasks.codec.encode_stream writes for the shipped models."""
    ni = round(seconds * input_rate)
    n = ni if input_rate == 16000 else -(-ni * 16000 // input_rate)
    extra = {} if input_rate == 16000 else {"ni": ni}
    if lm:
        extra |= {"lm": "lm16k", "lmw": "350d060a", "rdo": 2.0 if rdo is None else rdo}
    return Header(model="sc16k", weights="3e8eaeba", sample_rate=16000, input_rate=input_rate, num_samples=n,
                  levels=3, bits=10, frame_rate=50, chunk_frames=500, mode="lm" if lm else "raw", extra=extra)


def make_payloads(seed: int = 0, chunks: int = 3) -> list[bytes]:
    rng = np.random.default_rng(seed)
    return [pack_codes(rng.integers(0, 1024, size=(4, 100 if i < chunks - 1 else 37)), 10) for i in range(chunks)]


def v1_bytes(header: Header, payloads: list[bytes]) -> bytes:
    """A format-version-1 file, as mmar wrote them before v2."""
    js = header.to_json()
    return (struct.pack("<4sBII", b"MMAC", 1, len(js), zlib.crc32(js)) + js
            + b"".join(struct.pack("<II", len(p), zlib.crc32(p)) + p for p in payloads) + b"\xff\xff\xff\xff")


def header_v2(h: Header) -> bytes:
    return encode_v2(h, PREFIX)


def parse_v2(data: bytes) -> tuple[Header, int]:
    f = io.BytesIO(data[5:])

    def read(n):
        b = f.read(n)
        if len(b) < n:
            raise ContainerError("truncated")
        return b

    return decode_v2(read, data[:5])


# -- header: fields ------------------------------------------------------------

def test_header_json_round_trip():
    for h in (make_header(), make_header(input_rate=16000, extra={}, mode="lm"),
              make_header(input_rate=16000, mode="lm", extra={"lm": "tiny", "lmw": "beef"})):
        if h.mode == "lm" and "lm" not in h.extra:
            with pytest.raises(ContainerError, match="needs extra 'lm' and 'lmw'"):
                h.to_json()
            continue
        js = h.to_json()
        assert b" " not in js
        assert Header.from_json(js) == h
        assert Header.from_json(js.decode()) == h
    assert b'"i"' not in make_header(input_rate=16000, extra={}).to_json()  # redundant field omitted


@pytest.mark.parametrize("kw", [
    dict(levels=0), dict(levels=65), dict(bits=0), dict(bits=17), dict(sample_rate=-1), dict(levels=True),
    dict(frame_rate=50.0), dict(mode="zip"), dict(model=""), dict(model="x" * 200), dict(weights="XYZ"),
    dict(weights=""), dict(num_samples=-5), dict(extra=[1]), dict(extra={"ni": 264600, "a": 1}),
    dict(extra={}),  # ni missing although the input rate differs
    dict(input_rate=16000),  # ni present although it does not
    dict(extra={"ni": 1 << 40}),  # ni does not match num_samples: could ask a decoder for 2**40 samples
    dict(extra={"ni": 264600 + 3}), dict(extra={"ni": 264600 - 5}), dict(extra={"ni": 264600.0}),
    dict(frame_rate=48), dict(frame_rate=32000),  # not a whole number of samples per frame
    dict(extra={"ni": 264600, "lm": "x", "lmw": "ab"}),  # LM fields in a raw header
    dict(mode="lm", extra={"ni": 264600, "lm": "x"}), dict(mode="lm", extra={"ni": 264600, "lm": "x", "lmw": "AB"}),
    dict(mode="lm", extra={"ni": 264600, "lm": "x", "lmw": "ab", "rdo": float("nan")}),
    dict(mode="lm", extra={"ni": 264600, "lm": "x", "lmw": "ab", "rdo": -1.0}),
    dict(mode="lm", extra={"ni": 264600, "lm": "", "lmw": "ab"}),
])
def test_header_rejects_bad_fields(kw):
    for encode in (Header.to_json, header_v2):
        with pytest.raises(ContainerError, match="invalid header"):
            encode(make_header(**kw))


@pytest.mark.parametrize("text", [
    b"", b"[]", b"{", b'{"m":"a"}', b'{"zz":1}', b"\xff\xfe", b"[" * 5000, b'{"m":"a","m":"b"}',
    b'{"m":"a","w":"ab","r":NaN}', b'{"m":"a","w":"ab","r":1' + b"0" * 5000 + b"}",
])
def test_header_from_json_rejects_garbage(text):
    with pytest.raises(ContainerError):
        Header.from_json(text)


def test_header_error_is_one_line():
    with pytest.raises(ContainerError) as e:
        Header.from_json(b'{"m":\n\n"a"')
    assert "\n" not in str(e.value)


# -- header: v2 encoding -------------------------------------------------------

V2_CASES = {
    "shipped raw 16k": (shipped_header(1.0), 12),
    "shipped raw 44.1k": (shipped_header(1.0, 44100), 13),
    "shipped raw 10 s 44.1k": (shipped_header(10.0, 44100), 14),
    "shipped lm, default λ": (shipped_header(1.0, lm=True), 13),
    "shipped lm 44.1k, 10 s": (shipped_header(10.0, 44100, lm=True), 15),
    "shipped lm, λ 0.5 (float16)": (shipped_header(1.0, lm=True, rdo=0.5), 15),
    "shipped lm, λ 0.1 (float64)": (shipped_header(1.0, lm=True, rdo=0.1), 21),
    "shipped lm, λ 0": (shipped_header(1.0, lm=True, rdo=0.0), 15),
    "shipped lm, no λ": (Header(**{**shipped_header(1.0, lm=True).__dict__, "extra": {"lm": "lm16k", "lmw": "350d060a"}}), 13),
    "explicit identity": (make_header(), None),
    "explicit identity, odd hash, unicode name": (make_header(model="réseau-é", weights="abc"), None),
    "explicit LM": (shipped_header(1.0, lm=True).__class__(**{**shipped_header(1.0, lm=True).__dict__,
                                                              "extra": {"lm": "tiny-lm", "lmw": "beef01", "rdo": 3.0}}), None),
    "explicit input rate": (Header(**{**shipped_header(1.0).__dict__, "input_rate": 37000, "extra": {"ni": 37000}}), None),
    "chunk_frames 100": (Header(**{**shipped_header(1.0).__dict__, "chunk_frames": 100}), None),
    "empty": (Header(**{**shipped_header(0.0).__dict__}), 11),
    "longest": (make_header(num_samples=1 << 48, levels=64, bits=16, extra={"ni": (1 << 48) * 44100 // 16000},
                            chunk_frames=1 << 24), None),
    "known name, other rates": (Header(**{**shipped_header(1.0).__dict__, "sample_rate": 24000, "input_rate": 24000,
                                          "num_samples": 24000}), None),
}


@pytest.mark.parametrize("name", V2_CASES)
def test_v2_header_round_trip(name):
    h, size = V2_CASES[name]
    data = header_v2(h)
    back, n = parse_v2(data + b"rest")
    assert back == h and n == len(data)
    assert header_v2(back) == data  # one encoding per header
    assert type(back.extra.get("rdo", 0.0)) is float
    if size is not None:
        assert len(data) == size


def test_v2_worked_example_in_the_docstring():
    import mmar.coding.header as mod

    data = header_v2(shipped_header(1.0))
    assert " ".join(f"{b:02x}" for b in data[:4]) + "  02  00  01  02  80 7d  " in mod.__doc__
    assert data.hex() == "4d4d41430200010280" "7d" + data[-2:].hex() and data[-2:].hex(" ") in mod.__doc__


def valid_headers():
    @st.composite
    def make(draw):
        sr_hop = draw(st.sampled_from([(16000, 320), (24000, 320), (8000, 80), (1, 1), (1_000_000, 1)]))
        sr, fr = sr_hop[0], sr_hop[0] // sr_hop[1]
        known = draw(st.booleans())
        model, weights, bits = ("sc16k", "3e8eaeba", 10) if known else (
            draw(st.text(min_size=1, max_size=128)), draw(st.from_regex(r"[0-9a-f]{1,64}", fullmatch=True)), draw(st.integers(1, 16)))
        n = draw(st.integers(0, 1 << 48))
        ir = draw(st.one_of(st.just(sr), st.sampled_from(RATES), st.integers(1, 1_000_000)))
        extra = {}
        if ir != sr:
            extra["ni"] = max(0, n * ir // sr - draw(st.integers(0, ir // sr)))
        mode = draw(st.sampled_from(["raw", "lm"]))
        if mode == "lm":
            if draw(st.booleans()):
                extra |= {"lm": "lm16k", "lmw": "350d060a"}
            else:
                extra |= {"lm": draw(st.text(min_size=1, max_size=128)), "lmw": draw(st.from_regex(r"[0-9a-f]{1,64}", fullmatch=True))}
            if draw(st.booleans()):
                extra["rdo"] = draw(st.one_of(st.just(2.0), st.floats(0, 1e300, allow_nan=False), st.integers(0, 1000)))
        return Header(model=model, weights=weights, sample_rate=sr, input_rate=ir, num_samples=n,
                      levels=draw(st.integers(1, 64)), bits=bits, frame_rate=fr,
                      chunk_frames=draw(st.one_of(st.just(500), st.integers(1, 1 << 24))), mode=mode, extra=extra)

    return make()


@settings(max_examples=300, deadline=None)
@given(valid_headers())
def test_v2_header_round_trip_property(h):
    data = header_v2(h)
    back, n = parse_v2(data)
    assert back == h and n == len(data) and header_v2(back) == data


def test_short_ids_are_the_shipped_models():
    """Table entries name the shipped checkpoints' config names and sha256[:8] (never reassign them)."""
    for entry, ckpt in ((CODEC_IDS[1], "speech-codec-16k"), (LM_IDS[1], "speech-lm-16k")):
        d = ROOT / "checkpoints" / ckpt
        if not (d / "model.safetensors").exists():
            pytest.skip(f"{d} is not here")
        cfg = json.loads((d / "config.json").read_text())
        digest = hashlib.sha256((d / "model.safetensors").read_bytes()).hexdigest()[:8]
        assert (entry.model, entry.weights) == (cfg["name"], digest)
        if ckpt == "speech-codec-16k":
            assert (entry.sample_rate, entry.frame_rate, entry.bits) == (cfg["sample_rate"], cfg["sample_rate"] // cfg["hop"],
                                                                        int(np.log2(cfg["codebook_size"])))
        else:
            assert entry.rdo == cfg["rdo"] and cfg["codec_weights"] == CODEC_IDS[1].weights


# -- overhead of files from the shipped models -----------------------------------

@pytest.mark.parametrize("seconds", [1.0, 10.0, 95.0])
@pytest.mark.parametrize("input_rate", [16000, 44100, 48000])
@pytest.mark.parametrize("lm", [False, True])
def test_overhead_is_16_bytes_plus_6_per_chunk(seconds, input_rate, lm):
    h = shipped_header(seconds, input_rate, lm)
    frames = h.frames
    if lm:  # range-coded chunks are smaller than raw ones; sizes only matter for the length field
        payloads = [bytes(4 * 60)] * -(-frames // 500)
    else:
        payloads = [bytes(packed_size(3, min(500, frames - i), 10)) for i in range(0, frames, 500)]
    data = container_bytes(h, payloads)
    overhead = len(data) - sum(map(len, payloads))
    assert overhead <= 16 + 6 * len(payloads), overhead
    if seconds == 1.0 and not lm:  # 3 levels x 10 bits x 50 frames = 188 bytes of codes
        assert sum(map(len, payloads)) == 188 and len(data) <= 212 and 8 * len(data) / 1000 <= 1.7


# -- bit packing -------------------------------------------------------------

@settings(max_examples=200, deadline=None)
@given(st.integers(0, 12), st.integers(0, 40), st.integers(1, 16), st.integers(0, 2**32 - 1))
def test_pack_unpack_round_trip(levels, frames, bits, seed):
    codes = np.random.default_rng(seed).integers(0, 1 << bits, size=(levels, frames))
    data = pack_codes(codes, bits)
    assert len(data) == packed_size(levels, frames, bits) == (levels * frames * bits + 7) // 8
    back = unpack_codes(data, levels, frames, bits)
    assert back.dtype == np.int64 and back.shape == (levels, frames)
    np.testing.assert_array_equal(back, codes)


def test_pack_layout_is_frame_major_lsb_first():
    codes = np.array([[1, 2], [3, 0]])  # K=2, T=2; order c[0,0] c[1,0] c[0,1] c[1,1]
    assert pack_codes(codes, 2) == bytes([0b00_10_11_01])
    assert pack_codes(np.array([[5]]), 3) == bytes([0b101])


def test_pack_errors():
    with pytest.raises(ValueError, match="out of range"):
        pack_codes(np.array([[0, 1024]]), 10)
    with pytest.raises(ValueError, match="out of range"):
        pack_codes(np.array([[-1]]), 10)
    with pytest.raises(ValueError):
        pack_codes(np.zeros(5, dtype=int), 10)
    with pytest.raises(ValueError):
        pack_codes(np.zeros((2, 2)), 10)  # floats
    data = pack_codes(np.ones((4, 10), dtype=int), 10)
    with pytest.raises(ContainerError, match="truncated"):
        unpack_codes(data[:-1], 4, 10, 10)
    with pytest.raises(ContainerError, match="extra"):
        unpack_codes(data + b"\0", 4, 10, 10)


def _python_calls(fn) -> int:
    """Python and C function calls made while running ``fn`` (a deterministic measure of work)."""
    count = 0

    def prof(frame, event, arg):
        nonlocal count
        if event in ("call", "c_call"):
            count += 1

    sys.setprofile(prof)
    try:
        fn()
    finally:
        sys.setprofile(None)
    return count


def test_packing_work_does_not_grow_with_the_codes():
    """Whole-array numpy operations per bit plane: one hour (2.16 M codes) makes as many Python-level
    calls as 40 codes, so no per-code Python loop can slip in."""
    small = np.random.default_rng(0).integers(0, 1024, size=(4, 10))
    hour = np.random.default_rng(0).integers(0, 1024, size=(12, 180_000))
    for codes in (small, hour):  # warm up lazy imports
        unpack_codes(pack_codes(codes, 10), *codes.shape, 10)
    calls = [_python_calls(lambda c=c: unpack_codes(pack_codes(c, 10), *c.shape, 10)) for c in (small, hour)]
    assert calls[0] == calls[1] < 400
    np.testing.assert_array_equal(unpack_codes(pack_codes(hour, 10), 12, 180_000, 10), hour)


# -- container ---------------------------------------------------------------

def test_write_read_bit_exact(tmp_path):
    path, header, payloads = tmp_path / "a.mmc", make_header(), make_payloads()
    with ContainerWriter(path, header) as w:
        for p in payloads:
            w.write_chunk(p)
        w.write_chunk(b"")  # empty chunks are allowed
    payloads.append(b"")
    assert path.read_bytes() == container_bytes(header, payloads)
    h2, it = read_container(path)
    assert h2 == header and list(it) == payloads
    with ContainerReader(path.read_bytes()) as r:
        assert r.header == header and r.read_all() == payloads and r.version == 2
    with open(path, "rb") as f:
        assert ContainerReader(f).read_all() == payloads
    info = payload_bits(path)
    assert info["total_bytes"] == path.stat().st_size and info["format_version"] == 2
    assert info["payload_bytes"] == sum(map(len, payloads)) and info["chunks"] == len(payloads)
    assert info["header_bytes"] + info["framing_bytes"] + info["payload_bytes"] == info["total_bytes"]
    assert info["framing_bytes"] == (2 + 4) * 3 + (1 + 4) + 1  # 100-frame chunks: 2-byte lengths; the empty one 1
    assert info["header_bytes"] == len(header_v2(header))
    codes = unpack_codes(payloads[0], 4, 100, 10)
    assert codes.shape == (4, 100)


def test_v1_files_still_read():
    header, payloads = make_header(), make_payloads()
    data = v1_bytes(header, payloads)
    with ContainerReader(data) as r:
        assert (r.version, r.header, r.read_all()) == (1, header, payloads)
    info = payload_bits(data)
    assert info["format_version"] == 1 and info["framing_bytes"] == 8 * 3 + 4 and info["total_bytes"] == len(data)
    for name in ("raw_1k5.mmc", "lm.mmc"):  # made by mmar before v2
        with ContainerReader(V1_DATA / name) as r:
            assert r.version == 1 and r.header.model == "sc16k" and r.read_all()


def test_refuses_overwrite(tmp_path):
    path = tmp_path / "a.mmc"
    path.write_bytes(b"keep")
    with pytest.raises(MmarError, match="exists; use -f to overwrite"):
        ContainerWriter(path, make_header())
    assert path.read_bytes() == b"keep"
    with ContainerWriter(path, make_header(), overwrite=True) as w:
        w.write_chunk(b"x")
    assert ContainerReader(path.read_bytes()).read_all() == [b"x"]


def test_refuses_a_file_that_appears_while_writing(tmp_path):
    path = tmp_path / "a.mmc"
    w = ContainerWriter(path, make_header())
    w.write_chunk(b"x")
    path.write_bytes(b"theirs")
    with pytest.raises(MmarError, match="exists"):
        w.commit()
    assert path.read_bytes() == b"theirs" and list(tmp_path.iterdir()) == [path]


def test_atomic_write(tmp_path):
    path = tmp_path / "a.mmc"
    with pytest.raises(RuntimeError):
        with ContainerWriter(path, make_header()) as w:
            w.write_chunk(b"abc")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []  # neither the file nor a temp file
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with ContainerWriter(path, make_header(), overwrite=True) as w:
            w.write_chunk(b"abc")
            raise RuntimeError("boom")
    assert path.read_bytes() == b"old"
    assert list(tmp_path.iterdir()) == [path]


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_files_get_the_umask_mode_and_unique_temp_names(tmp_path, umask):
    old = os.umask(umask)
    try:
        with ContainerWriter(tmp_path / "a.mmc", make_header()) as w:
            w.write_chunk(b"x")
        atomic_write(tmp_path / "b.json", lambda p: p.write_text("{}"))
        atomic_write(tmp_path / "e.safetensors", lambda p: save_file({"x": torch.zeros(1)}, str(p)))  # replaces its file 0600
        with AtomicFile(tmp_path / "c.bin") as f:
            f.write(b"c")
        one, two = AtomicFile(tmp_path / "d.bin"), AtomicFile(tmp_path / "d.bin")  # two writers, one target
        assert one.tmp != two.tmp
        one.write(b"1")
        two.write(b"2")
        one.commit()
        two.commit()
    finally:
        os.umask(old)
    for name in ("a.mmc", "b.json", "c.bin", "d.bin", "e.safetensors"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~umask, name
    assert (tmp_path / "d.bin").read_bytes() == b"2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.mmc", "b.json", "c.bin", "d.bin", "e.safetensors"]


def test_atomic_write_failure_leaves_nothing(tmp_path):
    def fail(p: Path):
        p.write_text("partial")
        raise OSError("disk full")

    (tmp_path / "a.txt").write_text("old")
    with pytest.raises(MmarError, match="cannot write .*a.txt: disk full"):  # one clear error
        atomic_write(tmp_path / "a.txt", fail)
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"] and (tmp_path / "a.txt").read_text() == "old"
    assert atomic_write(tmp_path / "new" / "b.wav", lambda p: p.write_bytes(p.suffix.encode()), ".wav").read_bytes() == b".wav"


def test_missing_directory_is_a_clear_error(tmp_path):
    with pytest.raises(MmarError, match="cannot write"):
        ContainerWriter(tmp_path / "no" / "a.mmc", make_header())


def test_invalid_header_touches_nothing(tmp_path):
    with pytest.raises(ContainerError):
        ContainerWriter(tmp_path / "a.mmc", make_header(levels=0))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("version", [1, 2])
def test_damaged_chunk_names_chunk_and_offset(version):
    header, payloads = make_header(), make_payloads(chunks=3)
    good = (v1_bytes if version == 1 else container_bytes)(header, payloads)
    with ContainerReader(good) as r:
        hb, rec = r.header_bytes, (8 if version == 1 else 6)
    off2 = hb + sum(rec + len(p) for p in payloads[:2])  # chunk 2's record
    data = bytearray(good)
    data[off2 + rec + 5] ^= 0x10
    r = ContainerReader(bytes(data))
    it = iter(r)
    assert next(it) == payloads[0] and next(it) == payloads[1]
    with pytest.raises(ContainerError, match=rf"^chunk 2 is damaged \(CRC mismatch at byte offset {off2}\)$"):
        next(it)


@pytest.mark.parametrize("version", [1, 2])
def test_damaged_header_is_detected(version):
    data = bytearray((v1_bytes if version == 1 else container_bytes)(make_header(), []))
    data[14 if version == 2 else 30] ^= 1
    with pytest.raises(ContainerError, match="header is damaged"):
        ContainerReader(bytes(data))


def test_newer_version(tmp_path):
    data = bytearray(container_bytes(make_header(), make_payloads()))
    data[4] = 3
    path = tmp_path / "new.mmc"
    path.write_bytes(bytes(data))
    with pytest.raises(ContainerError, match=r"new\.mmc: written by a newer mmar \(format version 3\); upgrade"):
        read_container(path)


def _retag(data: bytes, header_bytes: int, body: bytes) -> bytes:
    """Replace the v2 header by ``body`` (its bytes after magic and version) with a valid CRC."""
    import binascii

    head = PREFIX + body
    return head + struct.pack("<H", binascii.crc_hqx(head, 0xFFFF)) + data[header_bytes:]


@pytest.mark.parametrize("body, pattern", [
    (bytes([0x01, 0x01, 0x02, 0x80, 0x7D]), "holds image data"),
    (bytes([0x03, 0x01, 0x02, 0x80, 0x7D]), "holds type 3 data"),
    (bytes([0x00, 0x07, 0x02, 0x80, 0x7D]), r"unknown codec id 7 \(written by a newer mmar\?\)"),
    (bytes([0x04, 0x01, 0x09, 0x02, 0x80, 0x7D]), "unknown LM id 9"),
    (bytes([0xF0, 0x01, 0x02, 0x80, 0x7D, 0xC4, 0xD8, 0x02, 0x00]), "shorter code"),  # 44100 sent explicitly
    (bytes([0x80, 0x01, 0x02, 0x80, 0x7D, 0x7F]), "does not match num_samples"),  # ni far off
    (bytes([0x00, 0x01, 0x02, 0x80, 0xFD, 0x00]), "shortest form"),  # overlong varint
    (bytes([0x00, 0x01, 0x02] + [0xFF] * 7 + [0x7F]), "num_samples exceeds"),
    (bytes([0x08, 0x01, 0x02, 0x80, 0x7D, 0xF4, 0x03]), "default"),  # chunk_frames 500 sent
    (bytes([0x08, 0x01, 0x02, 0x80, 0x7D, 0x80, 0x80, 0x80, 0x10]), "chunk_frames"),  # 2**25
    (bytes([0x00, 0x01, 0x42, 0x80, 0x7D]), "raw-mode"),  # λ kind 1 in raw mode
    (bytes([0x04, 0x01, 0x01, 0x82, 0x80, 0x7D]) + struct.pack("<e", 2.0), "shortest form"),  # default λ sent
    (bytes([0x04, 0x01, 0x01, 0x82, 0x80, 0x7D]) + struct.pack("<e", float("inf")), "finite"),
    (bytes([0x00, 0x00, 0x05]) + b"sc16k" + bytes([8]) + bytes.fromhex("3e8eaeba") + bytes([0x80, 0x7D, 50, 10, 0x02, 0x80, 0x7D]),
     "known codec is named explicitly"),
    (bytes([0x00, 0x00, 0x01, 0x41, 0x01, 0xA0, 0x00, 0x32, 0x0A, 0x02, 0x80, 0x7D]), "sample_rate and frame_rate"),
    (bytes([0x00, 0x00, 0x01, 0xFF, 0x02, 0xAB]), "not UTF-8"),
    (bytes([0x00, 0x00, 0x01, 0x41, 0x41]), "hex digits"),
    (bytes([0x00, 0x00, 0x01, 0x41, 0x01, 0xAB]), "pad nibble"),
    (bytes([0x00, 0x00, 0x83, 0x80, 0x80, 0x01]), "model length=2097155 exceeds 512"),
])
def test_v2_header_fields_are_checked(body, pattern):
    good = container_bytes(shipped_header(1.0), [])
    with pytest.raises(ContainerError, match=pattern) as e:
        ContainerReader(_retag(good, 12, body)).read_all()
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("mutate, pattern", [
    (lambda d, v: b"RIFF" + d[4:], "not an mmar codec file"),
    (lambda d, v: d[:-(4 if v == 1 else 1)], r"truncated \(end marker missing after 3 chunks\)"),
    (lambda d, v: d[:-10], r"truncated \(in chunk 2 at byte offset \d+\)"),
    (lambda d, v: d + b"\0", r"trailing garbage after the end marker \(at byte offset \d+\)"),
    (lambda d, v: d[:7], r"truncated \(in the header\)"),
    (lambda d, v: d[:4], r"truncated \(in the header\)"),
])
def test_structural_errors(mutate, pattern, version):
    data = (v1_bytes if version == 1 else container_bytes)(make_header(), make_payloads())
    with pytest.raises(ContainerError, match=pattern):
        ContainerReader(mutate(data, version)).read_all()


def test_v1_header_too_long():
    data = v1_bytes(make_header(), make_payloads())
    with pytest.raises(ContainerError, match="header too long"):
        ContainerReader(data[:5] + struct.pack("<I", 70000) + data[9:])


def test_trailing_garbage_offset_is_exact():
    data = container_bytes(make_header(), make_payloads())
    with pytest.raises(ContainerError, match=rf"at byte offset {len(data)}\)$"):
        ContainerReader(data + b"junk").read_all()


class Stream(io.RawIOBase):  # not seekable: the reader falls back to reads in 1 MiB pieces
    def __init__(self, b):
        self.b = io.BytesIO(b)
        self.bytes_read = 0

    def readable(self):
        return True

    def readinto(self, buf):
        n = self.b.readinto(buf)
        self.bytes_read += n
        return n


def _peak_bytes(fn) -> int:
    tracemalloc.start()
    try:
        fn()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


@pytest.mark.parametrize("version", [1, 2])
def test_huge_declared_length_allocates_nothing(version):
    head = (v1_bytes if version == 1 else container_bytes)(make_header(), [])[:-(4 if version == 1 else 1)]

    def record(length):
        if version == 1:
            return struct.pack("<II", length, 0)
        v = length + 1
        return bytes([(v & 0x7F) | 0x80, (v >> 7 & 0x7F) | 0x80, (v >> 14 & 0x7F) | 0x80, v >> 21]) + bytes(4)

    bad = head + record(60 << 20) + b"abc"

    def expect_truncated(src):
        with pytest.raises(ContainerError, match=r"truncated \(in chunk 0"):
            ContainerReader(src).read_all()

    assert _peak_bytes(lambda: expect_truncated(bad)) < 256 << 10  # a 60 MiB length allocates nothing
    assert _peak_bytes(lambda: expect_truncated(Stream(bad))) < 3 << 20  # unseekable: 1 MiB pieces at most
    too_big = head + record((64 << 20) + 1)
    with pytest.raises(ContainerError, match=r"chunk 0 is damaged \(length"):
        ContainerReader(too_big).read_all()


def test_reader_memory_is_bounded_by_the_largest_chunk():
    chunk = bytes(range(256)) * 1024  # 256 KiB
    data = container_bytes(make_header(), [chunk] * 40)  # 10 MiB
    src = Stream(data)

    def read():
        with ContainerReader(src) as r:
            for _ in r:
                pass

    assert _peak_bytes(read) < 4 * len(chunk)
    assert src.bytes_read == len(data)


def _read_everything(data: bytes) -> list[bytes]:
    with ContainerReader(io.BytesIO(data)) as r:
        return r.read_all()


def test_every_truncation_and_bit_flip_of_a_small_file_is_an_error():
    h = shipped_header(1.3, 44100, lm=True, rdo=0.5)
    payloads = [bytes([7, 1, 9, 200]) * 3, b"", bytes(range(5))]
    good = container_bytes(h, payloads)
    assert _read_everything(good) == payloads
    for n in range(len(good)):
        with pytest.raises(ContainerError):
            _read_everything(good[:n])
    for i in range(8 * len(good)):
        bad = bytearray(good)
        bad[i // 8] ^= 1 << (i % 8)
        with pytest.raises(ContainerError) as e:
            _read_everything(bytes(bad))
        assert "\n" not in str(e.value)


def test_fuzz_mutations_only_raise_container_error():
    """10,000 random flips, insertions, deletions and truncations: ContainerError or a clean read
    that re-encodes to the very same bytes; never more bytes read than the file holds."""
    header = make_header(mode="lm", extra={"ni": 264600, "lm": "tiny", "lmw": "ab", "rdo": 0.25})
    payloads = [b"", *make_payloads(seed=1, chunks=4)]
    payloads = [p[:60] for p in payloads]  # small chunks keep this fast
    good = container_bytes(header, payloads)
    rng = random.Random(1234)
    outcomes = {"ok": 0, "error": 0}
    for _ in range(10_000):
        d = bytearray(good)
        for _ in range(rng.choice((1, 1, 1, 2, 3))):
            op, i = rng.randrange(4), rng.randrange(len(d) + 1)
            if op == 0 and i < len(d):
                d[i] ^= 1 << rng.randrange(8) if rng.random() < 0.7 else rng.randrange(1, 256)
            elif op == 1:
                d[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 4)))
            elif op == 2:
                del d[i:i + rng.randint(1, 8)]
            else:
                del d[i:]
        src = Stream(bytes(d))
        try:
            r = ContainerReader(src)
            got = r.read_all()
        except ContainerError as e:
            assert "\n" not in str(e)
            outcomes["error"] += 1
        else:
            outcomes["ok"] += 1
            assert container_bytes(r.header, got) == bytes(d)  # a "successful" read is self-consistent
        assert src.bytes_read <= len(d)
    assert outcomes["error"] > 9000


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=64))
def test_any_bytes_after_the_magic_are_read_or_refused(tail):
    for version in (1, 2):
        try:
            with ContainerReader(b"MMAC" + bytes([version]) + tail) as r:
                r.read_all()
        except ContainerError as e:
            assert "\n" not in str(e)


def test_crc_is_zlib_crc32():
    data = container_bytes(make_header(), [b"hello"])
    start = len(header_v2(make_header()))
    assert data[start] == 6  # length 5, plus 1
    (crc,) = struct.unpack_from("<I", data, start + 1)
    assert crc == zlib.crc32(b"hello")
    assert data[start + 5:start + 10] == b"hello" and data[-1:] == b"\x00" and len(data) == start + 11


# -- mmar codec info --------------------------------------------------------------

def test_info_reads_the_header_without_any_model(tmp_path, capsys):
    from mmar.cli import main

    h = shipped_header(12.0, 44100, lm=True)
    path = tmp_path / "a.mmc"
    path.write_bytes(container_bytes(h, [bytes(800), bytes(160)]))
    missing = ["--checkpoint", str(tmp_path / "none"), "--lm-checkpoint", str(tmp_path / "none")]
    assert main(["codec", "info", str(path), "--json", *missing]) == 0  # no model: none is loaded
    info = json.loads(capsys.readouterr().out)
    assert info["format_version"] == 2 and info["header_bytes"] == len(header_v2(h)) == 15
    assert info["bytes"] == path.stat().st_size and info["payload_bytes"] == 960 and info["chunks"] == 2
    assert info["duration"] == 12.0 and info["levels"] == 3 and info["frames"] == 600 and info["input_rate"] == 44100
    assert (info["lm"], info["rdo_lambda"], info["bits_model_crossentropy"]) == ("lm16k", 2.0, None)
    assert info["bits_raw"] == 3 * 10 * 600 and info["bits_total"] == 8 * info["bytes"]
    assert main(["codec", "info", str(V1_DATA / "lm.mmc"), "--json", *missing]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["format_version"] == 1 and info["mode"] == "lm" and info["bytes"] == (V1_DATA / "lm.mmc").stat().st_size
    bad = tmp_path / "bad.mmc"
    bad.write_bytes(path.read_bytes()[:-3])
    assert main(["codec", "info", str(bad), *missing]) == 2
    assert "truncated (in chunk 1" in capsys.readouterr().err
