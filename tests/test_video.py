"""Frame-autoregressive video: the training loss, and sampling with the context cache reused across
denoising steps equal to recomputing the context at every step (window, sink, prompts, CFG)."""

import pytest
import torch

from mmar.errors import MmarError
from mmar.tasks import video as tv
from mmar.text.captions import CaptionVocab

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(window: int = 8, seed: int = 0) -> tv.VideoModel:
    vocab = CaptionVocab.build(["fox moves left", "red apple grows", "then bounces"], 6)
    config = tv.export_config({"dim": 32, "n_layers": 2, "n_heads": 2}, {"width": 32, "depth": 2, "objective": "flow"},
                              vocab, 3, (2, 2), window, name="video-tiny")
    torch.manual_seed(seed)
    vm = tv.from_config(config)
    for p in vm.model.parameters():  # zero-initialised layers would hide differences
        if p.dim() and p.abs().sum() == 0:
            torch.nn.init.normal_(p, std=0.2)
    return vm.__class__(vm.model.eval(), vm.vocab, vm.grid, vm.window, vm.model_id)


def test_training_loss_is_finite_backpropagates_and_ignores_clean_frames():
    vm = tiny()
    lat, prefix = torch.randn(2, 5, 4, 3), vm.vocab.batch(["fox moves left", ""])
    g = torch.Generator().manual_seed(0)
    vm.model.train()
    loss = vm.model(lat, prefix, clean_p=0.3, generator=g)
    loss.backward()
    assert torch.isfinite(loss) and vm.model.clean.grad is not None and vm.model.head.out.weight.grad.abs().sum() > 0
    assert vm.model(lat, prefix, clean_p=1.0, generator=g).item() == 0.0  # all context, nothing to learn
    again = vm.model(lat, prefix, clean_p=0.3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(again, vm.model(lat, prefix, clean_p=0.3, generator=torch.Generator().manual_seed(0)))


@pytest.mark.parametrize("window,frames,cfg", [(8, 5, 1.0), (3, 7, 2.0)])
def test_cache_reuse_equals_recompute(window, frames, cfg):
    vm = tiny(window)
    prompt = torch.randn(2, 2, 3, 2, 2)
    kw = dict(steps=3, cfg_scale=cfg, seed=5, prompt=prompt)
    a = tv.generate_frames(vm, ["fox moves left", "red apple grows"], frames, **kw)
    b = tv.generate_frames(vm, ["fox moves left", "red apple grows"], frames, cached=False, **kw)
    assert a.shape == (2, frames, 3, 2, 2) and torch.isfinite(a).all()
    assert (a - b).abs().max() <= 1e-4
    assert torch.equal(a, tv.generate_frames(vm, ["fox moves left", "red apple grows"], frames, **kw))
    assert not torch.allclose(a, tv.generate_frames(vm, ["fox moves left", "red apple grows"], frames, **{**kw, "seed": 6}))


def test_prompt_frames_and_caption_steer_the_rollout():
    vm = tiny()
    base = tv.generate_frames(vm, ["fox moves left"], 2, steps=2, temperature=0.0)
    assert not torch.allclose(base, tv.generate_frames(vm, ["red apple grows"], 2, steps=2, temperature=0.0))
    assert not torch.allclose(base, tv.generate_frames(vm, ["fox moves left"], 2, prompt=torch.randn(1, 1, 3, 2, 2),
                                                       steps=2, temperature=0.0))
    seen = []
    tv.generate_frames(vm, ["fox"], 3, steps=1, on_frame=lambda i, z: seen.append((i, tuple(z.shape))))
    assert seen == [(0, (1, 3, 2, 2)), (1, (1, 3, 2, 2)), (2, (1, 3, 2, 2))]


def test_bad_arguments_and_configs():
    vm = tiny()
    for kw in ({"steps": 0}, {"temperature": -1.0}, {"cfg_scale": float("nan")}, {"prompt": torch.randn(1, 1, 3, 4, 4)}):
        with pytest.raises(MmarError):
            tv.generate_frames(vm, ["fox"], 1, **kw)
    good = tv.export_config({"dim": 32, "n_layers": 2, "n_heads": 2}, {"width": 32}, vm.vocab, 3, (2, 2), 4)
    for change in ({"window": 0}, {"head": {"objective": "v"}}, {"grid": [2]}, {"kind": "image_latent"}, {"latent_dim": -1}):
        with pytest.raises(MmarError):
            tv.from_config({**good, **change})


# -- recipe ----------------------------------------------------------------------------------------
def test_recipe_resume_equals_uninterrupted_and_exports(named_shapes_dir, tmp_path):
    import json
    import sys
    from pathlib import Path

    from safetensors.torch import load_file

    root = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(root / "recipes"))
    import train_video
    from recipe_helpers import losses
    from test_image_latent import make_latent_checkpoints

    _, vae = make_latent_checkpoints(tmp_path / "ckpt")
    cfg = json.loads((root / "recipes/configs/video_debug.json").read_text())
    a, b = tmp_path / "a", tmp_path / "b"
    train_video.train(cfg, a, named_shapes_dir, vae, progress=False)
    train_video.train(cfg, b, named_shapes_dir, vae, stop_after=3, progress=False)
    train_video.train(cfg, b, named_shapes_dir, vae, progress=False)
    sa, sb = load_file(str(a / "state.safetensors")), load_file(str(b / "state.safetensors"))
    assert all(torch.equal(sa[k], sb[k]) for k in sa) and losses(a) == losses(b) and len(losses(a)) == 8
    vm = tv.load_video(a / "export")
    assert vm.window == 4 and vm.grid == (8, 8) and "disc" in vm.vocab.stoi
    assert tv.generate_frames(vm, ["red disc moves left"], 2, steps=1).shape == (1, 2, 4, 8, 8)
