"""Integer arithmetic that gives the same bits on every CPU, for models whose outputs must be
reproduced exactly elsewhere (the entropy model of an LM-coded file, see
:mod:`mmar.integer_transformer`).

Float inference is not portable: BLAS kernels sum in an order that depends on the CPU's vector
width, and ``exp``/``cos`` differ in their last bits between libraries, so a range decoder on
another machine can read different probabilities from the same file. Here every value is an
integer (an int64 tensor, or a float64 tensor that holds integers below 2**53, where every
order of summation gives the same exact result). The transcendental functions are tables of
integers built with Python integers and :mod:`decimal` (correctly rounded in software), never
with the platform's maths library.

A value v is stored as ``round(v * 2**FRAC)``. Ballé et al., "Integer networks for data
compression with latent-variable models" (ICLR 2019), make the same argument for learned codecs.
"""

from __future__ import annotations

import decimal
import functools
import math

import torch

FRAC = 12  # fractional bits of activations
ACT_LIMIT = 1 << 24  # |activation| ≤ 2**24 (4096.0) before a product or a matmul
QK_LIMIT = 1 << 20  # |query|, |key| ≤ 2**20 (256.0): their dot products over ≤ 2**12 channels stay exact
WEIGHT_BITS = 15  # |quantized weight| < 2**15 (per output channel, power-of-two scale)
EXACT = 1 << 53  # float64 holds every integer below this exactly

_PI = decimal.Decimal("3.14159265358979323846264338327950288419716939937510582097494459")


def _ctx() -> decimal.Context:
    return decimal.Context(prec=50)


def shift_round(x: torch.Tensor, bits: int | torch.Tensor) -> torch.Tensor:
    """int64 x → round(x / 2**bits) (half up); ``bits`` ≥ 1, a number or a tensor that broadcasts."""
    if isinstance(bits, int):
        return (x + (1 << (bits - 1))) >> bits
    return (x + (torch.ones_like(bits) << (bits - 1))) >> bits


