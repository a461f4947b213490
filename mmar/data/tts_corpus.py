"""Text–speech pairs with phone timings for TTS and speech editing, built from what Debian ships.

    python -m mmar.data.tts_corpus --out data/tts [--train N] [--reads 2] [--workers 2]

Sentences: English sentences of 4–16 words cut from Debian's ``fortunes`` (plain ASCII),
deduplicated and shuffled with a fixed seed, then split **by sentence**: test (never trained
on, never used for a decision) and valid (model selection) take sentences whose every word is
in the CMU dictionary (so recognisers can score them); train takes the rest, each read by
``--reads`` train voices.

Speech: flite reads most sentences and prints every phone's end time (``-psdur``), so phones
and timings come with the audio; for every other voice, pocketsphinx aligns the known transcript
(:func:`mmar.text.align.align_phones`; utterances it cannot align are dropped and counted).
Voices:

- train: flite ``kal16`` (m), ``rms`` (m), ``slt`` (f), each utterance with its own F0 target
  (×0.8–1.25; flite's ``rms`` ignores it) and duration stretch (×0.85–1.2); a fraction ``--other`` of the sentences read
  instead by festival ``kal_diphone`` (m) or an espeak-ng variant (accent, m/f variant, pitch,
  speed drawn per utterance); 30 % of them pitch+formant shifted by ±2–6 semitones
  (:func:`mmar.data.augment.pitch_shift`, length kept, so the timings hold): many voices.
  Plus a **real voice**: every English Asterisk prompt (Allison Smith, f; transcripts from
  Debian's ``asterisk-core-sounds-en``) as recorded, shifted down 3–7 semitones (a male range)
  and shifted ±2–6 semitones;
- valid: the train voices on the valid sentences;
- test: ``awb`` (m, a voice the TTS never hears) and ``awb`` shifted up 5 semitones (a
  female-range voice it never hears), on the test sentences.

Each utterance is encoded once by the default speech codec (its first ``--levels`` levels,
50 frames/s; the identity of its token space is recorded as ``codec_weights``), and phone end
times become frame boundaries (every phone ≥ 1 frame; utterances with a phone longer than 40
frames are dropped). Written per split: ``<split>.safetensors`` (codes int16 [K, total frames], phone ids uint8, phone start
frames int32, offsets) and ``<split>.json`` (text, voice, F0, stretch, shift per utterance);
test also keeps its waveforms in ``test_wav/`` for the benchmark. Same packages + options →
the same bytes.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import re
import subprocess
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..atomic import atomic_write, write_json
from ..errors import MmarError, command
from ..text.arpabet import PHONES, canonical, dictionary, spoken_words

FRAME_RATE = 50
TRAIN_VOICES = {"kal16": 95.0, "rms": 105.0, "slt": 170.0}  # flite voice → its typical F0 (Hz)
TEST_VOICES = {"awb": 0.0, "awb_up5": 5.0}  # voice → semitone shift of flite awb
ESPEAK_ACCENTS = ("en-us", "en", "en-us")  # US English twice as often: pocketsphinx's US dictionary aligns it best
ESPEAK_VARIANTS = ("m1", "m2", "m3", "m4", "m7", "f1", "f2", "f3", "f4", "f5")
ALLISON = Path("/usr/share/asterisk/sounds/en_US_f_Allison")
ALLISON_TEXT = Path("/usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz")
MAX_SECONDS = 16.0  # longer real prompts are left out
EDGE = 0.2  # seconds of silence kept before the first and after the last word of aligned speech
_SENTENCE = re.compile(r"[^.!?]+[.!?]")


@dataclass(frozen=True)
class Utterance:
    """One row of the corpus: codes [K, T], phone ids [N], phone start frames [N] (0 first)."""

    codes: np.ndarray
    phones: np.ndarray
    starts: np.ndarray
    meta: dict


def corpus_sentences(seed: int = 0) -> tuple[list[str], list[str]]:
    """Every usable fortunes sentence (4–16 words, ASCII), shuffled → (those whose every word is in
    the dictionary, the rest). Test and valid sentences come from the first list only."""
    lexicon, seen, known, other = dictionary(), set(), [], []
    files = sorted(p for p in Path("/usr/share/games/fortunes").glob("*") if p.is_file() and not p.suffix)
    if not files:
        raise MmarError("no fortunes found: apt-get install fortunes")
    for f in files:
        for entry in f.read_text(errors="ignore").split("\n%\n"):
            text = " ".join(entry.split())
            if not text.isascii() or any(c in text for c in '"()[]{}<>|\\/*_=#@&~^`+'):
                continue
            for s in _SENTENCE.findall(text):
                s = s.strip(" -")
                words = spoken_words(s)
                key = " ".join(words)
                if 4 <= len(words) <= 16 and key not in seen:
                    seen.add(key)
                    (known if all(w in lexicon for w in words) else other).append(s)
    rng = np.random.default_rng(seed)
    return [known[i] for i in rng.permutation(len(known))], [other[i] for i in rng.permutation(len(other))]


def _flite(voice: str, text: str, f0: float | None, stretch: float, wav: Path) -> tuple[np.ndarray, list[tuple[str, float]]]:
    """flite reads ``text`` → (audio float32 [N] at 16 kHz, [(phone, end seconds)])."""
    import soundfile as sf

    cmd = ["flite", "-voice", voice, "-psdur", "--setf", f"duration_stretch={stretch:.3f}", "-t", text, "-o", str(wav)]
    if f0:
        cmd[3:3] = ["--setf", f"int_f0_target_mean={f0:.1f}"]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    if run.returncode:
        raise MmarError(f"flite failed: {run.stderr.strip()[:80]}")
    audio, rate = sf.read(str(wav), dtype="float32")
    if rate != 16000:
        raise MmarError(f"flite voice {voice} speaks at {rate} Hz, not 16 kHz")
    timings = [(p, float(t)) for p, _, t in (x.rpartition(":") for x in run.stdout.split())]
    return audio, timings


def phone_frames(timings: list[tuple[str, float]], frames: int) -> tuple[np.ndarray, np.ndarray] | None:
    """[(phone, end seconds)] → (phone ids [N], start frames [N]) with every phone ≥ 1 frame and the
    last ending at ``frames``; None when the audio is too short for that."""
    ids = np.array([PHONES.index(canonical(p)) for p, _ in timings], dtype=np.uint8)
    ends = np.rint(np.array([t for _, t in timings]) * FRAME_RATE).astype(np.int64)
    ends[-1] = frames
    for i in range(len(ends)):  # at least one frame each, left to right
        ends[i] = max(ends[i], (ends[i - 1] if i else 0) + 1)
    if ends[-1] > frames:
        return None
    starts = np.concatenate([[0], ends[:-1]]).astype(np.int32)
    return ids, starts


_CODEC = None


def _codec():
    global _CODEC
    if _CODEC is None:
        import torch

        from ..tasks.codec import load_codec

        torch.set_num_threads(1)
        _CODEC = load_codec()
    return _CODEC


def encode(audio: np.ndarray, levels: int) -> np.ndarray:
    """16 kHz audio [N] → the default codec's codes int16 [levels, ceil(N / 320)]."""
    import torch

    codec = _codec()
    with torch.no_grad():
        codes = codec.model.encode(torch.from_numpy(audio)[None], levels=levels).codes[0]
    return codes.numpy().astype(np.int16)


