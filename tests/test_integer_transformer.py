"""Integer inference (mmar.fixed_point, mmar.integer_transformer): exact primitives, logits
close to the float model's, cache == one long append, and the same bits on every machine."""

import hashlib
import math

import pytest
import torch

from mmar import fixed_point as fx
from mmar.checkpoint import SHIPPED
from mmar.coding.header import LM_IDS
from mmar.generation import CachedStepper
from mmar.heads import codebook_vocab
from mmar.integer_transformer import IntegerStepper, IntegerTransformer, integer_identity
from mmar.transformer import CausalTransformer, TransformerConfig


def _model(dim=64, heads=2, layers=2, size=32, levels=3) -> CausalTransformer:
    """Weights drawn as integers and scaled by a power of two: the same floats on every machine
    (a float normal draw may take another vector path elsewhere)."""
    m = CausalTransformer(TransformerConfig(dim=dim, n_layers=layers, n_heads=heads, vocab=codebook_vocab(size, levels))).eval()
    g = torch.Generator().manual_seed(0)
    for p in m.parameters():
        p.data = torch.randint(-400, 401, p.shape, generator=g).float() / 2048  # about ±0.2
    for blk in m.layers:  # norm gains near 1, as trained ones are
        blk.attn_norm.weight.data = 1 + blk.attn_norm.weight.data
        blk.mlp_norm.weight.data = 1 + blk.mlp_norm.weight.data
    return m


def test_exact_matmul_at_its_bounds():
    g = torch.Generator().manual_seed(1)
    x = torch.randint(-fx.ACT_LIMIT, fx.ACT_LIMIT + 1, (3, 1024), generator=g)
    x[0] = fx.ACT_LIMIT  # the worst case: every product at its largest, one sign
    w = torch.randint(-(1 << fx.WEIGHT_BITS) + 1, 1 << fx.WEIGHT_BITS, (1024, 5), generator=g)
    w[:, 0] = (1 << fx.WEIGHT_BITS) - 1
    assert torch.equal(fx.matmul(x, w.double()), x @ w)  # int64 reference
    with pytest.raises(ValueError, match="exact"):
        fx.matmul(x, torch.zeros(1 << 14, 2, dtype=torch.float64))


def test_isqrt_is_exact():
    n = torch.cat([torch.randint(0, 1 << 52, (2000,)), torch.arange(0, 300), torch.tensor([(1 << 26) ** 2 - 1, (1 << 26) ** 2])])
    r = fx.isqrt(n)
    assert bool(((r * r <= n) & ((r + 1) * (r + 1) > n)).all())


def test_tables_match_the_functions():
    i = torch.arange(0, 24 << 8)
    assert (fx.exp_steps(i, 8, 24, 16).double() - 65536 * torch.exp(-i.double() / 256)).abs().max() <= 0.5 + 1e-9
    assert int(fx.exp_steps(torch.tensor([24 << 8, 10**6]), 8, 24, 16).abs().sum()) == 0  # beyond the span: 0
    x = torch.linspace(-30, 30, 4001, dtype=torch.float64)
    s = fx.silu(torch.round(x * (1 << fx.FRAC)).long()).double() / (1 << fx.FRAC)
    assert (s - torch.nn.functional.silu(x)).abs().max() < 4e-4
    ph = torch.randint(0, 1 << fx.PHASE_BITS, (5000,))
    c, s = fx.cos_sin(ph)
    ang = ph.double() / (1 << fx.PHASE_BITS) * 2 * math.pi
    assert (c / (1 << fx.COS_BITS) - ang.cos()).abs().max() < 1.2e-4 and (s / (1 << fx.COS_BITS) - ang.sin()).abs().max() < 1.2e-4


def test_rope_phases_do_not_overflow():
    turns = fx.rope_turns(64, 10000.0)
    assert int(turns[0]) == round((1 << 40) / (2 * math.pi))
    pos = torch.tensor([0, 1, 12345, (1 << 43) - 1])
    want = [[(int(p) * int(t)) % (1 << 40) for t in turns] for p in pos]
    assert fx.rope_phases(pos, turns).tolist() == want
    with pytest.raises(ValueError, match="positions"):
        fx.rope_phases(torch.tensor([1 << 43]), turns)


def test_integer_logits_follow_the_float_model_past_the_window():
    m = _model()
    fs, st = CachedStepper(m, 2, capacity=5, window=5), IntegerStepper(IntegerTransformer(m), 2, 5)
    codes = torch.randint(0, 32, (2, 3, 14), generator=torch.Generator().manual_seed(2))
    for t in range(14):
        a, b = fs(codes=codes[:, :, t : t + 1]), st(codes=codes[:, :, t : t + 1])
        assert b.dtype == torch.int64 and b.shape == a.shape
        assert (b.double() / (1 << fx.FRAC) - a).abs().max() < 0.01 * max(1.0, float(a.abs().max()))


@pytest.mark.parametrize("split", [[14], [3, 1, 6, 4], [7, 7]])
def test_one_long_append_equals_step_by_step(split):
    im = IntegerTransformer(_model())
    codes = torch.randint(0, 32, (1, 3, 14), generator=torch.Generator().manual_seed(3))
    steps = IntegerStepper(im, 1, 5)
    one = torch.cat([steps(codes=codes[:, :, t : t + 1]) for t in range(14)], 1)
    parts, st, i = [], IntegerStepper(im, 1, 5), 0
    for n in split:
        parts.append(st(codes=codes[:, :, i : i + n]))
        i += n
    assert torch.equal(torch.cat(parts, 1), one)


def test_same_bits_on_every_machine():
    """The logits of a fixed model and input, hashed: a machine whose integer path computed
    differently (another BLAS order that lost exactness, another table) fails here."""
    im = IntegerTransformer(_model())
    st = IntegerStepper(im, 1, 8)
    codes = torch.randint(0, 32, (1, 3, 20), generator=torch.Generator().manual_seed(4))
    out = torch.cat([st(codes=codes[:, :, t : t + 1]) for t in range(20)], 1)
    assert hashlib.sha256(out.numpy().astype("<i8").tobytes()).hexdigest()[:16] == GOLDEN


GOLDEN = "6f817698bdfc3eef"


def test_stepper_takes_whole_code_steps_only():
    st = IntegerStepper(IntegerTransformer(_model()), 1, 4)
    with pytest.raises(ValueError, match="codes only"):
        st(codes=torch.zeros(1, 3, 1, dtype=torch.long), lengths=torch.tensor([1]))
    with pytest.raises(ValueError, match="codes only"):
        st(prefix=torch.zeros(1, 2, dtype=torch.long))


def test_shipped_integer_identities():
    """The short ids and checkpoint lookups of the LMs run in integers are what integer_identity gives."""
    for weights, name in [("350d060a", "speech-lm-16k-v1"), ("4e8968ab", "speech-lm-16k")]:
        assert SHIPPED[integer_identity(weights)] == SHIPPED[weights] == name
    assert (LM_IDS[3].model, LM_IDS[3].weights) == (LM_IDS[2].model, integer_identity(LM_IDS[2].weights))
