"""The .mmc container (v2 written, v1 read): bit-exact round trips, refusing to overwrite, every
kind of damage reported in one line, bounded memory, and `mmar codec info`."""

from __future__ import annotations

import io
import json
import random
import struct
import tracemalloc
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmar.coding.bitpack import unpack_codes
from mmar.coding.container import (
    ContainerReader,
    ContainerWriter,
    container_bytes,
    payload_bits,
    read_container,
)
from mmar.errors import ContainerError, MmarError

from container_helpers import PREFIX, V1_DATA, header_v2, make_header, make_payloads, shipped_header, v1_bytes


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