def _read16k(wav: Path) -> np.ndarray:
    import soundfile as sf
    import soxr

    audio, rate = sf.read(str(wav), dtype="float32", always_2d=True)
    audio = audio.mean(1)
    return audio if rate == 16000 else soxr.resample(audio, rate, 16000).astype(np.float32)


def _aligned(audio: np.ndarray, text: str) -> tuple[np.ndarray, list[tuple[str, float]]] | None:
    """Audio + its transcript → (audio cut to the words ± ``EDGE`` s, [(phone, end seconds)]) by
    pocketsphinx's forced alignment; None when it cannot align them."""
    from ..text.align import align_phones

    try:
        pa = align_phones(audio, text)
    except MmarError:
        return None
    if not pa.words:
        return None
    lo = max(0.0, pa.words[0].start - EDGE)
    span = min(len(audio) / 16000, pa.words[-1].end + EDGE) - lo
    if span > MAX_SECONDS:
        return None
    timings = []
    for phone, end in pa.phones:
        if end - lo > 1e-6:
            timings.append((phone, min(end - lo, span)))
            if end - lo >= span:
                break
    return audio[int(lo * 16000) : int((lo + span) * 16000)], timings


@functools.lru_cache(maxsize=4)
def _recording(file: str, text: str) -> tuple[np.ndarray, list[tuple[str, float]]] | None:
    """An English Asterisk prompt, aligned once for all its shifted copies (see :func:`_aligned`)."""
    from .speech_sources import asterisk_sources, decode

    return _aligned(decode(asterisk_sources()[0], ALLISON / file), text)


