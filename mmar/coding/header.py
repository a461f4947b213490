"""The header of a ``.mmc`` codec file: :class:`Header`, its binary v2 encoding, and the v1 JSON.

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
example: the shipped codec (id 1), a 1 s, 16 kHz utterance at 1.5 kbps (3 levels, raw)::

    4d 4d 41 43  02  00  01  02  80 7d  a9 89
    "MMAC"       v2  flags: audio, raw, 500-frame chunks, input rate = 16 kHz
                         codec id 1 (sc16k, 3e8eaeba: 16 kHz, 50 Hz, 10 bits)
                             levels 3, no λ
                                 num_samples 16000 (0x3e80 = 0x00 + 0x7d << 7)
                                        CRC-16 0x89a9

12 bytes in all; from a 44.1 kHz input the flags become ``0x80`` (rate code 8 = 44100) and
one byte more holds the ni delta (0 for 44100 samples). An LM-coded file adds its LM id
(1 byte) and its λ (nothing when it is the LM's default); a loudness correction one byte more.

Short ids (codec, LM, rates) are never reused or changed once assigned: files carry them.

**Format version 1** (read only): compact JSON with one-letter keys (``input_rate`` omitted when
it equals ``sample_rate``, ``extra`` when empty)::

    m model   w weights   r sample_rate   i input_rate   n num_samples
    k levels  b bits      f frame_rate    c chunk_frames o mode   x extra
"""

from __future__ import annotations

import binascii
import json
import math
import re
import struct
from dataclasses import dataclass, field
from typing import Callable, NamedTuple, Union

from mmar.errors import ContainerError

__all__ = ["MAX_HEADER_BYTES", "MODES", "MODALITIES", "CODEC_IDS", "LM_IDS", "RATES", "DEFAULT_CHUNK_FRAMES",
           "Header", "encode_v2", "decode_v2", "varint"]

MAX_HEADER_BYTES = 65536  # v1 JSON
MODES = ("raw", "lm")
MODALITIES = ("audio", "image", "video")  # flag values 0, 1, 2; only audio has a section so far
DEFAULT_CHUNK_FRAMES = 500
_HEX = re.compile(r"[0-9a-f]{1,64}")
_MAX_NAME_BYTES = 512  # 128 characters of UTF-8


class CodecEntry(NamedTuple):
    model: str
    weights: str
    sample_rate: int
    frame_rate: int
    bits: int


class LMEntry(NamedTuple):
    model: str
    weights: str
    rdo: float  # its default λ


# Short ids. NEVER reuse or change an entry once files with it may exist: append new ones.
# Codec ids stay below 128: bit 7 of the id byte says a gain byte follows.
# Weights are the first 8 hex digits of the SHA-256 of the model.safetensors file.
CODEC_IDS: dict[int, CodecEntry] = {
    1: CodecEntry("sc16k", "3e8eaeba", 16000, 50, 10),  # checkpoints/speech-codec-16k
}
LM_IDS: dict[int, LMEntry] = {
    1: LMEntry("lm16k", "350d060a", 2.0),  # checkpoints/speech-lm-16k
}
RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 88200, 96000, 176400, 192000, 64000)
_RATE_EXPLICIT = 15

# Header field -> (v1 JSON key, type, lower bound, upper bound). Ints are checked
# against the bounds, strings' lengths too.
_FIELDS: dict[str, tuple[str, type, int, int]] = {
    "model": ("m", str, 1, 128),
    "weights": ("w", str, 1, 64),
    "sample_rate": ("r", int, 1, 1_000_000),
    "input_rate": ("i", int, 1, 1_000_000),  # omitted from the JSON when == sample_rate
    "num_samples": ("n", int, 0, 1 << 48),
    "levels": ("k", int, 1, 64),
    "bits": ("b", int, 1, 16),
    "frame_rate": ("f", int, 1, 1_000_000),
    "chunk_frames": ("c", int, 1, 1 << 24),
    "mode": ("o", str, 1, 8),
    "extra": ("x", dict, 0, MAX_HEADER_BYTES),  # omitted when empty
}
_KEY_TO_FIELD = {key: name for name, (key, *_rest) in _FIELDS.items()}
_EXTRA = {"ni": "input-rate sample count", "lm": "LM id", "lmw": "LM weights hash", "rdo": "rate-distortion λ",
          "gain": "decoder gain in dB"}
