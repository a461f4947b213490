"""Token-stream patterns: how codes [B, K, T] are laid out as the Transformer's stream.

This module is the only place that knows which (level, frame) a stream step holds.

- :class:`DelayPattern` (MusicGen/VoiceCraft "delayed stacking"): level k is shifted right by
  its delay, so with delays 0..K-1 level k of frame t is predicted after levels < k of frame t.
- :class:`CausalMasking` (CM3/VoiceCraft): spans are cut out, replaced by mask tokens, and
  appended at the end behind the same mask tokens, so a left-to-right model learns infilling.
  Given a :class:`DelayPattern` it delays each segment on its own and, with end tokens, closes
  every span with ``eog`` and the stream with ``eos``: the VoiceCraft layout (:func:`voicecraft_layout`).

Special ids sit just above the codebook: see :class:`SpecialIds`, their one owner.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

Spans = Sequence[tuple[int, int]]


@dataclass(frozen=True)
class SpecialIds:
    """Ids above ``codebook_size``: empty (no value yet), end of stream, mask tokens and,
    with ``with_eog``, end of a generated segment.

    With codebook_size 1024: empty 1024, eos 1025, masks 1026, 1027, 1028 (, eog 1029).
    """

    codebook_size: int
    max_spans: int = 3
    with_eog: bool = False

    @property
    def empty(self) -> int:
        return self.codebook_size

    @property
    def eos(self) -> int:
        return self.codebook_size + 1

    def mask(self, i: int) -> int:
        """Id of the i-th mask token (0-based, i < max_spans)."""
        if not 0 <= i < self.max_spans:
            raise ValueError(f"mask index {i} outside 0..{self.max_spans - 1}")
        return self.codebook_size + 2 + i

    def mask_index(self, token: int) -> int | None:
        """i if ``token`` is the i-th mask id, else None."""
        i = token - self.codebook_size - 2
        return i if 0 <= i < self.max_spans else None

    @property
    def eog(self) -> int:
        if not self.with_eog:
            raise ValueError("these special ids have no eog (with_eog=False)")
        return self.codebook_size + 2 + self.max_spans

    @property
    def count(self) -> int:
        return 2 + self.max_spans + int(self.with_eog)


class DelayPattern:
    """Shift codebook k right by ``delays[k]`` steps, filling the gaps with the empty id.

    Worked example (K=3, T=2, delays 0,1,2, empty id E)::

        codes   [[a0 a1]          stream  [[a0 a1 E  E ]
                 [b0 b1]    →              [E  b0 b1 E ]
                 [c0 c1]]                  [E  E  c0 c1]]

    build: codes [B, K, T] → stream [B, K, T + max_delay]; revert: stream [B, K, S] → codes [B, K, S - max_delay].
    """

    def __init__(self, num_codebooks: int, delays: list[int] | None = None):
        self.delays = list(range(num_codebooks)) if delays is None else list(delays)
        if len(self.delays) != num_codebooks or min(self.delays) < 0:
            raise ValueError("need one non-negative delay per codebook")
        self.max_delay = max(self.delays)

    def build(self, codes: torch.Tensor, empty_id: int) -> torch.Tensor:
        """codes [B, K, T] → stream [B, K, T + max_delay]."""
        b, k, t = codes.shape
        stream = codes.new_full((b, k, t + self.max_delay), empty_id)
        for i, d in enumerate(self.delays):
            stream[:, i, d : d + t] = codes[:, i]
        return stream

    def revert(self, stream: torch.Tensor) -> torch.Tensor:
        """stream [B, K, S] → codes [B, K, S - max_delay] (each level read back at its delay)."""
        t = stream.shape[-1] - self.max_delay
        return torch.stack([stream[:, i, d : d + t] for i, d in enumerate(self.delays)], dim=1)

    def steps(self, frames: int) -> int:
        """Stream steps that ``frames`` frames occupy: frames + max_delay (0 for no frames)."""
        return frames + self.max_delay if frames else 0

    def ready_steps(self, frames: int) -> int:
        """Stream steps that can be laid out while only the first ``frames`` frames are known
        (the stream still open): every code they hold belongs to those frames."""
        return frames + min(self.delays)

    def started_frames(self, steps: int, frames: int | None = None) -> int:
        """Frames with at least one level within the first ``steps`` stream steps."""
        n = max(0, steps - min(self.delays))
        return n if frames is None else min(n, frames)

    def complete_frames(self, steps: int, frames: int | None = None) -> int:
        """Frames whose every level lies within the first ``steps`` stream steps (``frames``: the total, once known)."""
        done = max(0, steps - self.max_delay)
        return done if frames is None else min(done, frames)

    def allowed_ids(self, step: int, history: torch.Tensor, vocab: int, codes: int, end_id: int, empty_id: int,
                    min_frames: int = 0, max_frames: torch.Tensor | None = None) -> torch.Tensor:
        """The decoding rails of a delayed segment being generated from stream step 0 (VoiceCraft):
        which ids each level may take at ``step``, given the steps so far, history int64 [B, K, step].

        - before its delay, a level is ``empty_id``;
        - only level 0 may end the segment (``end_id``, once it has ``min_frames`` frames; it must
          at frame ``max_frames[b]`` when given, int64 [B]);
        - then every level emits ``end_id`` for that same frame, at its own delay (the end
          cascade), and ``empty_id`` after it; until then it takes codes ``0 .. codes - 1``.

        → bool [B, K, vocab]. The row is complete when the level with the largest delay has
        emitted ``end_id`` (a :class:`~mmar.generation.StopRule` on that level ends it)."""
        b, k = history.shape[0], len(self.delays)
        level0 = history[:, 0] == end_id  # [B, step]
        has_end = level0.any(1)
        never = torch.full((b,), 1 << 40, dtype=torch.long)  # no end frame yet
        first_end = level0.float().argmax(1).long() if level0.shape[1] else never
        end_frame = torch.where(has_end, first_end - self.delays[0], never)
        out = torch.zeros(b, k, vocab, dtype=torch.bool)
        for level, d in enumerate(self.delays):
            f = step - d  # the frame this level emits now
            code = (f >= 0) & (f < end_frame)
            end = f == end_frame
            if level == 0:
                may_end = ~has_end & (f >= max(min_frames, 0))
                must_end = may_end & (max_frames <= f) if max_frames is not None else torch.zeros_like(may_end)
                code, end = code & ~must_end, end | may_end
            out[:, level, :codes] = code[:, None]
            out[:, level, end_id] = end
            out[:, level, empty_id] = ~(out[:, level, :codes].any(-1) | out[:, level, end_id])
        return out

    def holds(self, step: int, frames: int | None = None) -> list[tuple[int, int]]:
        """The (level, frame) pairs that stream ``step`` holds a real code for, in level order.
        ``frames`` None: the stream is still open (only its left edge is known to be empty)."""
        return [(k, step - d) for k, d in enumerate(self.delays) if step - d >= 0 and (frames is None or step - d < frames)]


class CausalMasking:
    """Batched causal masking, optionally composed with a delay pattern (the VoiceCraft layout).

    One row with spans [(a0, b0), …] (sorted, disjoint, non-empty, inside [0, T)); U_i are the
    n + 1 unmasked segments around the spans (possibly empty), S_i the spans::

        U0 m0 U1 m1 … U(n-1) m(n-1) Un [eos]   m0 S0 [eog]   m1 S1 [eog] …

    m_i is one step of K mask ids: the first marks where span i was, the second announces its
    content. With ``end_tokens`` an eos frame closes Un and an eog frame closes every span. With
    ``delay`` each segment (its end frame included) is laid out by the delay pattern on its own
    (t + max_delay steps for t frames); without it the segments stay as they are (CM3). A row
    without spans is ``U0 [eos]`` alone (plain continuation, as in TTS).

    Worked example (K=1, no delay, no end tokens, spans [(1, 3)], mask id M0)::

        codes   [x0 x1 x2 x3]  →  stream [x0 M0 x3 M0 x1 x2]

    :meth:`rearrange`: codes [B, K, T] (+ lengths [B], spans per row) → (stream [B, K, S], lengths [B]);
    :meth:`restore` is its exact inverse. Rows are right-padded with the empty id.
    """

    def __init__(self, ids: SpecialIds, delay: DelayPattern | None = None, end_tokens: bool = False):
        if end_tokens and not ids.with_eog:
            raise ValueError("end tokens need special ids with eog (SpecialIds(..., with_eog=True))")
        self.ids, self.delay, self.end_tokens = ids, delay, end_tokens

    def sample_spans(self, length: int, generator: torch.Generator, max_spans: int | None = None) -> list[tuple[int, int]]:
        """1..max_spans non-overlapping, non-empty, sorted spans [start, end) inside [0, length)."""
        max_spans = max(1, min(max_spans or self.ids.max_spans, self.ids.max_spans, (length + 1) // 2))
        n = int(torch.randint(1, max_spans + 1, (), generator=generator))
        cuts = torch.randperm(length + 1, generator=generator)[: 2 * n].sort().values.tolist()
        return [(cuts[2 * i], cuts[2 * i + 1]) for i in range(n)]  # distinct cuts: non-empty, disjoint

    # -- one segment ---------------------------------------------------------------------
    def _lay(self, seg: torch.Tensor, end: int | None) -> torch.Tensor:
        """Segment [K, t] (+ an end frame) → its steps [K, t (+1) (+ max_delay)]."""
        if end is not None:
            seg = torch.cat([seg, seg.new_full((seg.shape[0], 1), end)], dim=1)
        return self.delay.build(seg[None], self.ids.empty)[0] if self.delay else seg

    def _unlay(self, steps: torch.Tensor, end: int | None) -> torch.Tensor:
        """Inverse of :meth:`_lay`; ValueError if the steps cannot have come from it."""
        if self.delay:
            if steps.shape[1] < self.delay.max_delay:
                raise ValueError("a delayed segment is shorter than the delay pattern")
            steps = self.delay.revert(steps[None])[0]
        if end is not None:
            if steps.shape[1] == 0 or not bool((steps[:, -1] == end).all()):
                raise ValueError("a segment lacks its end frame")
            steps = steps[:, :-1]
        return steps

    def _laid_steps(self, frames: int, end: bool) -> int:
        """Steps that :meth:`_lay` gives a segment of ``frames`` frames (with an end frame or not)."""
        return frames + int(end) + (self.delay.max_delay if self.delay else 0)

    def prompt_steps(self, length: int, spans: Spans) -> int:
        """Stream steps before the masked spans' part of a row of ``length`` frames: the unmasked
        segments with their mask steps, ``U0 m0 … Un [eos]`` — what an infilling decoder is given
        before the first span's announcing mask."""
        cuts = [0, *(x for a, b in spans for x in (a, b)), length]
        unmasked = [cuts[2 * i + 1] - cuts[2 * i] for i in range(len(spans) + 1)]
        return sum(self._laid_steps(u, False) for u in unmasked[:-1]) + len(spans) + self._laid_steps(unmasked[-1], self.end_tokens)

    # -- rows ----------------------------------------------------------------------------
    def rearrange_row(self, codes: torch.Tensor, spans: Spans) -> torch.Tensor:
        """codes [K, T], sorted disjoint non-empty spans → stream [K, S]."""
        k, t = codes.shape
        if len(spans) > self.ids.max_spans:
            raise ValueError(f"at most {self.ids.max_spans} spans, got {len(spans)}")
        prev = 0
        for a, b in spans:
            if not (prev <= a < b <= t):
                raise ValueError(f"spans must be sorted, disjoint, non-empty and inside [0, {t}): {list(spans)}")
            prev = b
        eos, eog = (self.ids.eos, self.ids.eog) if self.end_tokens else (None, None)
        head, tail, prev = [], [], 0
        for i, (a, b) in enumerate(spans):
            m = codes.new_full((k, 1), self.ids.mask(i))
            head += [self._lay(codes[:, prev:a], None), m]
            tail += [m, self._lay(codes[:, a:b], eog)]
            prev = b
        head.append(self._lay(codes[:, prev:], eos))
        return torch.cat(head + tail, dim=1)

    def restore_row(self, stream: torch.Tensor) -> tuple[torch.Tensor, list[tuple[int, int]]]:
        """stream [K, S] from :meth:`rearrange_row` → (codes [K, T], spans). ValueError if malformed."""
        top = stream[0].tolist()
        marks = [(j, self.ids.mask_index(x)) for j, x in enumerate(top) if self.ids.mask_index(x) is not None]
        n = len(marks) // 2
        if [i for _, i in marks] != list(range(n)) * 2 or any(not bool((stream[:, j] == stream[0, j]).all()) for j, _ in marks):
            raise ValueError("stream does not hold a complete causal-masking layout")
        cuts = [-1] + [j for j, _ in marks] + [stream.shape[1]]
        pieces = [stream[:, cuts[i] + 1 : cuts[i + 1]] for i in range(len(cuts) - 1)]
        eos, eog = (self.ids.eos, self.ids.eog) if self.end_tokens else (None, None)
        unmasked = [self._unlay(p, None) for p in pieces[:n]] + [self._unlay(pieces[n], eos)]
        masked = [self._unlay(p, eog) for p in pieces[n + 1 :]]
        out, spans, t = [], [], 0
        for i in range(n):
            out += [unmasked[i], masked[i]]
            t += unmasked[i].shape[1]
            spans.append((t, t + masked[i].shape[1]))
            t = spans[-1][1]
        out.append(unmasked[n])
        return torch.cat(out, dim=1), spans

    # -- batches -------------------------------------------------------------------------
    def rearrange(self, codes: torch.Tensor, spans: Sequence[Spans], lengths: torch.Tensor | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
        """codes [B, K, T] (row b holds lengths[b] frames), spans per row → (stream [B, K, S], lengths [B])."""
        b, _, t = codes.shape
        if len(spans) != b:
            raise ValueError(f"need one span list per row: {len(spans)} for {b} rows")
        lens = [t] * b if lengths is None else lengths.tolist()
        return _pad_rows([self.rearrange_row(codes[i, :, : lens[i]], spans[i]) for i in range(b)], self.ids.empty)

    def restore(self, stream: torch.Tensor, lengths: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, list[list[tuple[int, int]]]]:
        """stream [B, K, S] (row b holds lengths[b] steps) → (codes [B, K, T], lengths [B], spans per row)."""
        lens = [stream.shape[-1]] * stream.shape[0] if lengths is None else lengths.tolist()
        rows = [self.restore_row(stream[i, :, : lens[i]]) for i in range(stream.shape[0])]
        codes, frame_lengths = _pad_rows([r[0] for r in rows], self.ids.empty)
        return codes, frame_lengths, [r[1] for r in rows]


def voicecraft_layout(ids: SpecialIds, num_codebooks: int) -> CausalMasking:
    """VoiceCraft's token rearrangement: causal masking with delays 0..K-1 per segment, eog after
    every span and eos at the true end (``ids`` must have eog)."""
    return CausalMasking(ids, DelayPattern(num_codebooks), end_tokens=True)


def _pad_rows(rows: list[torch.Tensor], fill: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows [K, S_i] → (right-padded [B, K, max S_i], lengths [B])."""
    lengths = torch.tensor([r.shape[1] for r in rows], dtype=torch.long)
    out = rows[0].new_full((len(rows), rows[0].shape[0], max(r.shape[1] for r in rows)), fill)
    for i, r in enumerate(rows):
        out[i, :, : r.shape[1]] = r
    return out, lengths
