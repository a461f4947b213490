"""The .mmc container and raw bit packing: round trips, atomic writes, damage."""

from __future__ import annotations

import io
import random
import struct
import time
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmar.coding.bitpack import pack_codes, packed_size, unpack_codes
from mmar.coding.container import (
    ContainerReader,
    ContainerWriter,
    Header,
    container_bytes,
    payload_bits,
    read_container,
)
from mmar.errors import ContainerError, MmarError


def make_header(**kw) -> Header:
    h = dict(model="mmar-speech-16k", weights="0123456789abcdef", sample_rate=16000, input_rate=44100,
             num_samples=96000, levels=4, bits=10, frame_rate=50, chunk_frames=100, mode="raw")
    h.update(kw)
    return Header(**h)


def make_payloads(seed: int = 0, chunks: int = 3) -> list[bytes]:
    rng = np.random.default_rng(seed)
    return [pack_codes(rng.integers(0, 1024, size=(4, 100 if i < chunks - 1 else 37)), 10) for i in range(chunks)]


# -- header ----------------------------------------------------------------

def test_header_json_round_trip():
    for h in (make_header(), make_header(input_rate=16000, mode="lm", extra={"lm": "tiny", "lmw": "beef"})):
        js = h.to_json()
        assert b" " not in js
        assert Header.from_json(js) == h
        assert Header.from_json(js.decode()) == h
    assert len(make_header().to_json()) < 120
    assert b'"i"' not in make_header(input_rate=16000).to_json()  # redundant field omitted


@pytest.mark.parametrize("kw", [
    dict(levels=0), dict(levels=65), dict(bits=0), dict(bits=17), dict(sample_rate=-1), dict(levels=True),
    dict(frame_rate=50.0), dict(mode="zip"), dict(model=""), dict(model="x" * 200), dict(weights="XYZ"),
    dict(weights=""), dict(num_samples=-5), dict(extra=[1]), dict(extra={"a": float("nan")}),
])
def test_header_rejects_bad_fields(kw):
    with pytest.raises(ContainerError, match="invalid header"):
        make_header(**kw).to_json()


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


def test_pack_one_hour_is_fast():
    codes = np.random.default_rng(0).integers(0, 1024, size=(12, 180_000))
    t = time.perf_counter()
    data = pack_codes(codes, 10)
    back = unpack_codes(data, 12, 180_000, 10)
    assert time.perf_counter() - t < 10  # ~0.5 s on one core
    np.testing.assert_array_equal(back, codes)


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
        assert r.header == header and r.read_all() == payloads
    with open(path, "rb") as f:
        assert ContainerReader(f).read_all() == payloads
    info = payload_bits(path)
    assert info["total_bytes"] == path.stat().st_size
    assert info["payload_bytes"] == sum(map(len, payloads)) and info["chunks"] == len(payloads)
    assert info["header_bytes"] + info["framing_bytes"] + info["payload_bytes"] == info["total_bytes"]
    assert info["framing_bytes"] == 8 * len(payloads) + 4
    assert info["header_bytes"] == 13 + len(header.to_json())
    codes = unpack_codes(payloads[0], 4, 100, 10)
    assert codes.shape == (4, 100)


def test_refuses_overwrite(tmp_path):
    path = tmp_path / "a.mmc"
    path.write_bytes(b"keep")
    with pytest.raises(MmarError, match="exists; use -f to overwrite"):
        ContainerWriter(path, make_header())
    assert path.read_bytes() == b"keep"
    with ContainerWriter(path, make_header(), overwrite=True) as w:
        w.write_chunk(b"x")
    assert ContainerReader(path.read_bytes()).read_all() == [b"x"]


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


def test_missing_directory_is_a_clear_error(tmp_path):
    with pytest.raises(MmarError, match="cannot write"):
        ContainerWriter(tmp_path / "no" / "a.mmc", make_header())


def test_invalid_header_touches_nothing(tmp_path):
    with pytest.raises(ContainerError):
        ContainerWriter(tmp_path / "a.mmc", make_header(levels=0))
    assert list(tmp_path.iterdir()) == []


