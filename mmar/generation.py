"""Autoregressive decoding on the kv-cache: prefill → decode_one_frame → decode_n_frames.

A *frame* here is one stream step carrying K codebook tokens (one per level), as laid out by
:class:`mmar.patterns.DelayPattern`. Sampling supports temperature (0 = greedy), top-k,
top-p, a repetition penalty and classifier-free guidance: with ``cfg_scale`` ≠ 1 the batch
holds the conditional rows first and the unconditional rows second ([2B, ...]); both halves
receive the same sampled tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .transformer import CausalTransformer, KVCache


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
    result is [2B, K], the B sampled tokens repeated for both halves. ``allowed`` bool [V] or
    [K, V] restricts the choice (e.g. to real codes, no special ids).
    """
    logits = logits.float()
    if cfg.cfg_scale != 1.0:
        cond, uncond = logits.chunk(2)
        logits = uncond + cfg.cfg_scale * (cond - uncond)
        history = None if history is None else history.chunk(2)[0]
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
            cum = sorted_logits.softmax(-1).cumsum(-1)
            drop = cum - sorted_logits.softmax(-1) > cfg.top_p  # keep the smallest set reaching top_p
            logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
        probs = logits.softmax(-1)
        tokens = torch.multinomial(probs.flatten(0, 1), 1, generator=generator).view(probs.shape[:2])
    return torch.cat([tokens, tokens]) if cfg.cfg_scale != 1.0 else tokens


@torch.no_grad()
def prefill(model: CausalTransformer, cache: KVCache, codes: torch.Tensor, prefix: torch.Tensor | None = None) -> torch.Tensor:
    """Write the prompt (prefix [B, P] and/or codes [B, K, S]) to the cache → logits of the next step [B, K, V]."""
    hidden = model(codes=codes, prefix=prefix, cache=cache)
    return model.logits(hidden[:, -1:])[:, 0]


@torch.no_grad()
def decode_one_frame(model: CausalTransformer, cache: KVCache, frame: torch.Tensor) -> torch.Tensor:
    """Append one frame of tokens [B, K] → logits of the next step [B, K, V]."""
    hidden = model(codes=frame[:, :, None], cache=cache)
    return model.logits(hidden)[:, 0]


@torch.no_grad()
def decode_n_frames(model: CausalTransformer, cache: KVCache, logits: torch.Tensor, n: int, cfg: SamplingConfig,
                    generator: torch.Generator | None = None, history: torch.Tensor | None = None,
                    constrain=None) -> torch.Tensor:
    """Sample n frames starting from ``logits`` [B, K, V] (from :func:`prefill`) → tokens [B, K, n].

    ``constrain(step, tokens [B, K]) → tokens`` may overwrite sampled tokens (e.g. force the
    empty id where the delay pattern has no value yet). ``history`` [B, K, H] seeds the
    repetition penalty (usually the prompt).
    """
    out = []
    hist = history if history is not None else logits.new_zeros((logits.shape[0], logits.shape[1], 0), dtype=torch.long)
    for step in range(n):
        tokens = sample(logits, cfg, generator, hist if cfg.repetition_penalty != 1.0 else None)
        if constrain is not None:
            tokens = constrain(step, tokens)
        out.append(tokens)
        if cfg.repetition_penalty != 1.0:
            hist = torch.cat([hist, tokens[:, :, None]], dim=-1)[..., -cfg.repetition_window :]
        if step + 1 < n:
            logits = decode_one_frame(model, cache, tokens)
    return torch.stack(out, dim=-1)


@torch.no_grad()
def generate_uncached(model: CausalTransformer, codes: torch.Tensor, n: int, cfg: SamplingConfig,
                      generator: torch.Generator | None = None, prefix: torch.Tensor | None = None) -> torch.Tensor:
    """Reference decoder: recompute the full forward at every step (no cache) → tokens [B, K, n].
    Used by the benchmark and the tests to check that cached decoding changes nothing."""
    out = []
    seq = codes
    for _ in range(n):
        hidden = model(codes=seq, prefix=prefix)
        tokens = sample(model.logits(hidden[:, -1:])[:, 0], cfg, generator)
        out.append(tokens)
        seq = torch.cat([seq, tokens[:, :, None]], dim=-1)
    return torch.stack(out, dim=-1)
