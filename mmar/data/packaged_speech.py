"""Real speech that Debian packages ship, laid out as a training corpus.

    python -m mmar.data.packaged_speech --out data/prep [--synth-minutes 10]

Writes 16 kHz mono wav files to ``<out>/{train,valid}/<speaker>/`` (idempotent; files are
written atomically, and a finished corpus is marked with ``<out>/DONE``):

- train: Asterisk core prompts en (Allison), fr (June), es (Allison), decoded from G.722 (a
  genuine 16 kHz wideband codec at 64 kb/s); the Dutch voice pack of fillets-ng (acted dialogue,
  several actors, 22.05 kHz Ogg resampled); optionally synthetic speech (espeak-ng, flite);
- valid: speakers never in train: Asterisk ru (female, IvrvoiceRU) and it (male, Carlo).

Licences: Asterisk sounds CC-BY-SA-3.0 (ru: CC-BY-3.0); fillets-ng data GPL-2+. The audio
is not committed; this module rebuilds it from the packages (``APT_PACKAGES``).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from ..atomic import atomic_write
from ..audio import read_mono
from ..errors import MmarError

APT_PACKAGES = ["ffmpeg", "espeak-ng", "flite", "fortunes",
                "asterisk-core-sounds-en-g722", "asterisk-core-sounds-fr-g722", "asterisk-core-sounds-es-g722",
                "asterisk-core-sounds-ru-g722", "asterisk-core-sounds-it-g722", "fillets-ng-data-nl"]
SOUNDS = Path("/usr/share/asterisk/sounds")
ASTERISK = {"train": ["en_US_f_Allison", "fr_CA_f_June", "es_MX_f_Allison"], "valid": ["ru_RU_f_IvrvoiceRU", "it_IT_m_Carlo"]}
FILLETS = Path("/usr/share/games/fillets-ng/sound")


def _need(tool: str, package: str) -> None:
    if shutil.which(tool) is None:
        raise MmarError(f"{tool} not found: apt-get install {package}")


def _write(path: Path, audio: np.ndarray, sr: int) -> None:
    import soundfile as sf

    atomic_write(path, lambda p: sf.write(p, audio, sr, subtype="PCM_16"), tmp_suffix=".wav")


def decode_g722(src: Path, dst: Path) -> None:
    """Decode an Asterisk G.722 prompt to a 16 kHz mono wav file (atomically)."""
    atomic_write(dst, lambda p: subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "g722", "-i", str(src),
                                                "-ar", "16000", "-ac", "1", str(p)], check=True), tmp_suffix=".wav")


def asterisk(out: Path, limit: int | None = None) -> int:
    """Decode the Asterisk prompt sets into ``out/<split>/<speaker>/``; returns the file count."""
    _need("ffmpeg", "ffmpeg")
    jobs = []
    for split, speakers in ASTERISK.items():
        for spk in speakers:
            root = SOUNDS / spk
            if not root.is_dir():
                raise MmarError(f"{root} missing: apt-get install {' '.join(p for p in APT_PACKAGES if 'asterisk' in p)}")
            files = sorted(root.rglob("*.g722"))[:limit]
            (out / split / spk).mkdir(parents=True, exist_ok=True)
            jobs += [(f, out / split / spk / (str(f.relative_to(root)).replace("/", "_")[:-5] + ".wav")) for f in files]
    jobs = [(s, d) for s, d in jobs if not d.exists()]
    with ThreadPoolExecutor(2) as ex:
        list(ex.map(lambda j: decode_g722(*j), jobs))
    return len(jobs)


def fillets(out: Path, limit: int | None = None) -> int:
    """The Dutch fillets-ng voices, downmixed and resampled to 16 kHz, into ``out/train/fillets_nl``."""
    files = sorted(FILLETS.rglob("nl/*.ogg"))[:limit]
    if not files:
        raise MmarError(f"no Dutch voices under {FILLETS}: apt-get install fillets-ng-data-nl")
    d = out / "train" / "fillets_nl"
    d.mkdir(parents=True, exist_ok=True)
    for f in files:
        dst = d / f"{f.parent.parent.name}_{f.stem}.wav"
        if not dst.exists():
            _write(dst, read_mono(f, 16000)[0], 16000)
    return len(files)


def sentences(limit: int = 5000) -> list[str]:
    """Short one-line-ish texts from Debian's ``fortunes`` files (5–20 words, plain ASCII)."""
    out = []
    for f in sorted(Path("/usr/share/games/fortunes").glob("*")):
        if f.suffix or not f.is_file():
            continue
        for entry in f.read_text(errors="ignore").split("\n%\n"):
            text = " ".join(entry.split())
            if 5 <= len(text.split()) <= 20 and text.isascii() and "--" not in text:
                out.append(text)
    if not out:
        raise MmarError("no fortunes found: apt-get install fortunes")
    return out[:limit]


def synthetic(out: Path, minutes: float, seed: int = 0) -> int:
    """espeak-ng and flite voices with random pitch and rate reading fortunes → ``out/train/synth``."""
    _need("espeak-ng", "espeak-ng")
    _need("flite", "flite")
    texts, rng = sentences(), np.random.default_rng(seed)
    d = out / "train" / "synth"
    d.mkdir(parents=True, exist_ok=True)
    total, i = 0.0, 0
    while total < minutes * 60:
        text, wav = texts[int(rng.integers(len(texts)))], d / f"synth_{i:05d}.wav"
        if rng.random() < 0.5:
            voice = f"{rng.choice(['en-us', 'en', 'en-scotland', 'en-gb-x-rp'])}+{rng.choice(['m1', 'm3', 'f2', 'f4', 'klatt2'])}"
            cmd = ["espeak-ng", "-v", voice, "-p", str(int(rng.integers(20, 80))), "-s", str(int(rng.integers(130, 200))), "-w", str(wav), text]
        else:
            cmd = ["flite", "-voice", str(rng.choice(["kal16", "awb", "rms", "slt"])), "--setf",
                   f"duration_stretch={rng.uniform(0.85, 1.2):.2f}", "-t", text, "-o", str(wav)]
        subprocess.run(cmd, check=True, capture_output=True)
        x, _ = read_mono(wav, 16000)
        _write(wav, x, 16000)
        total += len(x) / 16000
        i += 1
    return i


def build(out: Path, synth_minutes: float = 0.0, limit: int | None = None) -> dict[str, float]:
    """Build the corpus → minutes of audio per ``split/speaker`` folder."""
    out.mkdir(parents=True, exist_ok=True)
    if not (out / "DONE").exists():
        asterisk(out, limit)
        fillets(out, limit)
        if synth_minutes > 0:
            synthetic(out, synth_minutes)
        (out / "DONE").write_text("complete\n")
    import soundfile as sf

    return {f"{d.parent.name}/{d.name}": round(sum(sf.info(str(f)).duration for f in d.glob("*.wav")) / 60, 1)
            for d in sorted(out.glob("*/*")) if d.is_dir()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Build the speech corpus from Debian packages.")
    ap.add_argument("--out", type=Path, default=Path("data/prep"))
    ap.add_argument("--synth-minutes", type=float, default=0.0)
    ap.add_argument("--limit", type=int, help="at most this many files per source (for tests)")
    args = ap.parse_args(argv)
    try:
        minutes = build(args.out, args.synth_minutes, args.limit)
    except MmarError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for name, m in minutes.items():
        print(f"{name:<32}{m:>8.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
