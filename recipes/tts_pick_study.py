"""Which best-of-N picker and which sampling make better speech edits? A study on the TTS corpus's
validation split (never the test split), for decisions about ``mmar edit``'s defaults.

For each validation edit (the benchmark's: the longest word of a sentence swapped for another),
and for each sampling setting, N edits are sampled in one batch. Every candidate is scored by
pocketsphinx WER against the new transcript (what the benchmark measures) and by the pickers that
do not listen with pocketsphinx:

- ``logprob``: the model's own teacher-forced mean log-probability of the codes it generated
  (all levels, and level 0 alone);
- ``mbr``: minimum Bayes risk, the candidate whose regenerated spans are closest on average to
  the other candidates' (DTW distance of log-mel frames): the consensus of the N samples;
- ``duration``: the candidate whose regenerated spans' length is the median one.

The mean WER over all candidates is the expected WER of one sample; a picker helps when its
pick's WER is lower. ``asr`` (pick by pocketsphinx itself) is listed as the circular upper mark.

    python recipes/tts_pick_study.py --data data/tts --limit 12 --samples 6 --json runs/tts_pick_study.json
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from mmar.atomic import write_json
from mmar.bench.tts import split_audio, swapped
from mmar.errors import MmarError
from mmar.eval.spectrogram import log_mel
from mmar.generation import SamplingConfig
from mmar.tasks.speak import RATE, Speaker, edit_candidates, prepare_edit, wer
from mmar.tasks.tts import code_logprob
from mmar.text.align import recognise


def span_features(audio: np.ndarray, spans: list[tuple[int, int]], hop: int, n_mels: int = 40) -> np.ndarray:
    """The log-mel frames in dB (one per codec frame, floored 80 dB under each span's peak) of the
    frame spans [a, b) of ``audio`` [N], concatenated → float32 [T, n_mels] (T: the spans' frames)."""
    pieces = []
    for a, b in spans:
        seg = audio[a * hop : b * hop]
        if len(seg) == 0:
            continue
        mel = log_mel(seg, RATE, n_fft=2 * hop, hop=hop, n_mels=n_mels).T[: b - a]  # [T, n_mels] dB
        pieces.append(np.maximum(mel, mel.max() - 80.0))
    if not pieces:
        return np.zeros((0, n_mels), np.float32)
    return np.concatenate(pieces).astype(np.float32)


def dtw_distance(x: np.ndarray, y: np.ndarray) -> float:
    """Dynamic time warping between frame sequences x [T, D] and y [U, D]: the least total
    Euclidean frame distance over monotone alignments, divided by T + U → float (inf if one is empty)."""
    if len(x) == 0 or len(y) == 0:
        return float("inf")
    cost = np.sqrt(((x[:, None, :] - y[None, :, :]) ** 2).sum(-1))  # [T, U]
    acc = np.full(len(y) + 1, np.inf)
    acc[0] = 0.0
    for i in range(len(x)):
        diag = acc[:-1].copy()
        prev = np.minimum(diag, acc[1:])  # from (i-1, j-1) or (i-1, j)
        row = np.empty(len(y) + 1)
        row[0] = np.inf
        for j in range(len(y)):  # (i, j-1) is sequential
            row[j + 1] = cost[i, j] + min(prev[j], row[j])
        acc = row
    return float(acc[-1] / (len(x) + len(y)))


SETTINGS = {"top-p 0.8": SamplingConfig(top_k=50, top_p=0.8),
            "top-p 0.6": SamplingConfig(top_k=50, top_p=0.6),
            "top-p 0.8, T 0.8": SamplingConfig(top_k=50, top_p=0.8, temperature=0.8)}


def study_edit(sp: Speaker, audio: np.ndarray, text: str, new_text: str, samples: int, seed: int) -> dict:
    """One edit → per setting, per candidate: WER, log-probabilities, span frames, MBR risk."""
    job = prepare_edit(sp, audio, new_text, text)
    prefix = sp.tts.phone_index(job.plan.phones)
    out = {}
    for name, sampling in SETTINGS.items():
        outs, cands = edit_candidates(sp, job, sampling, seed, samples)
        lp = code_logprob(sp.tts, prefix, [c.stream for c in cands], cands[0].start)
        feats = [span_features(o, c.new_spans, sp.hop) for o, c in zip(outs, cands)]
        dist = np.zeros((samples, samples))
        for i in range(samples):
            for j in range(i + 1, samples):
                dist[i, j] = dist[j, i] = dtw_distance(feats[i], feats[j])
        out[name] = {"wer": [wer(new_text, recognise(o)) for o in outs],
                     "logprob": lp.nanmean(1).tolist(), "logprob0": lp[:, 0].tolist(),
                     "frames": [sum(b - a for a, b in c.new_spans) for c in cands],
                     "risk": (dist.sum(1) / (samples - 1)).tolist()}
    return out


PICKERS = {
    "one sample (mean)": None,
    "asr (circular)": lambda c: min(range(len(c["wer"])), key=lambda i: c["wer"][i]),
    "logprob": lambda c: int(np.argmax(c["logprob"])),
    "logprob level 0": lambda c: int(np.argmax(c["logprob0"])),
    "mbr": lambda c: int(np.argmin(c["risk"])),
    "median duration": lambda c: int(np.argsort(c["frames"])[len(c["frames"]) // 2]),
}


def summarise(rows: list[dict]) -> dict:
    """Mean WER of each picker's choice, per setting and voice (and all voices), and over all
    edits the paired difference from one sample (the candidates' mean) with its standard error."""
    table: dict = {}
    for name in SETTINGS:
        for voice in sorted({r["voice"] for r in rows}) + ["all"]:
            cands = [r["study"][name] for r in rows if voice in ("all", r["voice"])]
            table.setdefault(name, {})[voice] = {
                p: round(float(np.mean([np.mean(c["wer"]) if f is None else c["wer"][f(c)] for c in cands])), 4)
                for p, f in PICKERS.items()} | {"edits": len(cands)}
        diffs = {p: [c["wer"][f(c)] - np.mean(c["wer"]) for c in (r["study"][name] for r in rows)]
                 for p, f in PICKERS.items() if f is not None}
        table[name]["paired"] = {p: [round(float(np.mean(d)), 4), round(float(np.std(d, ddof=1) / np.sqrt(len(d))), 4)]
                                 for p, d in diffs.items()}
    return table


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=Path("data/tts"))
    ap.add_argument("--limit", type=int, default=12, help="validation utterances per voice")
    ap.add_argument("--samples", type=int, default=6)
    ap.add_argument("--json", type=Path, required=True)
    args = ap.parse_args()
    sp = Speaker.load()
    rows, t0 = [], time.perf_counter()
    for voice, items in split_audio(args.data, "valid", args.limit).items():
        for i, (m, audio) in enumerate(items):
            new_text = swapped(m["text"], i)
            try:
                study = study_edit(sp, audio, m["text"], new_text, args.samples, seed=i)
            except MmarError as e:
                print(f"{voice} {i}: {e}")
                continue
            rows.append({"voice": voice, "text": m["text"], "new_text": new_text, "orig_wer": wer(m["text"], recognise(audio)),
                         "study": study})
            print(f"{voice} {i + 1}/{len(items)} ({time.perf_counter() - t0:.0f} s): "
                  + "  ".join(f"{n}: {np.mean(s['wer']):.2f}" for n, s in study.items()), flush=True)
    table = summarise(rows)
    for name, per_voice in table.items():
        print(f"\n{name}")
        print(f"  {'voice':<10}" + "".join(f"{p:>20}" for p in PICKERS))
        for voice, r in per_voice.items():
            if voice != "paired":
                print(f"  {voice:<10}" + "".join(f"{r[p]:>20.3f}" for p in PICKERS))
        print(f"  {'Δ ± SE':<10}{'':>20}" + "".join(f"{f'{m:+.3f} ± {se:.3f}':>20}" for m, se in per_voice["paired"].values()))
    orig = float(np.mean([r["orig_wer"] for r in rows]))
    print(f"\noriginals' WER: {orig:.3f} over {len(rows)} edits; {RATE} Hz; torch threads {torch.get_num_threads()}")
    write_json({"samples": args.samples, "settings": {k: vars(v) for k, v in SETTINGS.items()}, "originals_wer": orig,
                "table": table, "rows": rows}, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