def div_round(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """int64 round(num / den) (half up), den > 0."""
    return torch.div(2 * num + den, 2 * den, rounding_mode="floor")


def isqrt(n: torch.Tensor) -> torch.Tensor:
    """int64 n ≥ 0 (< 2**52) → floor(sqrt(n)), exactly: a float estimate, then corrected with integers."""
    r = n.double().sqrt().long()
    r = r - (r * r > n).long()
    return r + ((r + 1) * (r + 1) <= n).long()


def matmul(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """int64 x [..., n] (|x| ≤ ACT_LIMIT, clamped) @ float64 w [n, m] holding integers
    (|w| < 2**WEIGHT_BITS) → int64 [..., m], exact: every partial sum stays below 2**53."""
    if w.shape[0] * ACT_LIMIT * (1 << WEIGHT_BITS) >= EXACT:
        raise ValueError(f"an exact matmul over {w.shape[0]} inputs would leave float64's integers")
    return (x.clamp(-ACT_LIMIT, ACT_LIMIT).double() @ w).long()


def quantize_rows(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Float weights [out, in] → (float64 integers [in, out] for :func:`matmul`, int64 shifts [out]):
    row o is stored as round(w[o] * 2**shift[o]), the largest shift that keeps it below 2**WEIGHT_BITS,
    so x @ w[o] ≈ matmul(x, q)[..., o] / 2**shift[o]."""
    w = w.detach().double()
    _, e = torch.frexp(w.abs().amax(1).clamp_min(2.0 ** -30))  # max |w[o]| < 2**e
    shift = (WEIGHT_BITS - 1 - e).long()
    scale = torch.tensor([math.ldexp(1.0, int(k)) for k in shift], dtype=torch.float64)  # exact powers of two
    q = torch.round(w * scale[:, None])
    return q.T.contiguous(), shift


def linear(x: torch.Tensor, w: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """int64 activations [..., in] (scale 2**FRAC) through weights from :func:`quantize_rows`
    → int64 [..., out] at scale 2**FRAC."""
    q, shift = w
    return shift_round(matmul(x, q), shift)


def _exp_neg_fixed(step: decimal.Decimal, n: int, bits: int) -> list[int]:
    """[round(2**bits * exp(-i * step)) for i in 0..n] (bits < 128), by a recurrence in 128-bit integers."""
    with decimal.localcontext(_ctx()):
        r = int((-step).exp() * (1 << 128))
    out, v = [], 1 << 128
    for _ in range(n + 1):
        out.append((v + (1 << (127 - bits))) >> (128 - bits))
        v = (v * r) >> 128
    return out


@functools.lru_cache(maxsize=None)
def exp_table(res: int, span: int, bits: int) -> torch.Tensor:
    """int64 [span * 2**res + 1]: entry i is round(2**bits * exp(-i / 2**res)), i.e. exp over
    [0, -span] in steps of 2**-res."""
    return torch.tensor(_exp_neg_fixed(decimal.Decimal(1) / (1 << res), span << res, bits))


def exp_steps(i: torch.Tensor, res: int, span: int, bits: int) -> torch.Tensor:
    """int64 i ≥ 0 → round(2**bits * exp(-i / 2**res)); 0 from ``span`` on."""
    table = exp_table(res, span, bits)
    return torch.where(i < len(table), table[i.clamp(0, len(table) - 1)], torch.zeros_like(i))


SILU_RES, SILU_SPAN = 8, 16  # the SiLU table: steps of 2**-8 over [-16, 16]


@functools.lru_cache(maxsize=None)
def silu_table() -> torch.Tensor:
    """int64 [2 * 16 * 2**8 + 1]: round(2**FRAC * silu(x)) for x = -16, -16 + 2**-8, …, 16."""
    half = SILU_SPAN << SILU_RES
    e = _exp_neg_fixed(decimal.Decimal(1) / (1 << SILU_RES), half, 96)  # exp(-|x|) at 2**96
    one = 1 << 96
    out = []
    for j in range(-half, half + 1):
        u = e[abs(j)]
        sig_num = one if j >= 0 else u  # sigmoid(x) = sig_num / (one + u)
        num = j * sig_num << FRAC  # x * sigmoid(x) * 2**FRAC * 2**SILU_RES * (one + u)
        den = (one + u) << SILU_RES
        out.append((2 * num + den) // (2 * den))
    return torch.tensor(out)


def silu(x: torch.Tensor) -> torch.Tensor:
    """int64 x at scale 2**FRAC → silu(x) at the same scale (table, linear interpolation; x
    itself above 16 and 0 below -16, where SiLU differs from those by < 2e-6)."""
    table, span = silu_table(), SILU_SPAN << FRAC
    off = x.clamp(-span, span) + span
    step = FRAC - SILU_RES
    j, frac = off >> step, off & ((1 << step) - 1)
    lo, hi = table[j], table[(j + 1).clamp_max(len(table) - 1)]
    y = lo + shift_round((hi - lo) * frac, step) if step else lo
    return torch.where(x > span, x, torch.where(x < -span, torch.zeros_like(x), y))


PHASE_BITS = 40  # a rotary angle is kept in turns, as an integer at 2**-40 turn
TURN_BITS = 16  # the cosine table has 2**16 entries per turn
COS_BITS = 14  # at scale 2**14


@functools.lru_cache(maxsize=None)
def _quarter_cos() -> torch.Tensor:
    """int64 [2**14 + 1]: round(2**14 * cos(2π j / 2**16)) for j = 0..2**14 (a quarter turn), by
    rotating a 2**62-scale complex number, with the step's cosine and sine from Taylor series."""
    q = 1 << (TURN_BITS - 2)
    with decimal.localcontext(_ctx()):
        a = 2 * _PI / (1 << TURN_BITS)
        c = s = decimal.Decimal(0)
        term = decimal.Decimal(1)
        for k in range(1, 30):  # term = a**(k-1) / (k-1)!
            if k % 4 == 1:
                c += term
            elif k % 4 == 2:
                s += term
            elif k % 4 == 3:
                c -= term
            else:
                s -= term
            term = term * a / k
        one = 1 << 62
        wc, ws = int(c * one), int(s * one)
    x, y, out = one, 0, []
    for _ in range(q + 1):
        out.append((x + (1 << (61 - COS_BITS))) >> (62 - COS_BITS))
        x, y = (x * wc - y * ws) >> 62, (x * ws + y * wc) >> 62
    out[q] = 0
    return torch.tensor(out)


def cos_sin(phase: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """int64 phases in 2**-40 turns → (cos, sin) int64 at scale 2**14 (nearest of 2**16 angles per turn)."""
    table, q = _quarter_cos(), 1 << (TURN_BITS - 2)
    p = shift_round(phase, PHASE_BITS - TURN_BITS) & ((1 << TURN_BITS) - 1)

    def cos_of(p: torch.Tensor) -> torch.Tensor:
        quad, r = p >> (TURN_BITS - 2), p & (q - 1)
        v = torch.where(quad % 2 == 0, table[r], table[q - r])
        return torch.where((quad == 1) | (quad == 2), -v, v)

    return cos_of(p), cos_of((p - q) & ((1 << TURN_BITS) - 1))


@functools.lru_cache(maxsize=None)
def rope_turns(head_dim: int, base: float) -> torch.Tensor:
    """int64 [head_dim/2]: the rotary frequencies base**(-2i/head_dim) in turns per position, at
    2**-40 turn (``base`` is read as its exact decimal expansion)."""
    with decimal.localcontext(_ctx()):
        ln = decimal.Decimal(base).ln()
        f = [(-(decimal.Decimal(2 * i) / head_dim) * ln).exp() / (2 * _PI) for i in range(head_dim // 2)]
        return torch.tensor([int((v * (1 << PHASE_BITS)).to_integral_value(decimal.ROUND_HALF_EVEN)) for v in f])


MAX_POSITION = 1 << 43


def rope_phases(positions: torch.Tensor, turns: torch.Tensor) -> torch.Tensor:
    """int64 positions [...] (< 2**43) × turns [F] → phases [..., F] mod 2**40, without overflow."""
    if bool((positions >= MAX_POSITION).any()) or bool((positions < 0).any()):
        raise ValueError("rotary positions must be 0..2**43 - 1")
    mask = (1 << PHASE_BITS) - 1
    hi, lo = positions[..., None] >> 20, positions[..., None] & ((1 << 20) - 1)
    return (lo * turns + (((hi * turns) & mask) << 20)) & mask


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate channel pairs (0,1), (2,3), … of int64 x [..., hd] by cos/sin [..., hd/2] at scale 2**14."""
    x = x.clamp(-ACT_LIMIT, ACT_LIMIT)
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return torch.stack([shift_round(x1 * cos - x2 * sin, COS_BITS),
                        shift_round(x1 * sin + x2 * cos, COS_BITS)], dim=-1).flatten(-2)


def rms_normalize(x: torch.Tensor, eps: float) -> torch.Tensor:
    """int64 x [..., D] at scale 2**FRAC → x / rms(x) at the same scale (the norm's gain is folded
    into the next layer's weights)."""
    x = x.clamp(-ACT_LIMIT, ACT_LIMIT)
    d = x.shape[-1]
    e = round(eps * (1 << 2 * FRAC))  # a float times a power of two: exact
    r = isqrt(torch.div((x * x).sum(-1, keepdim=True), d, rounding_mode="floor") + max(e, 1))
    return div_round(x << FRAC, r)
