"""Motion-predicted bases (mmar.tasks.video_base): the extrapolation continues a translation,
the bases built for training equal those built frame by frame while sampling, and a
``motion_base`` model samples around them (cache == recompute; a head that predicts no change
returns the extrapolated frame)."""

import pytest
import torch
import torch.nn.functional as F

from mmar.errors import MmarError
from mmar.tasks import video as tv
from mmar.tasks.video_base import MotionBase, motion_bases
from mmar.tokenizers.frame_refiner import extrapolate
from test_video import tiny

pytestmark = pytest.mark.usefixtures("one_thread")


def sprite_clip(shifts: list[tuple[int, int]], side: int = 16, seed: int = 0) -> torch.Tensor:
    """A textured 6 × 6 square on white at (6, 6) moved by the cumulative ``shifts`` → [F, 3, side, side]."""
    g = torch.Generator().manual_seed(seed)
    patch = torch.rand(3, 6, 6, generator=g) * 0.8
    out, y, x = [], 6, 6
    for dy, dx in [(0, 0), *shifts]:
        y, x = y + dy, x + dx
        f = torch.ones(3, side, side)
        f[:, y:y + 6, x:x + 6] = patch
        out.append(f)
    return torch.stack(out)


def encode(x: torch.Tensor) -> torch.Tensor:  # a stand-in σ-VAE: images [M, 3, 8k, 8k] → latents [M, 3, k, k]
    return F.avg_pool2d(x, 8)


def decode(z: torch.Tensor) -> torch.Tensor:
    return F.interpolate(z, scale_factor=8, mode="nearest")


@pytest.mark.parametrize("step", [(2, -1), (0, 2), (-3, -2)])
def test_extrapolate_continues_a_translation_and_flat_frames_stay(step):
    clip = sprite_clip([step, step])
    assert torch.equal(extrapolate(clip[1:2], clip[0:1]), clip[2:3])
    assert not torch.equal(extrapolate(clip[1:2], clip[1:2]), clip[2:3])  # no motion seen: the frame stays
    assert torch.equal(extrapolate(clip[1:2], clip[1:2]), clip[1:2])
    white = torch.ones(1, 3, 16, 16)
    assert torch.equal(extrapolate(white, white), white)


def test_streaming_bases_equal_the_training_bases():
    frames = torch.stack([sprite_clip([(1, 2), (1, 2), (0, -2), (2, 0)], seed=s) for s in (0, 1)])  # [2, 5, 3, 16, 16]
    latents = encode(frames.flatten(0, 1)).view(2, 5, 3, 2, 2)
    bases = motion_bases(encode, frames, latents)
    assert torch.equal(bases[:, 0], torch.zeros_like(bases[:, 0])) and torch.equal(bases[:, 1], latents[:, 0])
    assert torch.equal(bases[:, 2], encode(extrapolate(frames[:, 1], frames[:, 0])))
    stream = MotionBase(encode)
    for t in range(5):
        b = stream.base()
        assert (t == 0 and b is None) or torch.equal(b, bases[:, t]), t
        stream.push(frames[:, t], latents[:, t])
    with pytest.raises(ValueError):
        stream.push_latents(latents[:, 0])  # no decoder to show it with


def motion_model(**kw) -> tv.VideoModel:
    return tiny(residual=True, motion_base=True, **kw)


@pytest.mark.parametrize("window,cfg", [(8, 1.0), (2, 2.0)])
def test_motion_base_model_cache_equals_recompute(window, cfg):
    vm = motion_model(window=window)
    frames = sprite_clip([(1, 1), (1, 1)])[None]  # [1, 3, 3, 16, 16]
    prompt = encode(frames[0]).view(1, 3, 3, 2, 2)
    kw = dict(steps=3, cfg_scale=cfg, seed=5, prompt=prompt[:, :2])

    def base():
        mb = MotionBase(encode, decode)
        for k in range(2):
            mb.push(frames[:, k], prompt[:, k])
        return mb

    a = tv.generate_frames(vm, ["fox moves left"], 5, base=base(), **kw)
    b = tv.generate_frames(vm, ["fox moves left"], 5, base=base(), cached=False, **kw)
    assert a.shape == (1, 5, 3, 2, 2) and torch.isfinite(a).all() and (a - b).abs().max() <= 1e-4
    with pytest.raises(MmarError):
        tv.generate_frames(vm, ["fox"], 1, **kw)  # a motion_base model needs its bases


def test_a_head_that_predicts_no_change_returns_the_extrapolated_frame():
    vm = motion_model()
    torch.nn.init.zeros_(vm.model.head.out.weight)
    torch.nn.init.zeros_(vm.model.head.out.bias)
    frames = sprite_clip([(2, 3)])[None]  # two prompt frames, moving
    prompt = encode(frames[0]).view(1, 2, 3, 2, 2)
    mb = MotionBase(encode, decode)
    for k in range(2):
        mb.push(frames[:, k], prompt[:, k])
    want = encode(extrapolate(frames[:, 1], frames[:, 0]))
    out = tv.generate_frames(vm, ["fox"], 2, prompt, steps=2, temperature=0.0, base=mb)
    assert torch.equal(out[:, 0], want) and not torch.equal(want, prompt[:, 1])
    # the second new frame's base is the first new frame as decoded, moved on by its motion
    assert torch.equal(out[:, 1], encode(extrapolate(decode(want), frames[:, 1])))


def test_training_needs_bases_and_reads_them():
    vm = motion_model()
    lat, prefix = torch.randn(2, 4, 4, 3), vm.vocab.batch(["fox moves left", ""])
    with pytest.raises(MmarError):
        vm.model(lat, prefix, clean_p=0.3, generator=torch.Generator().manual_seed(0))
    loss = lambda base: vm.model(lat, prefix, 0.3, torch.Generator().manual_seed(0), base=base)  # noqa: E731
    zero = loss(torch.zeros_like(lat))
    assert torch.isfinite(zero) and zero.item() != loss(lat * 0.5).item()
    good = tv.export_config({"dim": 32, "n_layers": 2, "n_heads": 2}, {"width": 32}, vm.vocab, 3, (2, 2), 4)
    with pytest.raises(MmarError):
        tv.from_config({**good, "motion_base": True})  # only with residual
    with pytest.raises(MmarError):
        tv.from_config({**good, "residual": True, "motion_base": 1})


def test_motion_temperature_applies_once_a_motion_is_seen():
    """From a caption alone the first two frames have no motion to extrapolate: they take
    ``temperature``; every later frame (and every frame after two prompt frames) takes
    ``motion_temperature``."""
    vm = motion_model()

    def run(prompt_frames: int, **kw) -> torch.Tensor:
        frames = sprite_clip([(1, 1)] * 3)[None]
        z = encode(frames[0]).view(1, 4, 3, 2, 2)
        mb = MotionBase(encode, decode)
        for k in range(prompt_frames):
            mb.push(frames[:, k], z[:, k])
        return tv.generate_frames(vm, ["fox"], 3, z[:, :prompt_frames] if prompt_frames else None, steps=2, seed=3,
                                  base=mb, **kw)

    cold = run(0, temperature=1.0, motion_temperature=0.0)
    hot = run(0, temperature=1.0, motion_temperature=1.0)
    assert torch.equal(cold[:, :2], hot[:, :2]) and not torch.allclose(cold[:, 2], hot[:, 2])
    assert torch.equal(hot, run(0, temperature=1.0))  # None: one temperature for all
    assert torch.equal(run(2, temperature=1.0, motion_temperature=0.0), run(2, temperature=0.0))
    with pytest.raises(MmarError):
        run(2, motion_temperature=-1.0)
