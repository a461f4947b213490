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

from .heads import CodebookEmbedding, CodebookHeads, codebook_vocab


@dataclass(frozen=True)
class TransformerConfig:
    """Hyper-parameters. Token vocabularies come from :mod:`mmar.heads` (``codebook_vocab``), so the
    config never counts special ids itself."""

    dim: int = 256
    n_layers: int = 6
    n_heads: int = 4
    mlp_hidden: int = 0  # 0 → SwiGLU default: 8/3 · dim rounded up to a multiple of 64
    vocab: tuple[int, ...] = codebook_vocab(1024, 4)  # one input embedding table per codebook (K = len)
    head_vocab: tuple[int, ...] | None = None  # output heads' vocab sizes; None → same as ``vocab``; () → no heads
    latent_dim: int = 0  # > 0: continuous latents [B, S, latent_dim] can be fed through a linear adapter
    prefix_vocab: int = 0  # > 0: conditioning ids [B, P] (text, phonemes, class) get their own embedding
    rope_base: float = 10000.0
    norm_eps: float = 1e-5
    init_std: float = 0.02

    def __post_init__(self):  # JSON gives lists
        object.__setattr__(self, "vocab", tuple(self.vocab))
        if self.head_vocab is not None:
            object.__setattr__(self, "head_vocab", tuple(self.head_vocab))

    @property
    def out_vocab(self) -> tuple[int, ...]:
        """Vocabulary sizes of the output heads (``head_vocab``, or ``vocab`` when that is None)."""
        return self.vocab if self.head_vocab is None else self.head_vocab

    @property
    def num_codebooks(self) -> int:
        """K: input codebooks summed per step."""
        return len(self.vocab)

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    @property
    def hidden(self) -> int:
        return self.mlp_hidden or (int(8 * self.dim / 3) + 63) // 64 * 64


TRUNK_BOUNDS = {"dim": (8, 8192), "n_layers": (1, 96), "n_heads": (1, 128), "mlp_hidden": (0, 65536)}
"""The trunk fields a task checkpoint's ``model`` section may hold, with their bounds."""


def checked_trunk(m: object, where: str = "config") -> dict:
    """A checkpoint's ``model`` section → the same dict, once every field is a known trunk field
    within :data:`TRUNK_BOUNDS` (checked before it sizes anything); :class:`MmarError` otherwise."""
    from .errors import MmarError

    if not isinstance(m, dict):
        raise MmarError(f"{where}: no model section")
    for k, v in m.items():
        lo, hi = TRUNK_BOUNDS.get(k, (None, None))
        if lo is None or isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            raise MmarError(f"{where}: model field {k}={v!r:.40} is unknown or out of range")
    return m


PRESETS: dict[str, TransformerConfig] = {
    "debug": TransformerConfig(dim=32, n_layers=2, n_heads=2, vocab=codebook_vocab(16, 2)),
    "small": TransformerConfig(dim=256, n_layers=6, n_heads=4),
    "base": TransformerConfig(dim=512, n_layers=12, n_heads=8),
}


def preset(name: str, **overrides) -> TransformerConfig:
    """A named preset with fields overridden, e.g. ``preset("small", vocab=codebook_vocab(1024, 3))``."""
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


def visibility(q_frames: torch.Tensor, k_frames: torch.Tensor, window: int | None = None,
               sink_frames: int = 0) -> torch.Tensor:
    """Boolean mask [..., n_q, n_k]: True where a query may attend a key (same or earlier frame,
    within the window unless the key's frame is one of the first ``sink_frames``, which stay
    visible, e.g. a caption; a key frame of -1 marks an empty cache slot).
    q_frames [..., n_q], k_frames [..., n_k]."""
    diff = q_frames[..., :, None] - k_frames[..., None, :]
    ok = (diff >= 0) & (k_frames >= 0)[..., None, :]
    if window is not None:
        ok &= (diff < window) | (k_frames < sink_frames)[..., None, :]
    return ok


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rope_tables(positions: torch.Tensor, head_dim: int, base: float) -> tuple[torch.Tensor, torch.Tensor]:
    """positions [..., S] → (cos, sin) [..., S, head_dim/2] for angles position · base^(-2i/head_dim)."""
    inv = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float32, device=positions.device) / head_dim)
    ang = positions.to(torch.float32)[..., None] * inv
    return ang.cos(), ang.sin()


