"""``mmar bench tts``: zero-shot TTS and speech editing on the TTS corpus's test split — sentences
and voices never trained on, never used for a decision (``python -m mmar.data.tts_corpus``).

In one run, per test voice:

- **baselines**: pocketsphinx WER/CER of flite reading the test sentences (the originals), and
  of the codec's resynthesis of them at the levels the TTS emits (what any TTS on those tokens
  can hope for);
- **TTS**: each sentence spoken in the voice of a *different* test utterance of the same voice
  (the prompt): WER/CER against the input text, duration ratio to flite's reading, the longest
  silence, and speaker similarity (resemblyzer cosine) of the output to its prompt's voice, next
  to the similarity of real recordings of the same and of the other voice;
- **default voice**: the same sentences with no prompt;
- **editing**: one word of each original replaced by another word; WER against the new
  transcript next to the originals' WER and next to the WER of the original voice (flite, with
  the row's F0, stretch and shift) reading the new transcript — what the recogniser makes of
  the new sentence itself, a floor for any edit — and the largest sample difference outside the
  regenerated spans (0 apart from the 10 ms cross-fades); once with one sample, once best of
  ``edit_samples`` (picked by pocketsphinx, the same recogniser that scores it: read that row as
  what a user of ``--num-samples`` gets, not as an independent quality measure);
- **speed**: real-time factor with the kv-cache and without it (a few sentences), as a ratio.

``split="valid"`` scores the validation sentences instead, read by the train voices (unshifted
only; their waveforms are rebuilt from each row's voice, F0 and stretch exactly as the corpus
made them): for decisions such as sampling settings, so that the test split stays unused.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from ..errors import MmarError
from ..generation import SamplingConfig
from ..tasks.speak import RATE, SAMPLING, Speaker, default_voice, edit, edit_distance, voice_from_audio, wer
from ..tasks.tts import synthesize_codes
from ..text.arpabet import spoken_words, text_phones

SWAPS = ["people", "music", "water", "money", "nothing", "morning", "garden", "doctor"]


def swapped(text: str, i: int) -> str:
    """The benchmark's edit of sentence ``i``: its longest word replaced by ``SWAPS[i % 8]``."""
    words = spoken_words(text)
    k = max(range(len(words)), key=lambda j: len(words[j]))
    return " ".join(words[:k] + [SWAPS[i % len(SWAPS)]] + words[k + 1 :])


def cer(reference: str, hypothesis: str) -> float:
    """Character error rate (letters and spaces of the normalised words)."""
    ref = " ".join(spoken_words(reference))
    return edit_distance(ref, " ".join(spoken_words(hypothesis))) / max(1, len(ref))


def longest_silence(audio: np.ndarray, threshold_db: float = -40.0, win: int = 320) -> float:
    """Longest run (seconds) of 20 ms windows quieter than ``threshold_db`` below the peak."""
    n = len(audio) // win
    if n == 0:
        return 0.0
    rms = np.sqrt(np.mean(audio[: n * win].reshape(n, win) ** 2, axis=1) + 1e-12)
    quiet = 20 * np.log10(rms / (np.abs(audio).max() + 1e-9)) < threshold_db
    best = run = 0
    for q in quiet:
        run = run + 1 if q else 0
        best = max(best, run)
    return best * win / RATE


class Similarity:
    """resemblyzer's speaker embedding (its wheel ships the weights); None where not installed."""

    def __init__(self):
        try:
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                from resemblyzer import VoiceEncoder, preprocess_wav
        except Exception:  # not installed, or its webrtcvad dependency is broken
            self.encoder = None
            return
        self.encoder, self.prep = VoiceEncoder("cpu", verbose=False), preprocess_wav

    def embed(self, audio: np.ndarray) -> np.ndarray | None:
        if self.encoder is None:
            return None
        return self.encoder.embed_utterance(self.prep(audio.astype(np.float32), RATE))


def _mean(xs: list[float]) -> float | None:
    xs = [x for x in xs if x is not None and x == x]
    return round(float(np.mean(xs)), 4) if xs else None


