"""The ``.mmc`` codec file: a small header and CRC-checked chunks.

Layout (all integers little-endian)::

    offset  size  field
    0       4     magic  b"MMAC"
    4       1     u8   format version (1)
    5       4     u32  header length H (<= 65536)
    9       4     u32  CRC32 of the header bytes
    13      H     header: compact UTF-8 JSON, one-letter keys (mmar.coding.header)
    then, per chunk i = 0, 1, ...:
            4     u32  payload length L (<= 64 MiB)
            4     u32  CRC32 of the payload (zlib.crc32)
            L     payload (raw bit-packed codes or a range-coded stream)
    then    4     u32  end marker 0xFFFFFFFF; nothing may follow it

Overhead per file: 17 bytes + the JSON (~105-115 bytes typical) + 8 bytes per chunk.
The header CRC makes a flipped digit in, say, ``num_samples`` an error instead
of silently wrong audio; the end marker makes truncation at a chunk boundary
detectable. Chunk indices in messages are 0-based; byte offsets count from the
start of the file and point at the chunk's length field.

Readers stream: memory is bounded by the largest chunk, never by the file, and a
damaged length field cannot make them allocate more than the bytes really there.
"""

from __future__ import annotations

import io
import os
import struct
import tempfile
import zlib
from pathlib import Path
from typing import BinaryIO, Iterator, Union

from mmar.coding.header import MAX_HEADER_BYTES, MODES, Header
from mmar.errors import ContainerError, MmarError

__all__ = [
    "MAGIC", "VERSION", "MAX_HEADER_BYTES", "MODES", "MAX_CHUNK_BYTES", "Header", "ContainerWriter",
    "ContainerReader", "read_container", "container_bytes", "payload_bits",
]

MAGIC = b"MMAC"
VERSION = 1
MAX_CHUNK_BYTES = 64 << 20
END_MARKER = 0xFFFFFFFF
_PRE = struct.Struct("<4sBII")  # magic, version, header length, header crc
_CHUNK = struct.Struct("<II")  # payload length, payload crc
_END = struct.pack("<I", END_MARKER)
_READ_PIECE = 1 << 20  # read long chunks in pieces so a bad length allocates nothing extra

Source = Union[str, os.PathLike, bytes, bytearray, memoryview, BinaryIO]

def _chunk_record(payload: bytes) -> bytes:
    if len(payload) > MAX_CHUNK_BYTES:
        raise ValueError(f"chunk payload of {len(payload)} bytes exceeds {MAX_CHUNK_BYTES}")
    return _CHUNK.pack(len(payload), zlib.crc32(payload)) + bytes(payload)


def _preamble(header: Header) -> bytes:
    js = header.to_json()
    return _PRE.pack(MAGIC, VERSION, len(js), zlib.crc32(js)) + js


def container_bytes(header: Header, payloads: list[bytes]) -> bytes:
    """The whole file in memory (for tests, demos, and streaming over a socket)."""
    return _preamble(header) + b"".join(_chunk_record(p) for p in payloads) + _END