def speak(job: dict, tmp: Path) -> tuple[np.ndarray, list[tuple[str, float]]] | None:
    """One job's voice reads (or, for a recording, has said) its text → (audio float32 [N] at
    16 kHz, [(phone, end seconds)]); None when an aligned voice cannot be aligned."""
    voice, text = job["voice"], job["text"]
    if voice == "allison":
        return _recording(job["file"], text)
    if voice in ("festival_kal", "espeak"):
        wav = tmp / "x.wav"
        if voice == "festival_kal":
            (tmp / "x.txt").write_text(text + "\n")
            cmd = ["text2wave", "-eval", "(voice_kal_diphone)", str(tmp / "x.txt"), "-o", str(wav)]
        else:
            cmd = ["espeak-ng", "-v", job["variant"], "-p", str(job["pitch"]), "-s", str(job["speed"]), "-w", str(wav), text]
        try:  # a synthesiser that chokes on a sentence drops it (counted), like a failed alignment
            subprocess.run(cmd, capture_output=True, timeout=60, check=True)
            return _aligned(_read16k(wav), text)
        except (subprocess.SubprocessError, RuntimeError):
            return None
    return _flite(voice, text, job["f0"], job["stretch"], tmp / "x.wav")


def job_audio(job: dict) -> tuple[np.ndarray, list[tuple[str, float]]] | None:
    """One job (text, voice, f0, stretch, shift; see :func:`jobs`, or a split's JSON row) → the
    waveform the corpus encodes (float32 [N] at 16 kHz, shifted and peak-normalised) and its
    [(phone, end seconds)]; None when it cannot be spoken or aligned, or is silent."""
    from .augment import pitch_shift

    with tempfile.TemporaryDirectory() as tmp:
        spoken = speak(job, Path(tmp))
    if spoken is None:
        return None
    audio, timings = spoken
    if job["shift"]:
        audio = pitch_shift(audio, job["shift"])
    peak = float(np.abs(audio).max(initial=0.0))
    if peak < 1e-3:
        return None
    return (audio * min(1.0, 0.9 / peak)).astype(np.float32), timings


def make_utterance(job: dict) -> tuple[Utterance | None, np.ndarray | None]:
    """One job (text, voice, f0, stretch, shift, levels, keep_wav) → (utterance or None, audio if kept)."""
    made = job_audio(job)
    if made is None:
        return None, None
    audio, timings = made
    codes = encode(audio, job["levels"])
    ph = phone_frames(timings, codes.shape[1])
    if ph is None or (np.diff(np.append(ph[1], codes.shape[1])) > job.get("max_phone_frames", 40)).any():
        return None, None
    meta = {k: job[k] for k in ("text", "voice", "f0", "stretch", "shift", "name")}
    return Utterance(codes, ph[0], ph[1], meta), audio if job["keep_wav"] else None


