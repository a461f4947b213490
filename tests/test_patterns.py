"""DelayPattern and CausalMasking round-trip exactly (property-based)."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mmar.patterns import CausalMasking, DelayPattern, SpecialIds


@settings(max_examples=200, deadline=None)
@given(b=st.integers(1, 3), k=st.integers(1, 6), t=st.integers(0, 40), seed=st.integers(0, 2**31 - 1), custom=st.booleans())
def test_delay_pattern_round_trip(b, k, t, seed, custom):
    g = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, 1024, (b, k, t), generator=g)
    delays = torch.randint(0, 4, (k,), generator=g).tolist() if custom else None
    pat = DelayPattern(k, delays)
    stream = pat.build(codes, empty_id=1024)
    assert stream.shape == (b, k, t + pat.max_delay)
    assert torch.equal(pat.revert(stream), codes)
    # the empty id fills exactly the positions before each level's delay and after its end
    for i, d in enumerate(pat.delays):
        assert (stream[:, i, :d] == 1024).all() and (stream[:, i, d + t :] == 1024).all()


def test_delay_pattern_level_k_follows_levels_below_in_same_frame():
    codes = torch.arange(6).view(1, 3, 2)
    stream = DelayPattern(3).build(codes, 99)
    assert stream[0].tolist() == [[0, 1, 99, 99], [99, 2, 3, 99], [99, 99, 4, 5]]


@settings(max_examples=300, deadline=None)
@given(k=st.integers(1, 4), t=st.integers(1, 60), seed=st.integers(0, 2**31 - 1))
def test_causal_masking_round_trip(k, t, seed):
    g = torch.Generator().manual_seed(seed)
    ids = SpecialIds(1024)
    cm = CausalMasking(ids)
    codes = torch.randint(0, 1024, (k, t), generator=g)
    spans = cm.sample_spans(t, g)
    assert 1 <= len(spans) <= 3
    stream = cm.rearrange(codes, spans)
    assert stream.shape == (k, t + 2 * len(spans))
    assert torch.equal(cm.restore(stream), codes)
    # the span content sits at the end, in order, behind its mask token
    tail = torch.cat([torch.cat([torch.full((k, 1), ids.mask(i)), codes[:, a:b]], 1) for i, (a, b) in enumerate(spans)], 1)
    assert torch.equal(stream[:, -tail.shape[1] :], tail)


def test_causal_masking_rejects_bad_spans_and_streams():
    cm = CausalMasking(SpecialIds(16))
    codes = torch.zeros(1, 10, dtype=torch.long)
    with pytest.raises(ValueError):
        cm.rearrange(codes, [(3, 2)])
    with pytest.raises(ValueError):
        cm.rearrange(codes, [(0, 4), (2, 6)])
    with pytest.raises(ValueError):
        cm.restore(codes)
