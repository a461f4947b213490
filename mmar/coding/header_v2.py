"""The v2 binary form of the ``.mmc`` header (:class:`~mmar.coding.header.Header`), written now.

**Format version 2** (written now). The header follows the magic ``MMAC`` and the version byte 2
and ends with a CRC-16 that covers everything from the magic on. Integers marked *varint* are
unsigned LEB128 (7 bits per byte, least significant group first, high bit = "more"; the shortest
form only); *zigzag* maps a signed d to 2d (d >= 0) or -2d-1 (d < 0) before the varint::

    size   field
    1      flags: bits 0-1 modality (0 audio; 1 image and 2 video are reserved for those
                  sections, 3 for a later layout), bit 2 mode (0 "raw", 1 "lm"),
                  bit 3 chunk_frames is sent (else 500), bits 4-7 input-rate code:
                  0 = same as sample_rate, 1..14 = RATES[code - 1], 15 = a varint follows
    1      bits 0-6 codec id: CODEC_IDS key (1..127), or 0 = explicit identity, then
           bit 7 a gain byte is sent (below; files before it have this bit clear)
             varint n + n bytes   model name, UTF-8 (1..128 characters, n <= 512)
             1 + ceil(d/2) bytes  weights: d = hex digits (1..64), then the digits packed
                                  two per byte, high nibble first (an odd d pads a 0 nibble)
    (mode "lm" only)
    1      LM id: LM_IDS key, or 0 = explicit identity (name and weights as above)
    audio section
      (explicit codec identity only) varint sample_rate, varint frame_rate, 1 byte bits
      1      bits 0-5 levels - 1, bits 6-7 rdo kind: 0 none, 1 the LM's default λ (LM_IDS),
             2 float16 follows, 3 float64 follows (the shortest that holds λ exactly)
      varint num_samples (<= 2**48)
      (input-rate code 15)  varint input_rate
      (input-rate code > 0) zigzag ni - num_samples * input_rate // sample_rate
                            (ni: the input-rate sample count, extra["ni"]; |delta| is tiny)
      (flag bit 3)          varint chunk_frames (1..2**24)
      (rdo kind 2 or 3)     λ, little-endian IEEE float16 or float64
      (codec byte bit 7)    int8 gain: decoded audio is scaled by gain / 2 dB (extra["gain"],
                            -64..63.5 dB in 0.5 dB steps, never 0)
    2      CRC-16/CCITT-FALSE (binascii.crc_hqx, initial 0xFFFF) of every byte from the
           magic to here, little-endian

A known (codec, weights) id stands for its sample_rate, frame_rate and bits too; a header that
differs from the table in any of them is written with an explicit identity instead. Worked
example: the default codec (id 3), a 1 s, 16 kHz utterance at 1.5 kbps (3 levels, raw)::

    4d 4d 41 43  02  00  03  02  80 7d  c1 64
    "MMAC"       v2  flags: audio, raw, 500-frame chunks, input rate = 16 kHz
                         codec id 3 (sc16k, 44e826f7: 16 kHz, 50 Hz, 10 bits)
                             levels 3, no λ
                                 num_samples 16000 (0x3e80 = 0x00 + 0x7d << 7)
                                        CRC-16 0x64c1

12 bytes in all; from a 44.1 kHz input the flags become ``0x80`` (rate code 8 = 44100) and
one byte more holds the ni delta (0 for 44100 samples). An LM-coded file adds its LM id
(1 byte) and its λ (nothing when it is the LM's default); a loudness correction one byte more.

Short ids (codec, LM, rates) are never reused or changed once assigned: files carry them.
"""

from __future__ import annotations

import binascii
import struct
from typing import Callable

from mmar.coding.header import CODEC_IDS, DEFAULT_CHUNK_FRAMES, LM_IDS, MODALITIES, RATES, Header, header_error, ni_delta_ok
from mmar.errors import ContainerError

__all__ = ["encode_v2", "decode_v2", "varint"]

_MAX_NAME_BYTES = 512  # 128 characters of UTF-8
_RATE_EXPLICIT = 15
_GAIN_SENT = 0x80  # codec-id byte bit: a gain byte follows in the audio section


# -- v2: encoding ----------------------------------------------------------------------------
def varint(n: int) -> bytes:
    """Unsigned LEB128 bytes of n ≥ 0 (the shortest form)."""
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _zigzag(d: int) -> int:
    return 2 * d if d >= 0 else -2 * d - 1


def _name(s: str) -> bytes:
    b = s.encode("utf-8")
    return varint(len(b)) + b


def _hexhash(h: str) -> bytes:
    return bytes([len(h)]) + bytes.fromhex(h + "0" * (len(h) % 2))


def _f16(v: float) -> bytes | None:
    try:
        b = struct.pack("<e", v)
    except (OverflowError, struct.error):
        return None
    return b if struct.unpack("<e", b)[0] == v else None