def split_audio(data: Path, split: str = "test", limit: int | None = None) -> dict[str, list[tuple[dict, np.ndarray]]]:
    """A corpus split's utterances by voice → {voice: [(JSON row, waveform float32 [N] at 16 kHz)]},
    the first ``limit`` of each voice: test from ``test_wav/``, valid rebuilt (see the module doc)."""
    from ..audio import read_mono
    from ..data.tts_corpus import TRAIN_VOICES, job_audio

    if split not in ("test", "valid"):
        raise MmarError(f"split must be test or valid, got {split!r:.20}")
    meta_path = data / f"{split}.json"
    if not meta_path.is_file():
        raise MmarError(f"{data} has no {split} split (python -m mmar.data.tts_corpus --out {data})")
    utts = json.loads(meta_path.read_text())["utterances"]
    by_voice: dict[str, list[tuple[dict, np.ndarray]]] = {}
    if split == "test":
        wavs = sorted((data / "test_wav").glob("*.wav"))
        if len(wavs) != len(utts):
            raise MmarError(f"{data}/test_wav holds {len(wavs)} files for {len(utts)} test utterances")
        for m, w in zip(utts, wavs):
            if limit is None or len(by_voice.get(m["name"], [])) < limit:
                by_voice.setdefault(m["name"], []).append((m, read_mono(w, RATE)[0]))
        return by_voice
    for m in utts:
        if m["voice"] in TRAIN_VOICES and not m["shift"] and (limit is None or len(by_voice.get(m["name"], [])) < limit):
            made = job_audio(m)
            if made is not None:
                by_voice.setdefault(m["name"], []).append((m, made[0]))
    by_voice = {v: items for v, items in by_voice.items() if len(items) > 1}  # a prompt is another utterance
    if not by_voice:
        raise MmarError(f"{data}/valid.json has no flite voice with two unshifted utterances to rebuild")
    return by_voice