class ContainerWriter:
    """Write a codec file atomically: chunks go to a temp file beside ``path``.

    Use as a context manager. A clean exit writes the end marker, fsyncs and
    ``os.replace``s the temp file onto ``path``; an exception deletes the temp
    file and leaves any existing ``path`` untouched::

        with ContainerWriter(out, header) as w:
            for payload in payloads:
                w.write_chunk(payload)

    Raises:
        MmarError: ``path`` exists and ``overwrite`` is false.
        ContainerError: ``header`` is invalid.
    """

    def __init__(self, path: Union[str, os.PathLike], header: Header, overwrite: bool = False):
        self.path = Path(path)
        self.overwrite = overwrite
        if self.path.exists() and not overwrite:
            raise MmarError(f"{self.path} exists; use -f to overwrite")
        pre = _preamble(header)  # validate before touching the disk
        try:
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
        except OSError as e:
            raise MmarError(f"cannot write {self.path}: {e.strerror or e}") from None
        self._tmp = Path(tmp)
        self._f: BinaryIO | None = os.fdopen(fd, "wb")
        self.chunks = 0
        self.bytes_written = 0
        try:
            self._write(pre)
        except BaseException:
            self.abort()
            raise

    def _write(self, data: bytes) -> None:
        if self._f is None:
            raise ValueError("ContainerWriter is closed")
        self._f.write(data)
        self.bytes_written += len(data)

    def write_chunk(self, payload: bytes) -> None:
        """Append one chunk (``payload`` of at most 64 MiB; empty is allowed)."""
        self._write(_chunk_record(payload))
        self.chunks += 1

    def commit(self) -> Path:
        """Finish the file: end marker, fsync, atomic rename onto ``path``."""
        try:
            self._write(_END)
            f, self._f = self._f, None
            f.flush()
            os.fsync(f.fileno())
            f.close()
            if self.path.exists() and not self.overwrite:  # appeared while we were writing
                raise MmarError(f"{self.path} exists; use -f to overwrite")
            mask = os.umask(0)
            os.umask(mask)
            os.chmod(self._tmp, 0o666 & ~mask)  # mkstemp makes 0600
            os.replace(self._tmp, self.path)
        except BaseException:
            self.abort()
            raise
        try:  # make the rename durable; not possible on every platform
            dfd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except OSError:
            pass
        return self.path

    def abort(self) -> None:
        """Discard everything written so far (idempotent)."""
        if self._f is not None:
            f, self._f = self._f, None
            f.close()
        self._tmp.unlink(missing_ok=True)

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

    ``source`` is a path, the file's bytes, or a binary file object (read from
    its current position). Iteration checks every CRC, then the end marker and
    that nothing follows it. Every problem raises :class:`ContainerError` with a
    one-line message. Use as a context manager to close a file it opened::

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
        try:
            self.header_bytes, self.header = self._read_header()
        except BaseException:
            self.close()
            raise

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

    # -- structure -------------------------------------------------------
    def _read_header(self) -> tuple[bytes, Header]:
        pre = self._read(_PRE.size)
        if len(pre) < 4 or pre[:4] != MAGIC:
            raise self._err("not an mmar codec file (bad magic bytes)")
        if len(pre) >= 5 and pre[4] > VERSION:
            raise self._err(f"written by a newer mmar (format version {pre[4]}); upgrade mmar")
        if len(pre) >= 5 and pre[4] < 1:
            raise self._err(f"unknown format version {pre[4]}; file is damaged")
        if len(pre) < _PRE.size:
            raise self._err("file is truncated (in the header)")
        _magic, _ver, hlen, hcrc = _PRE.unpack(pre)
        if hlen > MAX_HEADER_BYTES:
            raise self._err(f"header too long ({hlen} bytes > {MAX_HEADER_BYTES}); file is damaged")
        js = self._read(hlen)
        if len(js) < hlen:
            raise self._err("file is truncated (in the header)")
        if zlib.crc32(js) != hcrc:
            raise self._err(f"header is damaged (CRC mismatch at byte offset {_PRE.size})")
        return _PRE.size + hlen, Header.from_json(js)

    def __iter__(self) -> Iterator[bytes]:
        """Yield each chunk's payload in order (once; a second pass yields nothing)."""
        index = 0
        while not self._done:
            off = self._pos
            rec = self._read(4)
            if not rec:
                raise self._err(f"file is truncated (end marker missing after {index} chunks)")
            if len(rec) < 4:
                raise self._err(f"file is truncated (in chunk {index} at byte offset {off})")
            (length,) = struct.unpack("<I", rec)
            if length == END_MARKER:
                self._done = True
                if self._read(1):
                    raise self._err(f"trailing garbage after the end marker (at byte offset {off + 4})")
                return
            if length > MAX_CHUNK_BYTES:
                raise self._err(f"chunk {index} is damaged (length {length} > {MAX_CHUNK_BYTES} at byte offset {off})")
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
    """Size breakdown for ``mmar codec info`` (reads and checks the whole file).

    Returns ``{"total_bytes", "header_bytes", "framing_bytes", "payload_bytes",
    "chunks", "header"}``: header bytes include magic, version, lengths and
    CRC; framing is 8 bytes per chunk plus the 4-byte end marker; ``header`` is
    the :class:`Header`. ``8 * total_bytes / header.duration`` is the bitrate.
    """
    with ContainerReader(source) as r:
        sizes = [len(p) for p in r]
        header_bytes = r.header_bytes
        header = r.header
    framing = _CHUNK.size * len(sizes) + len(_END)
    payload = sum(sizes)
    return {
        "total_bytes": header_bytes + framing + payload,
        "header_bytes": header_bytes,
        "framing_bytes": framing,
        "payload_bytes": payload,
        "chunks": len(sizes),
        "header": header,
    }