def test_damaged_chunk_names_chunk_and_offset():
    header, payloads = make_header(), make_payloads(chunks=3)
    data = bytearray(container_bytes(header, payloads))
    off2 = 13 + len(header.to_json()) + sum(8 + len(p) for p in payloads[:2])  # chunk 2's record
    data[off2 + 8 + 5] ^= 0x10
    r = ContainerReader(bytes(data))
    it = iter(r)
    assert next(it) == payloads[0] and next(it) == payloads[1]
    with pytest.raises(ContainerError, match=rf"^chunk 2 is damaged \(CRC mismatch at byte offset {off2}\)$"):
        next(it)


def test_damaged_header_is_detected():
    data = bytearray(container_bytes(make_header(), []))
    data[30] ^= 1
    with pytest.raises(ContainerError, match="header is damaged"):
        ContainerReader(bytes(data))


def test_newer_version(tmp_path):
    data = bytearray(container_bytes(make_header(), make_payloads()))
    data[4] = 2
    path = tmp_path / "new.mmc"
    path.write_bytes(bytes(data))
    with pytest.raises(ContainerError, match=r"written by a newer mmar \(format version 2\); upgrade"):
        read_container(path)


@pytest.mark.parametrize("mutate, pattern", [
    (lambda d: b"RIFF" + d[4:], "not an mmar codec file"),
    (lambda d: d[:-4], r"truncated \(end marker missing after 3 chunks\)"),
    (lambda d: d[:-10], r"truncated \(in chunk 2 at byte offset \d+\)"),
    (lambda d: d + b"\0", "trailing garbage"),
    (lambda d: d[:5] + struct.pack("<I", 70000) + d[9:], "header too long"),
    (lambda d: d[:7], r"truncated \(in the header\)"),
])
def test_structural_errors(mutate, pattern):
    data = container_bytes(make_header(), make_payloads())
    with pytest.raises(ContainerError, match=pattern):
        ContainerReader(mutate(data)).read_all()


def test_huge_declared_length_allocates_nothing():
    head = container_bytes(make_header(), [])[:-4]
    bad = head + struct.pack("<II", 60 << 20, 0) + b"abc"
    with pytest.raises(ContainerError, match=r"truncated \(in chunk 0"):
        ContainerReader(bad).read_all()

    class Stream(io.RawIOBase):  # not seekable: the reader falls back to reads in 1 MiB pieces
        def __init__(self, b):
            self.b = io.BytesIO(b)

        def readable(self):
            return True

        def readinto(self, buf):
            return self.b.readinto(buf)

    with pytest.raises(ContainerError, match=r"truncated \(in chunk 0"):
        ContainerReader(Stream(bad)).read_all()
    too_big = head + struct.pack("<II", (64 << 20) + 1, 0)
    with pytest.raises(ContainerError, match=r"chunk 0 is damaged \(length"):
        ContainerReader(too_big).read_all()


def test_fuzz_mutations_only_raise_container_error():
    """10,000 random flips, insertions, deletions and truncations: ContainerError or a clean read."""
    header = make_header(extra={"lm": "tiny"})
    payloads = [b"", *make_payloads(seed=1, chunks=4)]
    payloads = [p[:60] for p in payloads]  # small chunks keep this fast
    good = container_bytes(header, payloads)
    rng = random.Random(1234)
    outcomes = {"ok": 0, "error": 0}
    t0 = time.perf_counter()
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
        try:
            r = ContainerReader(io.BytesIO(bytes(d)))
            got = r.read_all()
        except ContainerError as e:
            assert "\n" not in str(e)
            outcomes["error"] += 1
        else:
            outcomes["ok"] += 1
            if bytes(d) != good:  # a "successful" read of a changed file must still be self-consistent
                assert container_bytes(r.header, got) == bytes(d)
    assert outcomes["error"] > 9000
    assert time.perf_counter() - t0 < 30


def test_crc_is_zlib_crc32():
    data = container_bytes(make_header(), [b"hello"])
    start = 13 + len(make_header().to_json())
    length, crc = struct.unpack_from("<II", data, start)
    assert (length, crc) == (5, zlib.crc32(b"hello"))
    assert data[start + 8:start + 13] == b"hello" and data[-4:] == b"\xff\xff\xff\xff"
