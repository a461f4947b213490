"""Speech augmentation and a pitch estimate, in numpy (no torch, no subprocess).

- :func:`median_f0`: median F0 of the voiced frames (normalised autocorrelation); the corpus
  builder uses it to decide a speaker's sex where no document says it (< 160 Hz ≈ male).
- :func:`pitch_shift`: pitch *and* formants moved together by ``semitones`` (resampling, the
  vocal-tract-length effect), then time-stretched back to the input length (WSOLA), so
  ``len(out) == len(in)``.
- :func:`augment`: the on-the-fly chain a training loop calls on one crop, float32 [N] → [N],
  drawn only from the ``np.random.Generator`` it is given: pitch/formant shift (p=0.5,
  ±``max_semitones``), band limit (p=0.3: telephone 300–3400 Hz or a 4–7 kHz low-pass), a
  mild room (p=0.2: exponentially decaying noise impulse response, RT60 0.1–0.4 s), noise
  (p=0.3: white or pink at 20–45 dB SNR) and gain (−12…0 dB, peak kept ≤ 1)::

      rng = np.random.default_rng(step)
      crop = augment(crop, rng, sample_rate=16000)

The corpus builder (:mod:`mmar.data.packaged_speech`) writes pitch-shifted copies of real
speakers with the same :func:`pitch_shift` as extra training speakers.
"""

from __future__ import annotations

import numpy as np


