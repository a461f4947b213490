"""Exact, portable inference of a :class:`~mmar.transformer.CausalTransformer` in integers.

:class:`IntegerTransformer` holds a trained model's weights in fixed point
(:mod:`mmar.fixed_point`) and runs the same computation (code embeddings, pre-norm blocks with
rotary attention and SwiGLU, final norm, codebook heads) with integer arithmetic only, so its
logits are the same bits on every CPU, whatever its vector width or maths library. That is what
range coding needs: the decoder must rebuild the encoder's probabilities exactly.
:class:`IntegerStepper` puts it on a sliding-window cache behind the stepper interface of
:mod:`mmar.generation`, so :func:`~mmar.generation.decode_loop` drives it like any other model.

Scope: code inputs (no prefix, no latents), causal attention (one token per frame) over the
last ``window`` tokens. The logits differ from the float model's by rounding (about 1e-3;
tested), and they are int64 at scale 2**FRAC.
"""

from __future__ import annotations

import hashlib
import math

import torch

from . import fixed_point as fx
from .transformer import CausalTransformer

ARITHMETIC_VERSION = "fixed-point-1"  # changes whenever the integer computation changes
NEG = -(1 << 40)  # logit of a padded (absent) head entry
# attention weights: exp(-(max score - score)), the exponent rounded to steps of 2**-8 and cut at
# 24 (e**-24 ≈ 4e-11), weights at scale 2**16; SCORE_SHIFT is the fixed point of the score scaling
SOFTMAX_RES, SOFTMAX_SPAN, SOFTMAX_BITS, SCORE_SHIFT = 8, 24, 16, 40


def integer_identity(weights: str) -> str:
    """The 8-hex-digit identity of ``weights`` run in integers (what an LM-coded file names)."""
    return hashlib.sha256(f"{weights}/{ARITHMETIC_VERSION}".encode()).hexdigest()[:8]


