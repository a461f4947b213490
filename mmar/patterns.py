"""Token-stream patterns: how codes [B, K, T] are laid out as the Transformer's stream.

- :class:`DelayPattern` (MusicGen/VoiceCraft "delayed stacking"): level k is shifted right by
  its delay, so with delays 0..K-1 level k of frame t is predicted after levels < k of frame t.
- :class:`CausalMasking` (CM3/VoiceCraft): spans are cut out, replaced by mask tokens, and
  appended at the end behind the same mask tokens, so a left-to-right model learns infilling.

Special ids sit just above the codebook: see :class:`SpecialIds`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class SpecialIds:
    """Ids above ``codebook_size``: empty (no value yet), end of stream, and mask tokens.

    With codebook_size 1024: empty 1024, eos 1025, masks 1026, 1027, 1028.
    """

    codebook_size: int
    max_spans: int = 3

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

    @property
    def count(self) -> int:
        return 2 + self.max_spans


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

    def valid(self, step: int) -> torch.Tensor:
        """bool [K]: which levels hold a real code (not the empty id) at stream step ``step``
        of a stream whose length is open-ended (only the left edge is empty)."""
        return torch.tensor([step >= d for d in self.delays])


class CausalMasking:
    """Move spans of a code sequence to its end, behind mask tokens (one mask id per span).

    Worked example (one level, spans [(1, 3)], mask id M0)::

        codes   [x0 x1 x2 x3]  →  stream [x0 M0 x3 M0 x1 x2]

    The first M0 marks where the span was; the second introduces its content. Several spans
    use M0, M1, M2 in order. Mask tokens fill all K levels of their step.

    rearrange: codes [K, T] + spans → stream [K, T + 2·n_spans]; restore: stream → codes [K, T].
    """

    def __init__(self, ids: SpecialIds):
        self.ids = ids

    def sample_spans(self, length: int, generator: torch.Generator, max_spans: int | None = None) -> list[tuple[int, int]]:
        """1..max_spans non-overlapping, non-empty, sorted spans [start, end) inside [0, length)."""
        max_spans = max(1, min(max_spans or self.ids.max_spans, self.ids.max_spans, (length + 1) // 2))
        n = int(torch.randint(1, max_spans + 1, (), generator=generator))
        cuts = torch.randperm(length + 1, generator=generator)[: 2 * n].sort().values.tolist()
        return [(cuts[2 * i], cuts[2 * i + 1]) for i in range(n)]  # distinct cuts: non-empty, disjoint

    def rearrange(self, codes: torch.Tensor, spans: list[tuple[int, int]]) -> torch.Tensor:
        """codes [K, T], sorted disjoint spans → stream [K, T + 2·len(spans)]."""
        k, t = codes.shape
        if not spans or len(spans) > self.ids.max_spans:
            raise ValueError(f"need 1..{self.ids.max_spans} spans")
        prev = 0
        for a, b in spans:
            if not (prev <= a < b <= t):
                raise ValueError(f"spans must be sorted, disjoint, non-empty and inside [0, {t}): {spans}")
            prev = b
        head, tail, prev = [], [], 0
        for i, (a, b) in enumerate(spans):
            m = codes.new_full((k, 1), self.ids.mask(i))
            head += [codes[:, prev:a], m]
            tail += [m, codes[:, a:b]]
            prev = b
        head.append(codes[:, prev:])
        return torch.cat(head + tail, dim=1)

    def restore(self, stream: torch.Tensor) -> torch.Tensor:
        """stream [K, S] from :meth:`rearrange` → codes [K, T]. Raises ValueError if malformed."""
        top = stream[0].tolist()
        n = sum(1 for x in top if x >= self.ids.mask(0) and x < self.ids.mask(0) + self.ids.max_spans) // 2
        marks = [[j for j, x in enumerate(top) if x == self.ids.mask(i)] for i in range(n)]
        if n == 0 or any(len(m) != 2 for m in marks):
            raise ValueError("stream does not hold a complete causal-masking layout")
        placeholders = [m[0] for m in marks]
        contents = [m[1] for m in marks] + [stream.shape[1]]
        pieces, prev = [], 0
        for i, p in enumerate(placeholders):
            pieces += [stream[:, prev:p], stream[:, contents[i] + 1 : contents[i + 1]]]
            prev = p + 1
        pieces.append(stream[:, prev : contents[0]])
        return torch.cat(pieces, dim=1)