def rotary(x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Rotate channel pairs of x [B, H, S, hd] by the angles of ``rope`` ([S, hd/2] or per row [B, S, hd/2])."""
    cos, sin = rope
    if cos.dim() == 3:
        cos, sin = cos[:, None], sin[:, None]
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).flatten(-2)


@dataclass
class AttentionPlan:
    """How every layer attends in one forward: rotary tables, and either SDPA's fused causal
    path (``causal``), a boolean ``mask`` ([S, S] or [B, 1, S, n_keys]), or a cache ``step``."""

    rope: tuple[torch.Tensor, torch.Tensor]
    mask: torch.Tensor | None = None
    causal: bool = False
    cache: KVCache | None = None
    step: CacheStep | None = None


class Attention(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.cfg = cfg
        self.qkv = nn.Linear(cfg.dim, 3 * cfg.dim, bias=False)
        self.proj = nn.Linear(cfg.dim, cfg.dim, bias=False)

    def forward(self, x: torch.Tensor, plan: AttentionPlan, layer: int) -> torch.Tensor:
        """x [B, S, D] → [B, S, D]; with a cache the new keys/values are written to it first."""
        b, s, _ = x.shape
        q, k, v = self.qkv(x).view(b, s, 3, self.cfg.n_heads, self.cfg.head_dim).permute(2, 0, 3, 1, 4)
        q, k = rotary(q, plan.rope), rotary(k, plan.rope)
        if plan.cache is not None:
            k, v = plan.cache.update(layer, k, v, plan.step)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=plan.mask, is_causal=plan.causal)
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

    def forward(self, x: torch.Tensor, plan: AttentionPlan, layer: int) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x), plan, layer)
        return x + self.mlp(self.mlp_norm(x))


class CausalTransformer(nn.Module):
    """Pre-norm decoder-only Transformer with codebook, latent and prefix input adapters and K heads.

    ``forward`` takes any of: ``codes`` int64 [B, K, S] (the K embeddings of a step are summed),
    ``latents`` float [B, S, latent_dim], ``prefix`` int64 [B, P] (placed before the stream and
    visible to itself whole). It returns hidden states [B, P + S, D]; :meth:`logits` maps them to
    [B, S', K, V] through the heads (:class:`mmar.heads.CodebookHeads`).
    """

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.cfg = cfg
        self.code_emb = CodebookEmbedding(cfg.vocab, cfg.dim)
        self.latent_in = nn.Linear(cfg.latent_dim, cfg.dim) if cfg.latent_dim else None
        self.prefix_emb = nn.Embedding(cfg.prefix_vocab, cfg.dim) if cfg.prefix_vocab else None
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.heads = CodebookHeads(cfg.out_vocab, cfg.dim) if cfg.out_vocab else None
        self.apply(self._init)

    def _init(self, m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Embedding, CodebookEmbedding, CodebookHeads)):
            nn.init.normal_(m.weight, std=self.cfg.init_std)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)

    def embed(self, codes: torch.Tensor | None = None, latents: torch.Tensor | None = None,
              prefix: torch.Tensor | None = None, extra: torch.Tensor | None = None) -> torch.Tensor:
        """Inputs → embeddings [B, P + S, D] (prefix first; codes, latents and ``extra`` [B, S, D],
        per-token vectors such as diffusion-timestep embeddings, are summed where given)."""
        parts, x = [], None
        if prefix is not None:
            if self.prefix_emb is None:
                raise ValueError("this model has no prefix embedding (prefix_vocab=0)")
            parts.append(self.prefix_emb(prefix))
        if codes is not None:
            x = self.code_emb(codes)  # [B, S, D]
        if latents is not None:
            if self.latent_in is None:
                raise ValueError("this model has no latent adapter (latent_dim=0)")
            x = self.latent_in(latents) if x is None else x + self.latent_in(latents)
        if extra is not None:
            x = extra if x is None else x + extra
        if x is not None:
            parts.append(x)
        return torch.cat(parts, dim=1)

    def forward(self, codes: torch.Tensor | None = None, latents: torch.Tensor | None = None,
                prefix: torch.Tensor | None = None, tokens_per_frame: int = 1, window: int | None = None,
                cache: KVCache | None = None, lengths: torch.Tensor | None = None, commit: bool = True,
                extra: torch.Tensor | None = None, sink: bool = False, offset: int = 0) -> torch.Tensor:
        """→ hidden [B, P + S, D].

        Without a cache: a full forward with the mask given by ``prefix``/``tokens_per_frame``/
        ``window`` (plain causal attention takes SDPA's fused causal path, no mask is built).
        With a cache: the tokens are appended and attend to what the cache holds, under the
        cache's own layout and window; ``lengths`` [B] (cache only) says how many of the S stream
        tokens of each row are real (right padding; the rest are written nowhere visible);
        ``commit=False`` attends to the cache without writing to it (:meth:`KVCache.reserve`);
        ``sink`` keeps the prefix visible beyond the ``window`` (as a cache with ``sink`` does);
        ``offset`` (no cache) moves the stream's positions, not the prefix's, that far on: the
        positions its tokens would hold after ``offset`` earlier stream tokens in a cache."""
        x = self.embed(codes, latents, prefix, extra)
        n, p = x.shape[1], 0 if prefix is None else prefix.shape[1]
        if cache is not None:
            step = cache.reserve(n, p, lengths, commit)
            plan = AttentionPlan(rope_tables(step.positions, self.cfg.head_dim, self.cfg.rope_base), step.mask, cache=cache, step=step)
        else:
            if lengths is not None:
                raise ValueError("lengths needs a cache (a full forward takes equal-length rows)")
            pos = torch.arange(n, device=x.device)
            rope = rope_tables(torch.where(pos < p, pos, pos + offset), self.cfg.head_dim, self.cfg.rope_base)
            if p == 0 and tokens_per_frame == 1 and window is None:
                plan = AttentionPlan(rope, causal=True)
            else:
                frames = frame_ids(n, tokens_per_frame, p).to(x.device)
                plan = AttentionPlan(rope, visibility(frames, frames, window, int(sink and p > 0)))
        for i, layer in enumerate(self.layers):
            x = layer(x, plan, i)
        return self.norm(x)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden [B, S, D] → logits [B, S, K, V] (K heads; V the largest head vocabulary)."""
        if self.heads is None:
            raise ValueError("this model has no codebook heads (head_vocab=())")
        return self.heads(hidden)


@dataclass
class CacheStep:
    """What :meth:`KVCache.reserve` hands to every layer's :meth:`KVCache.update` for one append of n tokens.

    slots / positions: int64 [B, n] (ring slot and rotary position of each token);
    mask: bool [B, 1, n, capacity], or [n, capacity] when every row sees the same slots (which cached slots each new token attends to);
    with ``commit=False`` (a peek) the tokens are written nowhere: their keys are appended after the
    cache's for this forward only, and the mask is [B, 1, n, capacity + n] or [n, capacity + n].
    """

    slots: torch.Tensor
    positions: torch.Tensor
    mask: torch.Tensor
    commit: bool = True


class KVCache(nn.Module):
    """Static, preallocated keys/values for every layer, with positions and frames kept per row.

    Slots form a ring of ``capacity`` tokens; each row remembers, per slot, the frame id of its
    token (-1: nothing visible there), so attention masks are rebuilt from data, never from
    Python counters, and every step attends to all ``capacity`` slots (fixed shapes). Rows
    advance independently: ``lengths`` [B] counts the tokens each row holds, so a batch can hold
    prompts of different lengths, and a row that has ended can stop growing (append with
    length 0). With ``window`` (frames), a query sees only the last ``window`` frames of its row,
    and the ring can be as small as ``(window + max_frames_per_append - 1) * tokens_per_frame``
    (plus ``sink``) for unbounded streams. Without a window, ``capacity`` bounds every row's length.
    ``sink`` > 0: the first ``sink`` tokens of every row (a caption prefix, written first) are
    kept outside the ring and stay visible whatever the window (attention sinks, StreamingLLM).
    """

    def __init__(self, cfg: TransformerConfig, batch: int, capacity: int, tokens_per_frame: int = 1,
                 window: int | None = None, dtype: torch.dtype = torch.float32, device=None, sink: int = 0):
        super().__init__()
        if not 0 <= sink < capacity:
            raise ValueError(f"sink must be 0..capacity − 1, got {sink}")
        self.capacity, self.tokens_per_frame, self.window, self.sink = capacity, tokens_per_frame, window, sink
        self.sink_frames = 0  # frames that lie wholly in the sink (known once written)
        shape = (cfg.n_layers, batch, cfg.n_heads, capacity, cfg.head_dim)
        self.register_buffer("k", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        self.register_buffer("v", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        self.register_buffer("slot_frame", torch.full((batch, capacity), -1, dtype=torch.long, device=device), persistent=False)
        self.register_buffer("lengths", torch.zeros(batch, dtype=torch.long, device=device), persistent=False)
        self.register_buffer("next_frame", torch.zeros(batch, dtype=torch.long, device=device), persistent=False)

    @property
    def batch(self) -> int:
        return self.k.shape[1]

    def reset(self) -> None:
        self.sink_frames = 0
        self.slot_frame.fill_(-1)
        self.lengths.zero_()
        self.next_frame.zero_()

    def reserve(self, n: int, prefix_len: int = 0, lengths: torch.Tensor | None = None, commit: bool = True) -> CacheStep:
        """Claim slots for n new tokens per row: a prefix frame of ``prefix_len`` tokens, then whole
        frames. ``lengths`` [B] (default n): how many of the n tokens of each row are real; the
        rest are padding that no token will see. → the :class:`CacheStep` the layers write with.

        ``commit=False`` peeks: the tokens get the positions and frames the next append would
        give them and attend to the cache and to each other (block-causally), but nothing is
        written and the cache's state does not move, so the same context serves any number of
        peeks (the denoising steps of a video frame) and is computed once."""
        dev, b = self.k.device, self.batch
        real = torch.full((b,), n, dtype=torch.long, device=dev) if lengths is None else lengths.to(dev, torch.long)
        if real.shape != (b,) or bool(((real < 0) | (real > n)).any()):
            raise ValueError(f"lengths must be [B={b}] values in 0..{n}")
        body = real - prefix_len
        if bool(((body < 0) & (real > 0)).any()) or bool((body.clamp_min(0) % self.tokens_per_frame).any()):
            raise ValueError(f"append whole frames: {body.tolist()} tokens after the prefix are not multiples of {self.tokens_per_frame}")
        idx = torch.arange(n, device=dev)
        positions = self.lengths[:, None] + idx  # [B, n]
        frames = self.next_frame[:, None] + frame_ids(n, self.tokens_per_frame, prefix_len).to(dev)[None]
        valid = idx[None] < real[:, None]
        if not commit:
            return self._peek(positions, frames, valid)
        if self.window is None and int(self.lengths.max()) + n > self.capacity:
            raise ValueError(f"kv-cache full: {int(self.lengths.max()) + n} tokens > capacity {self.capacity} (set a window)")
        ring = self.capacity - self.sink
        slots = torch.where(positions < self.sink, positions, self.sink + (positions - self.sink) % ring)
        if self.window is not None:
            oldest = frames[:, :1] - self.window + 1
            evicted = self.slot_frame.gather(1, slots)
            if n > ring or bool(((evicted >= 0) & (evicted >= oldest)).any()):
                raise ValueError("kv-cache ring too small for this append and window; raise capacity")
        slot_frame = torch.where(valid, frames, torch.full_like(frames, -1))
        self.slot_frame.scatter_(1, slots, slot_frame)
        if self.sink and bool((positions == self.sink - 1).any()):
            self.sink_frames = int(frames[positions == self.sink - 1].max()) + 1
        mask = visibility(frames, self.slot_frame, self.window, self.sink_frames)
        mask.scatter_(-1, slots[:, :, None], True)  # every token sees itself (padding too: no empty softmax rows)
        self.lengths += real
        last = frames.gather(1, (real - 1).clamp_min(0)[:, None])[:, 0] + 1
        self.next_frame.copy_(torch.where(real > 0, last, self.next_frame))
        # rows that see the same slots (one row, or prompts of equal length) share a 2-D mask
        # [n, capacity]: SDPA's CPU kernel runs it ~5x faster than [B, 1, n, capacity]
        shared = b == 1 or bool((mask == mask[:1]).all())
        return CacheStep(slots, positions, mask[0] if shared else mask[:, None])

    def _peek(self, positions: torch.Tensor, frames: torch.Tensor, valid: torch.Tensor) -> CacheStep:
        old = visibility(frames, self.slot_frame, self.window, self.sink_frames)  # [B, n, capacity]
        new = visibility(frames, torch.where(valid, frames, torch.full_like(frames, -1)), self.window)
        new |= torch.eye(frames.shape[1], dtype=torch.bool, device=frames.device)  # no empty softmax rows
        mask = torch.cat([old, new], dim=-1)
        shared = self.batch == 1 or bool((mask == mask[:1]).all())
        return CacheStep(positions, positions, mask[0] if shared else mask[:, None], commit=False)

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor, step: CacheStep) -> tuple[torch.Tensor, torch.Tensor]:
        """Write k, v [B, H, n, hd] into the step's slots → (keys, values) [B, H, capacity, hd]
        (a peek writes nothing and returns [B, H, capacity + n, hd])."""
        if not step.commit:
            return torch.cat([self.k[layer], k], dim=2), torch.cat([self.v[layer], v], dim=2)
        rows = torch.arange(k.shape[0], device=k.device)[:, None]
        self.k[layer].transpose(1, 2)[rows, step.slots] = k.transpose(1, 2)
        self.v[layer].transpose(1, 2)[rows, step.slots] = v.transpose(1, 2)
        return self.k[layer], self.v[layer]