class IntegerTransformer:
    """A trained CausalTransformer in fixed point. ``cfg`` is the float model's config."""

    def __init__(self, model: CausalTransformer):
        cfg = model.cfg
        if cfg.head_dim % 2 or cfg.head_dim > 1 << 12 or not cfg.out_vocab:
            raise ValueError("integer inference needs an even head width of at most 4096 and codebook heads")
        self.cfg = cfg
        q = lambda w: torch.round(w.detach().double() * (1 << fx.FRAC)).long()  # noqa: E731
        self.emb, self.offsets = q(model.code_emb.weight), model.code_emb.offsets
        self.layers = []
        for blk in model.layers:  # each RMSNorm gain is folded into the weights that read its output
            self.layers.append({
                "qkv": fx.quantize_rows(blk.attn.qkv.weight.double() * blk.attn_norm.weight.double()),
                "proj": fx.quantize_rows(blk.attn.proj.weight),
                "gate_up": fx.quantize_rows(blk.mlp.gate_up.weight.double() * blk.mlp_norm.weight.double()),
                "down": fx.quantize_rows(blk.mlp.down.weight),
            })
        self.heads = fx.quantize_rows(model.heads.weight.double() * model.norm.weight.double())
        self.turns = fx.rope_turns(cfg.head_dim, cfg.rope_base)
        # a score difference d (scale 2**(2 FRAC)) is the exponent d / (2**(2 FRAC) sqrt(hd)), in steps
        # of 2**-SOFTMAX_RES: d * score_mul / 2**SCORE_SHIFT
        self.score_mul = math.isqrt((1 << 2 * (SCORE_SHIFT + SOFTMAX_RES - 2 * fx.FRAC)) // cfg.head_dim)

    def forward(self, codes: torch.Tensor, cache: IntegerCache) -> torch.Tensor:
        """codes int64 [B, K, N] appended to ``cache`` (causal among themselves) → logits int64
        [B, N, K, V] at scale 2**FRAC (V the largest head vocabulary; absent entries NEG)."""
        cfg = self.cfg
        b, _, n = codes.shape
        x = self.emb[codes + self.offsets[None, :, None]].sum(1)  # [B, N, D]
        pos = cache.length + torch.arange(n)
        cos, sin = fx.cos_sin(fx.rope_phases(pos, self.turns))  # [N, hd/2]
        visible = cache.visible(n)  # the same for every layer
        for i, layer in enumerate(self.layers):
            qkv = fx.linear(fx.rms_normalize(x, cfg.norm_eps), layer["qkv"])
            qh, kh, vh = qkv.view(b, n, 3, cfg.n_heads, cfg.head_dim).permute(2, 0, 3, 1, 4)  # [B, H, N, hd]
            kh, qh = (fx.rotate(t, cos, sin).clamp(-fx.QK_LIMIT, fx.QK_LIMIT) for t in (kh, qh))
            keys, values = cache.write(i, kh, vh.clamp(-fx.ACT_LIMIT, fx.ACT_LIMIT))
            y = self._attend(qh, keys, values, visible)  # [B, H, N, hd]
            x = (x + fx.linear(y.transpose(1, 2).reshape(b, n, -1), layer["proj"])).clamp(-fx.ACT_LIMIT, fx.ACT_LIMIT)
            gate, up = fx.linear(fx.rms_normalize(x, cfg.norm_eps), layer["gate_up"]).chunk(2, dim=-1)
            h = fx.shift_round(fx.silu(gate).clamp(-fx.ACT_LIMIT, fx.ACT_LIMIT) * up.clamp(-fx.ACT_LIMIT, fx.ACT_LIMIT), fx.FRAC)
            x = (x + fx.linear(h, layer["down"])).clamp(-fx.ACT_LIMIT, fx.ACT_LIMIT)
        cache.advance(n)
        flat = fx.linear(fx.rms_normalize(x, cfg.norm_eps), self.heads)  # [B, N, sum V]
        v = max(cfg.out_vocab)
        parts = [torch.nn.functional.pad(p, (0, v - p.shape[-1]), value=NEG) for p in flat.split(cfg.out_vocab, dim=-1)]
        return torch.stack(parts, dim=2)

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
        """q [B, H, N, hd], k/v [B, H, M, hd], visible bool [N, M] → [B, H, N, hd] (all int64)."""
        s = (q.double() @ k.double().transpose(-1, -2)).long()  # exact: |q|, |k| ≤ QK_LIMIT
        s = torch.where(visible, s, torch.full_like(s, -(1 << 62)))
        d = (s.amax(-1, keepdim=True) - s).clamp(0, 1 << 33)
        w = fx.exp_steps(fx.shift_round(d * self.score_mul, SCORE_SHIFT), SOFTMAX_RES, SOFTMAX_SPAN, SOFTMAX_BITS)
        w = torch.where(visible, w, torch.zeros_like(w))
        num = (w[..., None] * v[:, :, None]).sum(-2)  # [B, H, N, hd]
        return fx.div_round(num, w.sum(-1, keepdim=True))


class IntegerCache:
    """Rotated keys and values of the last ``window`` tokens of every layer (int64), in a ring."""

    def __init__(self, cfg, batch: int, window: int):
        shape = (cfg.n_layers, batch, cfg.n_heads, window, cfg.head_dim)
        self.k, self.v = torch.zeros(shape, dtype=torch.long), torch.zeros(shape, dtype=torch.long)
        self.pos = torch.full((window,), -1, dtype=torch.long)  # the position each slot holds (-1 none)
        self.window, self.length = window, 0

    def visible(self, n: int) -> torch.Tensor:
        """Which keys the next n tokens see, bool [n, window + n] (the cached slots, then the new
        tokens): cached tokens less than ``window`` positions back, and new ones up to themselves."""
        new = self.length + torch.arange(n)
        kpos = torch.cat([self.pos, new])
        diff = new[:, None] - kpos[None]
        return (kpos[None] >= 0) & (diff >= 0) & (diff < self.window)

    def write(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store n new tokens' k/v [B, H, n, hd] of ``layer`` → (keys, values) [B, H, window + n, hd]
        that they attend to, in the order :meth:`visible` describes."""
        n = k.shape[2]
        keys, values = torch.cat([self.k[layer], k], 2), torch.cat([self.v[layer], v], 2)
        keep = min(n, self.window)
        slots = (self.length + torch.arange(n))[-keep:] % self.window
        self.k[layer][:, :, slots], self.v[layer][:, :, slots] = k[:, :, -keep:], v[:, :, -keep:]
        return keys, values

    def advance(self, n: int) -> None:
        """Record the positions of the n tokens just written by every layer."""
        new = self.length + torch.arange(n)
        keep = min(n, self.window)
        self.pos[new[-keep:] % self.window] = new[-keep:]
        self.length += n


class IntegerStepper:
    """:class:`IntegerTransformer` on an :class:`IntegerCache`, with the stepper interface of
    :mod:`mmar.generation`: each call appends codes [B, K, N] and returns int64 logits [B, N, K, V]."""

    def __init__(self, model: IntegerTransformer, batch: int, window: int):
        self.model, self.cache = model, IntegerCache(model.cfg, batch, window)

    @torch.no_grad()
    def __call__(self, codes: torch.Tensor | None = None, prefix: torch.Tensor | None = None,
                 lengths: torch.Tensor | None = None, latents: torch.Tensor | None = None) -> torch.Tensor:
        if codes is None or prefix is not None or latents is not None or lengths is not None:
            raise ValueError("the integer stepper appends whole steps of codes only (no prefix, latents or ragged rows)")
        return self.model.forward(codes, self.cache)
