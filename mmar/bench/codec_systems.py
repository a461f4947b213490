"""mmar's own codec wrapped as benchmark systems, one per bitrate."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..tasks.codec import LoadedCodec, decode_array, encode_array, load_codec


@dataclass
class MmarCodecSystem:
    """``roundtrip(audio16k [N]) → (decoded [N], bytes of the complete .mmc file)``."""

    codec: LoadedCodec
    kbps: float

    @property
    def name(self) -> str:
        return f"mmar {self.kbps:g} kbps ({self.codec.levels_for(self.kbps)} levels)"

    @property
    def nominal_kbps(self) -> float:
        return self.kbps

    def roundtrip(self, audio: np.ndarray) -> tuple[np.ndarray, int]:
        data = encode_array(self.codec, audio, self.codec.cfg.sample_rate, self.kbps)
        decoded, _ = decode_array(self.codec, data)
        return decoded, len(data)


def mmar_systems(checkpoint: Path | None, bitrates: list[float]) -> list[MmarCodecSystem]:
    """One system per requested bitrate, sharing one loaded model."""
    codec = load_codec(checkpoint)
    return [MmarCodecSystem(codec, b) for b in bitrates]
