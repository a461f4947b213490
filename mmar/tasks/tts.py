"""Zero-shot TTS and speech editing (VoiceCraft style) on the shared core: phones as a
bidirectional prefix, then the speech codec's coarse levels in VoiceCraft's layout
(:func:`~mmar.patterns.voicecraft_layout`: delayed stacking, causal masking of 1–3 spans with
``eog``, ``eos`` at the end), decoded by :mod:`mmar.generation` on the kv-cache.

**Phone markers** (the one addition to VoiceCraft, after ELLA-V): before the codec frames of
each phone the stream holds one *marker frame* — level 0 the phone's marker id (ids above the
special ids, level 0 only), the other levels empty. With delays 0..K-1 the layout of the frame
sequence is the ordinary one::

    frames  M(pau) c c c M(hh) c c M(ah) c … c            (c: a frame of K codes)
    stream  the delayed frames, then eos                  (TTS rows)
            U0 m0 U1 … Un eos  m0 S0 eog …                (editing rows; spans start at a marker)

A decoder-only model on 2 CPU cores does not learn which phone it is reading in an hour
(``shared/research/tts-cpu-experiment.md``: plain VoiceCraft babbles); with markers it reads
the current phone from its own stream and only has to learn when to move on. At inference the
rails (:class:`PhoneRails`) allow at level 0 either a code, or the *next* phone's marker, or —
after the last phone — the end id; so the phones come out in order, each lasts 1 to
``max_phone_frames`` frames, and every output ends. The model decides durations: its
probability of *any* marker (or the end) is moved onto the allowed one
(:meth:`PhoneRails.merge_boundaries`), since early in training it knows *that* a phone is over
(p ≈ 0.55 at true boundaries, 0.13 elsewhere, at step 1,000) well before it knows *which* phone
comes next (0.14); without the merge, outputs ran ~6× too long.

Shapes: K levels, T codec frames, N phones, F = T + N frames with markers, S stream steps,
P prefix ids (phone index + 1; 0 pads on the left).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..checkpoint import find_checkpoint, load_task_model
from ..errors import MmarError
from ..generation import CachedStepper, Generated, SamplingConfig, Sampler, StopRule, UncachedStepper, decode_loop, \
    fill_spans, last_logits
from ..heads import codebook_vocab
from ..patterns import CausalMasking, SpecialIds, voicecraft_layout
from ..text.arpabet import PHONES
from ..transformer import TRUNK_BOUNDS, CausalTransformer, TransformerConfig, checked_trunk

NAME = "tts-16k"
PAD = 0  # prefix id of padding; phone i has prefix id i + 1


@dataclass
class TTSModel:
    """A phones → codec-codes model with what it needs to run: the phone set, the special ids,
    how many codec levels it speaks and the identity of that codec's weights."""

    model: CausalTransformer
    phones: tuple[str, ...]
    ids: SpecialIds
    levels: int
    max_phone_frames: int = 40
    default_voice: dict = field(default_factory=dict)  # {"codes": [K][T], "phones": [N], "starts": [N], "text": str}
    codec_weights: str = ""
    model_id: str = NAME
    weights: str = ""

    @property
    def marker_base(self) -> int:
        """Level-0 id of phone 0's marker (phone i: ``marker_base + i``)."""
        return self.ids.codebook_size + self.ids.count

    @property
    def layout(self) -> CausalMasking:
        return voicecraft_layout(self.ids, self.levels)

    def phone_index(self, phones: Sequence[str]) -> torch.Tensor:
        """Phone names → indices int64 [N]; a phone outside the model's set is an error."""
        try:
            return torch.tensor([self.phones.index(p) for p in phones], dtype=torch.long)
        except ValueError:
            bad = sorted(set(phones) - set(self.phones))
            raise MmarError(f"phones unknown to the TTS model: {' '.join(bad)[:80]}") from None


# -- config / checkpoint ------------------------------------------------------------------------
def export_config(model: dict, levels: int, codec_weights: str = "", max_phone_frames: int = 40,
                  default_voice: dict | None = None, name: str = NAME, codebook_size: int = 1024) -> dict:
    """The ``config.json`` of a TTS checkpoint (kind ``tts``)."""
    return {"kind": "tts", "name": name, "model": {k: model[k] for k in TRUNK_BOUNDS if k in model},
            "phones": list(PHONES), "levels": levels, "codebook_size": codebook_size, "max_spans": 3,
            "max_phone_frames": max_phone_frames, "codec": {"weights": codec_weights},
            "default_voice": default_voice or {}}