def run_tts_bench(sp: Speaker, data: Path, limit: int | None = None, uncached: int = 3, seed: int = 0,
                  sampling: SamplingConfig = SAMPLING, log=print, edit_samples: int = 4,
                  split: str = "test") -> dict:
    """Score ``sp`` on a split of the corpus in ``data`` (see the module doc) → a JSON-able result."""
    from ..data.tts_corpus import job_audio
    from ..text.align import recognise

    by_voice = split_audio(data, split, limit)
    utts = [m for items in by_voice.values() for m, _ in items]
    sim = Similarity()
    result: dict = {"split": split, "voices": {}, "sampling": vars(sampling), "seed": seed, "edit_samples": edit_samples}
    embeds: dict[str, list] = {}
    gen_time = audio_time = 0.0
    for voice_name, items in by_voice.items():
        rows = {k: [] for k in ("orig_wer", "orig_cer", "resyn_wer", "resyn_cer", "tts_wer", "tts_cer", "dur_ratio",
                                "silence", "sim_prompt", "default_wer", "edit_wer", "edit_best_wer", "edit_orig_wer",
                                "edit_reread_wer", "edit_outside", "prompt_unaligned", "edit_failed")}
        embeds[voice_name] = []
        for i, (m, audio) in enumerate(items):
            text = m["text"]
            heard = recognise(audio)
            rows["orig_wer"].append(wer(text, heard))
            rows["orig_cer"].append(cer(text, heard))
            resyn = sp.decode(sp.encode(audio))
            heard = recognise(resyn)
            rows["resyn_wer"].append(wer(text, heard))
            rows["resyn_cer"].append(cer(text, heard))
            embeds[voice_name].append(sim.embed(audio))
            # TTS in the voice of the next utterance of this voice
            voice = None
            for k in range(1, len(items)):  # the next utterance pocketsphinx can align
                pm, paudio = items[(i + k) % len(items)]
                try:
                    voice, _, _ = voice_from_audio(sp, paudio, pm["text"])
                    break
                except MmarError:
                    rows["prompt_unaligned"].append(1.0)
            if voice is None:
                raise MmarError(f"no {split} utterance of {voice_name} could be aligned as a prompt")
            phones = sp.tts.phone_index(text_phones(text))
            t0 = time.perf_counter()
            codes = synthesize_codes(sp.tts, phones, voice, 1, sampling, seed + i)[0]
            out = sp.decode(codes)
            gen_time += time.perf_counter() - t0
            audio_time += len(out) / RATE
            heard = recognise(out)
            rows["tts_wer"].append(wer(text, heard))
            rows["tts_cer"].append(cer(text, heard))
            rows["dur_ratio"].append(len(out) / len(audio))
            rows["silence"].append(longest_silence(out))
            e_out, e_prompt = sim.embed(out), sim.embed(paudio)
            rows["sim_prompt"].append(float(e_out @ e_prompt) if e_out is not None else None)
            embeds[voice_name].append(("tts", e_out))
            dv = synthesize_codes(sp.tts, phones, default_voice(sp), 1, sampling, seed + i)[0]
            rows["default_wer"].append(wer(text, recognise(sp.decode(dv))))
            # editing: replace the longest word by another word
            new_text = swapped(text, i)
            try:
                edited, info = edit(sp, audio, new_text, text, sampling, seed + i)
            except MmarError as e:
                log(f"  edit {i}: {e}")
                rows["edit_failed"].append(1.0)
                continue
            rows["edit_wer"].append(wer(new_text, recognise(edited)))
            if edit_samples > 1:
                best, _ = edit(sp, audio, new_text, text, sampling, seed + i, num_samples=edit_samples)
                rows["edit_best_wer"].append(wer(new_text, recognise(best)))
            else:  # one sample is the edit above (same seed)
                rows["edit_best_wer"].append(rows["edit_wer"][-1])
            rows["edit_orig_wer"].append(rows["orig_wer"][-1])
            reread = job_audio({**m, "text": new_text})  # the source voice reading the new words
            rows["edit_reread_wer"].append(wer(new_text, recognise(reread[0])) if reread is not None else None)
            rows["edit_outside"].append(_outside_error(audio, edited, info, sp.hop))
            log(f"  {voice_name} {i + 1}/{len(items)}: tts WER {rows['tts_wer'][-1]:.2f}  edit WER {rows['edit_wer'][-1]:.2f}")
        counts = {k: len(rows.pop(k)) for k in ("prompt_unaligned", "edit_failed")}  # how often alignment failed
        result["voices"][voice_name] = {"utterances": len(items), **counts, **{k: _mean(v) for k, v in rows.items()},
                                        "per_utterance": {k: [round(x, 4) if x is not None else None for x in v] for k, v in rows.items()}}
    result["similarity"] = _similarity_table(embeds)
    result["rtf_cached"] = round(gen_time / max(audio_time, 1e-9), 4)
    result["speed"] = _speed(sp, [u["text"] for u in utts[:uncached]], seed, sampling)
    result["speed"]["torch_threads"] = torch.get_num_threads()
    return result


def _outside_error(original: np.ndarray, edited: np.ndarray, info: dict, hop: int) -> float:
    """Largest |difference| between the edited and the original audio outside the regenerated
    spans (20 ms away from each seam, where the cross-fades are)."""
    margin = int(0.02 * RATE)

    def stretches(spans: list, total: int) -> list[tuple[int, int]]:  # the unedited stretches, in samples
        cuts = [0] + [int(x * RATE) for pair in spans for x in pair] + [total]
        return [(cuts[k] + margin, cuts[k + 1] - margin) for k in range(0, len(cuts), 2)]

    worst = 0.0
    for (o0, o1), (n0, n1) in zip(stretches(info["spans_before_s"], len(original)), stretches(info["spans_after_s"], len(edited))):
        n = min(o1 - o0, n1 - n0)
        if n > 0:
            worst = max(worst, float(np.abs(original[o0 : o0 + n] - edited[n0 : n0 + n]).max()))
    return worst


