"""Frame-autoregressive video: the training loss, and sampling with the context cache reused across
denoising steps equal to recomputing the context at every step (window, sink, prompts, CFG)."""

import numpy as np
import pytest
import torch

from mmar.errors import MmarError
from mmar.tasks import video as tv
from mmar.text.captions import CaptionVocab

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(window: int = 8, seed: int = 0, local: int = 0, grid: tuple[int, int] = (2, 2), residual: bool = False,
         memory: bool = False, motion_base: bool = False) -> tv.VideoModel:
    vocab = CaptionVocab.build(["fox moves left", "red apple grows", "then bounces"], 6)
    config = tv.export_config({"dim": 32, "n_layers": 2, "n_heads": 2}, {"width": 32, "depth": 2, "objective": "flow"},
                              vocab, 3, grid, window, name="video-tiny", local=local, residual=residual, memory=memory,
                              motion_base=motion_base)
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
    # per-frame probabilities: a constant row is the scalar; frames certain to be clean are context only
    row = vm.model(lat, prefix, clean_p=torch.full((5,), 0.3), generator=torch.Generator().manual_seed(0))
    assert torch.equal(again, row)
    first_clean = torch.tensor([1.0, 0, 0, 0, 0])
    a = vm.model(lat, prefix, clean_p=first_clean, generator=torch.Generator().manual_seed(0))
    b = vm.model(lat, prefix, clean_p=0.0, generator=torch.Generator().manual_seed(0))
    moved = lat.clone()
    moved[:, 0] += 1.0  # the clean first frame is context that the later frames see
    c = vm.model(moved, prefix, clean_p=first_clean, generator=torch.Generator().manual_seed(0))
    assert a.item() != b.item() and a.item() != c.item()
    assert vm.model(lat, prefix, clean_p=torch.tensor([1.0, 1, 1, 1, 1]), generator=g).item() == 0.0


@pytest.mark.parametrize("window,frames,cfg,local,residual,memory", [
    (8, 5, 1.0, 0, False, False), (3, 7, 2.0, 0, False, False), (3, 7, 2.0, 3, False, False), (8, 4, 1.0, 1, False, False),
    (3, 7, 2.0, 0, True, False), (8, 4, 1.0, 3, True, False), (3, 7, 2.0, 0, False, True), (2, 6, 1.0, 3, True, True)])
def test_cache_reuse_equals_recompute(window, frames, cfg, local, residual, memory):
    vm = tiny(window, local=local, residual=residual, memory=memory)
    prompt = torch.randn(2, 2, 3, 2, 2)
    kw = dict(steps=3, cfg_scale=cfg, seed=5, prompt=prompt)
    a = tv.generate_frames(vm, ["fox moves left", "red apple grows"], frames, **kw)
    b = tv.generate_frames(vm, ["fox moves left", "red apple grows"], frames, cached=False, **kw)
    assert a.shape == (2, frames, 3, 2, 2) and torch.isfinite(a).all()
    assert (a - b).abs().max() <= 1e-4
    assert torch.equal(a, tv.generate_frames(vm, ["fox moves left", "red apple grows"], frames, **kw))
    assert not torch.allclose(a, tv.generate_frames(vm, ["fox moves left", "red apple grows"], frames, **{**kw, "seed": 6}))


def test_long_term_memory_sees_frames_that_left_the_window_in_bounded_state():
    """With ``memory`` a frame that left the window still steers the rollout (through its pooled
    latents), without it nothing does; the state stays bounded; and training builds each frame's
    long-term context exactly as sampling does, frame by frame."""
    prompt = torch.randn(1, 6, 3, 2, 2)
    moved = prompt.clone()
    moved[:, 0] += 3.0  # frame 0 is out of the window (3) of every new frame
    kw = dict(steps=2, seed=1)
    plain = tiny(3)
    assert torch.equal(tv.generate_frames(plain, ["fox"], 2, prompt=prompt, **kw), tv.generate_frames(plain, ["fox"], 2, prompt=moved, **kw))
    vm = tiny(3, memory=True)
    assert not torch.allclose(tv.generate_frames(vm, ["fox"], 2, prompt=prompt, **kw), tv.generate_frames(vm, ["fox"], 2, prompt=moved, **kw))
    net, inputs = vm.model, tv.FrameInputs(vm.model, 1)
    lat = torch.randn(1, 12, 4, 3)
    states = [None]
    for f in range(12):
        states.append(inputs.update(states[-1], lat[:, f]))
    assert len(states[-1].recent) == 2 and states[-1].count == 10  # window − 1 frames pending; the rest summed
    clean = net.time_embedding(None, 1, 1)
    for start in (0, 2, 5, 9):
        trained = net.window_memory(lat[:, :start], 3)  # [1, 3, N, D]
        for j in range(3):
            assert torch.allclose(trained[:, j], inputs(None, states[start + j]) - clean, atol=1e-6), (start, j)
    assert tv.generate_frames(vm, ["fox"], 40, steps=1).shape[1] == 40


