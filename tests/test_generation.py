"""The one decoding loop: cached == uncached with every sampling option, stop rules, constraints,
ragged prompts, block-causal frames; sampling controls behave."""

import torch

from mmar.generation import (CachedStepper, Sampler, SamplingConfig, StopRule, UncachedStepper, apply_repetition_penalty,
                             decode_loop, generate, last_logits, sample)
from mmar.transformer import CausalTransformer, preset


def model(**kw) -> CausalTransformer:
    torch.manual_seed(0)
    return CausalTransformer(preset("debug", init_std=0.2, **kw)).eval()


def test_greedy_identical_with_and_without_cache():
    m = model(prefix_vocab=8)
    g = torch.Generator().manual_seed(0)
    prompt, prefix = torch.randint(0, 16, (2, 2, 5), generator=g), torch.randint(0, 8, (2, 3), generator=g)
    cached = generate(m, prompt, 30, prefix=prefix)
    assert torch.equal(cached.tokens, generate(m, prompt, 30, prefix=prefix, cached=False).tokens)
    assert cached.tokens.shape == (2, 2, 30) and not cached.finished.any()


def test_every_sampling_option_on_cached_equals_uncached():
    """Temperature, top-k, top-p, repetition penalty, CFG, an allowed-ids hook, a stop rule with a
    minimum length, and prompts of different lengths, all at once."""
    m = model(prefix_vocab=8)
    g = torch.Generator().manual_seed(3)
    b = 3
    prompt = torch.randint(0, 16, (b, 2, 6), generator=g)
    lengths = torch.tensor([6, 2, 4])
    cond = torch.randint(1, 8, (b, 4), generator=g)
    prefix = torch.cat([cond, torch.zeros_like(cond)])  # [cond; uncond] for guidance
    prompt2, lengths2 = torch.cat([prompt, prompt]), torch.cat([lengths, lengths])
    cfg = SamplingConfig(temperature=0.9, top_k=12, top_p=0.95, repetition_penalty=1.3, repetition_window=8, cfg_scale=2.5)
    no_specials = torch.zeros(2, m.cfg.vocab[0], dtype=torch.bool)
    no_specials[:, :16] = True
    no_specials[0, 17] = True  # level 0 may also end the stream (eos = 17)

    def allowed(step, history):
        return no_specials

    stop = StopRule(end_id=17, level=0, min_steps=3, fill_id=16)
    runs = []
    for cached in (True, False):
        sampler = Sampler(cfg, torch.Generator().manual_seed(7), allowed, prompt=prompt2[..., :2])
        runs.append(generate(m, prompt2, 40, sampler, stop, prefix=prefix, lengths=lengths2, cached=cached))
    a, u = runs
    assert torch.equal(a.tokens, u.tokens) and torch.equal(a.lengths, u.lengths) and torch.equal(a.finished, u.finished)
    assert torch.equal(a.tokens[:b], a.tokens[b:])  # guidance: both halves get the same tokens
    assert a.finished.any(), "with eos allowed, some row should end within 40 steps (seeded)"
    for row, n in enumerate(a.lengths.tolist()):
        assert n > 3 and (a.tokens[row, 0, : n - 1] < 16).all()
        if a.finished[row]:
            assert a.tokens[row, 0, n - 1] == 17 and (a.tokens[row, :, n:] == 16).all()


def test_stop_rule_min_steps_and_fill():
    m = model()
    prompt = torch.zeros(2, 2, 1, dtype=torch.long)
    bias = torch.zeros(m.cfg.vocab[0])
    bias[17] = 100.0  # the model "wants" to end at once

    def choose(step, logits, history):
        return (logits + bias).argmax(-1)

    out = generate(m, prompt, 10, choose, StopRule(end_id=17, min_steps=4, fill_id=16))
    assert out.lengths.tolist() == [5, 5] and out.finished.all()
    assert out.tokens.shape[-1] == 5 and (out.tokens[:, 0, 4] == 17).all()


def test_ragged_prompts_equal_rows_run_alone():
    m = model()
    g = torch.Generator().manual_seed(1)
    prompt = torch.randint(0, 16, (3, 2, 7), generator=g)
    lengths = torch.tensor([7, 3, 5])
    together = generate(m, prompt, 12, lengths=lengths).tokens
    for i, n in enumerate(lengths.tolist()):
        alone = generate(m, prompt[i : i + 1, :, :n], 12).tokens
        assert torch.equal(together[i : i + 1], alone)