def from_config(config: dict, where: str = "config") -> TTSModel:
    """A checked config dict (:func:`export_config`) → a :class:`TTSModel` with fresh weights."""
    if not isinstance(config, dict) or config.get("kind") != "tts":
        kind = config.get("kind") if isinstance(config, dict) else type(config).__name__
        raise MmarError(f"{where} holds a {kind!r:.40} checkpoint, not a TTS model")
    m = checked_trunk(config.get("model"), where)
    ints = lambda v, lo, hi: isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi  # noqa: E731
    phones, levels, size = config.get("phones"), config.get("levels"), config.get("codebook_size")
    spans, longest = config.get("max_spans"), config.get("max_phone_frames")
    if not (isinstance(phones, list) and 1 <= len(phones) <= 512 and all(isinstance(p, str) and len(p) <= 8 for p in phones)
            and len(set(phones)) == len(phones) and ints(levels, 1, 32) and ints(size, 2, 1 << 16) and ints(spans, 1, 8)
            and ints(longest, 1, 1000)):
        raise MmarError(f"{where}: phones, levels, codebook_size, max_spans or max_phone_frames malformed")
    ids = SpecialIds(size, max_spans=spans, with_eog=True)
    vocab = codebook_vocab(size, levels, ids)
    try:
        cfg = TransformerConfig(**m, vocab=(vocab[0] + len(phones), *vocab[1:]), prefix_vocab=len(phones) + 1)
        if cfg.dim % cfg.n_heads or cfg.head_dim % 2:
            raise ValueError("dim must be a multiple of 2 × n_heads")
    except (TypeError, ValueError) as e:
        raise MmarError(f"{where}: {e}") from None
    voice = config.get("default_voice") or {}
    if not isinstance(voice, dict):
        raise MmarError(f"{where}: default_voice malformed")
    return TTSModel(CausalTransformer(cfg), tuple(phones), ids, levels, longest, voice,
                    str((config.get("codec") or {}).get("weights", ""))[:16], str(config.get("name", NAME))[:64])


def load_tts(path=None) -> TTSModel:
    """A ``tts`` checkpoint directory (default: ``tts-16k`` on the checkpoint search path)."""
    return load_task_model(find_checkpoint(NAME, path), from_config, "TTS")


# -- frames with phone markers ------------------------------------------------------------------
def interleave(tts: TTSModel, codes: torch.Tensor, phones: torch.Tensor, starts: torch.Tensor) -> torch.Tensor:
    """codes int64 [K, T], phone indices [N], start frames [N] (ascending, first 0) → frames
    [K, T + N] with phone i's marker frame just before its first code frame."""
    k, t = codes.shape
    n = len(phones)
    pos = starts.long() + torch.arange(n)  # where the markers land
    out = codes.new_full((k, t + n), tts.ids.empty)
    is_marker = torch.zeros(t + n, dtype=torch.bool)
    is_marker[pos] = True
    out[:, ~is_marker] = codes
    out[0, pos] = tts.marker_base + phones.long()
    return out