def allison_prompts() -> list[tuple[str, str]]:
    """The English Asterisk prompts with a spoken transcript → [(file relative to ``ALLISON``,
    transcript)]; [] when the packages are missing."""
    import gzip

    if not (ALLISON_TEXT.is_file() and ALLISON.is_dir()):
        return []
    out = []
    for line in gzip.open(ALLISON_TEXT, "rt", errors="replace"):
        m = re.match(r"^([\w/-]+):\s*(.+)$", line.strip())
        if m and not m.group(2).startswith("[") and (ALLISON / f"{m.group(1)}.g722").is_file():
            out.append((f"{m.group(1)}.g722", m.group(2)))
    return out


def _named(voice: str, shift: float) -> str:
    return voice if not shift else f"{voice}_{shift:+.1f}st"


def jobs(split: str, texts: list[str], levels: int, seed: int, other: float = 0.0, real: bool = False) -> list[dict]:
    """The synthesis jobs of a split (see the module doc for the voices): a share ``other`` of the
    train sentences go to festival/espeak-ng; ``real`` adds the English Asterisk prompts."""
    rng, out = np.random.default_rng([seed, {"train": 0, "valid": 1, "test": 2}[split]]), []
    for i, text in enumerate(texts):
        if split == "test":
            for name, shift in TEST_VOICES.items():
                out.append(dict(text=text, voice="awb", f0=None, stretch=1.0, shift=shift, name=name))
            continue
        voice = str(rng.choice(sorted(TRAIN_VOICES)))
        shift = round(float(rng.choice([-1, 1]) * rng.uniform(2, 6)), 2) if rng.random() < 0.3 else 0.0
        job = dict(text=text, voice=voice, f0=round(TRAIN_VOICES[voice] * rng.uniform(0.8, 1.25), 1),
                   stretch=round(float(rng.uniform(0.85, 1.2)), 3), shift=shift, name=_named(voice, shift))
        if split == "train" and rng.random() < other:
            voice = "festival_kal" if rng.random() < 0.3 else "espeak"
            job.update(voice=voice, f0=None, stretch=1.0, name=_named(voice, shift))
            if voice == "espeak":
                job.update(variant=f"{rng.choice(ESPEAK_ACCENTS)}+{rng.choice(ESPEAK_VARIANTS)}",
                           pitch=int(rng.integers(25, 75)), speed=int(rng.integers(140, 190)))
        out.append(job)
    if split == "train" and real:
        for file, text in allison_prompts():
            for shift in (0.0, round(-float(rng.uniform(3, 7)), 2), round(float(rng.choice([-1, 1]) * rng.uniform(2, 6)), 2)):
                out.append(dict(text=text, voice="allison", file=file, f0=None, stretch=1.0, shift=shift,
                                name=_named("allison", shift)))
    for j, job in enumerate(out):
        job.update(levels=levels, keep_wav=split == "test", index=j)
    return out


def write_split(out: Path, split: str, rows: list[Utterance], codec_weights: str = "") -> None:
    """Concatenate a split's rows into ``<split>.safetensors`` + ``<split>.json`` (atomically);
    ``codec_weights``: the codec whose codes the rows hold (recorded for the TTS checkpoint)."""
    import torch
    from safetensors.torch import save

    frame_off = np.cumsum([0] + [r.codes.shape[1] for r in rows])
    phone_off = np.cumsum([0] + [len(r.phones) for r in rows])
    tensors = {"codes": torch.from_numpy(np.ascontiguousarray(np.concatenate([r.codes for r in rows], 1))),
               "phones": torch.from_numpy(np.concatenate([r.phones for r in rows])),
               "starts": torch.from_numpy(np.concatenate([r.starts for r in rows])),
               "frame_offsets": torch.from_numpy(frame_off), "phone_offsets": torch.from_numpy(phone_off)}
    data = save(tensors)
    atomic_write(out / f"{split}.safetensors", lambda p: p.write_bytes(data))
    write_json({"phones": list(PHONES), "frame_rate": FRAME_RATE, **({"codec_weights": codec_weights} if codec_weights else {}),
                "utterances": [r.meta for r in rows]}, out / f"{split}.json")