def test_position_offset_equals_a_cache_that_already_holds_earlier_frames():
    """Training at ``offset`` gives the frames the positions a rollout's kv-cache gives them after
    that many earlier tokens: the same hidden states as the cache, and not those of offset 0."""
    from mmar.transformer import KVCache

    vm = tiny(8)
    trunk, n = vm.model.trunk, vm.tokens_per_frame
    prefix, x = vm.vocab.batch(["fox moves left"]), torch.randn(1, 2 * n, 3)
    with torch.no_grad():
        full = trunk(latents=x, prefix=prefix, tokens_per_frame=n, offset=5 * n)[:, prefix.shape[1]:]
        cache = KVCache(trunk.cfg, 1, prefix.shape[1] + 10 * n, n)
        trunk(prefix=prefix, cache=cache)
        cache.lengths += 5 * n  # five frames' positions already taken (nothing visible there)
        cached = trunk(latents=x, cache=cache)
        plain = trunk(latents=x, prefix=prefix, tokens_per_frame=n)[:, prefix.shape[1]:]
    assert (full - cached).abs().max() < 1e-5 and (full - plain).abs().max() > 1e-4


def test_local_map_sees_only_the_previous_frame_near_each_token():
    """The previous-frame map of a token reads the k × k cells around it, nothing further; in
    training, frame f's inputs hold frame f − 1's clean latents (the first frame: none), so the
    loss depends on them while earlier frames stay blind to later ones (block-causal)."""
    vm = tiny(local=3, grid=(4, 4))
    net = vm.model
    prev = torch.randn(1, 1, 16, 3)
    moved = prev.clone()
    moved[0, 0, 0] += 1.0  # cell (0, 0)
    diff = (net.prev_embedding(moved) - net.prev_embedding(prev)).abs().sum(-1)[0].view(4, 4)
    assert (diff[:2, :2] > 0).all() and diff[2:].sum() == 0 and diff[:, 2:].sum() == 0
    lat, prefix = torch.randn(1, 3, 16, 3), vm.vocab.batch(["fox moves left"])
    hidden = {}
    net.trunk.register_forward_hook(lambda m, i, o: hidden.__setitem__("h", o))

    def h(z):
        net(z, prefix, clean_p=0.5, generator=torch.Generator().manual_seed(1))
        return hidden["h"][:, prefix.shape[1]:].view(1, 3, 16, -1)

    base = h(lat)
    later = lat.clone()
    later[:, 2] += 1.0
    assert torch.equal(h(later)[:, :2], base[:, :2])  # frame 2 changes nothing before it
    off = tiny(local=0, grid=(4, 4)).model
    assert not hasattr(off, "prev") and off.prev_embedding(prev).abs().sum() == 0


