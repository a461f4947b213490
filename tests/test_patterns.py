"""DelayPattern and CausalMasking round-trip exactly (property-based)."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mmar.patterns import CausalMasking, DelayPattern, SpecialIds, voicecraft_layout


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


def test_delay_pattern_holds_matches_build():
    pat = DelayPattern(3, [0, 2, 1])
    codes = torch.arange(12).view(1, 3, 4)
    stream = pat.build(codes, -1)[0]
    for step in range(pat.steps(4)):
        held = pat.holds(step, frames=4)
        assert [stream[k, step].item() for k, _ in held] == [codes[0, k, f].item() for k, f in held]
        assert sorted(k for k in range(3) if stream[k, step] != -1) == [k for k, _ in held]
    assert pat.holds(1) == [(0, 1), (2, 0)]  # open stream: only the left edge is empty


@settings(max_examples=100, deadline=None)
@given(delays=st.lists(st.integers(0, 4), min_size=1, max_size=5), frames=st.integers(0, 12))
def test_delay_pattern_ready_steps_and_complete_frames_follow_holds(delays, frames):
    pat = DelayPattern(len(delays), delays)
    seen: set[tuple[int, int]] = set()
    for step in range(pat.steps(frames) + 2):
        done = [f for f in range(frames) if all((k, f) in seen for k in range(len(delays)))]
        assert pat.complete_frames(step, frames) == len(done) and done == list(range(len(done)))
        assert pat.started_frames(step, frames) == len({f for _, f in seen})
        seen |= set(pat.holds(step, frames))
    for known in range(frames + 1):  # an open stream whose first `known` frames are known
        ready = pat.ready_steps(known)
        assert all(f < known for s in range(ready) for _, f in pat.holds(s))
        assert any(f >= known for _, f in pat.holds(ready))


@settings(max_examples=300, deadline=None)
@given(b=st.integers(1, 3), k=st.integers(1, 4), t=st.integers(1, 40), seed=st.integers(0, 2**31 - 1),
       delayed=st.booleans(), ends=st.booleans(), some_unmasked=st.booleans())
def test_causal_masking_round_trip(b, k, t, seed, delayed, ends, some_unmasked):
    g = torch.Generator().manual_seed(seed)
    ids = SpecialIds(1024, with_eog=True)
    cm = CausalMasking(ids, DelayPattern(k) if delayed else None, end_tokens=ends)
    lengths = torch.randint(1, t + 1, (b,), generator=g)
    codes = torch.randint(0, 1024, (b, k, t), generator=g)
    spans = [cm.sample_spans(int(n), g) if not some_unmasked or i % 2 else [] for i, n in enumerate(lengths)]
    stream, stream_lengths = cm.rearrange(codes, spans, lengths)
    extra = [2 * len(s) + (len(s) + 1 if ends else 0) + ((2 * len(s) + 1) * (k - 1) if delayed else 0) for s in spans]
    assert stream_lengths.tolist() == [int(n) + e for n, e in zip(lengths, extra)]
    for i, n in enumerate(lengths.tolist()):  # the prompt ends where the first span's announcing mask starts
        head = cm.prompt_steps(n, spans[i])
        if spans[i]:
            assert int(stream[i, 0, head]) == ids.mask(0) and (stream[i, :, head] == ids.mask(0)).all()
        else:
            assert head == int(stream_lengths[i])
    back, back_lengths, back_spans = cm.restore(stream, stream_lengths)
    assert torch.equal(back_lengths, lengths) and back_spans == [list(s) for s in spans]
    for i, n in enumerate(lengths.tolist()):
        assert torch.equal(back[i, :, :n], codes[i, :, :n])


def test_causal_masking_example_and_span_content_at_the_end():
    ids = SpecialIds(16)
    x = torch.tensor([[[0, 1, 2, 3]]])
    stream, _ = CausalMasking(ids).rearrange(x, [[(1, 3)]])
    assert stream[0, 0].tolist() == [0, ids.mask(0), 3, ids.mask(0), 1, 2]


def test_voicecraft_layout_example():
    """K=2, T=4, span [1, 3): U0=[f0] m0 U1=[f3]+eos m0 S0=[f1 f2]+eog, each delayed on its own."""
    ids = SpecialIds(16, with_eog=True)
    e, m, eos, eog = ids.empty, ids.mask(0), ids.eos, ids.eog
    codes = torch.tensor([[[0, 1, 2, 3], [10, 11, 12, 13]]])
    stream, lengths = voicecraft_layout(ids, 2).rearrange(codes, [[(1, 3)]])
    assert stream[0].tolist() == [
        [0, e, m, 3, eos, e, m, 1, 2, eog, e],
        [e, 10, m, e, 13, eos, m, e, 11, 12, eog],
    ]
    assert lengths.tolist() == [11]


def test_causal_masking_rejects_bad_spans_and_streams():
    cm = CausalMasking(SpecialIds(16))
    codes = torch.zeros(1, 1, 10, dtype=torch.long)
    for bad in ([(3, 2)], [(0, 4), (2, 6)], [(0, 11)], [(0, 1), (2, 3), (4, 5), (6, 7)]):
        with pytest.raises(ValueError):
            cm.rearrange(codes, [bad])
    stream, _ = cm.rearrange(codes, [[(2, 4)]])
    for broken in (stream[..., :-3], stream[..., 3:], codes):
        with pytest.raises(ValueError):
            cm.restore(broken) if broken is not codes else cm.restore(torch.cat([codes, codes.new_full((1, 1, 1), 18)], -1))
    with pytest.raises(ValueError, match="eog"):
        CausalMasking(SpecialIds(16), end_tokens=True)
