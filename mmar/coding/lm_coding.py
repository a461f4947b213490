"""Conditional entropy coding of codec tokens under a causal Transformer (LMCodec style).

The coarse levels [L, T] are laid out with :class:`~mmar.patterns.DelayPattern` (delays
0..L-1; ``DelayPattern.holds`` says which (level, frame) a stream step holds), so level k of a
frame is coded after levels < k of the same frame. Each step is one step of
:func:`mmar.generation.decode_loop` on the frame-level kv-cache (sliding window of ``window``
steps) whose chooser codes the step's symbols: they are range-coded with
constriction under the step's distributions. Positions the pattern leaves empty cost nothing.
The stream is cut into chunks of ``chunk_steps`` steps, each its own range-coder message.

Rate-distortion optimised choice (encoder only, :class:`RateDistortion`): instead of the
nearest codebook vector, level k of a frame may take the code minimising squared error plus
λ × its cost in bits under the model — the residual VQ done inside the coding loop. The
decoder is unchanged: it decodes whichever codes were chosen.

Determinism: encoder and decoder run the *same* sequence of cached one-step forwards on one
thread (whatever the caller's thread count), and probabilities reach the coder as integers
(:func:`integer_pmf`). With the model in floats (an :class:`~mmar.transformer.CausalTransformer`)
that makes a file decode bit-exactly under any ``torch.set_num_threads`` on CPUs with the same
kernels only: BLAS and ``exp`` compute differently on AVX2 and AVX-512. With the model in
integers (an :class:`~mmar.integer_transformer.IntegerTransformer`, what files are written with
now) every probability is the same integer on every CPU, so a file decodes anywhere.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator

import numpy as np
import torch

from ..errors import ContainerError
from .. import fixed_point as fx
from ..generation import CachedStepper, decode_loop, last_logits
from ..heads import codebook_size_of
from ..integer_transformer import IntegerStepper, IntegerTransformer
from ..patterns import DelayPattern, SpecialIds
from ..transformer import CausalTransformer

PMF_BITS = 24  # probabilities are integers in [1, 2**24 + 1] before the coder renormalises them
# integer logits: log-probabilities in steps of 2**-8 nats; codes more than 17 nats below the
# best get the floor probability
PMF_RES, PMF_SPAN = 8, 17


def integer_pmf(logits: torch.Tensor, codebook_size: int) -> np.ndarray:
    """logits [K, V] → integer-valued float64 [K, codebook_size] (each ≥ 1; real codes only).

    Float logits: floor(softmax · 2**24) + 1. Integer logits (int64 at scale 2**FRAC, from
    :class:`~mmar.integer_transformer.IntegerTransformer`): round(2**24 · exp(logit − max)) + 1,
    the exponent in steps of 2**-PMF_RES nats, from a table of integers, so the same on every CPU."""
    logits = logits[:, :codebook_size]
    if logits.dtype == torch.int64:
        d = logits.amax(-1, keepdim=True) - logits
        return (fx.exp_steps(fx.shift_round(d, fx.FRAC - PMF_RES), PMF_RES, PMF_SPAN, PMF_BITS) + 1).double().numpy()
    p = torch.softmax(logits.double(), dim=-1).numpy()
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


class _CodedStream:
    """The entropy model walking the delayed stream one step at a time (through
    :func:`mmar.generation.decode_loop`), with a buffer of the frames not yet fully coded.

    Subclasses implement :meth:`symbols`: given the step's (level, frame) pairs and their integer
    pmfs, return the symbols coded there (the encoder picks and encodes them, the decoder decodes them).
    """

    def __init__(self, model: CausalTransformer | IntegerTransformer, window: int):
        self.levels = model.cfg.num_codebooks
        self.size = codebook_size_of(model.cfg.vocab[0])
        self.empty = SpecialIds(self.size).empty
        self.pattern = DelayPattern(self.levels)
        self.stepper = IntegerStepper(model, 1, window) if isinstance(model, IntegerTransformer) \
            else CachedStepper(model, 1, capacity=window, window=window)
        self.logits = last_logits(self.stepper(codes=torch.full((1, self.levels, 1), self.empty)))  # start step: all empty
        self.step = 0  # stream steps coded so far
        self.frames: int | None = None  # total frames, once known
        self.buf = np.zeros((self.levels, 0), dtype=np.int64)  # codes of frames buf_start, buf_start + 1, …
        self.buf_start = 0
        self.xent_bits = 0.0

    def symbols(self, held: list[tuple[int, int]], pmf: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def run(self, steps: int) -> None:
        """Code ``steps`` more stream steps."""
        if steps > 0:
            self.logits = decode_loop(self.stepper, self.logits, steps, self._choose, feed_last=True).logits

    def _choose(self, _step: int, logits: torch.Tensor, _history: torch.Tensor) -> torch.Tensor:
        held = self.pattern.holds(self.step, self.frames)
        tokens = torch.full((1, self.levels), self.empty)
        if held:
            pmf = integer_pmf(logits[0, [k for k, _ in held]], self.size)
            sym = self.symbols(held, pmf)
            self.xent_bits -= float(np.log2(pmf[np.arange(len(held)), sym] / pmf.sum(-1)).sum())
            for (k, f), v in zip(held, sym):
                self.buf[k, f - self.buf_start] = v
                tokens[0, k] = int(v)
        self.step += 1
        return tokens

    def grow(self, frames: int) -> None:
        """Make room for ``frames`` more frames in the buffer."""
        self.buf = np.concatenate([self.buf, np.zeros((self.levels, frames), dtype=np.int64)], axis=1)

    def complete(self) -> int:
        """Frames whose every level has been coded."""
        return self.pattern.complete_frames(self.step, self.frames)

    def take(self, upto: int) -> np.ndarray:
        """Remove and return the buffered frames before frame ``upto`` [L, upto - buf_start]."""
        out, self.buf = self.buf[:, : upto - self.buf_start], self.buf[:, upto - self.buf_start :]
        self.buf_start = upto
        return out


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


class LMEncoder(_CodedStream):
    """push(codes [L, t]) → finished chunk payloads; flush() ends the stream. With ``rdo``,
    push the frames' unquantized latents [D, t] instead and the codes are chosen while coding;
    ``on_frames`` sees the codes that were coded."""

    def __init__(self, model: CausalTransformer | IntegerTransformer, chunk_steps: int, window: int, rdo: RateDistortion | None = None,
                 on_frames: Callable[[np.ndarray], None] | None = None):
        import constriction

        super().__init__(model, window)
        self.on_frames = on_frames  # receives the codes [L, t] of every run of frames once fully coded
        self._family = constriction.stream.model.Categorical(perfect=False)
        self._new = constriction.stream.queue.RangeEncoder
        self.chunk_steps, self.rdo = chunk_steps, rdo
        # with rdo: [D, frames] latents minus the vectors chosen so far, aligned with buf
        self.residual = np.zeros((rdo.books[0].shape[1], 0)) if rdo else None
        self.pushed = 0  # frames pushed so far
        self.enc = self._new()
        self.out: list[bytes] = []

    def push(self, codes: np.ndarray, final: bool = False) -> list[bytes]:
        with single_thread():
            return self._push(codes, final)

    def _push(self, frames: np.ndarray, final: bool) -> list[bytes]:
        t = frames.shape[1]
        self.grow(t)
        if self.rdo is None:
            self.buf[:, self.buf.shape[1] - t :] = frames
        else:
            self.residual = np.concatenate([self.residual, frames.astype(np.float64)], axis=1)
        self.pushed += t
        if final:
            self.frames = self.pushed
        self.run((self.pattern.steps(self.pushed) if final else self.pattern.ready_steps(self.pushed)) - self.step)
        coded = self.take(self.complete())
        if self.on_frames is not None and coded.shape[1]:
            self.on_frames(coded)
        done = coded.shape[1]
        if self.rdo is not None:
            self.residual = self.residual[:, done:]
        out, self.out = self.out, []
        return out

    def symbols(self, held: list[tuple[int, int]], pmf: np.ndarray) -> np.ndarray:
        if self.rdo is not None:
            for i, (k, f) in enumerate(held):
                j = f - self.buf_start
                self.buf[k, j] = c = self.rdo.choose(k, self.residual[:, j], pmf[i])
                self.residual[:, j] -= self.rdo.books[k][c]
        sym = np.array([self.buf[k, f - self.buf_start] for k, f in held], dtype=np.int32)
        self.enc.encode(sym, self._family, pmf)
        return sym

    def _choose(self, step: int, logits: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        tokens = super()._choose(step, logits, history)
        last = self.frames is not None and self.step == self.pattern.steps(self.frames)
        if self.step % self.chunk_steps == 0 or last:
            self.out.append(self.enc.get_compressed().astype("<u4").tobytes())
            self.enc = self._new()
        return tokens

    def flush(self) -> list[bytes]:
        rows = self.levels if self.rdo is None else self.rdo.books[0].shape[1]
        return self.push(np.zeros((rows, 0), dtype=np.int64), final=True)

def lm_decode(model: CausalTransformer | IntegerTransformer, payloads: Iterable[bytes], frames: int, chunk_steps: int,
              window: int, stats: dict | None = None) -> Iterator[np.ndarray]:
    """Chunk payloads of :class:`LMEncoder` → int64 [L, t] blocks of frames as they complete.

    ``stats["xent_bits"]`` receives the model cross-entropy of the decoded symbols. A chunk
    that does not decode, is empty, or holds words its steps did not consume raises
    :class:`ContainerError` naming the chunk: every chunk the encoder writes holds at least one
    word, so the work (``chunk_steps`` steps per chunk) is bounded by the file's size.
    """
    with single_thread():  # held while suspended too: the caller's work between yields runs on one thread
        yield from _LMDecoder(model, window, frames).blocks(payloads, chunk_steps, stats)


def undecodable(chunk: int, why: str, portable: bool) -> str:
    """The one-line error for an LM chunk that passed its CRC but does not decode (``portable``:
    the file was coded with the integer model, which computes the same everywhere)."""
    if portable:
        return f"chunk {chunk} does not decode ({why}): its bytes pass their CRC, so the chunk was forged"
    return (f"chunk {chunk} does not decode ({why}): its bytes pass their CRC, so the language model here "
            "computes differently from where the file was encoded (files LM-coded in floats, written before "
            "integer coding, need the same CPU kernels, e.g. both AVX-512 or both AVX2), or the chunk was forged")


class _LMDecoder(_CodedStream):
    def __init__(self, model: CausalTransformer | IntegerTransformer, window: int, frames: int):
        import constriction

        super().__init__(model, window)
        self.family = constriction.stream.model.Categorical(perfect=False)
        self.frames, self.dec, self.chunk = frames, None, 0
        self.portable = isinstance(model, IntegerTransformer)

    def symbols(self, held: list[tuple[int, int]], pmf: np.ndarray) -> np.ndarray:
        try:
            return self.dec.decode(self.family, pmf)
        except Exception:  # a damaged payload can make the coder fail outright
            raise ContainerError(undecodable(self.chunk, "the range decoder failed", self.portable)) from None

    def blocks(self, payloads: Iterable[bytes], chunk_steps: int, stats: dict | None) -> Iterator[np.ndarray]:
        import constriction

        steps = self.pattern.steps(self.frames)
        for c, payload in enumerate(payloads):
            self.chunk = c
            if not payload or len(payload) % 4:
                raise ContainerError(f"chunk {c} is not a whole, nonzero number of 32-bit words")
            if self.step >= steps:
                raise ContainerError(f"chunk {c} lies beyond the end of the coded stream")
            self.dec = constriction.stream.queue.RangeDecoder(np.frombuffer(payload, dtype="<u4").astype(np.uint32))
            end = min(steps, self.step + chunk_steps)
            self.grow(self.pattern.started_frames(end, self.frames) - (self.buf_start + self.buf.shape[1]))
            self.run(end - self.step)
            if not self.dec.maybe_exhausted():
                raise ContainerError(undecodable(c, "data left after its last step", self.portable))
            done = self.complete()
            if done > self.buf_start:
                yield self.take(done).copy()
            if stats is not None:
                stats["xent_bits"] = self.xent_bits
        if self.step < steps:
            raise ContainerError(f"file ends after {self.step} of {steps} coded steps")
