"""The one causal Transformer every mmar task runs on, and its frame-level kv-cache.

Reads top to bottom: config + presets → RMSNorm → rotary positions → attention → MLP →
block → :class:`CausalTransformer` (input adapters, trunk, heads) → :class:`KVCache`.

Visibility is expressed with *frame ids*, one per token: token ``i`` attends to token ``j``
iff ``frame[j] <= frame[i]`` (and, with a sliding window of W frames, ``frame[j] > frame[i] - W``).
Every mask kind is a choice of frame ids (:func:`frame_ids`):

- causal: each token is its own frame;
- prefix-bidirectional: the conditioning prefix is one frame (it sees itself whole);
- block-causal: N consecutive tokens form a frame (a video frame, say).

Shapes: B batch, K codebooks, S tokens (stream steps), P prefix tokens, D width, H heads.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass(frozen=True)
class TransformerConfig:
    """Hyper-parameters. ``vocab`` per codebook = ``codebook_size + n_special`` (see patterns.SpecialIds)."""

    dim: int = 256
    n_layers: int = 6
    n_heads: int = 4
    mlp_hidden: int = 0  # 0 → SwiGLU default: 8/3 · dim rounded up to a multiple of 64
    num_codebooks: int = 4  # K input embeddings summed per step, K output heads
    out_codebooks: int = 0  # > 0: this many output heads instead of K (inputs and outputs differ)
    codebook_size: int = 1024
    n_special: int = 5  # empty, eos, mask×3 (patterns.SpecialIds)
    latent_dim: int = 0  # > 0: continuous latents [B, S, latent_dim] can be fed through a linear adapter
    prefix_vocab: int = 0  # > 0: conditioning ids [B, P] (text, phonemes, class) get their own embedding
    rope_base: float = 10000.0
    norm_eps: float = 1e-5
    init_std: float = 0.02

    @property
    def vocab(self) -> int:
        return self.codebook_size + self.n_special

    @property
    def heads_k(self) -> int:
        """Number of output heads."""
        return self.out_codebooks or self.num_codebooks

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    @property
    def hidden(self) -> int:
        return self.mlp_hidden or (int(8 * self.dim / 3) + 63) // 64 * 64


PRESETS: dict[str, TransformerConfig] = {
    "debug": TransformerConfig(dim=32, n_layers=2, n_heads=2, num_codebooks=2, codebook_size=16),
    "small": TransformerConfig(dim=256, n_layers=6, n_heads=4),
    "base": TransformerConfig(dim=512, n_layers=12, n_heads=8),
}


def preset(name: str, **overrides) -> TransformerConfig:
    """A named preset with fields overridden, e.g. ``preset("small", num_codebooks=3)``."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
    return replace(PRESETS[name], **overrides)


def frame_ids(n: int, tokens_per_frame: int = 1, prefix_len: int = 0, start: int = 0) -> torch.Tensor:
    """Frame id of each of n tokens [n] (int64).

    Worked example: n=7, tokens_per_frame=2, prefix_len=3, start=0 → [0, 0, 0, 1, 1, 2, 2]:
    the prefix is frame 0 (bidirectional), then frames of two tokens (block-causal).
    """
    idx = torch.arange(n)
    body = start + (1 if prefix_len else 0) + (idx - prefix_len).div(tokens_per_frame, rounding_mode="floor")
    return torch.where(idx < prefix_len, torch.full_like(idx, start), body)


def visibility(q_frames: torch.Tensor, k_frames: torch.Tensor, window: int | None = None) -> torch.Tensor:
    """Boolean mask [n_q, n_k]: True where a query may attend a key (same or earlier frame, within the window)."""
    diff = q_frames[:, None] - k_frames[None, :]
    ok = diff >= 0
    if window is not None:
        ok &= diff < window
    return ok


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rope_tables(positions: torch.Tensor, head_dim: int, base: float) -> tuple[torch.Tensor, torch.Tensor]:
    """positions [S] → (cos, sin) [S, head_dim/2] for angles position · base^(-2i/head_dim)."""
    inv = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float32, device=positions.device) / head_dim)
    ang = positions.to(torch.float32)[:, None] * inv[None]
    return ang.cos(), ang.sin()


