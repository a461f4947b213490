"""Reference codecs run through their Debian command-line tools: Codec2 and Opus.

Both wrap a round trip ``audio16k -> file -> audio16k`` and report the size of
the encoded *file* (container and header included, as for mmar's ``.mmc``), so
``kbps = 8 * nbytes / seconds / 1000`` is comparable across systems.

Codec2 (``c2enc``/``c2dec``, Debian ``codec2`` 1.0.5) works on 8 kHz s16 raw
audio. The ``.c2`` output carries a 7-byte header. Its decoder output lags the
input by 160 samples at 8 kHz (20 ms): the analysis window is centred 160
samples before the newest input sample. Measured by sweeping the shift on real
speech (asterisk prompts) and espeak clips: STOI and log-spectrum correlation
peak at 300-320 samples at 16 kHz for both 1600 and 3200 bit/s. Without the
compensation STOI drops from 0.84 to 0.64. The wrapper pads 160 + one frame of
zeros at the end, drops the first 160 decoded samples and trims to the input
length.

Opus (``opusenc``/``opusdec``, opus-tools 0.2, libopus 1.3.1):
``opusenc --bitrate N --vbr --framesize 60 --padding 0``.

* VBR is the encoder default and what a file user gets. The rate is counted
  from the bytes anyway, so VBR overshooting would show in the table rather
  than hide. ``--hard-cbr`` cost 0.2-0.4 PESQ at the same or higher size.
* 60 ms frames minimise the per-packet overhead (TOC byte and Ogg lacing) for
  file storage, where latency does not matter (neither does it for mmar).
  Measured at 6 kbps on four clips: 6.6 kbps file rate, PESQ-WB 2.04,
  versus 7.3 kbps and 1.93 with 20 ms frames.
* ``--padding 0`` drops the 512 bytes that opusenc otherwise reserves in the
  comment header for later tag edits; they are not audio.

The Ogg headers (OpusHead, OpusTags with the vendor string) remain, about
150 bytes per file, so short clips read about 0.4 kbps above the target.
``opusdec --rate 16000`` applies the pre-skip. The output is aligned to
within one sample (measured by cross-correlation) and exactly as long as the
input.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from ..errors import MmarError

SR = 16000
_APT = {"c2enc": "codec2", "c2dec": "codec2", "opusenc": "opus-tools", "opusdec": "opus-tools"}


def _tool(name: str) -> str:
    """Full path of a command-line tool, or an actionable :class:`MmarError`."""
    path = shutil.which(name)
    if path is None:
        raise MmarError(f"{name} not found: apt-get install {_APT.get(name, name)}")
    return path


def _run(cmd: list[str]) -> None:
    """Run a tool; a failure becomes an :class:`MmarError` with its stderr."""
    res = subprocess.run(cmd, capture_output=True)
    if res.returncode != 0:
        err = res.stderr.decode(errors="replace").strip().splitlines()
        raise MmarError(f"{Path(cmd[0]).name} failed (exit {res.returncode}): {err[-1] if err else ''}")


def _check_audio(audio: np.ndarray) -> np.ndarray:
    """Validate a float ``[N]`` mono signal; returns it as float32."""
    audio = np.asarray(audio)
    if audio.ndim != 1 or audio.size == 0:
        raise MmarError(f"expected non-empty mono audio [N], got shape {audio.shape}")
    return audio.astype(np.float32, copy=False)


def _to_s16(x: np.ndarray) -> np.ndarray:
    """float ``[N]`` in [-1, 1] -> little-endian int16 ``[N]`` (clipped)."""
    return (np.clip(x, -1.0, 1.0) * 32767.0).round().astype("<i2")


def _fit(x: np.ndarray, n: int) -> np.ndarray:
    """Trim or zero-pad ``[M]`` to exactly ``[n]`` float32."""
    x = x[:n].astype(np.float32, copy=False)
    return np.pad(x, (0, n - len(x))) if len(x) < n else x


class Codec2:
    """Codec2 at 1600 or 3200 bit/s through ``c2enc``/``c2dec`` (8 kHz internally).

    Args:
        mode: 1600 or 3200 (other c2enc modes also work but are not tested here).
    """

    DELAY_8K = 160  # decoder output lag at 8 kHz, see the module docstring
    FRAME_8K = {3200: 160, 2400: 160, 1600: 320, 1400: 320, 1300: 320, 1200: 320}

    def __init__(self, mode: int = 1600):
        if mode not in self.FRAME_8K:
            raise MmarError(f"unsupported Codec2 mode {mode}; use one of {sorted(self.FRAME_8K)}")
        self.mode = mode
        self.name = f"codec2-{mode}"
        self.nominal_kbps = mode / 1000.0

    def roundtrip(self, audio: np.ndarray) -> tuple[np.ndarray, int]:
        """Encode and decode ``audio`` (float32 ``[N]`` at 16 kHz).

        Returns:
            decoded float32 ``[N]`` at 16 kHz, delay-compensated; bytes of the ``.c2`` file.
        """
        import soxr

        enc, dec = _tool("c2enc"), _tool("c2dec")
        audio = _check_audio(audio)
        x8 = soxr.resample(audio, SR, 8000, quality="HQ")
        # enough trailing zeros that the last real sample leaves the decoder's delay line
        x8 = np.pad(x8, (0, self.DELAY_8K + self.FRAME_8K[self.mode]))
        with tempfile.TemporaryDirectory(prefix="mmar-c2-") as d:
            src, bits, out = Path(d, "in.raw"), Path(d, "out.c2"), Path(d, "out.raw")
            _to_s16(x8).tofile(src)
            _run([enc, str(self.mode), str(src), str(bits)])
            _run([dec, str(self.mode), str(bits), str(out)])
            nbytes = bits.stat().st_size
            y8 = np.fromfile(out, dtype="<i2").astype(np.float32) / 32768.0
        y8 = y8[self.DELAY_8K:]
        y = soxr.resample(y8, 8000, SR, quality="HQ")
        return _fit(y, len(audio)), nbytes


class Opus:
    """Opus through ``opusenc``/``opusdec`` at a target bitrate (16 kHz mono in and out).

    Args:
        kbps: target bitrate in kbit/s (opusenc accepts 6-256).
        framesize_ms: maximum frame size (2.5, 5, 10, 20, 40 or 60); 60 suits files at low rates.
        vbr: VBR (default) or ``--hard-cbr``.
    """

    def __init__(self, kbps: float = 6.0, framesize_ms: float = 60, vbr: bool = True):
        if kbps < 6:
            raise MmarError(f"opusenc needs a bitrate of at least 6 kbit/s, got {kbps}")
        self.kbps = kbps
        self.framesize_ms = framesize_ms
        self.vbr = vbr
        self.name = f"opus-{kbps:g}" + ("" if vbr else "-cbr")
        self.nominal_kbps = float(kbps)

    def roundtrip(self, audio: np.ndarray) -> tuple[np.ndarray, int]:
        """Encode and decode ``audio`` (float32 ``[N]`` at 16 kHz).

        Returns:
            decoded float32 ``[N]`` at 16 kHz (pre-skip removed by opusdec); bytes of the ``.opus`` file.
        """
        import soundfile as sf

        enc, dec = _tool("opusenc"), _tool("opusdec")
        audio = _check_audio(audio)
        with tempfile.TemporaryDirectory(prefix="mmar-opus-") as d:
            src, bits, out = Path(d, "in.wav"), Path(d, "out.opus"), Path(d, "out.wav")
            sf.write(src, _to_s16(audio), SR, subtype="PCM_16")
            _run([enc, "--quiet", "--bitrate", f"{self.kbps:g}", "--vbr" if self.vbr else "--hard-cbr",
                  "--framesize", f"{self.framesize_ms:g}", "--padding", "0", str(src), str(bits)])
            _run([dec, "--quiet", "--rate", str(SR), str(bits), str(out)])
            nbytes = bits.stat().st_size
            y, sr = sf.read(out, dtype="float32", always_2d=False)
        if sr != SR or y.ndim != 1:  # pragma: no cover - opusdec honours --rate for mono
            raise MmarError(f"opusdec returned {y.shape} at {sr} Hz, expected mono at {SR} Hz")
        return _fit(y, len(audio)), nbytes


def default_baselines() -> list[Codec2 | Opus]:
    """The reference set of the ``mmar bench codec`` table: Codec2 1600/3200, Opus 6/8 kbps."""
    return [Codec2(1600), Codec2(3200), Opus(6), Opus(8)]