@pytest.mark.parametrize("cfg", [1.0, 2.0])
def test_residual_model_predicting_no_change_repeats_the_last_frame(cfg):
    """With ``residual`` the head denoises the change from the last frame: a head that predicts
    zero velocity from zero noise leaves every new frame equal to the last prompt frame, where
    the same head on absolute frames gives zeros."""
    prompt = torch.randn(1, 2, 3, 2, 2)
    for residual in (True, False):
        vm = tiny(residual=residual)
        torch.nn.init.zeros_(vm.model.head.out.weight)
        torch.nn.init.zeros_(vm.model.head.out.bias)
        out = tv.generate_frames(vm, ["fox moves left"], 3, prompt=prompt, steps=2, temperature=0.0, cfg_scale=cfg)
        want = prompt[:, -1:].expand(1, 3, 3, 2, 2) if residual else torch.zeros(1, 3, 3, 2, 2)
        assert torch.equal(out, want)
    with pytest.raises(MmarError):
        tv.from_config({**tv.export_config({"dim": 32, "n_layers": 2, "n_heads": 2}, {"width": 32}, tiny().vocab, 3, (2, 2), 4),
                        "residual": "yes"})


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
    from recipe_helpers import losses, resumed_and_uninterrupted, same_state
    from test_image_latent import make_latent_checkpoints

    _, vae = make_latent_checkpoints(tmp_path / "ckpt")
    cfg = json.loads((root / "recipes/configs/video_debug.json").read_text())
    a, b = tmp_path / "a", tmp_path / "b"
    resumed_and_uninterrupted(train_video.train, cfg, a, b, named_shapes_dir, vae)
    assert same_state(a, b) and losses(a) == losses(b) and len(losses(a)) == 8
    vm = tv.load_video(a / "export")
    assert vm.window == 4 and vm.grid == (8, 8) and "disc" in vm.vocab.stoi
    assert tv.generate_frames(vm, ["red disc moves left"], 2, steps=1).shape == (1, 2, 4, 8, 8)
    # a second stage starts from the export's weights (0 steps: it exports them unchanged)
    c = tmp_path / "c"
    train_video.train(json.loads(json.dumps(cfg)) | {"optim": cfg["optim"] | {"steps": 0}}, c, named_shapes_dir, vae,
                      progress=False, init=a / "export")
    wa, wc = load_file(str(a / "export/model.safetensors")), load_file(str(c / "export/model.safetensors"))
    assert all(torch.equal(wa[k], wc[k]) for k in wa)
    # … also into a model with a previous-frame map, which starts at zero: the same function
    d = tmp_path / "d"
    train_video.train(json.loads(json.dumps(cfg)) | {"optim": cfg["optim"] | {"steps": 0}, "model": cfg["model"] | {"local": 3}},
                      d, named_shapes_dir, vae, progress=False, init=a / "export")
    wd, vd = load_file(str(d / "export/model.safetensors")), tv.load_video(d / "export")
    assert vd.model.local == 3 and all(torch.equal(wa[k], wd[k]) for k in wa) and all(wd[k].abs().sum() == 0 for k in wd if k.startswith("prev."))
    prompt = torch.randn(1, 2, 4, 8, 8)
    assert torch.allclose(tv.generate_frames(vm, ["red disc"], 2, prompt=prompt, steps=2), tv.generate_frames(vd, ["red disc"], 2, prompt=prompt, steps=2))


def test_recipe_caption_windows_resume_and_change_the_batches(named_shapes_dir, tmp_path):
    import json
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(root / "recipes"))
    import train_video
    from recipe_helpers import losses, resumed_and_uninterrupted, same_state
    from test_image_latent import make_latent_checkpoints

    _, vae = make_latent_checkpoints(tmp_path / "ckpt")
    cfg = json.loads((root / "recipes/configs/video_debug.json").read_text())
    cfg["train"] |= {"caption_windows": 0.5, "position_jitter": 3, "caption_frames": 2, "caption_first_clean": 0.5}
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    resumed_and_uninterrupted(train_video.train, cfg, a, b, named_shapes_dir, vae)
    assert same_state(a, b) and losses(a) == losses(b)
    cfg["train"]["caption_windows"] = 0.0
    train_video.train(cfg, c, named_shapes_dir, vae, progress=False)
    assert losses(c) != losses(a)
    cfg["train"] |= {"caption_windows": 0.5, "caption_frames": None, "caption_first_clean": 0.0}  # whole windows, none clean
    train_video.train(cfg, tmp_path / "d", named_shapes_dir, vae, progress=False)
    assert losses(tmp_path / "d") not in (losses(a), losses(c))


# -- files and command line -------------------------------------------------------------------------
def test_recipe_motion_base_caches_bases_resumes_and_samples(named_shapes_dir, tmp_path):
    import json
    import sys
    from pathlib import Path

    from safetensors.torch import load_file

    from mmar.tasks.image_latent import load_image_vae

    root = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(root / "recipes"))
    import train_video
    from recipe_helpers import losses, resumed_and_uninterrupted, same_state
    from test_image_latent import make_latent_checkpoints

    _, vae = make_latent_checkpoints(tmp_path / "ckpt")
    cfg = json.loads((root / "recipes/configs/video_debug.json").read_text())
    cfg["model"] |= {"residual": True, "motion_base": True}
    a, b = tmp_path / "a", tmp_path / "b"
    resumed_and_uninterrupted(train_video.train, cfg, a, b, named_shapes_dir, vae)
    assert same_state(a, b) and losses(a) == losses(b)
    cache = load_file(str(a / "latents.safetensors"))
    assert cache["train_base"].shape == cache["train"].shape and torch.equal(cache["train_base"][:, 1], cache["train"][:, 0])
    vm, tok = tv.load_video(a / "export"), load_image_vae(vae)
    assert vm.model.motion_base
    with pytest.raises(MmarError):
        tv.generate_frames(vm, ["red disc"], 2, steps=1)
    z = tv.generate_frames(vm, ["red disc moves left"], 3, steps=1, base=tv.motion_base(vm, tok, tv.refiner_for(tok)))
    assert z.shape == (1, 3, 4, 8, 8) and torch.isfinite(z).all()
    assert tv.motion_base(tiny(), tok) is None  # other models need no bases


