"""THE decoding loops: every autoregressive user of the Transformer runs through this module
(the LM entropy coder, the fine-token generator, and TTS, image and video generation).

Three layers, each usable on its own:

- a **stepper** runs the model on new tokens and returns their logits: :class:`CachedStepper`
  (the frame-level kv-cache; one step takes ``[B, K, N]`` tokens, N ≥ 1, so block-causal frames
  and whole blocks work) and :class:`UncachedStepper` (the reference: recomputes a full forward
  per row every step);
- a **chooser** turns the logits of one step into tokens: :class:`Sampler` (temperature, top-k,
  top-p, repetition penalty, classifier-free guidance, allowed ids per step) or any callable
  with the same signature (the entropy coder picks the symbols it codes);
- :func:`decode_loop` alternates them, applies a :class:`StopRule` and keeps a per-row
  ``finished`` mask; :func:`generate` wires all three for the common case.

Continuous tokens (VAE latents) use the same steppers with ``readout=hidden``: a continuous head
(:class:`mmar.heads.DiffusionHead`) samples each latent from the hidden state that predicts it,
and :func:`latent_loop` feeds it back. Frames of continuous tokens denoised in place (video) run
through :func:`denoise_frames` over a :class:`FrameCache` (clean context written once, peeked at
every denoising step) or its reference :class:`FrameRecompute`.

Classifier-free guidance: with ``cfg_scale`` ≠ 1 the batch holds the conditional rows first and
the unconditional rows second ([2B, ...]); both halves receive the same sampled tokens.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from .heads import DiffusionHead, guide, time_grid
from .transformer import CausalTransformer, KVCache

Chooser = Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor]
"""(step, logits [B, K, V], history [B, K, steps so far]) → tokens int64 [B, K]."""

AllowedIds = Callable[[int, torch.Tensor], "torch.Tensor | None"]
"""(step, history [B, K, steps so far]) → bool [K, V] or [B, K, V] of allowed ids (None: all)."""

Readout = Callable[[torch.Tensor], torch.Tensor]
"""What a stepper returns for hidden states [B, N, D]: ``model.logits`` (the default) for codebook
heads, :func:`hidden` for a continuous head that reads the hidden states itself."""

LogitsProcessor = Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor]
"""(step, logits [B, K, V], history [B, K, steps so far]) → logits of the same shape (e.g. moving
the probability of several ids onto one)."""


# -- steppers ------------------------------------------------------------------------------
def hidden(x: torch.Tensor) -> torch.Tensor:
    """The identity readout: steppers return hidden states [B, N, D] (continuous heads)."""
    return x


class CachedStepper:
    """The model on a kv-cache: each call appends tokens and returns their logits.

    ``capacity`` tokens per row (with a ``window`` in frames, the ring may be smaller and the
    stream unbounded); ``tokens_per_frame`` > 1 makes frames block-causal.
    """

    def __init__(self, model: CausalTransformer, batch: int, capacity: int, tokens_per_frame: int = 1,
                 window: int | None = None, readout: Readout | None = None):
        p = next(model.parameters())
        self.model, self.readout = model, readout or model.logits
        self.cache = KVCache(model.cfg, batch, capacity, tokens_per_frame, window, dtype=p.dtype, device=p.device)

    @torch.no_grad()
    def __call__(self, codes: torch.Tensor | None = None, prefix: torch.Tensor | None = None,
                 lengths: torch.Tensor | None = None, latents: torch.Tensor | None = None) -> torch.Tensor:
        """Append prefix [B, P] and/or codes [B, K, N] or latents [B, N, C] (row b: its first
        ``lengths[b]`` tokens, prefix included, are real) → readout of the new positions: logits
        [B, P + N, K, V] by default, hidden states [B, P + N, D] with ``readout=hidden``."""
        return self.readout(self.model(codes=codes, latents=latents, prefix=prefix, cache=self.cache, lengths=lengths))


class UncachedStepper:
    """Reference stepper: keeps each row's tokens and recomputes a full forward of every row at
    every call (no cache; rows of different lengths run one by one). Same interface and results
    as :class:`CachedStepper`, up to float rounding."""

    def __init__(self, model: CausalTransformer, batch: int, tokens_per_frame: int = 1, window: int | None = None,
                 readout: Readout | None = None):
        self.model, self.tokens_per_frame, self.window = model, tokens_per_frame, window
        self.readout = readout or model.logits
        self.prefix: list[torch.Tensor | None] = [None] * batch
        self.codes: list[torch.Tensor | None] = [None] * batch  # codes [1, K, n] or latents [1, n, C] per row

    @torch.no_grad()
    def __call__(self, codes: torch.Tensor | None = None, prefix: torch.Tensor | None = None,
                 lengths: torch.Tensor | None = None, latents: torch.Tensor | None = None) -> torch.Tensor:
        p = 0 if prefix is None else prefix.shape[1]
        n = p + (0 if codes is None else codes.shape[-1]) + (0 if latents is None else latents.shape[1])
        out = []
        for b in range(len(self.codes)):
            real = n if lengths is None else int(lengths[b])
            if prefix is not None:
                self.prefix[b] = prefix[b : b + 1]
            if codes is not None and real > p:
                new = codes[b : b + 1, :, : real - p]
                self.codes[b] = new if self.codes[b] is None else torch.cat([self.codes[b], new], dim=-1)
            if latents is not None and real > p:
                new = latents[b : b + 1, : real - p]
                self.codes[b] = new if self.codes[b] is None else torch.cat([self.codes[b], new], dim=1)
            seq = self.codes[b]
            stream = {} if seq is None else {"latents" if seq.is_floating_point() else "codes": seq}
            hidden = self.model(**stream, prefix=self.prefix[b], tokens_per_frame=self.tokens_per_frame, window=self.window)
            ro = self.readout(hidden[:, hidden.shape[1] - real :])
            out.append(torch.cat([ro, ro.new_zeros(1, n - real, *ro.shape[2:])], dim=1))
        return torch.cat(out)


Stepper = CachedStepper | UncachedStepper


def last_logits(logits: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
    """logits [B, N, K, V] of a (ragged) append → each row's last real step [B, K, V]."""
    if lengths is None:
        return logits[:, -1]
    return logits[torch.arange(logits.shape[0]), (lengths - 1).clamp_min(0)]