def test_block_causal_frames_step_whole_frames():
    """One step of a block-causal stepper takes a whole frame [B, K, N] (N tokens)."""
    m = model()
    g = torch.Generator().manual_seed(2)
    codes = torch.randint(0, 16, (2, 2, 12), generator=g)  # 4 frames of 3 tokens
    full = m.logits(m(codes=codes, tokens_per_frame=3))
    stepper, ref = CachedStepper(m, 2, 12, tokens_per_frame=3), UncachedStepper(m, 2, tokens_per_frame=3)
    for f in range(4):
        frame = codes[..., 3 * f : 3 * f + 3]
        a, b = stepper(codes=frame), ref(codes=frame)
        assert (a - full[:, 3 * f : 3 * f + 3]).abs().max() <= 1e-5 and (b - a).abs().max() <= 1e-5


def test_decode_loop_continues_a_stream_across_calls():
    """feed_last=True: two calls of n steps equal one call of 2n (what the streaming LM coder does)."""
    m = model()
    prompt = torch.randint(0, 16, (1, 2, 3), generator=torch.Generator().manual_seed(4))
    greedy = Sampler(SamplingConfig(temperature=0))
    one = generate(m, prompt, 20).tokens
    stepper = CachedStepper(m, 1, 3 + 20)
    logits = last_logits(stepper(codes=prompt))
    first = decode_loop(stepper, logits, 10, greedy, feed_last=True)
    second = decode_loop(stepper, first.logits, 10, greedy)
    assert torch.equal(torch.cat([first.tokens, second.tokens], -1), one)


def test_top_k_one_is_greedy_and_top_p_keeps_the_head():
    logits = torch.randn(3, 2, 50)
    g = torch.Generator().manual_seed(0)
    assert torch.equal(sample(logits, SamplingConfig(top_k=1), g), logits.argmax(-1))
    peaked = torch.full((1, 1, 10), -10.0)
    peaked[..., 3] = 10.0
    draws = {int(sample(peaked, SamplingConfig(top_p=0.5), g)) for _ in range(50)}
    assert draws == {3}


def test_repetition_penalty_lowers_seen_tokens_only():
    logits = torch.tensor([[[2.0, -1.0, 3.0, 0.5]]])
    out = apply_repetition_penalty(logits, torch.tensor([[[0, 1]]]), 2.0)
    assert out.tolist() == [[[1.0, -2.0, 3.0, 0.5]]]


def test_classifier_free_guidance_mixes_halves_and_repeats_tokens():
    cond = torch.tensor([[[0.0, 1.0, 0.0]]])
    uncond = torch.tensor([[[0.0, 0.0, 2.0]]])
    both = torch.cat([cond, uncond])
    tok = sample(both, SamplingConfig(temperature=0, cfg_scale=3.0))
    # 3·cond − 2·uncond = [0, 3, −4] → token 1 for both halves
    assert tok.tolist() == [[1], [1]]
    assert sample(both, SamplingConfig(temperature=0, cfg_scale=1.0)).tolist() == [[1], [2]]


class RandomStepper:
    """Stands in for a model: random logits for whatever it is fed (rules tests need no model)."""

    def __init__(self, k, vocab, seed):
        self.k, self.vocab, self.g = k, vocab, torch.Generator().manual_seed(seed)

    def __call__(self, codes=None, prefix=None, lengths=None):
        return torch.randn(codes.shape[0], codes.shape[-1], self.k, self.vocab, generator=self.g) * 3


def test_delayed_segment_rails_always_give_a_valid_segment():
    """Whatever the model says, decoding under DelayPattern.allowed_ids ends every row with a
    complete end frame cascaded across the delays, within [min, max] frames, and the stream
    reverts to codes + that end frame."""
    from mmar.patterns import DelayPattern, SpecialIds

    k, codes, ids = 3, 16, SpecialIds(16, with_eog=True)
    vocab, pattern = codes + ids.count, DelayPattern(3)
    for seed in range(20):
        b = 4
        max_frames = torch.randint(1, 12, (b,), generator=torch.Generator().manual_seed(seed))
        min_frames = 1

        def allowed(step, history):
            return pattern.allowed_ids(step, history, vocab, codes, ids.eog, ids.empty, min_frames, max_frames)

        stepper = RandomStepper(k, vocab, seed)
        first = stepper(codes=torch.zeros(b, k, 1, dtype=torch.long))[:, -1]
        out = decode_loop(stepper, first, 40, Sampler(SamplingConfig(), torch.Generator().manual_seed(seed), allowed),
                          StopRule(end_id=ids.eog, level=k - 1, fill_id=ids.empty))
        assert out.finished.all()
        for row in range(b):
            n = int(out.lengths[row])
            frames = pattern.revert(out.tokens[row : row + 1, :, :n])[0]  # [K, n - max_delay]
            assert (frames[:, -1] == ids.eog).all() and (frames[:, :-1] < codes).all()
            assert min_frames <= frames.shape[1] - 1 <= int(max_frames[row])
