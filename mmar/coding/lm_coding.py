"""Conditional entropy coding of codec tokens under a causal Transformer (LMCodec style).

The coarse levels [L, T] are laid out with :class:`~mmar.patterns.DelayPattern` (delays
0..L-1): stream step s holds level k of frame s-k, so level k of a frame is coded after
levels < k of the same frame. Each step costs one Transformer step on the frame-level
kv-cache (sliding window of ``window`` steps), and the step's symbols are range-coded with
constriction under the step's distributions. Positions the pattern leaves empty cost nothing.
The stream is cut into chunks of ``chunk_steps`` steps, each its own range-coder message.

Rate-distortion optimised choice (encoder only, :class:`RateDistortion`): instead of the
nearest codebook vector, level k of a frame may take the code minimising squared error plus
λ × its cost in bits under the model — the residual VQ done inside the coding loop. The
decoder is unchanged: it decodes whichever codes were chosen.

Determinism: encoder and decoder run the *same* sequence of cached one-step forwards on one
thread (whatever the caller's thread count), and probabilities reach the coder as integers
(:func:`integer_pmf`), so a file decodes bit-exactly under any ``torch.set_num_threads``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

import numpy as np
import torch

from ..errors import ContainerError
from ..patterns import SpecialIds
from ..transformer import CausalTransformer, KVCache

PMF_BITS = 24  # probabilities are integers in [1, 2**24 + 1] before the coder renormalises them


def integer_pmf(logits: torch.Tensor, codebook_size: int) -> np.ndarray:
    """logits [K, V] → integer-valued float64 [K, codebook_size] (each ≥ 1; real codes only)."""
    p = torch.softmax(logits[:, :codebook_size].double(), dim=-1).numpy()
    return np.floor(p * (1 << PMF_BITS)) + 1.0


@contextlib.contextmanager
def single_thread():
    """Run torch on one thread inside the block, restoring the caller's setting after. Entered
    once per coding call: switching per step would rebuild the thread pool every step."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def present_levels(step: int, frames: int | None, levels: int) -> list[int]:
    """Levels holding a real code at stream ``step`` (``frames`` None = stream still open)."""
    return [k for k in range(levels) if step - k >= 0 and (frames is None or step - k < frames)]


class _Stepper:
    """One-step-at-a-time walk over the delayed stream; ``logits`` [L, V] predict the next step."""

    def __init__(self, model: CausalTransformer, window: int):
        self.model, self.ids, self.levels = model, SpecialIds(model.cfg.codebook_size), model.cfg.num_codebooks
        self.cache = KVCache(model.cfg, 1, capacity=window, window=window)
        self.step = 0
        self.logits = self._forward(torch.full((self.levels,), self.ids.empty))  # start step: all empty
        self.xent_bits = 0.0

    @torch.no_grad()
    def _forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.model.logits(self.model(codes=tokens.view(1, -1, 1), cache=self.cache))[0, 0]

    def pmf(self, present: list[int]) -> np.ndarray:
        return integer_pmf(self.logits[present], self.model.cfg.codebook_size)

    def advance(self, present: list[int], symbols: np.ndarray, pmf: np.ndarray) -> None:
        if present:
            self.xent_bits -= float(np.log2(pmf[np.arange(len(present)), symbols] / pmf.sum(-1)).sum())
        tokens = torch.full((self.levels,), self.ids.empty)
        tokens[present] = torch.from_numpy(symbols.astype(np.int64))
        self.step += 1
        self.logits = self._forward(tokens)


class RateDistortion:
    """Entropy-constrained residual VQ: level k of a frame gets
    ``argmin_c ||r_k − e_k(c)||² + λ · (−log2 p(c))``, r_k = the frame's latent minus the vectors
    already chosen for its levels < k, p = the entropy model's distribution for that symbol.
    λ = 0 is plain nearest-neighbour RVQ. ``books``: L codebooks [V, D]."""

    def __init__(self, books: list[torch.Tensor], lam: float):
        if not (lam >= 0 and np.isfinite(lam)):
            raise ValueError(f"λ must be a finite number ≥ 0, got {lam}")
        self.books = [b.double().numpy() for b in books]
        self.norms = [(b * b).sum(1) for b in self.books]
        self.lam = lam

    def choose(self, level: int, residual: np.ndarray, pmf: np.ndarray) -> int:
        """residual [D] (float64), integer pmf [V] → the chosen code."""
        dist = self.norms[level] - 2.0 * (self.books[level] @ residual)  # ||r - e||² minus the constant ||r||²
        return int(np.argmin(dist - self.lam * np.log2(pmf / pmf.sum())))


