"""The continuous image path: σ-VAE tokenizer, next-token diffusion head, latent decoding loop,
the caption → latent-image model, its recipe and its command line."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mmar.checkpoint import inference_state, save_pretrained
from mmar.errors import MmarError
from mmar.generation import CachedStepper, UncachedStepper, hidden, latent_loop
from mmar.heads import DiffusionConfig, DiffusionHead
from mmar.tasks import image_latent as tl
from mmar.text.captions import CaptionVocab
from mmar.tokenizers.base import load_tokenizer
from mmar.tokenizers.image_vae import ImageVAE, config_from_dict, export_config

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "recipes"))
import train_image_ar  # noqa: E402
import train_image_tokenizer  # noqa: E402

from recipe_helpers import losses, overridden  # noqa: E402

VAE_DEBUG = json.loads((ROOT / "recipes/configs/image_vae_debug.json").read_text())
DEBUG = json.loads((ROOT / "recipes/configs/image_diffusion_debug.json").read_text())

pytestmark = pytest.mark.usefixtures("one_thread")


def images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, 64, 64, generator=torch.Generator().manual_seed(seed))


def tiny_vae() -> ImageVAE:
    torch.manual_seed(0)
    return ImageVAE(config_from_dict(VAE_DEBUG["model"])).eval()


def make_latent_checkpoints(root: Path) -> tuple[Path, Path]:
    """A tiny random VAE checkpoint and a tiny random latent model "trained" on it."""
    vae = tiny_vae()
    vae.set_statistics(torch.tensor([0.1, -0.2, 0.0, 0.3]), torch.tensor([0.5, 1.0, 2.0, 0.25]))
    save_pretrained(inference_state(vae), export_config(vae, "image-vae-tiny"), root / "vae")
    tok = tl.load_image_vae(root / "vae")
    vocab = CaptionVocab.build(["fox face", "fox", "red heart"], 6)
    config = tl.export_config(DEBUG["model"], DEBUG["head"], vocab, 4, (8, 8), tok, "image-diffusion-tiny")
    torch.manual_seed(1)
    ar = tl.from_config(config)
    for p in ar.model.head.parameters():  # an untrained head predicts 0: give it something to say
        torch.nn.init.normal_(p, std=0.1)
    save_pretrained(inference_state(ar.model), config, root / "ar", dtype=torch.float32)
    return root / "ar", root / "vae"


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    return make_latent_checkpoints(tmp_path_factory.mktemp("latent_ckpt"))


# -- σ-VAE -------------------------------------------------------------------------------------
def test_vae_round_trip_shapes_normalisation_and_determinism():
    vae = tiny_vae()
    x = images(2)
    z = vae.encode(x).latents
    assert z.shape == (2, 4, 8, 8) and vae.encode(x).codes is None and torch.equal(z, vae.encode(x).latents)
    out = vae.decode_latents(z)
    assert out.shape == (2, 3, 64, 64) and 0 <= float(out.min()) and float(out.max()) <= 1
    mean, std = torch.tensor([0.1, -0.2, 0.0, 0.3]), torch.tensor([0.5, 1.0, 2.0, 0.25])
    vae.set_statistics(mean, std)
    zn = vae.encode(x).latents
    assert torch.allclose(zn, (z - mean.view(1, 4, 1, 1)) / std.view(1, 4, 1, 1), atol=1e-5)
    assert torch.allclose(vae.decode_latents(zn), out, atol=1e-5)  # normalising is invisible end to end
    with pytest.raises(MmarError):
        vae.decode(torch.zeros(1, 1, 8, 8, dtype=torch.long))
    with pytest.raises(MmarError):
        vae.decode_latents(torch.zeros(1, 3, 8, 8))


def test_vae_noise_only_in_training():
    vae = tiny_vae()
    x = images(2)
    g = lambda s: torch.Generator().manual_seed(s)  # noqa: E731
    rec_eval, _ = vae(x, g(0))
    assert torch.equal(rec_eval, vae(x, g(1))[0])
    vae.train()
    a, mean = vae(x, g(0))
    assert torch.equal(a, vae(x, g(0))[0]) and not torch.equal(a, vae(x, g(1))[0])
    assert torch.equal(mean, vae.encoder(x * 2 - 1))


@pytest.mark.parametrize("change", [{"latent_dim": 0}, {"latent_dim": 10**6}, {"latent_mean": [0.0]},
                                    {"latent_std": [1.0, 1.0, 0.0, 1.0]}, {"noise_std": float("nan")},
                                    {"channels": [8, 16, 32]}, {"latent_dim": 8}])
def test_vae_builder_refuses_a_bad_config(ckpts, tmp_path, change):
    d = tmp_path / "vae"
    d.mkdir()
    for f in ("model.safetensors", "config.json"):
        (d / f).write_bytes((ckpts[1] / f).read_bytes())
    (d / "config.json").write_text(json.dumps(json.loads((d / "config.json").read_text()) | change))
    with pytest.raises(MmarError):
        load_tokenizer("image_vae", d)


# -- diffusion head ----------------------------------------------------------------------------
@pytest.mark.parametrize("objective", ["flow", "v"])
def test_diffusion_head_learns_a_conditional_distribution(objective):
    """Four conditions, four target points: the loss falls, and samples land near their condition's point."""
    torch.manual_seed(0)
    head = DiffusionHead(DiffusionConfig(latent_dim=2, width=64, depth=2, objective=objective), cond_dim=4)
    centres = torch.tensor([[2.0, 0.0], [0.0, 2.0], [-2.0, 0.0], [0.0, -2.0]])
    opt = torch.optim.AdamW(head.parameters(), lr=3e-3)
    gen, curve = torch.Generator().manual_seed(0), []
    for _ in range(300):
        c = torch.randint(0, 4, (128,), generator=gen)
        loss = head.loss(torch.eye(4)[c][:, None], (centres[c] + 0.05 * torch.randn(128, 2, generator=gen))[:, None],
                         generator=gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
        curve.append(loss.item())
    assert sum(curve[-20:]) / 20 < 0.3 * sum(curve[:20]) / 20
    c = torch.arange(4).repeat(16)
    s = head.sample(torch.eye(4)[c][:, None], torch.Generator().manual_seed(1), steps=8)[:, 0]
    assert float((s - centres[c]).norm(dim=-1).median()) < 0.5


def test_diffusion_head_sampling_is_seeded_and_guided_rows_agree():
    torch.manual_seed(0)
    head = DiffusionHead(DiffusionConfig(latent_dim=3, width=16, depth=1), cond_dim=8)
    for p in head.parameters():
        torch.nn.init.normal_(p, std=0.2)
    h = torch.randn(4, 2, 8)
    g = lambda s: torch.Generator().manual_seed(s)  # noqa: E731
    a = head.sample(h, g(0), steps=4)
    assert a.shape == (4, 2, 3) and torch.equal(a, head.sample(h, g(0), steps=4))
    assert not torch.equal(a, head.sample(h, g(1), steps=4))
    guided = head.sample(h, g(0), steps=4, cfg_scale=3.0)  # rows [cond; uncond]
    assert guided.shape == (4, 2, 3) and torch.equal(guided[:2], guided[2:])
    assert not torch.allclose(guided[:2], head.sample(h, g(0), steps=4, cfg_scale=1.0)[:2])
    cold = head.sample(h, g(0), steps=4, temperature=0.0)
    assert torch.equal(cold, head.sample(h, g(5), steps=4, temperature=0.0))  # no noise: the seed does not matter
    with pytest.raises(ValueError):
        DiffusionConfig(objective="eps")


# -- decoding loop and the task ------------------------------------------------------------------
def test_latent_loop_cached_equals_uncached(ckpts):
    ar = tl.load_image_latent(ckpts[0])
    trunk = ar.model.trunk
    prefix = ar.vocab.batch(["fox", "red heart"])
    chosen = []

    def choose(step, h):  # a deterministic "head": a fixed projection of the hidden state
        chosen.append(h)
        return h[:, : ar.latent_dim] * 3

    cached = CachedStepper(trunk, 2, prefix.shape[1] + 10, readout=hidden)
    a = latent_loop(cached, cached(prefix=prefix)[:, -1], 10, choose)
    ref = UncachedStepper(trunk, 2, readout=hidden)
    b = latent_loop(ref, ref(prefix=prefix)[:, -1], 10, choose)
    assert a.shape == (2, 10, 4) and torch.allclose(a, b, atol=1e-5)
    # the loop feeds each latent back: the full forward over [prefix, z0..z8] gives the same states
    full = trunk(latents=a[:, :-1], prefix=prefix)[:, prefix.shape[1] - 1 :]
    assert torch.allclose(full, torch.stack(chosen[:10], 1), atol=1e-5)


def test_generate_latents_is_seeded_cached_equals_uncached_and_checks_inputs(ckpts):
    ar = tl.load_image_latent(ckpts[0])
    tl.check_vae_pair(ar, tl.load_image_vae(ckpts[1]))
    caps = ["fox face", "zebra", ""]
    a = tl.generate_latents(ar, caps, steps=3, cfg_scale=2.0, seed=4)
    assert a.shape == (3, 4, 8, 8) and torch.isfinite(a).all()
    assert torch.equal(a, tl.generate_latents(ar, caps, steps=3, cfg_scale=2.0, seed=4))
    assert torch.allclose(a, tl.generate_latents(ar, caps, steps=3, cfg_scale=2.0, seed=4, cached=False), atol=1e-4)
    assert not torch.equal(a, tl.generate_latents(ar, caps, steps=3, cfg_scale=2.0, seed=5))
    for bad in ({"steps": 0}, {"temperature": -1.0}, {"cfg_scale": float("inf")}):
        with pytest.raises(MmarError):
            tl.generate_latents(ar, ["fox"], **bad)


def test_loader_refuses_other_checkpoints_and_bad_configs(ckpts, tmp_path):
    with pytest.raises(MmarError):
        tl.load_image_latent(ckpts[1])  # a VAE, not a latent model
    for change in ({"head": {"width": 0}}, {"head": {"objective": "eps"}}, {"latent_dim": 5}, {"grid": [8]},
                   {"model": {"dim": 48}}):
        d = tmp_path / str(abs(hash(json.dumps(change))))
        d.mkdir()
        (d / "model.safetensors").write_bytes((ckpts[0] / "model.safetensors").read_bytes())
        config = json.loads((ckpts[0] / "config.json").read_text())
        (d / "config.json").write_text(json.dumps({**config, **{k: ({**config[k], **v} if isinstance(v, dict) else v)
                                                                for k, v in change.items()}}))
        with pytest.raises(MmarError):
            tl.load_image_latent(d)


# -- recipes -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained_vae(named_shapes_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("vae_run")
    train_image_tokenizer.train(overridden(VAE_DEBUG, steps=30, lr=5e-3), out, named_shapes_dir, progress=False)
    return out


def test_vae_recipe_loss_falls_and_export_normalises(trained_vae, named_shapes_dir):
    curve = losses(trained_vae)
    assert len(curve) == 30 and sum(curve[-5:]) / 5 < 0.7 * sum(curve[:5]) / 5
    rows = [json.loads(line) for line in (trained_vae / "valid.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 30 and rows[-1]["valid_psnr"] > 8 and "codebook_usage" not in rows[-1]
    tok = load_tokenizer("image_vae", trained_vae / "export")
    from mmar.data.emoji import load_split

    z = tok.model.encode(load_split(named_shapes_dir, "train").tensors()).latents
    per_channel = z.transpose(0, 1).flatten(1)  # the training latents come out standardised
    assert torch.allclose(per_channel.mean(1), torch.zeros(4), atol=0.05)
    assert torch.allclose(per_channel.std(1), torch.ones(4), atol=0.05)


def test_vae_recipe_resume_equals_uninterrupted(named_shapes_dir, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    train_image_tokenizer.train(VAE_DEBUG, a, named_shapes_dir, progress=False)
    train_image_tokenizer.train(VAE_DEBUG, b, named_shapes_dir, stop_after=3, progress=False)
    train_image_tokenizer.train(VAE_DEBUG, b, named_shapes_dir, progress=False)
    sa, sb = load_file(str(a / "state.safetensors")), load_file(str(b / "state.safetensors"))
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert losses(a) == losses(b)


def test_vae_recipe_on_sprite_frames_starts_from_a_checkpoint(trained_vae, named_shapes_dir, tmp_path):
    from mmar.data.sprites import SpriteClips

    dc = {"source": "sprites", "clips": 6, "frames_per_clip": 3}
    images, flippable = train_image_tokenizer.source_images(named_shapes_dir, "train", dc, seed=0)
    assert images.shape == (18, 3, 64, 64) and images.dtype == torch.uint8 and not flippable.any()
    clip = SpriteClips(named_shapes_dir, "train").clip(0).frames
    assert any(torch.equal(images[i], torch.from_numpy(f).permute(2, 0, 1)) for i in range(3) for f in clip)
    assert torch.equal(images, train_image_tokenizer.source_images(named_shapes_dir, "train", dc, seed=0)[0])
    assert len(train_image_tokenizer.source_images(named_shapes_dir, "valid", dc, limit=4)[0]) == 6  # 2 clips of 3
    # lr 0: a run initialised from the trained VAE keeps its weights exactly
    cfg = overridden(VAE_DEBUG, data=dc, steps=1, lr=0.0, warmup=1)
    train_image_tokenizer.train(cfg, tmp_path / "ft", named_shapes_dir, progress=False, init=trained_vae / "export")
    before = load_file(str(trained_vae / "export/model.safetensors"))
    after = load_file(str(tmp_path / "ft/state.safetensors"))
    for k, v in before.items():
        assert torch.equal(v.float(), after[f"model.{k}"].float()), k
    wide = overridden(VAE_DEBUG, data=dc)
    wide["model"]["channels"] = [16, 16, 16]
    with pytest.raises(SystemExit, match="do not fit"):
        train_image_tokenizer.train(wide, tmp_path / "bad", named_shapes_dir, progress=False, init=trained_vae / "export")


def test_diffusion_recipe_loss_falls_resumes_and_generates(trained_vae, named_shapes_dir, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    cfg = overridden(DEBUG, steps=40, lr=1e-2)
    train_image_ar.train(cfg, a, named_shapes_dir, trained_vae / "export", progress=False)
    curve = losses(a)
    assert len(curve) == 40 and sum(curve[-8:]) / 8 < 0.8 * sum(curve[:8]) / 8
    valid = [json.loads(line) for line in (a / "valid.jsonl").read_text().splitlines()]
    assert valid[-1]["valid_loss"] < valid[0]["valid_loss"]
    train_image_ar.train(cfg, b, named_shapes_dir, trained_vae / "export", stop_after=5, progress=False)
    train_image_ar.train(cfg, b, named_shapes_dir, trained_vae / "export", progress=False)
    sa, sb = load_file(str(a / "state.safetensors")), load_file(str(b / "state.safetensors"))
    assert all(torch.equal(sa[k], sb[k]) for k in sa) and losses(a) == losses(b)
    ar = tl.load_image_latent(a / "export")
    tl.check_vae_pair(ar, tl.load_image_vae(trained_vae / "export"))
    assert "red" in ar.vocab.stoi and tl.generate_latents(ar, ["red disc"], steps=2).shape == (1, 4, 8, 8)


# -- command line --------------------------------------------------------------------------------
def run(*args, cwd=None):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "mmar", "image", *map(str, args)], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=300)


def test_cli_generate_reconstruct_info_and_errors(ckpts, tmp_path):
    ar, vae = ckpts
    k = ["--tokenizer", "image_vae", "--tokenizer-checkpoint", vae]
    r = run("generate", "--caption", "fox face", "--num", 2, "--steps", 2, "--cfg", 2, "-o", tmp_path / "g.png",
            "--checkpoint", ar, *k)
    assert r.returncode == 0, r.stderr
    from PIL import Image

    assert Image.open(tmp_path / "g.png").size == (128, 64)
    r = run("reconstruct", tmp_path / "g.png", "-o", tmp_path / "r.png", *k)
    assert r.returncode == 0 and "8×8 latents" in r.stdout, r.stderr
    r = run("info", "--checkpoint", ar, "--json", *k)
    info = json.loads(r.stdout)
    assert info["latent_channels"] == 4 and info["model"] == "image-diffusion-tiny" and "flow" in info["head"]
    for bad in (["--top-k", "5"], ["--checkpoint", vae]):
        r = run("generate", "--caption", "fox", "-o", tmp_path / "x.png", *k, *bad)
        assert r.returncode != 0 and r.stderr.startswith("error:") and len(r.stderr.strip().splitlines()) == 1, r.stderr
    r = run("generate", "--caption", "fox", "-o", tmp_path / "x.png", "--steps", "4")
    assert r.returncode != 0 and "image_vae" in r.stderr
