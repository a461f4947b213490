"""The header of a ``.mmc`` codec file: :class:`Header` (its fields, their bounds and the
checks between them), the short-id tables of the shipped models, and the v1 JSON form.
The v2 binary form, written now, is :mod:`mmar.coding.header_v2`.

**Format version 1** (read only): compact JSON with one-letter keys (``input_rate`` omitted when
it equals ``sample_rate``, ``extra`` when empty)::

    m model   w weights   r sample_rate   i input_rate   n num_samples
    k levels  b bits      f frame_rate    c chunk_frames o mode   x extra
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import NamedTuple, Union

from mmar.errors import ContainerError

__all__ = ["MAX_HEADER_BYTES", "MODES", "MODALITIES", "CODEC_IDS", "LM_IDS", "RATES", "DEFAULT_CHUNK_FRAMES",
           "Header", "header_error", "ni_delta_ok"]

MAX_HEADER_BYTES = 65536  # v1 JSON
MODES = ("raw", "lm")
MODALITIES = ("audio", "image", "video")  # flag values 0, 1, 2; only audio has a section so far
DEFAULT_CHUNK_FRAMES = 500
_HEX = re.compile(r"[0-9a-f]{1,64}")


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
# Weights are the first 8 hex digits of the SHA-256 of the model.safetensors file; add each
# shipped one to mmar.checkpoint.SHIPPED too.
CODEC_IDS: dict[int, CodecEntry] = {
    1: CodecEntry("sc16k", "3e8eaeba", 16000, 50, 10),  # checkpoints/speech-codec-16k-v1
    2: CodecEntry("sc16k", "463d917f", 16000, 50, 10),  # the GPU run; its codes: checkpoints/speech-codec-16k
    3: CodecEntry("sc16k", "44e826f7", 16000, 50, 10),  # checkpoints/speech-codec-16k (decoder fine-tuned on 2)
}
LM_IDS: dict[int, LMEntry] = {
    1: LMEntry("lm16k", "350d060a", 2.0),  # checkpoints/speech-lm-16k-v1
    2: LMEntry("lm16k", "4e8968ab", 2.0),  # checkpoints/speech-lm-16k, coded in floats
    3: LMEntry("lm16k", "b8a89d9a", 2.0),  # checkpoints/speech-lm-16k, coded in integers (integer_identity)
}
RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 88200, 96000, 176400, 192000, 64000)

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


def header_error(msg: str) -> ContainerError:
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
                    raise header_error(f"{name} must be an integer, got {v!r:.40}")
                if not lo <= v <= hi:
                    raise header_error(f"{name}={v} is outside {lo}..{hi}")
            elif not isinstance(v, typ):
                raise header_error(f"{name} must be a {typ.__name__}, got {v!r:.40}")
            elif typ is str and not lo <= len(v) <= hi:
                raise header_error(f"{name} must be {lo}..{hi} characters, got {len(v)}")
        if not _HEX.fullmatch(self.weights):
            raise header_error(f"weights must be a lowercase hex hash, got {self.weights!r:.40}")
        if self.mode not in MODES:
            raise header_error(f"unknown mode {self.mode!r:.20} (expected one of {MODES})")
        if self.frame_rate > self.sample_rate or self.sample_rate % self.frame_rate:
            raise header_error(f"sample_rate {self.sample_rate} is not a whole number of frames at {self.frame_rate} Hz")
        self._validate_extra()

    def _validate_extra(self) -> None:
        x = self.extra
        unknown = sorted(str(k) for k in x if k not in _EXTRA)
        if unknown:
            raise header_error(f"unknown extra field {unknown[0]!r:.20} (known: {', '.join(_EXTRA)})")
        if ("ni" in x) != (self.input_rate != self.sample_rate):
            raise header_error("extra 'ni' must be present exactly when input_rate differs from sample_rate")
        if "ni" in x:
            ni = x["ni"]
            if isinstance(ni, bool) or not isinstance(ni, int) or ni < 0:  # bounded by num_samples below
                raise header_error(f"extra 'ni' must be an integer >= 0, got {ni!r:.40}")
            if not ni_delta_ok(ni - self.num_samples * self.input_rate // self.sample_rate, self.input_rate, self.sample_rate):
                raise header_error(f"{ni} input samples at {self.input_rate} Hz do not match {self.num_samples} at {self.sample_rate} Hz")
        if "gain" in x:
            g = x["gain"]
            if isinstance(g, bool) or not isinstance(g, (int, float)) or not (-64 <= g <= 63.5 and g != 0 and g * 2 == int(g * 2)):
                raise header_error(f"extra 'gain' must be a nonzero multiple of 0.5 dB in -64..63.5, got {g!r:.40}")
        if self.mode == "lm":
            if "lm" not in x or "lmw" not in x:
                raise header_error("an LM-coded header needs extra 'lm' and 'lmw' (the LM's id and weights)")
            if not isinstance(x["lm"], str) or not 1 <= len(x["lm"]) <= 128:
                raise header_error(f"extra 'lm' must be 1..128 characters, got {x['lm']!r:.40}")
            if not isinstance(x["lmw"], str) or not _HEX.fullmatch(x["lmw"]):
                raise header_error(f"extra 'lmw' must be a lowercase hex hash, got {x['lmw']!r:.40}")
            if "rdo" in x:
                r = x["rdo"]
                if isinstance(r, bool) or not isinstance(r, (int, float)) or not 0 <= r < math.inf:
                    raise header_error(f"extra 'rdo' must be a finite number >= 0, got {r!r:.40}")
        elif any(k in x for k in ("lm", "lmw", "rdo")):
            raise header_error("extra 'lm', 'lmw' and 'rdo' belong to mode 'lm' only")

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
            raise header_error(f"{len(data)} bytes of JSON exceed {MAX_HEADER_BYTES}")
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
                raise header_error("not UTF-8") from None

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
            raise header_error(f"bad JSON ({str(e).splitlines()[0][:80]})") from None
        if not isinstance(obj, dict):
            raise header_error("JSON is not an object")
        unknown = sorted(set(obj) - set(_KEY_TO_FIELD))
        if unknown:
            raise header_error(f"unknown field {unknown[0]!r:.20}")
        kw = {_KEY_TO_FIELD[k]: v for k, v in obj.items()}
        kw.setdefault("extra", {})
        if "input_rate" not in kw and "sample_rate" in kw:
            kw["input_rate"] = kw["sample_rate"]
        missing = [n for n in _FIELDS if n not in kw]
        if missing:
            raise header_error(f"missing field {missing[0]}")
        header = cls(**kw)
        header.validate()
        return header


def ni_delta_ok(delta: int, input_rate: int, sample_rate: int) -> bool:
    """ni = ceil-inverse of num_samples: ni - num_samples * input_rate // sample_rate lies in
    (-(input_rate / sample_rate) - 1, 0]; a little slack covers float rounding in writers."""
    return -(input_rate // sample_rate) - 2 <= delta <= 2