def rotary(x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Rotate channel pairs of x [B, H, S, hd] by the angles of ``rope`` (from :func:`rope_tables`)."""
    cos, sin = rope
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).flatten(-2)


class Attention(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.cfg = cfg
        self.qkv = nn.Linear(cfg.dim, 3 * cfg.dim, bias=False)
        self.proj = nn.Linear(cfg.dim, cfg.dim, bias=False)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor], mask: torch.Tensor | None,
                cache: KVCache | None, layer: int) -> torch.Tensor:
        """x [B, S, D]; rope tables [S, hd/2]; mask [S, S] (no cache) — with a cache the mask comes from it."""
        b, s, _ = x.shape
        q, k, v = self.qkv(x).view(b, s, 3, self.cfg.n_heads, self.cfg.head_dim).permute(2, 0, 3, 1, 4)
        q, k = rotary(q, rope), rotary(k, rope)
        if cache is not None:
            k, v, mask = cache.update(layer, k, v)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.proj(y.transpose(1, 2).reshape(b, s, -1))


class SwiGLU(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.gate_up = nn.Linear(cfg.dim, 2 * cfg.hidden, bias=False)
        self.down = nn.Linear(cfg.hidden, cfg.dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(F.silu(gate) * up)


class Block(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.attn_norm, self.mlp_norm = RMSNorm(cfg.dim, cfg.norm_eps), RMSNorm(cfg.dim, cfg.norm_eps)
        self.attn, self.mlp = Attention(cfg), SwiGLU(cfg)

    def forward(self, x, rope, mask, cache, layer):
        x = x + self.attn(self.attn_norm(x), rope, mask, cache, layer)
        return x + self.mlp(self.mlp_norm(x))


class CausalTransformer(nn.Module):
    """Pre-norm decoder-only Transformer with codebook, latent and prefix input adapters and K heads.

    ``forward`` takes any of: ``codes`` int64 [B, K, S] (the K embeddings of a step are summed),
    ``latents`` float [B, S, latent_dim], ``prefix`` int64 [B, P] (placed before the stream and
    visible to itself whole). It returns hidden states [B, P + S, D]; :meth:`logits` maps them to
    [B, S', K, vocab].
    """

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.cfg = cfg
        self.code_emb = nn.Embedding(cfg.num_codebooks * cfg.vocab, cfg.dim)  # K tables stacked
        self.register_buffer("code_offsets", torch.arange(cfg.num_codebooks) * cfg.vocab, persistent=False)
        self.latent_in = nn.Linear(cfg.latent_dim, cfg.dim) if cfg.latent_dim else None
        self.prefix_emb = nn.Embedding(cfg.prefix_vocab, cfg.dim) if cfg.prefix_vocab else None
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.heads = nn.Linear(cfg.dim, cfg.heads_k * cfg.vocab, bias=False)  # K heads fused
        self.apply(self._init)

    def _init(self, m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=self.cfg.init_std)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)

    def embed(self, codes: torch.Tensor | None = None, latents: torch.Tensor | None = None,
              prefix: torch.Tensor | None = None) -> torch.Tensor:
        """Inputs → embeddings [B, P + S, D] (prefix first; codes and latents are summed if both given)."""
        parts, x = [], None
        if prefix is not None:
            if self.prefix_emb is None:
                raise ValueError("this model has no prefix embedding (prefix_vocab=0)")
            parts.append(self.prefix_emb(prefix))
        if codes is not None:
            x = self.code_emb(codes + self.code_offsets[None, :, None]).sum(1)  # [B, S, D]
        if latents is not None:
            if self.latent_in is None:
                raise ValueError("this model has no latent adapter (latent_dim=0)")
            x = self.latent_in(latents) if x is None else x + self.latent_in(latents)
        if x is not None:
            parts.append(x)
        return torch.cat(parts, dim=1)

    def forward(self, codes: torch.Tensor | None = None, latents: torch.Tensor | None = None,
                prefix: torch.Tensor | None = None, tokens_per_frame: int = 1, window: int | None = None,
                cache: KVCache | None = None) -> torch.Tensor:
        """→ hidden [B, P + S, D]. Without a cache: a full forward with the mask given by
        ``prefix``/``tokens_per_frame``/``window``. With a cache: the tokens are appended (whole
        frames) and attend to what the cache holds; the cache's own layout and window apply."""
        x = self.embed(codes, latents, prefix)
        n, p = x.shape[1], 0 if prefix is None else prefix.shape[1]
        if cache is None:
            frames, positions = frame_ids(n, tokens_per_frame, p), torch.arange(n, device=x.device)
            mask = visibility(frames, frames, window).to(x.device)
        else:
            positions, mask = cache.reserve(n, p), None
        rope = rope_tables(positions, self.cfg.head_dim, self.cfg.rope_base)
        for i, layer in enumerate(self.layers):
            x = layer(x, rope, mask, cache, i)
        return self.norm(x)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden [B, S, D] → logits [B, S, K, vocab] (K = ``cfg.heads_k``)."""
        b, s, _ = hidden.shape
        return self.heads(hidden).view(b, s, self.cfg.heads_k, self.cfg.vocab)


class KVCache(nn.Module):
    """Static, preallocated keys/values for every layer, appended one or more whole frames at a time.

    Slots form a ring of ``capacity`` tokens; each slot remembers its token's frame id and
    position (tensors), so attention masks are rebuilt from data, not from Python counters.
    With ``window`` (frames), a query sees only the last ``window`` frames, and the ring can be
    as small as ``(window + max_frames_per_append - 1) * tokens_per_frame`` for unbounded streams.
    Without a window, ``capacity`` bounds the total length.
    """

    def __init__(self, cfg: TransformerConfig, batch: int, capacity: int, tokens_per_frame: int = 1,
                 window: int | None = None, dtype: torch.dtype = torch.float32, device=None):
        super().__init__()
        self.capacity, self.tokens_per_frame, self.window = capacity, tokens_per_frame, window
        shape = (cfg.n_layers, batch, cfg.n_heads, capacity, cfg.head_dim)
        self.register_buffer("k", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        self.register_buffer("v", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        self.register_buffer("slot_frame", torch.full((capacity,), -1, dtype=torch.long, device=device), persistent=False)
        self.register_buffer("next_pos", torch.zeros((), dtype=torch.long, device=device), persistent=False)
        self.register_buffer("next_frame", torch.zeros((), dtype=torch.long, device=device), persistent=False)
        self._slots = self._mask = None
        self._used = 0

    def reset(self) -> None:
        self.slot_frame.fill_(-1)
        self.next_pos.zero_()
        self.next_frame.zero_()

    def reserve(self, n: int, prefix_len: int = 0) -> torch.Tensor:
        """Claim slots for n new tokens (a prefix frame of ``prefix_len`` tokens, then whole frames).
        Returns their positions [n]; the layers then call :meth:`update`."""
        body = n - prefix_len
        if body % self.tokens_per_frame:
            raise ValueError(f"append whole frames: {body} tokens is not a multiple of {self.tokens_per_frame}")
        pos0 = int(self.next_pos)
        if self.window is None and pos0 + n > self.capacity:
            raise ValueError(f"kv-cache full: {pos0 + n} tokens > capacity {self.capacity} (set a window)")
        frames = frame_ids(n, self.tokens_per_frame, prefix_len, int(self.next_frame)).to(self.k.device)
        if self.window is not None:
            oldest_needed = int(frames[0]) - self.window + 1
            evicted = self.slot_frame[(pos0 + torch.arange(n, device=self.k.device)) % self.capacity]
            if n > self.capacity or ((evicted >= 0) & (evicted >= oldest_needed)).any():
                raise ValueError("kv-cache ring too small for this append and window; raise capacity")
        positions = pos0 + torch.arange(n, device=self.k.device)
        self._slots = positions % self.capacity
        self.slot_frame[self._slots] = frames
        # without a window the ring never wraps: attend only to the slots written so far
        self._used = self.capacity if self.window is not None else pos0 + n
        used = self.slot_frame[: self._used]
        self._mask = visibility(frames, used, self.window) & (used >= 0)[None]
        self.next_pos += n
        self.next_frame.copy_(frames[-1] + 1)
        return positions

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Write k, v [B, H, n, hd] into the reserved slots → (all keys, all values, mask [n, capacity])."""
        self.k[layer][:, :, self._slots] = k
        self.v[layer][:, :, self._slots] = v
        return self.k[layer][:, :, : self._used], self.v[layer][:, :, : self._used], self._mask
