"""Objective speech-quality metrics: PESQ-WB, STOI, SI-SDR and (optionally) ViSQOL.

Every function takes a reference and a degraded signal, float32 ``[N]`` mono at
``sr``, trims both to the shorter length (it does *not* search for a delay: a
codec wrapper must return time-aligned audio) and returns one float. Bad input
(silence, too short, NaN, wrong shape) raises :class:`~mmar.errors.MmarError`.

Optional packages (``pesq``, ``pystoi``, ``visqol``) are imported on first use
through :func:`mmar.errors.require`, so importing this module is cheap.

ViSQOL uses the pure-Python port ``visqol-python`` in speech mode at 16 kHz.
With ``ai-edge-litert`` installed it uses the lattice mapper (the C++
default); without it, the polynomial mapper, which reads 1-2 MOS points higher.
:func:`visqol_mapper` says which one is active, so results record it.
"""

from __future__ import annotations

import functools
import logging
import warnings
from typing import Any

import numpy as np

from ..errors import MmarError, require

PESQ_MIN_SECONDS = 0.25  # the ITU P.862 C code refuses shorter buffers
STOI_MIN_SECONDS = 0.4  # pystoi needs 30 frames of 25.6 ms (hop 12.8 ms) after removing silence
_SILENCE_RMS = 1e-5  # below -100 dBFS counts as silence


def _prepare(ref: np.ndarray, deg: np.ndarray, sr: int | None, what: str,
             min_seconds: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Check shapes and values, trim to the shorter signal; returns float64 ``([N], [N])``."""
    ref = np.asarray(ref)
    deg = np.asarray(deg)
    if ref.ndim != 1 or deg.ndim != 1:
        raise MmarError(f"{what}: expected mono 1-D arrays, got shapes {ref.shape} and {deg.shape}")
    n = min(len(ref), len(deg))
    if n == 0:
        raise MmarError(f"{what}: empty signal")
    ref = ref[:n].astype(np.float64)
    deg = deg[:n].astype(np.float64)
    if not (np.isfinite(ref).all() and np.isfinite(deg).all()):
        raise MmarError(f"{what}: signal contains NaN or inf")
    if sr is not None and n < min_seconds * sr:
        raise MmarError(f"{what}: signal too short ({n / sr:.3f} s < {min_seconds} s)")
    if np.sqrt(np.mean(ref**2)) < _SILENCE_RMS:
        raise MmarError(f"{what}: reference is silent")
    return ref, deg


def _to_rate(x: np.ndarray, sr: int, target: int) -> np.ndarray:
    """Resample ``[N]`` from ``sr`` to ``target`` with soxr (identity if equal)."""
    if sr == target:
        return x
    import soxr

    return soxr.resample(x, sr, target, quality="HQ")


def pesq_wb(ref: np.ndarray, deg: np.ndarray, sr: int = 16000) -> float:
    """Wideband PESQ (ITU-T P.862.2 MOS-LQO, about 1.0-4.64) of ``deg`` against ``ref``.

    Args:
        ref, deg: float32 ``[N]`` mono at ``sr``; resampled to 16 kHz if ``sr`` differs.
    """
    pesq = require("pesq", "eval")
    ref, deg = _prepare(ref, deg, sr, "PESQ", PESQ_MIN_SECONDS)
    ref, deg = _to_rate(ref, sr, 16000), _to_rate(deg, sr, 16000)
    try:
        return float(pesq.pesq(16000, ref, deg, "wb"))
    except pesq.NoUtterancesError:
        raise MmarError("PESQ: no speech detected in the signals (silent or too quiet?)") from None
    except pesq.BufferTooShortError:
        raise MmarError("PESQ: signal too short") from None
    except pesq.PesqError as e:  # pragma: no cover - other C-library failures
        raise MmarError(f"PESQ failed: {e}") from None


def stoi(ref: np.ndarray, deg: np.ndarray, sr: int = 16000, extended: bool = False) -> float:
    """Short-time objective intelligibility (0-1; ESTOI if ``extended``) via ``pystoi``.

    Args:
        ref, deg: float32 ``[N]`` mono at ``sr`` (pystoi resamples to 10 kHz itself).
    """
    pystoi = require("pystoi", "eval")
    ref, deg = _prepare(ref, deg, sr, "STOI", STOI_MIN_SECONDS)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = float(pystoi.stoi(ref, deg, sr, extended=extended))
    if any("Not enough STFT frames" in str(w.message) for w in caught):
        raise MmarError("STOI: too little non-silent speech (needs about 0.4 s)")
    return value


def si_sdr(ref: np.ndarray, deg: np.ndarray) -> float:
    """Scale-invariant signal-to-distortion ratio in dB (Le Roux et al. 2019), numpy only.

    Both signals are made zero-mean; ``deg`` is projected on ``ref``:
    ``10 log10(|a ref|^2 / |deg - a ref|^2)`` with ``a = <deg, ref> / |ref|^2``.
    A floor of 1e-12 of the reference energy caps identical signals at 120 dB.

    Args:
        ref, deg: ``[N]`` float arrays (same sample rate, time-aligned).
    """
    ref, deg = _prepare(ref, deg, None, "SI-SDR")
    ref = ref - ref.mean()
    deg = deg - deg.mean()
    energy = float(np.dot(ref, ref))
    if energy <= 0.0:
        raise MmarError("SI-SDR: reference is constant")
    target = (np.dot(deg, ref) / energy) * ref
    noise = deg - target
    eps = 1e-12 * energy
    return float(10.0 * np.log10((np.dot(target, target) + eps) / (np.dot(noise, noise) + eps)))


def visqol_available() -> bool:
    """True if ``visqol-python`` can be imported (ViSQOL is then reported by the bench)."""
    import importlib.util

    return importlib.util.find_spec("visqol") is not None


def visqol_mapper() -> str | None:
    """``"lattice"`` (C++ default, needs ai-edge-litert), ``"polynomial"``, or None if unavailable."""
    if not visqol_available():
        return None
    import importlib.util

    return "lattice" if importlib.util.find_spec("ai_edge_litert") is not None else "polynomial"


@functools.lru_cache(maxsize=1)
def _visqol_api() -> Any:
    """One ViSQOL speech-mode instance per process (creating it loads the models)."""
    api_mod = require("visqol.api", "visqol")
    logging.getLogger("visqol").setLevel(logging.ERROR)  # mapper choice is reported by visqol_mapper()
    api = api_mod.VisqolApi()
    api.create(mode="speech", use_lattice_model=visqol_mapper() == "lattice")
    return api


def visqol(ref: np.ndarray, deg: np.ndarray, sr: int = 16000) -> float:
    """ViSQOL v3 speech-mode MOS-LQO (1-5) of ``deg`` against ``ref``.

    Args:
        ref, deg: float32 ``[N]`` mono at ``sr``; resampled to 16 kHz if ``sr`` differs.
    """
    ref, deg = _prepare(ref, deg, sr, "ViSQOL", PESQ_MIN_SECONDS)
    ref, deg = _to_rate(ref, sr, 16000), _to_rate(deg, sr, 16000)
    try:
        return float(_visqol_api().measure_from_arrays(ref, deg, 16000).moslqo)
    except (ValueError, RuntimeError) as e:
        raise MmarError(f"ViSQOL failed: {e}") from None