def test_video_files_round_trip_and_bad_inputs(tmp_path):
    from mmar.video_io import read_frames, write_video

    frames = np.full((6, 64, 64, 3), 255, np.uint8)
    for i in range(6):
        frames[i, 20:40, 5 + 6 * i : 25 + 6 * i] = (200, 40, 40)
    for suffix in (".mp4", ".gif"):
        p = write_video(tmp_path / f"v{suffix}", frames)
        back = read_frames(p)
        assert back.shape == frames.shape and np.abs(back.astype(int) - frames).mean() < 4
        assert (p.stat().st_mode & 0o777) != 0o600
        with pytest.raises(MmarError):
            write_video(p, frames)  # exists: refused without force
        assert read_frames(p, side=32, max_frames=2).shape == (2, 32, 32, 3)
    runs = write_video(tmp_path / "runs.gif", frames[[0, 0, 0, 1, 2, 2]])  # identical frames: merged, then expanded
    assert np.array_equal(read_frames(runs)[[0, 1, 2]], read_frames(runs)[[0, 0, 0]]) and len(read_frames(runs)) == 6
    (tmp_path / "bad.mp4").write_bytes(b"not a video")
    (tmp_path / "empty.gif").write_bytes(b"")
    for bad in ("bad.mp4", "empty.gif", "missing.mp4", "v.txt"):
        (tmp_path / "v.txt").write_text("x")
        with pytest.raises(MmarError):
            read_frames(tmp_path / bad)
    with pytest.raises(MmarError):
        write_video(tmp_path / "v.avi", frames)


def test_cli_generate_continues_prompt_frames_and_refuses_bad_input(named_shapes_dir, tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    from mmar.checkpoint import inference_state, save_pretrained
    from mmar.tasks.image_latent import load_image_vae
    from mmar.video_io import read_frames, write_video
    from test_image_latent import make_latent_checkpoints

    root = Path(__file__).resolve().parents[1]
    _, vae = make_latent_checkpoints(tmp_path / "ckpt")
    vocab = CaptionVocab.build(["fox moves left"], 6)
    config = tv.export_config({"dim": 32, "n_layers": 2, "n_heads": 2}, {"width": 32}, vocab, 4, (8, 8), 4,
                              load_image_vae(vae), "video-tiny")
    save_pretrained(inference_state(tv.from_config(config).model), config, tmp_path / "video")
    still = np.full((3, 50, 70, 3), 200, np.uint8)
    still[1, :10] = 0  # distinct frames: a GIF stores a run of identical frames as one longer frame
    prompt = write_video(tmp_path / "p.gif", still)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(root)}

    def run(*args, model="video"):
        return subprocess.run([sys.executable, "-m", "mmar", "video", "generate", *map(str, args),
                               "--checkpoint", tmp_path / model, "--tokenizer-checkpoint", vae],
                              capture_output=True, text=True, env=env, timeout=300)

    r = run("--caption", "fox moves left", "--frames", 2, "--steps", 2, "--prompt-frames", prompt, "-o", tmp_path / "o.mp4")
    assert r.returncode == 0, r.stderr
    assert read_frames(tmp_path / "o.mp4").shape == (5, 64, 64, 3)  # 3 prompt frames + 2 new
    moving = {**config, "residual": True, "motion_base": True}  # a model that needs motion-predicted bases
    save_pretrained(inference_state(tv.from_config(moving).model), moving, tmp_path / "moving")
    for extra, frames in ((["--prompt-frames", prompt], 6), ([], 3)):
        r = run("--caption", "fox moves left", "--frames", 3, "--steps", 2, "-o", tmp_path / "m.gif", "-f", *extra, model="moving")
        assert r.returncode == 0, r.stderr
        assert read_frames(tmp_path / "m.gif").shape == (frames, 64, 64, 3)
    (tmp_path / "junk.mp4").write_bytes(b"\x00" * 100)
    for bad in (["--frames", 0], ["--frames", 10**6], ["--frames", 2, "-o", tmp_path / "o.avi"],
                ["--frames", 2, "--prompt-frames", tmp_path / "junk.mp4"], ["--frames", 2, "--steps", 0],
                ["--frames", 2, "-o", tmp_path / "o.mp4"], ["--frames", 2, "--caption", "!!!"]):
        args = ["--caption", "fox", "-o", tmp_path / "x.gif"] + bad
        r = run(*args)
        assert r.returncode == 2 and r.stderr.startswith("error:") and len(r.stderr.strip().splitlines()) == 1, (bad, r.stderr)