# -- choosing tokens -----------------------------------------------------------------------
@dataclass(frozen=True)
class SamplingConfig:
    temperature: float = 1.0  # 0 → greedy (argmax)
    top_k: int = 0  # 0 → off
    top_p: float = 1.0  # 1 → off
    repetition_penalty: float = 1.0  # 1 → off; >1 discourages tokens already in the recent history
    repetition_window: int = 64  # steps of history the penalty looks at
    cfg_scale: float = 1.0  # 1 → no guidance; batch is [cond; uncond] otherwise


def apply_repetition_penalty(logits: torch.Tensor, history: torch.Tensor, penalty: float) -> torch.Tensor:
    """logits [B, K, V], history int64 [B, K, H] → penalised logits (CTRL rule: positive ÷ p, negative × p)."""
    if penalty == 1.0 or history.numel() == 0:
        return logits
    seen = torch.zeros_like(logits, dtype=torch.bool).scatter_(-1, history.clamp(0, logits.shape[-1] - 1), True)
    return torch.where(seen, torch.where(logits > 0, logits / penalty, logits * penalty), logits)


def sample(logits: torch.Tensor, cfg: SamplingConfig, generator: torch.Generator | None = None,
           history: torch.Tensor | None = None, allowed: torch.Tensor | None = None) -> torch.Tensor:
    """Draw one token per row and codebook. logits [B, K, V] → tokens int64 [B, K].

    With classifier-free guidance (cfg_scale ≠ 1) logits are [2B, K, V] (cond first) and the
    result is [2B, K], the B sampled tokens repeated for both halves. ``history`` [B or 2B, K, H]
    feeds the repetition penalty; ``allowed`` bool [V], [K, V] or [B, K, V] restricts the choice.
    """
    logits = logits.float()
    if cfg.cfg_scale != 1.0:
        cond, uncond = logits.chunk(2)
        banned = torch.isneginf(cond) | torch.isneginf(uncond)  # masked ids stay masked (no inf - inf)
        logits = guide(logits, cfg.cfg_scale).masked_fill(banned, float("-inf"))
        history = None if history is None else history.chunk(2)[0]
        allowed = allowed.chunk(2)[0] if allowed is not None and allowed.dim() == 3 else allowed
    if history is not None:
        logits = apply_repetition_penalty(logits, history[..., -cfg.repetition_window :], cfg.repetition_penalty)
    if allowed is not None:
        logits = logits.masked_fill(~allowed.to(logits.device), float("-inf"))
    if cfg.temperature <= 0:
        tokens = logits.argmax(-1)
    else:
        logits = logits / cfg.temperature
        if cfg.top_k:
            kth = logits.topk(min(cfg.top_k, logits.shape[-1]), dim=-1).values[..., -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        if cfg.top_p < 1.0:
            sorted_logits, order = logits.sort(dim=-1, descending=True)
            probs = sorted_logits.softmax(-1)
            drop = probs.cumsum(-1) - probs > cfg.top_p  # keep the smallest set reaching top_p
            logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
        probs = logits.softmax(-1)
        tokens = torch.multinomial(probs.flatten(0, 1), 1, generator=generator).view(probs.shape[:2])
    return torch.cat([tokens, tokens]) if cfg.cfg_scale != 1.0 else tokens


@dataclass
class Sampler:
    """The standard chooser: :func:`sample` with a config, a seeded generator, an optional
    ``allowed`` hook (constraints per step), an optional ``process`` hook that rewrites the
    logits first, and a ``prompt`` history [B, K, H] that seeds the repetition penalty."""

    cfg: SamplingConfig = field(default_factory=SamplingConfig)
    generator: torch.Generator | None = None
    allowed: AllowedIds | None = None
    prompt: torch.Tensor | None = None
    process: LogitsProcessor | None = None

    def __call__(self, step: int, logits: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        if self.process is not None:
            logits = self.process(step, logits, history)
        hist = None
        if self.cfg.repetition_penalty != 1.0:
            hist = history if self.prompt is None else torch.cat([self.prompt.to(history), history], dim=-1)
        allowed = self.allowed(step, history) if self.allowed is not None else None
        return sample(logits, self.cfg, self.generator, hist, allowed)


# -- the loop ------------------------------------------------------------------------------
@dataclass(frozen=True)
class StopRule:
    """A row ends when codebook ``level`` emits ``end_id``; before ``min_steps`` steps that id is
    forbidden there. Ended rows emit ``fill_id`` (default: ``end_id``) on every codebook."""

    end_id: int
    level: int = 0
    min_steps: int = 0
    fill_id: int | None = None


@dataclass
class Generated:
    """tokens int64 [B, K, n] (n ≤ the steps asked for: the loop stops once every row ended);
    lengths [B]: steps up to and including each row's end token (n if it never ended);
    finished bool [B]; logits [B, K, V] predicting the step after the last, when fed (else None)."""

    tokens: torch.Tensor
    lengths: torch.Tensor
    finished: torch.Tensor
    logits: torch.Tensor | None = None


@torch.no_grad()
def decode_loop(stepper: Stepper, logits: torch.Tensor, steps: int, choose: Chooser, stop: StopRule | None = None,
                feed_last: bool = False, finished: torch.Tensor | None = None) -> Generated:
    """Run up to ``steps`` steps from ``logits`` [B, K, V] (the prediction for the first step).

    Each step: the stop rule masks the end id (min length), ``choose`` picks tokens [B, K], ended
    rows get the fill id, and the tokens are fed to ``stepper`` to predict the next step (the
    last step's tokens only with ``feed_last``, so a stream can be continued by another call;
    ended rows are fed as padding, so their cache stops growing). ``finished`` [B] marks rows
    that ended before this call.
    """
    b, dev = logits.shape[0], logits.device
    done = torch.zeros(b, dtype=torch.bool, device=dev) if finished is None else finished.clone()
    lengths = torch.full((b,), steps, dtype=torch.long, device=dev)
    history = torch.zeros(b, logits.shape[1], steps, dtype=torch.long, device=dev)
    n = 0
    for step in range(steps):
        if stop is not None and step < stop.min_steps:
            logits = logits.clone()
            logits[:, stop.level, stop.end_id] = float("-inf")
        tokens = choose(step, logits, history[..., :step])
        if stop is not None:
            fill = stop.end_id if stop.fill_id is None else stop.fill_id
            tokens = torch.where(done[:, None], torch.full_like(tokens, fill), tokens)
            ended = ~done & (tokens[:, stop.level] == stop.end_id)
            lengths = torch.where(ended, torch.full_like(lengths, step + 1), lengths)
        history[..., step] = tokens
        n = step + 1
        live = ~done
        if stop is not None:
            done = done | ended
        last = step + 1 == steps or bool(done.all())
        if last and not feed_last:
            break
        feed = None if bool(live.all()) else live.long()
        logits = last_logits(stepper(codes=tokens[:, :, None], lengths=feed), feed)
        if last:
            break
    return Generated(history[..., :n], lengths.clamp_max(n), done, logits if feed_last else None)


@torch.no_grad()
def fill_spans(stepper: Stepper, logits: torch.Tensor, lengths: list[int], marks: list[torch.Tensor],
               choose: Chooser | Sequence[Chooser], stop: StopRule | None = None) -> list[Generated]:
    """Infilling (CM3 / VoiceCraft): after a prompt that ends with the first span's announcing
    mask step, generate span after span. Span i gets up to ``lengths[i]`` steps (a ``stop`` rule
    may end it sooner, e.g. on eog); before span i > 0 the stepper is fed ``marks[i]`` [B, K, 1],
    the mask step announcing it. ``logits`` [B, K, V] predict span 0's first step. ``choose``:
    one chooser for every span, or one per span (e.g. rails that know each span's content).
    → one :class:`Generated` per span."""
    choosers = list(choose) if isinstance(choose, Sequence) else [choose] * len(lengths)
    if len(choosers) != len(lengths):
        raise ValueError(f"{len(choosers)} choosers for {len(lengths)} spans")
    out = []
    for i, n in enumerate(lengths):
        if i:
            logits = last_logits(stepper(codes=marks[i]))
        out.append(decode_loop(stepper, logits, n, choosers[i], stop, feed_last=i + 1 < len(lengths)))
        logits = out[-1].logits
    return out


@torch.no_grad()
def generate(model: CausalTransformer, prompt: torch.Tensor, steps: int, choose: Chooser | None = None,
             stop: StopRule | None = None, prefix: torch.Tensor | None = None, lengths: torch.Tensor | None = None,
             cached: bool = True, window: int | None = None) -> Generated:
    """Continue ``prompt`` codes [B, K, S] (row b: its first ``lengths[b]`` steps; right-padded)
    after an optional ``prefix`` [B, P] for up to ``steps`` steps.

    ``choose`` defaults to greedy decoding. ``cached=False`` runs the uncached reference with
    the same chooser and stop rule, for checking.
    """
    choose = choose or Sampler(SamplingConfig(temperature=0))
    b, p = prompt.shape[0], 0 if prefix is None else prefix.shape[1]
    total = None if lengths is None else lengths + p
    if cached:
        stepper: Stepper = CachedStepper(model, b, p + prompt.shape[-1] + steps, window=window)
    else:
        stepper = UncachedStepper(model, b, window=window)
    first = last_logits(stepper(codes=prompt, prefix=prefix, lengths=total), total)
    return decode_loop(stepper, first, steps, choose, stop)


LatentChooser = Callable[[int, torch.Tensor], torch.Tensor]
"""(step, hidden [B, D] of the position predicting this step) → latents [B, C] (e.g. a diffusion
head's sample; with CFG the rows are [cond; uncond] halves, both given the same sample)."""


@torch.no_grad()
def latent_loop(stepper: Stepper, hidden_state: torch.Tensor, steps: int, choose: LatentChooser) -> torch.Tensor:
    """Continuous tokens, one per step: ``choose`` turns the hidden state [B, D] predicting a step
    into a latent [B, C], which is fed back through ``stepper`` (built with ``readout=hidden``) to
    predict the next. The last latent is not fed. → latents [B, steps, C]."""
    out = []
    for step in range(steps):
        x = choose(step, hidden_state)
        out.append(x)
        if step + 1 < steps:
            hidden_state = stepper(latents=x[:, None])[:, -1]
    return torch.stack(out, dim=1)


# -- frames of continuous tokens, denoised in place (video) -------------------------------------
class FrameEmbedding(Protocol):
    """What a frame rollout adds to each frame's inputs, from the frames before it.

    ``state`` summarises the clean frames committed so far (None before the first); it must stay
    bounded in size however long the rollout, and :meth:`update` returns a new state without
    changing the old one (the reference context keeps one state per frame)."""

    def __call__(self, t: float | None, state: Any) -> torch.Tensor:
        """(diffusion time t of a frame, or None for a clean frame (FAR's clean-context timestep);
        the state of the frames before it) → per-token vectors [rows, N, D] added to its inputs."""

    def update(self, state: Any, z: torch.Tensor) -> Any:
        """The state after the clean frame z [rows, N, C] is committed."""


class FrameCache:
    """The clean context of a frame rollout on a kv-cache: the prefix and each finished frame are
    written once (:meth:`commit`); every denoising step of the next frame is a :meth:`peek` that
    attends to them without writing, so the context is computed once, not once per step. A
    ``window`` of W frames makes it a ring of W frames plus the prefix (the cache's sink)."""

    def __init__(self, model: CausalTransformer, prefix: torch.Tensor, tokens_per_frame: int, window: int,
                 embedding: FrameEmbedding):
        p, n = prefix.shape[1], tokens_per_frame
        self.model, self.embedding, self.last, self.state = model, embedding, None, None
        self.cache = KVCache(model.cfg, prefix.shape[0], p + (window + 1) * n, n, window=window, sink=p,
                             dtype=next(model.parameters()).dtype, device=prefix.device)
        model(prefix=prefix, cache=self.cache)

    @torch.no_grad()
    def peek(self, x: torch.Tensor, t: float) -> torch.Tensor:
        """A noisy frame x [rows, N, C] at time t → hidden states [rows, N, D] (nothing is written)."""
        return self.model(latents=x, extra=self.embedding(t, self.state), cache=self.cache, commit=False)

    @torch.no_grad()
    def commit(self, z: torch.Tensor) -> None:
        """Write a clean frame z [rows, N, C] to the cache."""
        self.model(latents=z, extra=self.embedding(None, self.state), cache=self.cache)
        self.last, self.state = z, self.embedding.update(self.state, z)

    @property
    def last_frame(self) -> torch.Tensor | None:
        """The last committed frame [rows, N, C] (None before the first)."""
        return self.last


class FrameRecompute:
    """The reference for :class:`FrameCache`: keeps every clean frame and its state and, at every
    peek, recomputes the full forward of prefix + clean frames + the noisy frame under the same
    window and sink. Same hidden states up to float rounding; cost grows with the rollout."""

    def __init__(self, model: CausalTransformer, prefix: torch.Tensor, tokens_per_frame: int, window: int,
                 embedding: FrameEmbedding):
        self.model, self.prefix, self.n, self.window, self.embedding = model, prefix, tokens_per_frame, window, embedding
        self.frames: list[torch.Tensor] = []
        self.states: list = [None]  # states[i]: of the frames before frame i

    @torch.no_grad()
    def peek(self, x: torch.Tensor, t: float) -> torch.Tensor:
        extra = torch.cat([self.embedding(None, self.states[i]) for i in range(len(self.frames))]
                          + [self.embedding(t, self.states[-1])], dim=1)
        h = self.model(latents=torch.cat([*self.frames, x], dim=1), prefix=self.prefix, tokens_per_frame=self.n,
                       extra=extra, window=self.window, sink=True)
        return h[:, -self.n:]

    def commit(self, z: torch.Tensor) -> None:
        self.frames.append(z)
        self.states.append(self.embedding.update(self.states[-1], z))

    @property
    def last_frame(self) -> torch.Tensor | None:
        return self.frames[-1] if self.frames else None


FrameContext = FrameCache | FrameRecompute


@torch.no_grad()
def denoise_frames(context: FrameContext, head: DiffusionHead, frames: int, shape: tuple[int, int, int], steps: int,
                   cfg_scale: float = 1.0, temperature: float | Callable[[], float] = 1.0,
                   generator: torch.Generator | None = None,
                   on_frame: Callable[[int, torch.Tensor], None] | None = None,
                   base: Callable[[], torch.Tensor | None] | None = None) -> torch.Tensor:
    """Frame after frame: start from noise [B, N, C] (``shape``) · ``temperature`` at t = 1, take
    ``steps`` ODE steps of ``head`` to t = 0 (each step a ``context.peek`` for the hidden states),
    then ``context.commit`` the clean frame. With ``cfg_scale`` ≠ 1 the context's rows are
    [cond; uncond] halves ([2B, ...]): both get the same frame and the prediction is guided
    (:func:`mmar.heads.guide`). With ``base`` (called before each frame → [B, N, C], or None for
    zeros) the head denoises the frame's change from it, and the trunk reads the base plus the noisy
    change (residual models: the frame before, or its motion-predicted successor). ``temperature``
    may be a callable, asked after ``base`` before each frame (e.g. lower once a motion is seen).
    ``on_frame(i, frame [B, N, C])`` sees each finished frame. → frames [B, frames, N, C]."""
    guided = cfg_scale != 1.0
    grid = time_grid(steps)
    out = []
    for f in range(frames):
        last = None if base is None else base()
        if last is not None and guided:
            last = torch.cat([last, last])
        x = torch.randn(shape, generator=generator) * (temperature() if callable(temperature) else temperature)
        for i in range(steps):
            xx = torch.cat([x, x]) if guided else x
            h = context.peek(xx if last is None else xx + last, grid[i])
            t = torch.full((xx.shape[0] * xx.shape[1],), grid[i])
            pred = head.predict(xx.flatten(0, 1), t, h.flatten(0, 1)).view_as(xx)
            x = head.step(x, guide(pred, cfg_scale) if guided else pred, grid[i], grid[i + 1])
        if last is not None:
            x = x + last[: shape[0]]
        context.commit(torch.cat([x, x]) if guided else x)
        out.append(x)
        if on_frame is not None:
            on_frame(f, x)
    return torch.stack(out, dim=1)