def build(out: Path, train: int = 20000, valid: int = 150, test: int = 40, levels: int = 3, workers: int = 2,
          reads: int = 2, seed: int = 0, other: float = 0.08, real: bool = True) -> dict:
    """Build the corpus (see the module doc) → its summary (utterances and minutes per split and voice)."""
    known, unknown = corpus_sentences(seed)
    if len(known) < test + valid + 100:
        raise MmarError(f"only {len(known)} usable fortunes sentences")
    rest = (known[test + valid :] + unknown)[:train]
    splits = {"test": known[:test], "valid": known[test : test + valid], "train": [t for t in rest for _ in range(reads)]}
    codec_weights = _codec().tokens  # the token space: a decoder retrained on frozen codes speaks it too
    summary: dict = {"sentences": {k: len(v) for k, v in splits.items()}, "levels": levels, "codec_weights": codec_weights,
                     "voices": {}}
    out.mkdir(parents=True, exist_ok=True)
    with ProcessPoolExecutor(max(1, workers)) as pool:
        for split, split_texts in splits.items():
            rows, frames, dropped = [], 0, {}
            for job, (utt, audio) in zip(js := jobs(split, split_texts, levels, seed, other, real),
                                         pool.map(make_utterance, js, chunksize=16)):
                if utt is None:
                    dropped[job["voice"]] = dropped.get(job["voice"], 0) + 1
                    continue
                rows.append(utt)
                frames += utt.codes.shape[1]
                v = summary["voices"].setdefault(f"{split}/{utt.meta['name'].split('_')[0] if split != 'test' else utt.meta['name']}",
                                                 {"utterances": 0, "minutes": 0.0})
                v["utterances"] += 1
                v["minutes"] = round(v["minutes"] + utt.codes.shape[1] / FRAME_RATE / 60, 2)
                if audio is not None:
                    import soundfile as sf

                    (out / "test_wav").mkdir(exist_ok=True)
                    atomic_write(out / "test_wav" / f"{len(rows) - 1:03d}_{utt.meta['name']}.wav",
                                 lambda p, a=audio: sf.write(str(p), a, 16000, subtype="PCM_16", format="WAV"), tmp_suffix=".wav")
            write_split(out, split, rows, codec_weights)
            summary[split] = {"utterances": len(rows), "minutes": round(frames / FRAME_RATE / 60, 1), "dropped": dropped}
            print(f"{split}: {len(rows)} utterances, {frames / FRAME_RATE / 60:.1f} min", flush=True)
    summary["sha256"] = {s: hashlib.sha256((out / f"{s}.safetensors").read_bytes()).hexdigest()[:16] for s in splits}
    write_json(summary, out / "summary.json")
    return summary


@command
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--train", type=int, default=20000, help="train sentences at most (default 20000: all)")
    ap.add_argument("--reads", type=int, default=2, help="train voices reading each train sentence (default 2)")
    ap.add_argument("--valid", type=int, default=150)
    ap.add_argument("--test", type=int, default=40)
    ap.add_argument("--levels", type=int, default=3, help="codec levels kept (3 = 1.5 kbps)")
    ap.add_argument("--other", type=float, default=0.08, help="share of train sentences read by festival/espeak-ng (default 0.08)")
    ap.add_argument("--no-real", action="store_true", help="leave out the real English Asterisk prompts")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args(argv)
    if not 0.0 <= args.other <= 1.0:
        raise MmarError("--other must be between 0 and 1")
    print(json.dumps(build(args.out, args.train, args.valid, args.test, args.levels, args.workers, args.reads,
                           other=args.other, real=not args.no_real), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
