"""Headers and payloads shared by the container, header and atomic-write tests."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np

from mmar.coding.bitpack import pack_codes
from mmar.coding.container import Header
from mmar.coding.header import CODEC_IDS, LM_IDS
from mmar.coding.header_v2 import decode_v2, encode_v2
from mmar.errors import ContainerError

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
    """What mmar.tasks.codec.encode_stream writes for the shipped default models (codec id 3, LM id 2)."""
    ni = round(seconds * input_rate)
    n = ni if input_rate == 16000 else -(-ni * 16000 // input_rate)
    extra = {} if input_rate == 16000 else {"ni": ni}
    if lm:
        extra |= {"lm": LM_IDS[2].model, "lmw": LM_IDS[2].weights, "rdo": 2.0 if rdo is None else rdo}
    return Header(model=CODEC_IDS[3].model, weights=CODEC_IDS[3].weights, sample_rate=16000, input_rate=input_rate, num_samples=n,
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