def _similarity_table(embeds: dict[str, list]) -> dict:
    """Cosine similarities: real–real same voice, real–real other voice, TTS output–real same
    voice and TTS–real other voice, and the share of (output, other voice) pairs where the output
    is closer to its own voice."""
    real = {v: [e for e in es if not isinstance(e, tuple) and e is not None] for v, es in embeds.items()}
    tts = {v: [e[1] for e in es if isinstance(e, tuple) and e[1] is not None] for v, es in embeds.items()}
    if not any(real.values()):
        return {"note": "resemblyzer not installed (pip install 'mmar[eval]')"}
    out: dict = {}
    voices = list(real)
    for v in voices:
        r = np.stack(real[v]) if real[v] else None
        same = [float(a @ b) for i, a in enumerate(real[v]) for b in real[v][i + 1 :]]
        others = [u for u in voices if u != v and real[u]]
        diff = [float(a @ b) for a in real[v] for u in others for b in real[u]]
        t_same = [float(e @ a) for e in tts[v] for a in real[v]]
        t_diff = [float(e @ b) for e in tts[v] for u in others for b in real[u]]
        wins = []
        for e in tts[v]:
            own = float(np.mean([e @ a for a in real[v]])) if r is not None else 0.0
            wins += [own > float(np.mean([e @ b for b in real[u]])) for u in others]
        out[v] = {"real_same": _mean(same), "real_other": _mean(diff), "tts_same": _mean(t_same), "tts_other": _mean(t_diff),
                  "tts_closer_to_own_voice": _mean([float(w) for w in wins])}
    return out


def _speed(sp: Speaker, texts: list[str], seed: int, sampling: SamplingConfig) -> dict:
    """Seconds of compute per second of audio for the same sentences, cached vs uncached (default voice)."""
    if not texts:  # --uncached 0
        return {"cached": None, "uncached": None, "uncached_over_cached": None}
    times = {}
    voice = default_voice(sp)
    for cached in (True, False):
        t, dur = 0.0, 0.0
        for i, text in enumerate(texts):
            phones = sp.tts.phone_index(text_phones(text))
            t0 = time.perf_counter()
            codes = synthesize_codes(sp.tts, phones, voice, 1, sampling, seed + i, cached=cached)[0]
            t += time.perf_counter() - t0
            dur += codes.shape[1] * sp.hop / RATE
        times["cached" if cached else "uncached"] = round(t / max(dur, 1e-9), 4)
    times["uncached_over_cached"] = round(times["uncached"] / max(times["cached"], 1e-9), 2)
    return times


def format_table(result: dict) -> str:
    """The result as aligned text tables."""
    lines = [f"split: {result.get('split', 'test')}",
             "voice         n   flite WER  resyn WER  TTS WER  TTS CER  default WER  dur ratio  longest sil  sim→prompt  "
             "edit WER  edit best-of-N  orig WER  new text read  outside err  unaligned (prompt/edit)"]
    f = lambda x, p=3: "—" if x is None else f"{x:.{p}f}"  # noqa: E731
    for v, r in result["voices"].items():
        lines.append(f"{v:<12} {r['utterances']:>2}   {f(r['orig_wer']):>9}  {f(r['resyn_wer']):>9}  {f(r['tts_wer']):>7}  "
                     f"{f(r['tts_cer']):>7}  {f(r['default_wer']):>11}  {f(r['dur_ratio'], 2):>9}  {f(r['silence'], 2):>11}  "
                     f"{f(r['sim_prompt']):>10}  {f(r['edit_wer']):>8}  {f(r['edit_best_wer']):>13}  {f(r['edit_orig_wer']):>8}  {f(r.get('edit_reread_wer')):>13}  {f(r['edit_outside'], 4):>11}  "
                     f"{r['prompt_unaligned']}/{r['edit_failed']}")
    lines.append("\nspeaker similarity (resemblyzer cosine)")
    for v, s in result["similarity"].items():
        if isinstance(s, dict):
            lines.append(f"  {v:<12} real same {f(s['real_same'])}  real other {f(s['real_other'])}  "
                         f"TTS–same {f(s['tts_same'])}  TTS–other {f(s['tts_other'])}  closer to own voice {f(s['tts_closer_to_own_voice'], 2)}")
        else:
            lines.append(f"  {s}")
    lines.append(f"edit best-of-N: N = {result['edit_samples']}, picked by pocketsphinx agreement with the new transcript; "
                 "new text read: the original voice (flite) reading the new transcript")
    sp = result["speed"]
    lines.append(f"\nreal-time factor ({sp['torch_threads']} torch threads): cached {f(sp['cached'])}, uncached {f(sp['uncached'])} "
                 f"(uncached / cached = {f(sp['uncached_over_cached'], 2)}); all sentences, cached: {result['rtf_cached']:.3f}")
    return "\n".join(lines)
