"""The header of a ``.mmc`` codec file: :class:`Header` and its compact JSON.

JSON keys (``input_rate`` is omitted when it equals ``sample_rate``, ``extra``
when empty)::

    m model   w weights   r sample_rate   i input_rate   n num_samples
    k levels  b bits      f frame_rate    c chunk_frames o mode   x extra

e.g. ``{"m":"mmar-speech-16k","w":"0123456789abcdef","r":16000,"i":44100,
"n":96000,"k":4,"b":10,"f":50,"c":100,"o":"raw"}`` (114 bytes).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Union

from mmar.errors import ContainerError

__all__ = ["MAX_HEADER_BYTES", "MODES", "Header"]

MAX_HEADER_BYTES = 65536
MODES = ("raw", "lm")
_HEX = re.compile(r"[0-9a-f]{1,64}")

# Header field -> (JSON key, type, lower bound, upper bound). Ints are checked
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


@dataclass
class Header:
    """What a decoder needs besides the chunks.

    Attributes:
        model: codec model id (e.g. ``"mmar-speech-16k"``).
        weights: short lowercase hex hash of the codec weights (e.g. 16 chars).
        sample_rate: the codec's sample rate (Hz).
        input_rate: the original file's rate, restored on decode (Hz).
        num_samples: signal length in samples at ``sample_rate`` (0 allowed).
        levels: quantizer levels sent, 1..64.
        bits: codebook bits per code, 1..16.
        frame_rate: codec frames per second.
        chunk_frames: frames per chunk (the last chunk may hold fewer).
        mode: ``"raw"`` (bit-packed codes) or ``"lm"`` (range-coded with an LM).
        extra: free JSON object, e.g. ``{"lm": id, "lmw": hash}``.
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

    def validate(self) -> None:
        """Check every field's type and range; raise :class:`ContainerError` if wrong."""
        for name, (_key, typ, lo, hi) in _FIELDS.items():
            v = getattr(self, name)
            if typ is int:
                if isinstance(v, bool) or not isinstance(v, int):
                    raise ContainerError(f"invalid header: {name} must be an integer, got {v!r:.40}")
                if not lo <= v <= hi:
                    raise ContainerError(f"invalid header: {name}={v} is outside {lo}..{hi}")
            elif not isinstance(v, typ):
                raise ContainerError(f"invalid header: {name} must be a {typ.__name__}, got {v!r:.40}")
            elif typ is str and not lo <= len(v) <= hi:
                raise ContainerError(f"invalid header: {name} must be {lo}..{hi} characters, got {len(v)}")
        if not _HEX.fullmatch(self.weights):
            raise ContainerError(f"invalid header: weights must be a lowercase hex hash, got {self.weights!r:.40}")
        if self.mode not in MODES:
            raise ContainerError(f"invalid header: unknown mode {self.mode!r:.20} (expected one of {MODES})")
        if not all(isinstance(k, str) for k in self.extra):
            raise ContainerError("invalid header: extra must have string keys")

    def to_json(self) -> bytes:
        """Compact UTF-8 JSON with one-letter keys (validates first)."""
        self.validate()
        obj = {}
        for name, (key, *_rest) in _FIELDS.items():
            v = getattr(self, name)
            if (name == "input_rate" and v == self.sample_rate) or (name == "extra" and not v):
                continue
            obj[key] = v
        try:
            text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        except (TypeError, ValueError) as e:
            raise ContainerError(f"invalid header: extra is not plain JSON ({e})") from None
        data = text.encode("utf-8")
        if len(data) > MAX_HEADER_BYTES:
            raise ContainerError(f"invalid header: {len(data)} bytes of JSON exceed {MAX_HEADER_BYTES}")
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
                raise ContainerError("invalid header: not UTF-8") from None

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
            raise ContainerError(f"invalid header: bad JSON ({str(e).splitlines()[0][:80]})") from None
        if not isinstance(obj, dict):
            raise ContainerError("invalid header: JSON is not an object")
        unknown = sorted(set(obj) - set(_KEY_TO_FIELD))
        if unknown:
            raise ContainerError(f"invalid header: unknown field {unknown[0]!r:.20}")
        kw = {_KEY_TO_FIELD[k]: v for k, v in obj.items()}
        kw.setdefault("extra", {})
        if "input_rate" not in kw and "sample_rate" in kw:
            kw["input_rate"] = kw["sample_rate"]
        missing = [n for n in _FIELDS if n not in kw]
        if missing:
            raise ContainerError(f"invalid header: missing field {missing[0]}")
        header = cls(**kw)
        header.validate()
        return header
