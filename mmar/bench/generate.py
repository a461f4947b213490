"""``mmar bench generate``: kv-cache decoding against full recomputation, in one run."""

from __future__ import annotations

import time

import torch

from ..generation import CachedStepper, Chooser, Sampler, SamplingConfig, generate
from ..heads import codebook_vocab
from ..transformer import CausalTransformer, preset


def _with_progress(choose: Chooser, total: int, desc: str, show: bool) -> Chooser:
    from tqdm import tqdm

    bar = tqdm(total=total, desc=desc, unit="frame", disable=not show, leave=False)

    def step(i: int, logits: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        bar.update(1)
        if i + 1 == total:
            bar.close()
        return choose(i, logits, history)

    return step


@torch.inference_mode()
def run_generate_bench(frames: int = 1000, codebooks: int = 4, preset_name: str = "small", prompt_frames: int = 16,
                       seed: int = 0, progress: bool = False) -> dict:
    """Greedy-decode ``frames`` steps from one random prompt twice through :func:`mmar.generation.generate`:
    with the kv-cache and with the uncached reference (a full forward per step). Returns timings,
    the speed-up and whether both produced the same tokens, plus the largest logit difference
    over the generated sequence."""
    torch.manual_seed(seed)
    size = 1024
    cfg = preset(preset_name, vocab=codebook_vocab(size, codebooks))
    model = CausalTransformer(cfg).eval()
    prompt = torch.randint(0, size, (1, codebooks, prompt_frames))
    greedy = Sampler(SamplingConfig(temperature=0))

    t0 = time.perf_counter()
    cached = generate(model, prompt, frames, _with_progress(greedy, frames, "cached", progress)).tokens
    t_cached = time.perf_counter() - t0

    t0 = time.perf_counter()
    uncached = generate(model, prompt, frames, _with_progress(greedy, frames, "uncached", progress), cached=False).tokens
    t_uncached = time.perf_counter() - t0

    # logits of the generated sequence: one full forward vs the cached pass, token by token
    seq = torch.cat([prompt, cached], dim=-1)
    full = model.logits(model(codes=seq[..., :-1]))[:, prompt_frames - 1 :]
    stepper = CachedStepper(model, 1, prompt_frames + frames)
    step = [stepper(codes=seq[..., :prompt_frames])[:, -1:]]
    for t in range(prompt_frames, seq.shape[-1] - 1):
        step.append(stepper(codes=seq[..., t : t + 1]))
    diff = (full - torch.cat(step, dim=1)).abs().max().item()
    return {
        "preset": preset_name,
        "params_millions": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
        "frames": frames,
        "codebooks": codebooks,
        "prompt_frames": prompt_frames,
        "threads": torch.get_num_threads(),
        "seconds_cached": round(t_cached, 3),
        "seconds_uncached": round(t_uncached, 3),
        "speedup": round(t_uncached / t_cached, 2),
        "frames_per_second_cached": round(frames / t_cached, 1),
        "identical": bool(torch.equal(cached, uncached)),
        "max_abs_logit_diff": diff,
    }


def format_table(r: dict) -> str:
    rows = [("", "cached", "uncached"),
            ("seconds", f"{r['seconds_cached']:.2f}", f"{r['seconds_uncached']:.2f}"),
            ("frames/s", f"{r['frames_per_second_cached']:.1f}", f"{r['frames'] / r['seconds_uncached']:.1f}")]
    lines = [f"{a:<10}{b:>12}{c:>12}" for a, b, c in rows]
    lines.append(f"speedup {r['speedup']:.1f}x   identical {r['identical']}   max |Δlogit| {r['max_abs_logit_diff']:.2e}"
                 f"   ({r['preset']}, {r['params_millions']} M params, {r['frames']} frames × {r['codebooks']} codebooks, {r['threads']} threads)")
    return "\n".join(lines)