def test_bench_video_cli(named_shapes_dir, tmp_path, capsys):
    import json

    from mmar.bench.video import shift_frame
    from mmar.checkpoint import inference_state, save_pretrained
    from mmar.cli import main
    from mmar.tasks.image_latent import load_image_vae
    from test_image_latent import make_latent_checkpoints

    f = np.full((8, 8, 3), 255, np.uint8)
    f[2, 3] = 0
    assert shift_frame(f, 1, -2)[3, 1, 0] == 0 and shift_frame(f, 1, -2).sum() == f.sum()
    _, vae = make_latent_checkpoints(tmp_path / "ckpt")
    config = tv.export_config({"dim": 32, "n_layers": 2, "n_heads": 2}, {"width": 32}, CaptionVocab.build(["disc moves"], 6),
                              4, (8, 8), 4, load_image_vae(vae), "video-tiny")
    save_pretrained(inference_state(tv.from_config(config).model), config, tmp_path / "video")
    out = tmp_path / "b.json"
    assert main(["bench", "video", "--data", str(named_shapes_dir), "--checkpoint", str(tmp_path / "video"),
                 "--tokenizer-checkpoint", str(vae), "--clips", "3", "--horizon", "3", "--steps", "2", "--no-memory",
                 "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert set(r["continuation"]) == {"model", "model_plain_decoder", "repeat_last", "shift_by_last_motion", "vae_round_trip",
                                      "vae_round_trip_plain"}
    assert len(r["continuation"]["model"]["psnr_per_step"]) == 3 and 0 <= r["caption_adherence"] <= 1
    for v in r["speed_seconds_per_frame"].values():
        assert v["max_abs_difference"] < 1e-4 and v["cached"] > 0
    assert "model − repeat_last" in capsys.readouterr().out and r["split"] == "test"
    assert main(["bench", "video", "--data", str(named_shapes_dir), "--checkpoint", str(tmp_path / "video"), "--split", "valid",
                 "--tokenizer-checkpoint", str(vae), "--clips", "2", "--horizon", "2", "--steps", "2", "--no-memory",
                 "--json", str(out)]) == 0
    assert json.loads(out.read_text())["split"] == "valid"
    assert main(["bench", "video", "--data", str(named_shapes_dir), "--clips", "0"]) == 2


def test_a_video_model_finds_the_shipped_vae_it_learnt():
    """SHIPPED maps each shipped σ-VAE's sha256[:8] to its directory, so a model that names those
    weights loads that VAE by default; weights no shipped VAE holds get a one-line error."""
    from pathlib import Path
    from types import SimpleNamespace

    from mmar.checkpoint import SHIPPED, weights_hash
    from mmar.tasks.image_latent import vae_for

    root = Path(__file__).resolve().parents[1] / "checkpoints"
    vaes = {w: name for w, name in SHIPPED.items() if name.startswith("image-vae")}
    assert vaes
    model = lambda w, c=4: SimpleNamespace(model_id="video-x", tokenizer_weights=w, latent_dim=c, grid=(8, 8))  # noqa: E731
    for w, name in vaes.items():
        assert weights_hash(root / name / "model.safetensors") == w
        assert vae_for(model(w)).weights == w
    with pytest.raises(MmarError, match="trained on VAE weights 0badf00d"):
        vae_for(model("0badf00d"))
    with pytest.raises(MmarError, match="models 3 channels"):
        vae_for(model(next(iter(vaes)), 3))
