"""The ``.mmc`` codec file: a compact header and CRC-checked chunks.

Format version 2 (written now; integers little-endian, *varint* = unsigned LEB128)::

    offset  size   field
    0       4      magic  b"MMAC"
    4       1      u8   format version (2)
    5       7..    header, ending in a CRC-16 of bytes 0.. (layout: mmar.coding.header_v2)
    then, per chunk i = 0, 1, ...:
            1..4   varint  payload length L + 1 (L <= 64 MiB; 2 bytes while L < 16383)
            4      u32  CRC32 of the payload (zlib.crc32)
            L      payload (raw bit-packed codes or a range-coded stream)
    then    1      end marker 0x00 (no length field is 0); nothing may follow it

A file from the shipped models costs 12-16 bytes of header + 6 bytes per chunk (chunks hold
500 frames, 10 s) + 1 end byte: a 1 s utterance at 1.5 kbps (188 bytes of codes) is a
207-byte file from 16 kHz input, 1.66 kbps. The header CRC makes a flipped bit in, say,
``num_samples`` an error instead of silently wrong audio; the end marker makes truncation at a
chunk boundary detectable. Chunk indices in messages are 0-based; byte offsets count from the
start of the file and point at the chunk's length field.

Format version 1 (still read, no longer written): after the version byte, u32 header length
H (<= 65536), u32 CRC32 of the header, H bytes of JSON (mmar.coding.header); chunks as
u32 length + u32 CRC32 + payload; end marker u32 0xFFFFFFFF.

Readers stream: memory is bounded by the largest chunk, never by the file; a damaged length
field cannot make them allocate more than the bytes really there, and every header read is
bounded by a constant.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path
from typing import BinaryIO, Iterator, Union

from mmar.atomic import AtomicFile
from mmar.coding.header import MAX_HEADER_BYTES, MODES, Header
from mmar.coding.header_v2 import decode_v2, encode_v2, varint
from mmar.errors import ContainerError, MmarError

__all__ = [
    "MAGIC", "VERSION", "MAX_HEADER_BYTES", "MODES", "MAX_CHUNK_BYTES", "Header", "ContainerWriter",
    "ContainerReader", "read_container", "container_bytes", "payload_bits",
]

MAGIC = b"MMAC"
VERSION = 2  # written; 1 is read too
MAX_CHUNK_BYTES = 64 << 20
END = b"\x00"
_MAX_LEN_BYTES = 4  # varint of MAX_CHUNK_BYTES + 1 < 2**28
_V1_PRE = struct.Struct("<4sBII")  # magic, version, header length, header crc
_V1_CHUNK = struct.Struct("<II")  # payload length, payload crc
_V1_END = 0xFFFFFFFF
_READ_PIECE = 1 << 20  # read long chunks in pieces so a bad length allocates nothing extra

Source = Union[str, os.PathLike, bytes, bytearray, memoryview, BinaryIO]


def _chunk_record(payload: bytes) -> bytes:
    if len(payload) > MAX_CHUNK_BYTES:
        raise ValueError(f"chunk payload of {len(payload)} bytes exceeds {MAX_CHUNK_BYTES}")
    return varint(len(payload) + 1) + struct.pack("<I", zlib.crc32(payload)) + bytes(payload)


def _preamble(header: Header) -> bytes:
    return encode_v2(header, MAGIC + bytes([VERSION]))


def container_bytes(header: Header, payloads: list[bytes]) -> bytes:
    """The whole file in memory (for tests, demos, and streaming over a socket)."""
    return _preamble(header) + b"".join(_chunk_record(p) for p in payloads) + END


class ContainerWriter:
    """Write a codec file atomically (through :class:`mmar.atomic.AtomicFile`).

    Use as a context manager. A clean exit writes the end marker, fsyncs and moves the
    temp file onto ``path``; an exception deletes the temp file and leaves any existing
    ``path`` untouched::

        with ContainerWriter(out, header) as w:
            for payload in payloads:
                w.write_chunk(payload)

    Raises:
        MmarError: ``path`` exists and ``overwrite`` is false, or it cannot be written.
        ContainerError: ``header`` is invalid (nothing is touched on disk).
    """

    def __init__(self, path: Union[str, os.PathLike], header: Header, overwrite: bool = False):
        self.path = Path(path)
        pre = _preamble(header)  # validate before touching the disk
        self._file = AtomicFile(self.path, overwrite=overwrite)
        self.chunks = 0
        self.bytes_written = 0
        try:
            self._write(pre)
        except BaseException:
            self.abort()
            raise

    def _write(self, data: bytes) -> None:
        self._file.write(data)
        self.bytes_written += len(data)

    def write_chunk(self, payload: bytes) -> None:
        """Append one chunk (``payload`` of at most 64 MiB; empty is allowed)."""
        self._write(_chunk_record(payload))
        self.chunks += 1

    def commit(self) -> Path:
        """Finish the file: end marker, fsync, atomic rename onto ``path``."""
        try:
            self._write(END)
        except BaseException:
            self.abort()
            raise
        return self._file.commit()

    def abort(self) -> None:
        """Discard everything written so far (idempotent)."""
        self._file.abort()

    def __enter__(self) -> "ContainerWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            self.commit()
        else:
            self.abort()
        return False


class ContainerReader:
    """Stream a codec file: ``header`` on open, then iterate over chunk payloads.

    ``source`` is a path, the file's bytes, or a binary file object (read from its current
    position). Iteration checks every CRC, then the end marker and that nothing follows it.
    Every problem raises :class:`ContainerError` with a one-line message. Attributes after
    opening: ``header``, ``version`` (1 or 2), ``header_bytes`` (magic to the end of the
    header); after a full pass: ``bytes_read``, ``payload_bytes``, ``chunks``. Use as a
    context manager to close a file it opened::

        with ContainerReader("a.mmc") as r:
            for payload in r:   # bytes, one chunk at a time
                ...
    """

    def __init__(self, source: Source):
        self._own = False
        if isinstance(source, (bytes, bytearray, memoryview)):
            self._f: BinaryIO = io.BytesIO(bytes(source))
            self.name = ""
        elif isinstance(source, (str, os.PathLike)):
            self.name = str(source)
            try:
                self._f = open(source, "rb")
            except OSError as e:
                raise MmarError(f"cannot open {source}: {e.strerror or e}") from None
            self._own = True
        else:
            self._f = source
            name = getattr(source, "name", "")
            self.name = name if isinstance(name, str) else ""
        self._start = self._tell()
        self._size = self._remaining()
        self._pos = 0  # offset from the start of the container
        self._done = False
        self.chunks = 0
        self.payload_bytes = 0
        try:
            self.version, self.header_bytes, self.header = self._read_header()
        except BaseException:
            self.close()
            raise

    @property
    def bytes_read(self) -> int:
        """Bytes consumed so far (the whole file once iteration has finished)."""
        return self._pos

    # -- low level -------------------------------------------------------
    def _err(self, msg: str) -> ContainerError:
        return ContainerError(f"{self.name}: {msg}" if self.name else msg)

    def _tell(self) -> int:
        try:
            return self._f.tell()
        except (OSError, AttributeError, ValueError):
            return 0

    def _remaining(self) -> int | None:
        """Bytes from the start to the end of the stream, or None if not seekable."""
        try:
            if not self._f.seekable():
                return None
            end = self._f.seek(0, io.SEEK_END)
            self._f.seek(self._start)
            return end - self._start
        except (OSError, AttributeError, ValueError):
            return None

    def _read(self, n: int) -> bytes:
        """Up to ``n`` bytes, in pieces so memory follows the data actually present."""
        if n <= _READ_PIECE:
            data = self._f.read(n)
        else:
            buf = bytearray()
            while len(buf) < n:
                piece = self._f.read(min(_READ_PIECE, n - len(buf)))
                if not piece:
                    break
                buf += piece
            data = bytes(buf)
        self._pos += len(data)
        return data

    def _header_read(self, n: int) -> bytes:
        data = self._read(n)
        if len(data) < n:
            raise self._err("file is truncated (in the header)")
        return data

    # -- structure -------------------------------------------------------
    def _read_header(self) -> tuple[int, int, Header]:
        pre = self._read(5)
        if len(pre) < 4 or pre[:4] != MAGIC:
            raise self._err("not an mmar codec file (bad magic bytes)")
        if len(pre) < 5:
            raise self._err("file is truncated (in the header)")
        version = pre[4]
        if version > VERSION:
            raise self._err(f"written by a newer mmar (format version {version}); upgrade mmar")
        if version < 1:
            raise self._err(f"unknown format version {version}; file is damaged")
        try:
            if version == 2:
                header, size = decode_v2(self._header_read, pre)
                return 2, size, header
            return 1, *self._read_header_v1(pre)
        except ContainerError as e:
            if self.name and not str(e).startswith(self.name):
                raise self._err(str(e)) from None
            raise

    def _read_header_v1(self, pre: bytes) -> tuple[int, Header]:
        pre += self._header_read(_V1_PRE.size - len(pre))
        _magic, _ver, hlen, hcrc = _V1_PRE.unpack(pre)
        if hlen > MAX_HEADER_BYTES:
            raise self._err(f"header too long ({hlen} bytes > {MAX_HEADER_BYTES}); file is damaged")
        js = self._header_read(hlen)
        if zlib.crc32(js) != hcrc:
            raise self._err(f"header is damaged (CRC mismatch at byte offset {_V1_PRE.size})")
        return _V1_PRE.size + hlen, Header.from_json(js)

    def _length_v2(self, index: int, off: int) -> int | None:
        """The chunk length at ``off``, or None at the end marker."""
        n, shift = 0, 0
        for i in range(_MAX_LEN_BYTES):
            b = self._read(1)
            if not b:
                if i == 0:
                    raise self._err(f"file is truncated (end marker missing after {index} chunks)")
                raise self._err(f"file is truncated (in chunk {index} at byte offset {off})")
            n |= (b[0] & 0x7F) << shift
            shift += 7
            if not b[0] & 0x80:
                if n == 0 and i == 0:
                    return None
                if b[0] == 0:
                    raise self._err(f"chunk {index} is damaged (overlong length field at byte offset {off})")
                break
        else:
            raise self._err(f"chunk {index} is damaged (length field too long at byte offset {off})")
        if n - 1 > MAX_CHUNK_BYTES:
            raise self._err(f"chunk {index} is damaged (length {n - 1} > {MAX_CHUNK_BYTES} at byte offset {off})")
        return n - 1

    def _length_v1(self, index: int, off: int) -> int | None:
        rec = self._read(4)
        if not rec:
            raise self._err(f"file is truncated (end marker missing after {index} chunks)")
        if len(rec) < 4:
            raise self._err(f"file is truncated (in chunk {index} at byte offset {off})")
        (length,) = struct.unpack("<I", rec)
        if length == _V1_END:
            return None
        if length > MAX_CHUNK_BYTES:
            raise self._err(f"chunk {index} is damaged (length {length} > {MAX_CHUNK_BYTES} at byte offset {off})")
        return length

    def __iter__(self) -> Iterator[bytes]:
        """Yield each chunk's payload in order (once; a second pass yields nothing)."""
        length_at = self._length_v2 if self.version == 2 else self._length_v1
        index = 0
        while not self._done:
            off = self._pos
            length = length_at(index, off)
            if length is None:
                self._done = True
                if self._read(1):
                    raise self._err(f"trailing garbage after the end marker (at byte offset {self._pos - 1})")
                return
            rec = self._read(4)
            left = None if self._size is None else self._size - self._pos
            if len(rec) < 4 or (left is not None and length > left):
                raise self._err(f"file is truncated (in chunk {index} at byte offset {off})")
            (crc,) = struct.unpack("<I", rec)
            payload = self._read(length)
            if len(payload) < length:
                raise self._err(f"file is truncated (in chunk {index} at byte offset {off})")
            if zlib.crc32(payload) != crc:
                raise self._err(f"chunk {index} is damaged (CRC mismatch at byte offset {off})")
            self.chunks += 1
            self.payload_bytes += length
            yield payload
            index += 1

    def read_all(self) -> list[bytes]:
        """All payloads as a list (checks the whole file)."""
        return list(self)

    def close(self) -> None:
        if self._own:
            self._f.close()

    def __enter__(self) -> "ContainerReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_container(source: Source) -> tuple[Header, Iterator[bytes]]:
    """``(header, payloads)``: the header now, payloads lazily (file closed at the end)."""
    reader = ContainerReader(source)

    def gen() -> Iterator[bytes]:
        with reader:
            yield from reader

    return reader.header, gen()


def payload_bits(source: Source) -> dict:
    """Size breakdown for ``mmar codec info``: one pass over the chunks' lengths and CRCs
    (I/O only, one chunk in memory at a time; no model).

    Returns ``{"total_bytes", "header_bytes", "framing_bytes", "payload_bytes", "chunks",
    "format_version", "header"}``: header bytes run from the magic to the end of the header
    (its CRC included); framing is the chunks' length and CRC fields plus the end marker;
    ``header`` is the :class:`Header`. ``8 * total_bytes / header.duration`` is the bitrate.
    """
    with ContainerReader(source) as r:
        for _ in r:
            pass
    return {
        "total_bytes": r.bytes_read,
        "header_bytes": r.header_bytes,
        "framing_bytes": r.bytes_read - r.header_bytes - r.payload_bytes,
        "payload_bytes": r.payload_bytes,
        "chunks": r.chunks,
        "format_version": r.version,
        "header": r.header,
    }
