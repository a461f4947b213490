"""mmar's own codec wrapped as benchmark systems: one per raw bitrate, plus the LM-coded modes."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..coding.container import ContainerReader
from ..tasks.codec import LoadedCodec, decode_array, encode_array, load_codec
from ..checkpoint import find_checkpoint
from ..errors import MmarError
from ..tasks.codec_lm import LoadedLM, load_lm


@dataclass
class MmarCodecSystem:
    """``roundtrip(audio16k [N]) → (decoded [N], bytes of the complete .mmc file)``; with ``lm`` the
    file is LM-coded (codes chosen with rate-distortion λ ``rdo``) and decoded with (``fine``) or
    without the fine-token model. ``stats`` sums encode/decode seconds, audio seconds, file bits,
    payload bits (without header and framing), the model's cross-entropy and what fixed-length
    packing would take."""

    codec: LoadedCodec
    kbps: float
    lm: LoadedLM | None = None
    fine: bool = True
    rdo: float = 0.0
    label: str = ""  # prefix that tells apart the rows of two codec checkpoints in one run
    stats: dict = field(default_factory=lambda: {"encode_s": 0.0, "decode_s": 0.0, "audio_s": 0.0,
                                                 "bits": 0, "payload_bits": 0, "xent_bits": 0.0, "raw_bits": 0})

    @property
    def name(self) -> str:
        if self.lm is None:
            return f"{self.label}mmar {self.kbps:g} kbps ({self.codec.model.levels_for_kbps(self.kbps)} levels)"
        return (f"{self.label}mmar LM {self.lm.coarse} levels λ={self.rdo:g}" + (" + fine model" if self.fine else ", coarse only")
                + ("" if self.lm.integer else ", floats"))

    @property
    def nominal_kbps(self) -> float | None:
        return self.kbps if self.lm is None else None

    def roundtrip(self, audio: np.ndarray) -> tuple[np.ndarray, int]:
        t0 = time.perf_counter()
        data = encode_array(self.codec, audio, self.codec.model.sample_rate, self.kbps, self.lm, self.rdo)
        t1 = time.perf_counter()
        info: dict = {}
        decoded, _ = decode_array(self.codec, data, self.lm, self.fine, info)
        t2 = time.perf_counter()
        reader = ContainerReader(data)
        h, payload_bytes = reader.header, sum(len(p) for p in reader)
        frames = -(-h.num_samples // (h.sample_rate // h.frame_rate))
        st = self.stats
        st["encode_s"] += t1 - t0
        st["decode_s"] += t2 - t1
        st["audio_s"] += len(audio) / self.codec.model.sample_rate
        st["bits"] += 8 * len(data)
        st["payload_bits"] += 8 * payload_bytes
        st["xent_bits"] += info.get("xent_bits", 0.0)
        st["raw_bits"] += h.levels * h.bits * frames
        return decoded, len(data)

    def summary(self) -> dict:
        st = self.stats
        out = {"rtf_encode": st["encode_s"] / max(st["audio_s"], 1e-9), "rtf_decode": st["decode_s"] / max(st["audio_s"], 1e-9),
               "bits": st["bits"], "payload_bits": st["payload_bits"], "raw_bits": st["raw_bits"]}
        if self.lm is not None:  # payload only: header and chunk framing are the container's, not the coder's
            out |= {"xent_bits": round(st["xent_bits"], 1), "bits_over_xent": st["payload_bits"] / max(st["xent_bits"], 1e-9),
                    "saving_vs_raw": 1 - st["payload_bits"] / max(st["raw_bits"], 1)}
        return out


def mmar_systems(checkpoint: Path | None, bitrates: list[float], lm_checkpoint: Path | None = None,
                 label: str = "", lm_default_only: bool = False, use_lm: bool = True,
                 lm_floats: bool = False) -> list[MmarCodecSystem]:
    """One system per raw bitrate, plus, when an LM checkpoint is given or shipped (and ``use_lm``),
    its coarse-only and fine-model decodes for λ = 0 (nearest codes, lossless coding) and for the
    LM's default λ (``lm_default_only``: the default λ with the fine model alone); ``lm_floats``
    adds the default mode coded with the LM in floats (as before integer coding). ``label``
    prefixes the names."""
    codec = load_codec(checkpoint)
    systems = [MmarCodecSystem(codec, b, label=label) for b in bitrates]
    if not use_lm:
        return systems
    if lm_checkpoint is None:
        try:
            lm_checkpoint = find_checkpoint("speech-lm-16k")
        except MmarError:
            pass  # no LM on the search path: raw rows only
    lm = load_lm(lm_checkpoint) if lm_checkpoint is not None else None
    if lm is not None and codec.speaks(lm.codec_weights):  # an LM trained on other codes has no rows here
        modes = [(lm.rdo, True)] if lm_default_only else [(rdo, fine) for rdo in sorted({0.0, lm.rdo}) for fine in (True, False)]
        systems += [MmarCodecSystem(codec, bitrates[0], lm, fine, rdo, label) for rdo, fine in modes]
        if lm_floats:
            systems.append(MmarCodecSystem(codec, bitrates[0], lm.coding(lm.weights), True, lm.rdo, label))
    return systems