def _frames(x: np.ndarray, win: int, hop: int) -> np.ndarray:
    n = 1 + max(0, (len(x) - win) // hop)
    idx = np.arange(win)[None, :] + hop * np.arange(n)[:, None]
    return x[idx] if len(x) >= win else np.zeros((0, win), x.dtype)


def f0_track(x: np.ndarray, sample_rate: int = 16000, fmin: float = 60.0, fmax: float = 400.0,
             threshold: float = 0.5) -> np.ndarray:
    """F0 in Hz of the voiced 40 ms frames (hop 10 ms) of float [N] → float64 [V] (empty if none).

    A frame is voiced when it is within 35 dB of the loudest frame and its normalised
    autocorrelation peak (lags for ``fmin..fmax``) exceeds ``threshold``. A peak at half the
    lag that is nearly as strong (≥ 0.85×) wins, which removes most octave-down errors."""
    x = np.asarray(x, np.float64)
    win, hop = int(0.04 * sample_rate), int(0.01 * sample_rate)
    fr = _frames(x, win, hop)
    if not len(fr):
        return np.zeros(0)
    fr = fr - fr.mean(axis=1, keepdims=True)
    energy = (fr**2).sum(axis=1)
    loud = energy > energy.max() * 10 ** (-3.5)
    fr, energy = fr[loud], energy[loud]
    spec = np.fft.rfft(fr * np.hanning(win), n=2 * win, axis=1)
    ac = np.fft.irfft(np.abs(spec) ** 2, axis=1)[:, :win]
    ac = ac / np.maximum(ac[:, :1], 1e-12)
    lo, hi = int(sample_rate / fmax), min(int(sample_rate / fmin), win - 1)
    lag = lo + np.argmax(ac[:, lo:hi], axis=1)
    peak = ac[np.arange(len(ac)), lag]
    half = np.maximum(lag // 2, 1)
    better = (half >= lo) & (ac[np.arange(len(ac)), half] >= 0.85 * peak)
    lag = np.where(better, half, lag)
    voiced = np.maximum(peak, 0) > threshold
    return sample_rate / lag[voiced].astype(np.float64)


def median_f0(x: np.ndarray, sample_rate: int = 16000) -> float:
    """Median F0 (Hz) of the voiced frames, NaN when no frame is voiced."""
    f = f0_track(x, sample_rate)
    return float(np.median(f)) if len(f) else float("nan")


def wsola(x: np.ndarray, length: int, sample_rate: int = 16000) -> np.ndarray:
    """Time-stretch float32 [M] to exactly ``length`` samples without changing pitch (WSOLA:
    30 ms Hann frames at 50 % overlap, each source frame moved by up to ±8 ms to the position
    that best continues the previous one)."""
    x = np.asarray(x, np.float32)
    if len(x) == length or length == 0 or len(x) == 0:
        return np.resize(x, length).astype(np.float32) if len(x) else np.zeros(length, np.float32)
    win = int(0.03 * sample_rate) // 2 * 2
    hop, tol = win // 2, int(0.008 * sample_rate)
    w = np.hanning(win).astype(np.float32)
    pad = np.concatenate([np.zeros(win + tol, np.float32), x, np.zeros(2 * win + 2 * tol, np.float32)])
    n_out = length // hop + 2
    out = np.zeros(n_out * hop + win, np.float32)
    norm = np.zeros_like(out)
    rate = len(x) / length
    prev = win + tol  # source position of the previous frame (in pad)
    for k in range(n_out):
        target = win + tol + int(round(k * hop * rate))
        if k == 0:
            pos = target
        else:
            natural = pad[prev + hop : prev + hop + win]  # what would follow the previous frame
            seg = pad[target - tol : target + tol + win]
            c = np.correlate(seg, natural, mode="valid")
            pos = target - tol + int(np.argmax(c))
        out[k * hop : k * hop + win] += pad[pos : pos + win] * w
        norm[k * hop : k * hop + win] += w
        prev = pos
    # the first frame starts at zero padding of ``win + tol``; output sample 0 ↔ source sample 0
    y = out / np.maximum(norm, 1e-3)
    return y[:length].astype(np.float32)


def pitch_shift(x: np.ndarray, semitones: float, sample_rate: int = 16000) -> np.ndarray:
    """Move pitch and formants by ``semitones`` (float32 [N] → [N]): resample by 2^(s/12), then
    WSOLA back to N samples. Shifting down by 3–6 semitones turns a typical female voice
    into a male-range one (and the formants follow, like a longer vocal tract)."""
    import soxr

    x = np.asarray(x, np.float32)
    if semitones == 0 or len(x) < 2:
        return x.copy()
    r = 2.0 ** (semitones / 12.0)
    y = soxr.resample(x, sample_rate * r, sample_rate, quality="HQ").astype(np.float32)  # shorter when r > 1
    return wsola(y, len(x), sample_rate)


def _band(x: np.ndarray, lo: float | None, hi: float | None, sample_rate: int) -> np.ndarray:
    spec = np.fft.rfft(x)
    f = np.fft.rfftfreq(len(x), 1 / sample_rate)
    gain = np.ones_like(f)
    if lo is not None:
        gain *= 1 / (1 + (lo / np.maximum(f, 1e-3)) ** 8)  # 4th-order-like magnitude slopes
    if hi is not None:
        gain *= 1 / (1 + (f / hi) ** 16)
    return np.fft.irfft(spec * gain, n=len(x)).astype(np.float32)


def augment_seeded(x: np.ndarray, seed: int, sample_rate: int = 16000) -> np.ndarray:
    """:func:`augment` with its generator made from ``seed``, float32 [N] → [N]: a picklable unit
    of work for a process pool."""
    return augment(x, np.random.default_rng(seed), sample_rate)


def augment(x: np.ndarray, rng: np.random.Generator, sample_rate: int = 16000,
            max_semitones: float = 6.0) -> np.ndarray:
    """One random augmentation of a crop, float32 [N] → float32 [N] (see the module doc)."""
    x = np.asarray(x, np.float32)
    n = len(x)
    if n == 0:
        return x.copy()
    u = rng.random(5)
    if u[0] < 0.5:
        x = pitch_shift(x, float(rng.uniform(-max_semitones, max_semitones)), sample_rate)
    if u[1] < 0.3:
        x = _band(x, 300.0, 3400.0, sample_rate) if rng.random() < 0.5 else \
            _band(x, None, float(rng.uniform(4000, 7000)), sample_rate)
    if u[2] < 0.2:
        rt60 = float(rng.uniform(0.1, 0.4))
        t = np.arange(int(rt60 * sample_rate)) / sample_rate
        ir = (rng.standard_normal(len(t)) * np.exp(-6.9 * t / rt60)).astype(np.float32)
        ir[0] = 1.0 / float(rng.uniform(0.1, 0.3))  # direct path dominates: a mild room
        ir /= np.sqrt((ir**2).sum())
        x = np.fft.irfft(np.fft.rfft(x, 2 * n) * np.fft.rfft(ir, 2 * n), 2 * n)[:n].astype(np.float32)
    if u[3] < 0.3:
        noise = rng.standard_normal(n).astype(np.float32)
        if rng.random() < 0.5:  # pink: 1/sqrt(f) amplitude
            spec = np.fft.rfft(noise)
            spec /= np.sqrt(np.maximum(np.arange(len(spec)), 1))
            noise = np.fft.irfft(spec, n).astype(np.float32)
        p_sig, p_noise = float(np.mean(x**2)), float(np.mean(noise**2)) + 1e-12
        snr = float(rng.uniform(20, 45))
        x = x + noise * np.sqrt(p_sig / p_noise / 10 ** (snr / 10))
    x = x * 10 ** (float(rng.uniform(-12, 0)) / 20)
    peak = float(np.abs(x).max())
    return (x / peak if peak > 1 else x).astype(np.float32)