class LMEncoder:
    """push(codes [L, t]) → finished chunk payloads; flush() ends the stream. With ``rdo``,
    push the frames' unquantized latents [D, t] instead and the codes are chosen while coding."""

    def __init__(self, model: CausalTransformer, chunk_steps: int, window: int, rdo: RateDistortion | None = None):
        import constriction

        self._family = constriction.stream.model.Categorical(perfect=False)
        self._new = constriction.stream.queue.RangeEncoder
        self.stepper, self.chunk_steps = _Stepper(model, window), chunk_steps
        self.levels = model.cfg.num_codebooks
        self.rdo = rdo
        self.buf = np.zeros((self.levels, 0), dtype=np.int64)  # codes of the frames not yet fully coded
        # with rdo: [D, frames] latents minus the vectors chosen so far, aligned with buf
        self.residual = np.zeros((rdo.books[0].shape[1], 0)) if rdo else None
        self.buf_start = 0  # frame index of buf[:, 0]
        self.frames = 0
        self.enc = self._new()

    @property
    def xent_bits(self) -> float:
        return self.stepper.xent_bits

    def push(self, codes: np.ndarray, final: bool = False) -> list[bytes]:
        with single_thread():
            return self._push(codes, final)

    def _push(self, frames: np.ndarray, final: bool) -> list[bytes]:
        t = frames.shape[1]
        if self.rdo is None:
            self.buf = np.concatenate([self.buf, frames], axis=1)
        else:
            self.buf = np.concatenate([self.buf, np.zeros((self.levels, t), dtype=np.int64)], axis=1)
            self.residual = np.concatenate([self.residual, frames.astype(np.float64)], axis=1)
        self.frames += t
        end = self.frames + self.levels - 1 if final else self.frames
        out = []
        while self.stepper.step < end:
            s = self.stepper.step
            present = present_levels(s, self.frames if final else None, self.levels)
            pmf = self.stepper.pmf(present) if present else None
            if self.rdo is not None:
                for i, k in enumerate(present):
                    f = s - k - self.buf_start
                    self.buf[k, f] = c = self.rdo.choose(k, self.residual[:, f], pmf[i])
                    self.residual[:, f] -= self.rdo.books[k][c]
            sym = np.array([self.buf[k, s - k - self.buf_start] for k in present], dtype=np.int32)
            if present:
                self.enc.encode(sym, self._family, pmf)
            if (s + 1) % self.chunk_steps == 0 or (final and s + 1 == end):
                out.append(self.enc.get_compressed().astype("<u4").tobytes())
                self.enc = self._new()
            self.stepper.advance(present, sym, pmf)
        drop = max(0, self.stepper.step - self.levels + 1 - self.buf_start)  # frames fully coded
        self.buf, self.buf_start = self.buf[:, drop:], self.buf_start + drop
        if self.rdo is not None:
            self.residual = self.residual[:, drop:]
        return out

    def flush(self) -> list[bytes]:
        rows = self.levels if self.rdo is None else self.rdo.books[0].shape[1]
        return self.push(np.zeros((rows, 0), dtype=np.int64), final=True)


def lm_decode(model: CausalTransformer, payloads: Iterable[bytes], frames: int, chunk_steps: int,
              window: int, stats: dict | None = None) -> Iterator[np.ndarray]:
    """Chunk payloads of :class:`LMEncoder` → int64 [L, t] blocks of frames as they complete.

    ``stats["xent_bits"]`` receives the model cross-entropy of the decoded symbols. A chunk
    that does not decode raises :class:`ContainerError` naming the chunk.
    """
    with single_thread():  # held while suspended too: the caller's work between yields runs on one thread
        yield from _decode(model, payloads, frames, chunk_steps, window, stats)


def _decode(model, payloads, frames, chunk_steps, window, stats):
    import constriction

    family = constriction.stream.model.Categorical(perfect=False)
    st = _Stepper(model, window)
    levels = st.levels
    steps = frames + levels - 1 if frames else 0
    buf, buf_start, done = np.zeros((levels, 0), dtype=np.int64), 0, 0
    for c, payload in enumerate(payloads):
        if len(payload) % 4:
            raise ContainerError(f"chunk {c} is not a whole number of 32-bit words")
        if st.step >= steps:
            raise ContainerError(f"chunk {c} lies beyond the end of the coded stream")
        dec = constriction.stream.queue.RangeDecoder(np.frombuffer(payload, dtype="<u4").astype(np.uint32))
        end = min(steps, st.step + chunk_steps)
        grow = min(end, frames) - (buf_start + buf.shape[1])  # frames this chunk starts
        buf = np.concatenate([buf, np.zeros((levels, max(0, grow)), dtype=np.int64)], axis=1)
        while st.step < end:
            s = st.step
            present = present_levels(s, frames, levels)
            pmf = st.pmf(present) if present else None
            try:
                sym = dec.decode(family, pmf) if present else np.zeros(0, dtype=np.int32)
            except Exception as e:  # a damaged payload can make the coder fail outright
                raise ContainerError(f"chunk {c} is damaged ({type(e).__name__})") from None
            for k, v in zip(present, sym):
                buf[k, s - k - buf_start] = v
            st.advance(present, sym, pmf)
        complete = frames if st.step >= steps else max(0, st.step - levels + 1)
        if complete > done:
            yield buf[:, done - buf_start : complete - buf_start].copy()
            buf, buf_start, done = buf[:, complete - buf_start :], complete, complete
        if stats is not None:
            stats["xent_bits"] = st.xent_bits
    if st.step < steps:
        raise ContainerError(f"file ends after {st.step} of {steps} coded steps")