def encode_v2(header: Header, prefix: bytes) -> bytes:
    """``prefix`` (magic + version) + the v2 header + its CRC-16 (validates first)."""
    h = header
    h.validate()
    x = h.extra
    codec_id = next((i for i, e in CODEC_IDS.items()
                     if e == (h.model, h.weights, h.sample_rate, h.frame_rate, h.bits)), 0)
    lm_id = next((i for i, e in LM_IDS.items() if (e.model, e.weights) == (x.get("lm"), x.get("lmw"))), 0)
    if h.input_rate == h.sample_rate:
        rate_code = 0
    else:
        rate_code = RATES.index(h.input_rate) + 1 if h.input_rate in RATES else _RATE_EXPLICIT
    flags = 0 | (h.mode == "lm") << 2 | (h.chunk_frames != DEFAULT_CHUNK_FRAMES) << 3 | rate_code << 4
    out = bytearray(prefix)
    out += bytes([flags, codec_id | ("gain" in x) * _GAIN_SENT])
    if not codec_id:
        out += _name(h.model) + _hexhash(h.weights)
    if h.mode == "lm":
        out.append(lm_id)
        if not lm_id:
            out += _name(x["lm"]) + _hexhash(x["lmw"])
    # audio section
    if not codec_id:
        out += varint(h.sample_rate) + varint(h.frame_rate) + bytes([h.bits])
    rdo_value = b""
    if "rdo" not in x:
        rdo_kind = 0
    elif lm_id and float(x["rdo"]) == LM_IDS[lm_id].rdo:
        rdo_kind = 1
    elif (half := _f16(float(x["rdo"]))) is not None:
        rdo_kind, rdo_value = 2, half
    else:
        rdo_kind, rdo_value = 3, struct.pack("<d", float(x["rdo"]))
    out.append((h.levels - 1) | rdo_kind << 6)
    out += varint(h.num_samples)
    if rate_code == _RATE_EXPLICIT:
        out += varint(h.input_rate)
    if rate_code:
        out += varint(_zigzag(x["ni"] - h.num_samples * h.input_rate // h.sample_rate))
    if h.chunk_frames != DEFAULT_CHUNK_FRAMES:
        out += varint(h.chunk_frames)
    out += rdo_value
    if "gain" in x:
        out += struct.pack("<b", int(x["gain"] * 2))
    out += struct.pack("<H", binascii.crc_hqx(bytes(out), 0xFFFF))
    return bytes(out)


# -- v2: decoding ----------------------------------------------------------------------------
class _Cursor:
    """Reads the header through ``read`` (exactly n bytes or a truncation error), keeping the
    bytes for the CRC. Every read is bounded by a constant: nothing is sized by the file."""

    def __init__(self, read: Callable[[int], bytes], prefix: bytes):
        self._read, self.data = read, bytearray(prefix)

    def take(self, n: int) -> bytes:
        b = self._read(n)
        self.data += b
        return b

    def byte(self) -> int:
        return self.take(1)[0]

    def varint(self, what: str, hi: int) -> int:
        n, shift = 0, 0
        while True:
            b = self.byte()
            n |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                if b == 0 and shift > 7:
                    raise header_error(f"{what} is not in its shortest form")
                break
            if n > hi or shift > 63:
                raise header_error(f"{what} exceeds {hi}")
        if n > hi:
            raise header_error(f"{what}={n} exceeds {hi}")
        return n

    def name(self, what: str) -> str:
        n = self.varint(f"{what} length", _MAX_NAME_BYTES)
        try:
            return self.take(n).decode("utf-8")
        except UnicodeDecodeError:
            raise header_error(f"{what} is not UTF-8") from None

    def hexhash(self, what: str) -> str:
        d = self.byte()
        if not 1 <= d <= 64:
            raise header_error(f"{what} has {d} hex digits (1..64)")
        s = self.take((d + 1) // 2).hex()
        if s[d:] not in ("", "0"):
            raise header_error(f"{what} has a nonzero pad nibble")
        return s[:d]


def decode_v2(read: Callable[[int], bytes], prefix: bytes) -> tuple[Header, int]:
    """Read a v2 header that follows ``prefix`` (magic + version, already read) through
    ``read(n)``, which returns exactly ``n`` bytes or raises. Returns (header, its size
    including the prefix and the CRC). The structure is parsed with every length bounded,
    then the CRC is checked, then the fields against the tables and each other."""
    c = _Cursor(read, prefix)
    flags = c.byte()
    modality, lm_mode, chunk_sent, rate_code = flags & 3, bool(flags & 4), bool(flags & 8), flags >> 4
    if modality:
        kind = MODALITIES[modality] if modality < len(MODALITIES) else f"type {modality}"
        raise ContainerError(f"this file holds {kind} data, which this mmar cannot read (newer mmar, or a damaged file)")
    codec_id = c.byte()
    gain_sent, codec_id = bool(codec_id & _GAIN_SENT), codec_id & ~_GAIN_SENT
    model = weights = lm = lmw = None
    if not codec_id:
        model, weights = c.name("model"), c.hexhash("weights")
    lm_id = c.byte() if lm_mode else 0
    if lm_mode and not lm_id:
        lm, lmw = c.name("LM id"), c.hexhash("LM weights")
    explicit = None if codec_id else (c.varint("sample_rate", 1_000_000), c.varint("frame_rate", 1_000_000), c.byte())
    lv = c.byte()
    levels, rdo_kind = (lv & 63) + 1, lv >> 6
    num_samples = c.varint("num_samples", 1 << 48)
    input_rate = c.varint("input_rate", 1_000_000) if rate_code == _RATE_EXPLICIT else None
    ni_delta = c.varint("ni delta", 1 << 24) if rate_code else None
    chunk_frames = c.varint("chunk_frames", 1 << 24) if chunk_sent else DEFAULT_CHUNK_FRAMES
    rdo_raw = c.take(2 if rdo_kind == 2 else 8) if rdo_kind >= 2 else b""
    gain = struct.unpack("<b", c.take(1))[0] / 2 if gain_sent else None
    at = len(c.data)
    crc = struct.unpack("<H", c.take(2))[0]
    if crc != binascii.crc_hqx(bytes(c.data[:at]), 0xFFFF):
        raise ContainerError(f"header is damaged (CRC mismatch at byte offset {at})")
    # -- meaning: tables, then fields against each other
    if codec_id:
        if codec_id not in CODEC_IDS:
            raise ContainerError(f"unknown codec id {codec_id} (written by a newer mmar?); upgrade mmar")
        model, weights, sample_rate, frame_rate, bits = CODEC_IDS[codec_id]
    else:
        sample_rate, frame_rate, bits = explicit
        if any(e == (model, weights, sample_rate, frame_rate, bits) for e in CODEC_IDS.values()):
            raise header_error("a known codec is named explicitly")
        if not sample_rate or not frame_rate:
            raise header_error("sample_rate and frame_rate must be positive")
    if lm_id:
        if lm_id not in LM_IDS:
            raise ContainerError(f"unknown LM id {lm_id} (written by a newer mmar?); upgrade mmar")
        lm, lmw = LM_IDS[lm_id].model, LM_IDS[lm_id].weights
    elif lm_mode and any((e.model, e.weights) == (lm, lmw) for e in LM_IDS.values()):
        raise header_error("a known LM is named explicitly")
    if rate_code == 0:
        input_rate = sample_rate
    elif rate_code != _RATE_EXPLICIT:
        if rate_code > len(RATES):
            raise header_error(f"unknown input-rate code {rate_code}")
        input_rate = RATES[rate_code - 1]
    elif input_rate == sample_rate or input_rate in RATES:
        raise header_error("input_rate is sent explicitly although it has a shorter code")
    extra: dict = {}
    if rate_code:
        if input_rate == sample_rate:
            raise header_error("input_rate is sent although it equals sample_rate")
        d = -(ni_delta + 1) // 2 if ni_delta & 1 else ni_delta // 2
        if not ni_delta_ok(d, input_rate, sample_rate):
            raise header_error("the input-rate sample count does not match num_samples")
        extra["ni"] = num_samples * input_rate // sample_rate + d
    if lm_mode:
        extra["lm"], extra["lmw"] = lm, lmw
    if not lm_mode and rdo_kind:
        raise header_error("a λ is sent in a raw-mode header")
    if rdo_kind == 1:
        if not lm_id:
            raise header_error("the LM's default λ is named, but the LM is not a known one")
        extra["rdo"] = LM_IDS[lm_id].rdo
    elif rdo_kind:
        extra["rdo"] = r = struct.unpack("<e" if rdo_kind == 2 else "<d", rdo_raw)[0]
        if (lm_id and r == LM_IDS[lm_id].rdo) or (rdo_kind == 3 and _f16(r) is not None):
            raise header_error("λ is not sent in its shortest form")
    if gain is not None:
        if not gain:
            raise header_error("a gain of 0 dB is sent")
        extra["gain"] = gain
    if chunk_sent and chunk_frames == DEFAULT_CHUNK_FRAMES:
        raise header_error("chunk_frames is sent although it is the default")
    header = Header(model=model, weights=weights, sample_rate=sample_rate, input_rate=input_rate,
                    num_samples=num_samples, levels=levels, bits=bits, frame_rate=frame_rate,
                    chunk_frames=chunk_frames, mode="lm" if lm_mode else "raw", extra=extra)
    header.validate()
    return header, len(c.data)
