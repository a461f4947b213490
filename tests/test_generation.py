"""Generation: greedy identical with and without the cache; sampling controls behave."""

import torch

from mmar.generation import SamplingConfig, apply_repetition_penalty, decode_n_frames, generate_uncached, prefill, sample
from mmar.transformer import CausalTransformer, KVCache, preset


def test_greedy_identical_with_and_without_cache():
    torch.manual_seed(0)
    m = CausalTransformer(preset("debug", init_std=0.2, prefix_vocab=8)).eval()
    prompt, prefix = torch.randint(0, 16, (2, 2, 5)), torch.randint(0, 8, (2, 3))
    greedy = SamplingConfig(temperature=0)
    cache = KVCache(m.cfg, 2, 3 + 5 + 30)
    cached = decode_n_frames(m, cache, prefill(m, cache, prompt, prefix), 30, greedy)
    assert torch.equal(cached, generate_uncached(m, prompt, 30, greedy, prefix=prefix))


def test_seeded_sampling_identical_with_and_without_cache():
    torch.manual_seed(1)
    m = CausalTransformer(preset("debug", init_std=0.2)).eval()
    prompt = torch.randint(0, 16, (1, 2, 4))
    cfg = SamplingConfig(temperature=0.9, top_k=8, top_p=0.9)
    cache = KVCache(m.cfg, 1, 4 + 20)
    a = decode_n_frames(m, cache, prefill(m, cache, prompt), 20, cfg, torch.Generator().manual_seed(5))
    b = generate_uncached(m, prompt, 20, cfg, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)


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
