"""Speech corpus v2: real speech that Debian (and one PyPI sdist) ship, plus a minority of
synthetic voices and pitch/formant-shifted copies of real speakers.

    python -m mmar.data.packaged_speech --out data/prep [--synth-minutes 30] [--augment-minutes 40] [--limit N] [--offline]

Writes 16 kHz mono PCM16 wav files, one utterance each, to ``<out>/{train,valid,test}/<speaker>/``,
then ``<out>/manifest.json`` (per speaker: split, minutes, utterances, sex and how it was decided,
median F0, language, real/synthetic/augmented, band limit, source package, licence) and prints the
make-up table. Same packages + same options → the same bytes (sorted file lists, seeded RNGs,
deterministic decoders); files are written atomically; a finished build is marked ``<out>/DONE``
(holding the options) and a rerun with the same options only re-reads it.

Sources and splits: :mod:`mmar.data.speech_sources`. Speakers never cross splits (by person).
Silent (RMS < 1e-3) and < 0.3 s files are dropped everywhere; test keeps 1–10 s utterances only.

- synthetic (train only): flite kal16/awb/rms/slt (F0 mean ×0.8–1.25, duration ×0.85–1.2),
  espeak-ng (accents × m/f variants, pitch 20–80, rate 130–200), festival kal_diphone when
  installed; capped at 20 % of the train minutes;
- augmented (train only): pitch+formant shifted copies (:func:`mmar.data.augment.pitch_shift`)
  of real wideband train speakers: female voices down 4–7 semitones, male voices up 3–6.
  Gain, band limits, noise and reverb are left to :func:`mmar.data.augment.augment`, on the fly.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from ..atomic import atomic_write, write_json
from ..errors import MmarError, command
from .augment import median_f0, pitch_shift
from .speech_sources import (ALSA, FILLETS, RATE, SOUNDS, Source, all_sources, decode, fetch_sdist, source_files,
                             wav_bytes)

__all__ = ["APT_PACKAGES", "SOUNDS", "FILLETS", "build", "main", "sentences"]

APT_PACKAGES = ["ffmpeg", "sox", "espeak-ng", "flite", "festival", "festvox-kallpc16k", "fortunes", "alsa-utils",
                "asterisk-core-sounds-en-g722", "asterisk-core-sounds-fr-g722", "asterisk-core-sounds-es-g722",
                "asterisk-core-sounds-ru-g722", "asterisk-core-sounds-it-g722", "asterisk-prompt-it-menardi-wav",
                "asterisk-prompt-fr-armelle", "asterisk-prompt-es-co", "fillets-ng-data-nl", "fillets-ng-data-cs"]
VERSION = "corpus-v2"
SYNTH_SHARE = 0.20  # synthetic minutes ≤ this share of all train minutes
AUGMENT = {  # source speaker → semitone range of its shifted copy
    "en_US_f_Allison": (-7.0, -4.0), "fr_CA_f_June": (-7.0, -4.0), "fillets_nl_m": (-7.0, -4.0), "fillets_cs_m": (-8.0, -5.0),
    "fillets_nl_v": (3.0, 6.0), "fillets_cs_v": (3.0, 6.0),
}


def _rng(seed: int, name: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def _write(path: Path, x: np.ndarray) -> None:
    data = wav_bytes(x)
    atomic_write(path, lambda p: p.write_bytes(data), tmp_suffix=".wav")


def _keep(x: np.ndarray, split: str) -> bool:
    dur = len(x) / RATE
    if dur < 0.3 or float(np.sqrt(np.mean(x.astype(np.float64) ** 2))) < 1e-3:
        return False
    return split != "test" or 1.0 <= dur <= 10.0


def _out_name(src: Source, f: Path) -> str:
    rel = f.relative_to(src.root) if f.is_relative_to(src.root) else Path(f.name)
    return str(rel.with_suffix("")).replace("/", "_") + ".wav"


def real_speech(out: Path, sources: list[Source], limit: int | None) -> None:
    """Decode every source into ``out/<split>/<name>/`` (2 threads; existing files are kept)."""
    jobs = []
    for src in sources:
        files = source_files(src)[:limit]
        if not files:
            raise MmarError(f"no audio for {src.name} under {src.root}: apt-get install {src.package}")
        jobs += [(src, f, out / src.split / src.name / _out_name(src, f)) for f in files]

    def run(job: tuple[Source, Path, Path]) -> None:
        src, f, dst = job
        if dst.exists():
            return
        x = decode(src, f)
        if _keep(x, src.split):
            _write(dst, x)

    with ThreadPoolExecutor(2) as ex:
        list(ex.map(run, jobs))


def augmented(out: Path, minutes: float, limit: int | None, seed: int = 0) -> list[str]:
    """Pitch/formant-shifted copies of real train speakers → ``out/train/aug_<src>/``; ``minutes``
    are shared equally among the sources in :data:`AUGMENT`."""
    import soundfile as sf

    names = []
    for name, (lo, hi) in AUGMENT.items():
        srcdir = out / "train" / name
        files = sorted(srcdir.glob("*.wav"))
        if not files:
            continue
        rng = _rng(seed, "aug/" + name)
        order = rng.permutation(len(files))[:limit]
        dst_dir = out / "train" / f"aug_{name}"
        total, quota = 0.0, minutes * 60 / len(AUGMENT)
        for i in order:
            if total >= quota:
                break
            semis = float(rng.uniform(lo, hi))
            dst = dst_dir / f"{files[i].stem}_{'m' if semis < 0 else 'p'}{abs(semis):.2f}st.wav"
            x, _ = sf.read(str(files[i]), dtype="float32")
            total += len(x) / RATE
            if not dst.exists():
                _write(dst, pitch_shift(x, semis, RATE))
        names.append(dst_dir.name)
    return names


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


FLITE_F0 = {"kal16": 95.0, "awb": 130.0, "rms": 105.0, "slt": 170.0}


def _synth_cmd(voice: str, text: str, wav: Path, rng: np.random.Generator) -> list[str]:
    engine, v = voice.split("_", 1)
    if engine == "flite":
        return ["flite", "-voice", v, "--setf", f"int_f0_target_mean={FLITE_F0[v] * rng.uniform(0.8, 1.25):.1f}",
                "--setf", f"duration_stretch={rng.uniform(0.85, 1.2):.2f}", "-t", text, "-o", str(wav)]
    if engine == "espeak":
        accent = str(rng.choice(["en-us", "en", "en-scotland", "en-gb-x-rp", "en-029"]))
        variant = str(rng.choice(["m1", "m2", "m3", "m4", "m7", "f1", "f2", "f3", "f4", "f5", "klatt2"]))
        return ["espeak-ng", "-v", f"{accent}+{variant}", "-p", str(int(rng.integers(20, 80))), "-s", str(int(rng.integers(130, 200))),
                "-w", str(wav), text]
    txt = wav.with_suffix(".txt")
    txt.write_text(text + "\n")
    return ["text2wave", "-eval", "(voice_kal_diphone)", str(txt), "-o", str(wav)]


def synth_voices() -> list[str]:
    voices = []
    if shutil.which("flite"):
        voices += [f"flite_{v}" for v in FLITE_F0]
    if shutil.which("espeak-ng"):
        voices.append("espeak_variants")
    if shutil.which("text2wave") and Path("/usr/share/festival/voices/english/kal_diphone").is_dir():
        voices.append("festival_kal")
    return voices


def synthetic(out: Path, minutes: float, seed: int = 0) -> list[str]:
    """English fortunes read by every voice of :func:`synth_voices` (equal minutes each) →
    ``out/train/synth_<voice>/``."""
    from ..audio import read_mono

    voices = synth_voices()
    if not voices:
        raise MmarError("no synthesiser: apt-get install flite espeak-ng")
    texts = sentences()
    for voice in voices:
        rng, d = _rng(seed, "synth/" + voice), out / "train" / f"synth_{voice}"
        total, i, failures = 0.0, 0, 0
        with tempfile.TemporaryDirectory() as tmp:
            while total < minutes * 60 / len(voices):
                text, dst = texts[int(rng.integers(len(texts)))], d / f"{voice}_{i:05d}.wav"
                cmd = _synth_cmd(voice, text, Path(tmp) / "x.wav", rng)  # draws the RNG even when dst exists
                if dst.exists():
                    import soundfile as sf

                    total += sf.info(str(dst)).frames / RATE
                else:
                    if subprocess.run(cmd, capture_output=True).returncode:  # festival crashes on a few texts: skip them
                        failures += 1
                        if failures > 20:
                            raise MmarError(f"{voice}: synthesis keeps failing ({' '.join(cmd[:3])} ...)")
                        i += 1
                        continue
                    x = read_mono(Path(tmp) / "x.wav", RATE)[0]
                    _write(dst, x)
                    total += len(x) / RATE
                i += 1
    return [f"synth_{v}" for v in voices]


def _minutes(d: Path) -> tuple[float, int]:
    import soundfile as sf

    files = sorted(d.glob("*.wav"))
    return sum(sf.info(str(f)).frames for f in files) / RATE / 60, len(files)


def _f0(d: Path, n: int = 24) -> float:
    import soundfile as sf

    files = sorted(d.glob("*.wav"))
    picks = [files[i] for i in np.linspace(0, len(files) - 1, min(n, len(files))).astype(int)] if files else []
    values = [median_f0(sf.read(str(f), dtype="float32")[0]) for f in picks]
    values = [v for v in values if v == v]
    return round(float(np.median(values)), 1) if values else float("nan")


def manifest(out: Path, sources: list[Source], options: dict) -> dict:
    meta = {s.name: s for s in sources}
    speakers = {}
    for d in sorted(p for p in out.glob("*/*") if p.is_dir()):
        split, name = d.parent.name, d.name
        minutes, n = _minutes(d)
        if not n:
            continue
        f0 = _f0(d)
        if name in meta:
            s = meta[name]
            e = dict(split=split, person=s.person, kind="real", language=s.language, sex=s.sex, sex_by=s.sex_by,
                     package=s.package, licence=s.licence, source_rate=s.source_rate, band_limited=s.band_limited, note=s.note)
        elif name.startswith("aug_"):
            s = meta[name[4:]]
            lo, hi = AUGMENT[name[4:]]
            sex = "male" if _f0(d) < 160 else "female"  # by the shifted voice's median F0
            e = dict(split=split, person=s.person, kind="augmented", language=s.language, sex=sex,
                     sex_by=f"median F0 after a {lo:+g}..{hi:+g} st pitch/formant shift of a {s.sex} voice (< 160 Hz: male)", package=s.package,
                     licence=s.licence, source_rate=s.source_rate, band_limited=s.band_limited, note=f"mmar.data.augment.pitch_shift of {s.name}")
        else:
            voice = name[len("synth_"):]
            sex = {"flite_slt": "female", "espeak_variants": "mixed"}.get(voice, "male")
            e = dict(split=split, person=name, kind="synthetic", language="en", sex=sex,
                     sex_by="voice documentation (espeak: random m/f variants)", package={"flite": "flite", "espeak": "espeak-ng", "festival": "festival festvox-kallpc16k"}[voice.split("_")[0]],
                     licence={"flite": "BSD-like (CMU)", "espeak": "GPL-3+", "festival": "BSD-like (CMU/Edinburgh)"}[voice.split("_")[0]],
                     source_rate=RATE, band_limited=False, note="fortunes sentences, seeded pitch/rate variation")
        e.update(minutes=round(minutes, 3), utterances=n, median_f0_hz=f0)
        speakers[name] = e
    persons: dict[str, set] = {}
    for e in speakers.values():
        persons.setdefault(e["person"], set()).add(e["split"])
    crossing = {p: s for p, s in persons.items() if len(s) > 1}
    if crossing:
        raise MmarError(f"speakers in several splits: {crossing}")
    totals = {}
    for e in speakers.values():
        t = totals.setdefault(e["split"], {"minutes": 0.0, "real": 0.0, "synthetic": 0.0, "augmented": 0.0, "speakers": 0})
        t["minutes"] = round(t["minutes"] + e["minutes"], 3)
        t[e["kind"]] = round(t[e["kind"]] + e["minutes"], 3)
        t["speakers"] += 1
    return {"version": VERSION, "sample_rate": RATE, "options": options, "totals": totals, "speakers": speakers}


def table(m: dict) -> str:
    rows = [f"{'split':<6}{'speaker':<24}{'min':>7}{'utts':>6}  {'sex':<7}{'F0':>6}  {'lang':<5}{'kind':<10}{'band':<5}"]
    for split in ("train", "valid", "test"):
        for name, e in m["speakers"].items():
            if e["split"] == split:
                rows.append(f"{split:<6}{name:<24}{e['minutes']:>7.1f}{e['utterances']:>6}  {e['sex']:<7}{e['median_f0_hz']:>6.0f}  "
                            f"{e['language']:<5}{e['kind']:<10}{'8k' if e['band_limited'] else 'wb':<5}")
        t = m["totals"].get(split)
        if t:
            rows.append(f"{split:<6}{'TOTAL':<24}{t['minutes']:>7.1f}  real {t['real']:.1f}, synthetic {t['synthetic']:.1f}, "
                        f"augmented {t['augmented']:.1f} min; {t['speakers']} folders")
    return "\n".join(rows)


def build(out: Path, synth_minutes: float = 30.0, limit: int | None = None, augment_minutes: float = 40.0,
          cache: Path | None = None, allow_network: bool = False, seed: int = 0) -> dict:
    """Build (or re-read) the corpus → the manifest dict (also written to ``out/manifest.json``)."""
    out = Path(out)
    cache = Path(cache) if cache is not None else out.parent / "cache"
    options = dict(synth_minutes=synth_minutes, augment_minutes=augment_minutes, limit=limit, seed=seed)
    done = out / "DONE"
    if done.exists():
        if json.loads(done.read_text()) != options:
            raise MmarError(f"{out} was built with other options ({done.read_text().strip()}); remove it or choose another --out")
        return json.loads((out / "manifest.json").read_text())
    if shutil.which("ffmpeg") is None:
        raise MmarError("ffmpeg not found: apt-get install ffmpeg")
    out.mkdir(parents=True, exist_ok=True)
    have_ps = fetch_sdist(cache, allow_network)
    sources = [s for s in all_sources(cache) if s.root.is_dir() or s.root == ALSA]
    if not have_ps:
        print("warning: no pocketsphinx sdist in the cache: no real English male speech in test (use network access once)", file=sys.stderr)
    missing = [s for s in all_sources(cache) if not s.root.is_dir()]
    for s in missing:
        if "pocketsphinx" not in s.package:
            raise MmarError(f"{s.root} missing: apt-get install {s.package}")
    real_speech(out, sources, limit)
    if augment_minutes > 0:
        augmented(out, augment_minutes, limit, seed)
    if synth_minutes > 0:
        train_min = sum(_minutes(d)[0] for d in (out / "train").iterdir() if d.is_dir() and not d.name.startswith("synth_"))
        cap = SYNTH_SHARE / (1 - SYNTH_SHARE) * train_min
        if synth_minutes > cap:
            print(f"synthetic speech capped at {cap:.1f} min (20 % of train)", file=sys.stderr)
        synthetic(out, min(synth_minutes, cap), seed)
    m = manifest(out, sources, options)
    write_json(m, out / "manifest.json")
    atomic_write(done, lambda p: p.write_text(json.dumps(options) + "\n"))
    return m


@command
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Build speech corpus v2 (train/valid/test) from Debian packages.")
    ap.add_argument("--out", type=Path, default=Path("data/prep"))
    ap.add_argument("--synth-minutes", type=float, default=30.0, help="synthetic speech (capped at 20%% of train)")
    ap.add_argument("--augment-minutes", type=float, default=40.0, help="pitch/formant-shifted copies of real speakers")
    ap.add_argument("--limit", type=int, help="at most this many files per source (for tests)")
    ap.add_argument("--cache", type=Path, help="where the pocketsphinx sdist is kept (default: <out>/../cache)")
    ap.add_argument("--offline", action="store_true", help="never fetch the pocketsphinx sdist from PyPI")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    m = build(args.out, args.synth_minutes, args.limit, args.augment_minutes, args.cache, not args.offline, args.seed)
    print(table(m))
    return 0


if __name__ == "__main__":
    sys.exit(main())