def deinterleave(tts: TTSModel, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Inverse of :func:`interleave`: frames [K, F] → (codes [K, T], phone indices [N], start frames [N])."""
    is_marker = frames[0] >= tts.marker_base
    pos = is_marker.nonzero().flatten()
    return frames[:, ~is_marker], frames[0, pos] - tts.marker_base, pos - torch.arange(len(pos))


def marker_spans(tts: TTSModel, frames: torch.Tensor, phone_ranges: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """Phone ranges [a, b) (sorted, disjoint, non-empty) → frame spans of ``frames`` [K, F]: from
    phone a's marker to phone b's marker (or the end)."""
    pos = (frames[0] >= tts.marker_base).nonzero().flatten().tolist() + [frames.shape[1]]
    return [(pos[a], pos[b]) for a, b in phone_ranges]


def prefix_batch(rows: Sequence[torch.Tensor]) -> torch.Tensor:
    """Phone indices per row [N_i] → prefix ids [B, max N_i], left-padded with :data:`PAD`."""
    p = max(len(r) for r in rows)
    out = torch.full((len(rows), p), PAD, dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, p - len(r):] = r.long() + 1
    return out


# -- training -----------------------------------------------------------------------------------
def training_batch(tts: TTSModel, rows: Sequence[tuple[torch.Tensor, torch.Tensor, torch.Tensor]], edit: Sequence[bool],
                   gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Utterances (codes [K, T], phones [N], starts [N]); per row plain TTS or editing (1–3 spans
    of whole phones) → (stream [B, K, S] right-padded, lengths [B], prefix [B, P])."""
    streams = []
    for (codes, phones, starts), e in zip(rows, edit):
        frames = interleave(tts, codes.long(), phones, starts)
        spans = marker_spans(tts, frames, tts.layout.sample_spans(len(phones), gen)) if e and len(phones) >= 2 else []
        streams.append(tts.layout.rearrange_row(frames, spans))
    k = streams[0].shape[0]
    lengths = torch.tensor([s.shape[1] for s in streams])
    stream = torch.full((len(rows), k, int(lengths.max())), tts.ids.empty, dtype=torch.long)
    for i, s in enumerate(streams):
        stream[i, :, : s.shape[1]] = s
    return stream, lengths, prefix_batch([r[1] for r in rows])


class TrainingLoss(nn.Module):
    """Per-level next-token cross-entropy of streams after phone prefixes (wrap this in DDP).

    forward(stream int64 [B, K, S], lengths [B], prefix [B, P]) → (weighted loss, per-level CE [K])."""

    def __init__(self, model: CausalTransformer, level_weights: Sequence[float]):
        super().__init__()
        self.model = model
        w = torch.tensor(list(level_weights), dtype=torch.float)
        self.register_buffer("weights", w / w.sum(), persistent=False)

    def forward(self, stream: torch.Tensor, lengths: torch.Tensor, prefix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.model(codes=stream, prefix=prefix)  # [B, P + S, D]
        logits = self.model.logits(hidden[:, prefix.shape[1] - 1 : -1])  # [B, S, K, V]
        real = torch.arange(stream.shape[-1], device=stream.device)[None] < lengths.to(stream.device)[:, None]
        ce = torch.stack([F.cross_entropy(logits[:, :, k][real].float(), stream[:, k][real])
                          for k in range(stream.shape[1])])
        return (ce * self.weights).sum(), ce.detach()


# -- decoding rails -----------------------------------------------------------------------------
class PhoneRails:
    """The allowed-ids hook (:class:`~mmar.generation.Sampler`) for generating one delayed segment
    of marker frames: VoiceCraft's rails plus the phone order.

    The segment's first ``known`` frames [K, T0] are given (a voice prompt; their first T0 steps
    were fed), and the new frames must read ``phones`` (indices, in order). At each step, for the
    (level, frame) pairs the delay pattern says it holds:

    - a known frame's code is forced (the prompt's upper levels finish here);
    - level 0: a code while the current phone has < ``max_frames`` frames; the next phone's
      marker once it has ≥ 1 frame (the first marker at once when there is no prompt); after
      the last phone, ``end_id`` instead of a marker — the only level that may end;
    - other levels: empty under a marker, ``end_id`` under level 0's end (the end cascade),
      empty after it, a code otherwise; empty before their delay.

    → bool [B, K, V]. The row is done when level K-1 emits ``end_id``: at most
    :meth:`max_steps` steps."""

    def __init__(self, tts: TTSModel, known: torch.Tensor, phones: torch.Tensor, end_id: int, max_frames: int | None = None):
        self.tts, self.known, self.phones, self.end_id = tts, known, phones.long(), end_id
        self.delay = tts.layout.delay
        self.max_frames = max_frames or tts.max_phone_frames
        self.vocab = tts.model.cfg.out_vocab[0]
        marks = (known[0] >= tts.marker_base).nonzero().flatten() if known.numel() else torch.zeros(0, dtype=torch.long)
        self.prompt_run = known.shape[1] - 1 - int(marks[-1]) if len(marks) else None  # code frames after the last marker

    def max_steps(self) -> int:
        """Steps after which every row has ended."""
        return len(self.phones) * (self.max_frames + 1) + 1 + self.delay.max_delay + (self.prompt_run or 0) + self.max_frames

    def __call__(self, step: int, history: torch.Tensor) -> torch.Tensor:
        tts, ids, t0 = self.tts, self.tts.ids, self.known.shape[1]
        b, k = history.shape[0], history.shape[1]
        out = torch.zeros(b, k, self.vocab, dtype=torch.bool)
        out[:, :, ids.empty] = True  # levels that hold no frame this step
        codes = ids.codebook_size
        for level, f in self.delay.holds(t0 + step):
            out[:, level] = False
            if f < t0:
                out[:, level, int(self.known[level, f])] = True
                continue
            g = f - t0  # index among the new frames
            if level == 0:
                self._level0(out[:, 0], history[:, 0, :step], codes)
                continue
            top = history[:, 0, g]
            marker, end = top >= tts.marker_base, top == self.end_id
            gone = (top == ids.empty) | (history[:, 0, :g] == self.end_id).any(1)
            out[:, level, :codes] = (~marker & ~end & ~gone)[:, None]
            out[:, level, self.end_id] = end
            out[:, level, ids.empty] = marker | (gone & ~end)
        return out

    def next_ids(self, top: torch.Tensor) -> torch.Tensor:
        """Level-0 history [B, s] of the new frames → the id each row moves on with: the next
        phone's marker, or ``end_id`` after the last phone → int64 [B]."""
        j = (top >= self.tts.marker_base).sum(1)
        ahead = self.phones[j.clamp_max(max(len(self.phones) - 1, 0))] + self.tts.marker_base
        return torch.where(j < len(self.phones), ahead, torch.full_like(j, self.end_id))

    def merge_boundaries(self, step: int, logits: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        """The logits processor that goes with the rails: at level 0 the probability of *every*
        marker and the end id — the model's "this phone is over" — moves onto the one id the
        rails allow next, so a model unsure *which* phone comes next still moves on in time."""
        logits = logits.clone()
        top = logits[:, 0]
        boundary = torch.cat([top[:, self.tts.marker_base :], top[:, self.end_id : self.end_id + 1]], 1).logsumexp(1)
        rows = torch.arange(logits.shape[0])
        top[rows, self.next_ids(history[:, 0])] = boundary
        return logits

    def _level0(self, out: torch.Tensor, top: torch.Tensor, codes: int) -> None:
        """Fill the allowed level-0 ids [B, V] for the next new frame after level-0 history [B, s]."""
        s = top.shape[1]
        for r in range(out.shape[0]):
            row = top[r]
            if bool((row == self.end_id).any()):
                out[r, self.tts.ids.empty] = True
                continue
            marks = (row >= self.tts.marker_base).nonzero().flatten()
            j = len(marks)  # markers emitted so far
            if j:
                run = s - 1 - int(marks[-1])
            elif self.prompt_run is not None:
                run = self.prompt_run + s
            else:
                run = -1  # nothing yet: the first marker comes first
            if run >= 0 and run < self.max_frames:
                out[r, :codes] = True
            if run != 0:  # a phone needs ≥ 1 frame (run 0: a marker was just emitted)
                if j < len(self.phones):
                    out[r, self.tts.marker_base + int(self.phones[j])] = True
                elif run > 0:
                    out[r, self.end_id] = True
            if not bool(out[r].any()):
                out[r, self.end_id] = True


# -- generation ---------------------------------------------------------------------------------
@dataclass
class Voice:
    """A voice prompt: codec codes int64 [K, T], its phones (indices [N]) and their start frames [N]."""

    codes: torch.Tensor
    phones: torch.Tensor
    starts: torch.Tensor

    @classmethod
    def from_dict(cls, d: dict, tts: TTSModel) -> Voice:
        try:
            v = cls(torch.tensor(d["codes"], dtype=torch.long), torch.tensor(d["phones"], dtype=torch.long),
                    torch.tensor(d["starts"], dtype=torch.long))
        except (KeyError, TypeError, ValueError):
            raise MmarError("the checkpoint's default voice is malformed") from None
        check_voice(tts, v)
        return v


def check_voice(tts: TTSModel, v: Voice) -> None:
    """:class:`MmarError` unless the prompt's shapes, ids and timings are consistent."""
    k, t = v.codes.shape if v.codes.dim() == 2 else (0, 0)
    n = len(v.phones)
    if (k != tts.levels or t < 1 or n < 1 or v.starts.shape != v.phones.shape or int(v.starts[0]) != 0
            or bool((v.starts[1:] <= v.starts[:-1]).any()) or int(v.starts[-1]) >= t
            or not (0 <= int(v.phones.min()) and int(v.phones.max()) < len(tts.phones))
            or not (0 <= int(v.codes.min()) and int(v.codes.max()) < tts.ids.codebook_size)):
        raise MmarError("voice prompt malformed: codes [levels, T], phones and ascending start frames (first 0, all < T)")


def _sampler(rails: PhoneRails, sampling: SamplingConfig, generator: torch.Generator) -> Sampler:
    return Sampler(sampling, generator, allowed=rails, process=rails.merge_boundaries)


def check_sampling(s: SamplingConfig) -> None:
    """Refuse sampling settings the TTS decoder cannot use (one-line MmarError)."""
    if not (math.isfinite(s.temperature) and s.temperature >= 0) or s.top_k < 0 or not 0 < s.top_p <= 1:
        raise MmarError("temperature must be ≥ 0, top-k ≥ 0 and top-p in (0, 1]")
    if s.cfg_scale != 1.0:
        raise MmarError("the TTS model has no unconditional branch: classifier-free guidance is not available")


@torch.no_grad()
def synthesize_codes(tts: TTSModel, phones: torch.Tensor, voice: Voice | None = None, num_samples: int = 1,
                     sampling: SamplingConfig = SamplingConfig(temperature=1.0, top_k=50), seed: int = 0,
                     cached: bool = True, max_frames: int | None = None) -> list[torch.Tensor]:
    """Continue ``voice`` (None: no prompt) with ``phones`` (indices [N]) → ``num_samples`` code
    sequences int64 [K, T_i] (the new frames only), sampled as one batch."""
    check_sampling(sampling)
    if len(phones) < 1:
        raise MmarError("nothing to say")
    known = interleave(tts, voice.codes, voice.phones, voice.starts) if voice else torch.zeros(tts.levels, 0, dtype=torch.long)
    prompt_phones = voice.phones if voice else torch.zeros(0, dtype=torch.long)
    rails = PhoneRails(tts, known, phones, tts.ids.eos, max_frames)
    steps = rails.max_steps()
    b, t0 = num_samples, known.shape[1]
    prefix = prefix_batch([torch.cat([prompt_phones, phones])] * b)
    fed = tts.layout.delay.build(known[None], tts.ids.empty)[:, :, :t0].expand(b, -1, -1)  # the open stream's ready steps
    capacity = prefix.shape[1] + t0 + steps + 1
    stepper = CachedStepper(tts.model, b, capacity) if cached else UncachedStepper(tts.model, b)
    logits = last_logits(stepper(codes=fed if t0 else None, prefix=prefix))
    out = decode_loop(stepper, logits, steps, _sampler(rails, sampling, torch.Generator().manual_seed(seed)),
                      StopRule(tts.ids.eos, level=tts.levels - 1, fill_id=tts.ids.empty))
    return [_new_codes(tts, known, out, r) for r in range(b)]


def _new_codes(tts: TTSModel, known: torch.Tensor, out: Generated, r: int) -> torch.Tensor:
    """Row r of a finished segment (known frames + generated steps) → its new codec frames [K, T]."""
    if not bool(out.finished[r]):
        raise RuntimeError("a TTS row did not end within its step bound")  # the rails make this impossible
    t0 = known.shape[1]
    stream = torch.cat([tts.layout.delay.build(known[None], tts.ids.empty)[0, :, :t0], out.tokens[r, :, : int(out.lengths[r])]], 1)
    frames, spans = tts.layout.restore_row(stream)
    codes, _, _ = deinterleave(tts, frames[:, t0:])
    return codes


@dataclass(frozen=True)
class Edited:
    """One edit result: codes int64 [K, T'], the edited code-frame spans [a, b) of the original
    and of the result, and the model's stream int64 [K, S] (its generated steps from ``start``)."""

    codes: torch.Tensor
    old_spans: list[tuple[int, int]]
    new_spans: list[tuple[int, int]]
    stream: torch.Tensor
    start: int


@torch.no_grad()
def edit_codes(tts: TTSModel, voice: Voice, phone_ranges: Sequence[tuple[int, int]], new_phones: Sequence[torch.Tensor],
               all_phones: torch.Tensor, sampling: SamplingConfig = SamplingConfig(temperature=1.0, top_k=50),
               seed: int = 0, cached: bool = True, num_samples: int = 1) -> list[Edited]:
    """Regenerate the phones ``phone_ranges`` [a, b) of ``voice`` as ``new_phones`` (one index
    tensor per range; ``all_phones``: the new utterance's phones, the prefix) → ``num_samples``
    :class:`Edited` results, sampled as one batch (rows end their spans at their own steps).
    Code frames outside the spans are copied."""
    check_sampling(sampling)
    frames = interleave(tts, voice.codes, voice.phones, voice.starts)
    spans = marker_spans(tts, frames, phone_ranges)
    layout, b = tts.layout, num_samples
    stream = layout.rearrange_row(frames, spans)
    head = layout.prompt_steps(frames.shape[1], spans)
    prefix = prefix_batch([all_phones] * b)
    known = stream[None, :, : head + 1].expand(b, -1, -1)  # … Un eos m0
    rails = [PhoneRails(tts, frames.new_zeros(tts.levels, 0), p, tts.ids.eog) for p in new_phones]
    capacity = prefix.shape[1] + head + 1 + sum(r.max_steps() + 1 for r in rails)
    stepper = CachedStepper(tts.model, b, capacity) if cached else UncachedStepper(tts.model, b)
    logits = last_logits(stepper(codes=known, prefix=prefix))
    marks = [torch.full((b, tts.levels, 1), tts.ids.mask(i), dtype=torch.long) for i in range(len(spans))]
    gen = torch.Generator().manual_seed(seed)
    choosers = [_sampler(r, sampling, gen) for r in rails]
    filled = fill_spans(stepper, logits, [r.max_steps() for r in rails], marks, choosers,
                        StopRule(tts.ids.eog, level=tts.levels - 1, fill_id=tts.ids.empty))
    to_code = lambda fr, sp: [(int((fr[0, :a] < tts.marker_base).sum()), int((fr[0, :b] < tts.marker_base).sum()))  # noqa: E731
                              for a, b in sp]
    old_spans, results = to_code(frames, spans), []
    for r in range(b):
        pieces = [known[r]]
        for i, g in enumerate(filled):
            if not bool(g.finished[r]):
                raise RuntimeError("an edited span did not end within its step bound")
            pieces += ([marks[i][r]] if i else []) + [g.tokens[r, :, : int(g.lengths[r])]]
        row = torch.cat(pieces, 1)
        new_frames, new_spans = layout.restore_row(row)
        codes, _, _ = deinterleave(tts, new_frames)
        results.append(Edited(codes, old_spans, to_code(new_frames, new_spans), row, head + 1))
    return results


@torch.no_grad()
def code_logprob(tts: TTSModel, prefix: torch.Tensor, streams: Sequence[torch.Tensor], start: int) -> torch.Tensor:
    """Teacher-forced mean log-probability, per level, of the codec codes each stream [K, S_i]
    holds at steps ≥ ``start`` after the phone prefix [P], under the model's raw distribution
    (temperature 1, no rails) → float [B, K] (NaN where a level holds no code there)."""
    k, size = tts.levels, tts.ids.codebook_size
    s = max(x.shape[1] for x in streams)
    batch = torch.full((len(streams), k, s), tts.ids.empty, dtype=torch.long)
    for i, x in enumerate(streams):
        batch[i, :, : x.shape[1]] = x
    hidden = tts.model(codes=batch, prefix=prefix[None].expand(len(streams), -1))
    logp = tts.model.logits(hidden[:, prefix.shape[0] - 1 : -1]).float().log_softmax(-1)  # [B, S, K, V]
    ids = batch.clamp_max(logp.shape[-1] - 1).transpose(1, 2)[..., None]  # special ids past a level's vocabulary: masked below
    picked = logp.gather(-1, ids)[..., 0].transpose(1, 2)  # [B, K, S]
    keep = (batch < size) & (torch.arange(s) >= start)
    return (picked * keep).sum(-1) / keep.sum(-1)  # 0/0 = NaN for an empty level