_GAIN_SENT = 0x80  # codec-id byte bit: a gain byte follows in the audio section


def _bad(msg: str) -> ContainerError:
    return ContainerError(f"invalid header: {msg}")


@dataclass
class Header:
    """What a decoder needs besides the chunks.

    Attributes:
        model: codec model id (e.g. ``"sc16k"``).
        weights: short lowercase hex hash of the codec weights (8 digits: sha256[:8]).
        sample_rate: the codec's sample rate (Hz); a multiple of ``frame_rate``.
        input_rate: the original file's rate, restored on decode (Hz).
        num_samples: signal length in samples at ``sample_rate`` (0 allowed).
        levels: quantizer levels sent, 1..64.
        bits: codebook bits per code, 1..16.
        frame_rate: codec frames per second.
        chunk_frames: frames per chunk (the last chunk may hold fewer).
        mode: ``"raw"`` (bit-packed codes) or ``"lm"`` (range-coded with an LM).
        extra: the optional fields ``"ni"`` (int: sample count at ``input_rate``; present exactly
            when ``input_rate != sample_rate``), and in mode ``"lm"`` ``"lm"`` (LM id) and
            ``"lmw"`` (its weights hash), both required, and ``"rdo"`` (float λ >= 0); in any mode
            ``"gain"`` (float dB, a nonzero multiple of 0.5 in -64..63.5): the decoder scales its
            output by it, so the decoded level matches the input's.
    """

    model: str
    weights: str
    sample_rate: int
    input_rate: int
    num_samples: int
    levels: int
    bits: int
    frame_rate: int
    chunk_frames: int
    mode: str
    extra: dict = field(default_factory=dict)

    @property
    def duration(self) -> float:
        """Seconds of audio: ``num_samples / sample_rate``."""
        return self.num_samples / self.sample_rate

    @property
    def frames(self) -> int:
        """Codec frames: ``ceil(num_samples / hop)`` with ``hop = sample_rate // frame_rate``."""
        return -(-self.num_samples // (self.sample_rate // self.frame_rate))

    def validate(self) -> None:
        """Check every field's type and range, and the fields against each other;
        raise :class:`ContainerError` if anything is wrong."""
        for name, (_key, typ, lo, hi) in _FIELDS.items():
            v = getattr(self, name)
            if typ is int:
                if isinstance(v, bool) or not isinstance(v, int):
                    raise _bad(f"{name} must be an integer, got {v!r:.40}")
                if not lo <= v <= hi:
                    raise _bad(f"{name}={v} is outside {lo}..{hi}")
            elif not isinstance(v, typ):
                raise _bad(f"{name} must be a {typ.__name__}, got {v!r:.40}")
            elif typ is str and not lo <= len(v) <= hi:
                raise _bad(f"{name} must be {lo}..{hi} characters, got {len(v)}")
        if not _HEX.fullmatch(self.weights):
            raise _bad(f"weights must be a lowercase hex hash, got {self.weights!r:.40}")
        if self.mode not in MODES:
            raise _bad(f"unknown mode {self.mode!r:.20} (expected one of {MODES})")
        if self.frame_rate > self.sample_rate or self.sample_rate % self.frame_rate:
            raise _bad(f"sample_rate {self.sample_rate} is not a whole number of frames at {self.frame_rate} Hz")
        self._validate_extra()

    def _validate_extra(self) -> None:
        x = self.extra
        unknown = sorted(str(k) for k in x if k not in _EXTRA)
        if unknown:
            raise _bad(f"unknown extra field {unknown[0]!r:.20} (known: {', '.join(_EXTRA)})")
        if ("ni" in x) != (self.input_rate != self.sample_rate):
            raise _bad("extra 'ni' must be present exactly when input_rate differs from sample_rate")
        if "ni" in x:
            ni = x["ni"]
            if isinstance(ni, bool) or not isinstance(ni, int) or ni < 0:  # bounded by num_samples below
                raise _bad(f"extra 'ni' must be an integer >= 0, got {ni!r:.40}")
            if not _ni_delta_ok(ni - self.num_samples * self.input_rate // self.sample_rate, self.input_rate, self.sample_rate):
                raise _bad(f"{ni} input samples at {self.input_rate} Hz do not match {self.num_samples} at {self.sample_rate} Hz")
        if "gain" in x:
            g = x["gain"]
            if isinstance(g, bool) or not isinstance(g, (int, float)) or not (-64 <= g <= 63.5 and g != 0 and g * 2 == int(g * 2)):
                raise _bad(f"extra 'gain' must be a nonzero multiple of 0.5 dB in -64..63.5, got {g!r:.40}")
        if self.mode == "lm":
            if "lm" not in x or "lmw" not in x:
                raise _bad("an LM-coded header needs extra 'lm' and 'lmw' (the LM's id and weights)")
            if not isinstance(x["lm"], str) or not 1 <= len(x["lm"]) <= 128:
                raise _bad(f"extra 'lm' must be 1..128 characters, got {x['lm']!r:.40}")
            if not isinstance(x["lmw"], str) or not _HEX.fullmatch(x["lmw"]):
                raise _bad(f"extra 'lmw' must be a lowercase hex hash, got {x['lmw']!r:.40}")
            if "rdo" in x:
                r = x["rdo"]
                if isinstance(r, bool) or not isinstance(r, (int, float)) or not 0 <= r < math.inf:
                    raise _bad(f"extra 'rdo' must be a finite number >= 0, got {r!r:.40}")
        elif any(k in x for k in ("lm", "lmw", "rdo")):
            raise _bad("extra 'lm', 'lmw' and 'rdo' belong to mode 'lm' only")

    # -- v1 ----------------------------------------------------------------------
    def to_json(self) -> bytes:
        """Compact UTF-8 JSON with one-letter keys, format version 1 (validates first)."""
        self.validate()
        obj = {}
        for name, (key, *_rest) in _FIELDS.items():
            v = getattr(self, name)
            if (name == "input_rate" and v == self.sample_rate) or (name == "extra" and not v):
                continue
            obj[key] = v
        data = json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")
        if len(data) > MAX_HEADER_BYTES:
            raise _bad(f"{len(data)} bytes of JSON exceed {MAX_HEADER_BYTES}")
        return data

    @classmethod
    def from_json(cls, data: Union[bytes, str]) -> "Header":
        """Parse and validate :meth:`to_json` output; :class:`ContainerError` on anything wrong."""
        if isinstance(data, (bytes, bytearray, memoryview)):
            if len(data) > MAX_HEADER_BYTES:
                raise ContainerError(f"header too long ({len(data)} bytes > {MAX_HEADER_BYTES})")
            try:
                data = bytes(data).decode("utf-8")
            except UnicodeDecodeError:
                raise _bad("not UTF-8") from None

        def no_dupes(pairs: list) -> dict:
            keys = [k for k, _ in pairs]
            if len(set(keys)) != len(keys):
                raise ValueError("duplicate key")
            return dict(pairs)

        def no_const(name: str):
            raise ValueError(f"{name} is not allowed")

        try:
            obj = json.loads(data, object_pairs_hook=no_dupes, parse_constant=no_const)
        except (ValueError, RecursionError) as e:  # JSONDecodeError is a ValueError
            raise _bad(f"bad JSON ({str(e).splitlines()[0][:80]})") from None
        if not isinstance(obj, dict):
            raise _bad("JSON is not an object")
        unknown = sorted(set(obj) - set(_KEY_TO_FIELD))
        if unknown:
            raise _bad(f"unknown field {unknown[0]!r:.20}")
        kw = {_KEY_TO_FIELD[k]: v for k, v in obj.items()}
        kw.setdefault("extra", {})
        if "input_rate" not in kw and "sample_rate" in kw:
            kw["input_rate"] = kw["sample_rate"]
        missing = [n for n in _FIELDS if n not in kw]
        if missing:
            raise _bad(f"missing field {missing[0]}")
        header = cls(**kw)
        header.validate()
        return header


def _ni_delta_ok(delta: int, input_rate: int, sample_rate: int) -> bool:
    """ni = ceil-inverse of num_samples: ni - num_samples * input_rate // sample_rate lies in
    (-(input_rate / sample_rate) - 1, 0]; a little slack covers float rounding in writers."""
    return -(input_rate // sample_rate) - 2 <= delta <= 2


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
                    raise _bad(f"{what} is not in its shortest form")
                break
            if n > hi or shift > 63:
                raise _bad(f"{what} exceeds {hi}")
        if n > hi:
            raise _bad(f"{what}={n} exceeds {hi}")
        return n

    def name(self, what: str) -> str:
        n = self.varint(f"{what} length", _MAX_NAME_BYTES)
        try:
            return self.take(n).decode("utf-8")
        except UnicodeDecodeError:
            raise _bad(f"{what} is not UTF-8") from None

    def hexhash(self, what: str) -> str:
        d = self.byte()
        if not 1 <= d <= 64:
            raise _bad(f"{what} has {d} hex digits (1..64)")
        s = self.take((d + 1) // 2).hex()
        if s[d:] not in ("", "0"):
            raise _bad(f"{what} has a nonzero pad nibble")
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
            raise _bad("a known codec is named explicitly")
        if not sample_rate or not frame_rate:
            raise _bad("sample_rate and frame_rate must be positive")
    if lm_id:
        if lm_id not in LM_IDS:
            raise ContainerError(f"unknown LM id {lm_id} (written by a newer mmar?); upgrade mmar")
        lm, lmw = LM_IDS[lm_id].model, LM_IDS[lm_id].weights
    elif lm_mode and any((e.model, e.weights) == (lm, lmw) for e in LM_IDS.values()):
        raise _bad("a known LM is named explicitly")
    if rate_code == 0:
        input_rate = sample_rate
    elif rate_code != _RATE_EXPLICIT:
        if rate_code > len(RATES):
            raise _bad(f"unknown input-rate code {rate_code}")
        input_rate = RATES[rate_code - 1]
    elif input_rate == sample_rate or input_rate in RATES:
        raise _bad("input_rate is sent explicitly although it has a shorter code")
    extra: dict = {}
    if rate_code:
        if input_rate == sample_rate:
            raise _bad("input_rate is sent although it equals sample_rate")
        d = -(ni_delta + 1) // 2 if ni_delta & 1 else ni_delta // 2
        if not _ni_delta_ok(d, input_rate, sample_rate):
            raise _bad("the input-rate sample count does not match num_samples")
        extra["ni"] = num_samples * input_rate // sample_rate + d
    if lm_mode:
        extra["lm"], extra["lmw"] = lm, lmw
    if not lm_mode and rdo_kind:
        raise _bad("a λ is sent in a raw-mode header")
    if rdo_kind == 1:
        if not lm_id:
            raise _bad("the LM's default λ is named, but the LM is not a known one")
        extra["rdo"] = LM_IDS[lm_id].rdo
    elif rdo_kind:
        extra["rdo"] = r = struct.unpack("<e" if rdo_kind == 2 else "<d", rdo_raw)[0]
        if (lm_id and r == LM_IDS[lm_id].rdo) or (rdo_kind == 3 and _f16(r) is not None):
            raise _bad("λ is not sent in its shortest form")
    if gain is not None:
        if not gain:
            raise _bad("a gain of 0 dB is sent")
        extra["gain"] = gain
    if chunk_sent and chunk_frames == DEFAULT_CHUNK_FRAMES:
        raise _bad("chunk_frames is sent although it is the default")
    header = Header(model=model, weights=weights, sample_rate=sample_rate, input_rate=input_rate,
                    num_samples=num_samples, levels=levels, bits=bits, frame_rate=frame_rate,
                    chunk_frames=chunk_frames, mode="lm" if lm_mode else "raw", extra=extra)
    header.validate()
    return header, len(c.data)
