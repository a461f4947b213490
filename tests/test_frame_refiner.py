"""The temporal decoder of video latents: motion search, detail moved by an untrained refiner,
causal decoding with the first frame plain when nothing came before, checkpoints that name their
VAE, the CLI's and the bench's choice of decoder, and the recipe (resume == uninterrupted)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mmar.checkpoint import save_pretrained
from mmar.errors import MmarError
from mmar.tasks import video as tv
from mmar.tasks.image_latent import load_image_vae
from mmar.tokenizers import frame_refiner as fr

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = Path(__file__).resolve().parents[1]


def noisy_refiner(seed: int = 0) -> fr.FrameRefiner:
    torch.manual_seed(seed)
    r = fr.FrameRefiner(fr.FrameRefinerConfig((8, 16), 1, 4))
    for p in r.out.parameters():  # the output layer starts at zero: make the correction visible
        torch.nn.init.normal_(p, std=0.05)
    return r.eval()


def blur(z: torch.Tensor) -> torch.Tensor:
    """A stand-in VAE decoder: latents [N, 3, 4, 4] → images [N, 3, 16, 16] in [0, 1]."""
    return torch.sigmoid(torch.nn.functional.interpolate(z, scale_factor=4, mode="bilinear"))


def test_block_motion_finds_a_translation_and_flat_blocks_stay():
    torch.manual_seed(0)
    img = torch.ones(2, 3, 32, 32)
    img[:, :, 8:20, 6:18] = torch.rand(2, 3, 12, 12)
    shift = torch.zeros(2, 2, 32, 32)
    shift[:, 0], shift[:, 1] = 2.5, -3.0
    cur = fr.warp(img, shift)
    field = fr.block_motion(cur, img)
    assert field.shape == (2, 2, 32, 32) and torch.equal(field[:, :, 12, 10], torch.tensor([[2.5, -3.0]] * 2))
    assert torch.equal(field[:, :, 28, 28], torch.zeros(2, 2))  # white on white: no motion
    assert torch.allclose(fr.warp(img, field), cur, atol=1e-6)
    with pytest.raises(MmarError):
        fr.block_motion(torch.rand(1, 3, 12, 16), torch.rand(1, 3, 12, 16))


def test_fresh_refiner_moves_the_detail_and_the_first_frame_is_plain():
    torch.manual_seed(1)
    sharp = torch.ones(1, 3, 32, 32)
    sharp[:, :, 10:22, 8:20] = torch.rand(1, 3, 12, 12)
    soft = torch.nn.functional.avg_pool2d(sharp, 3, 1, 1)  # what a lossy decoder gives back
    shift = torch.zeros(1, 2, 32, 32)
    shift[:, 1] = 3.0
    fresh = fr.FrameRefiner(fr.FrameRefinerConfig((8, 16), 1, 4)).eval()
    out = fresh(fr.warp(soft, shift), sharp, soft)  # the frame before was shown sharp
    want = fr.warp(sharp, shift)
    assert (out - want).abs().mean() < 0.1 * (fr.warp(soft, shift) - want).abs().mean()
    z = torch.randn(2, 5, 3, 4, 4)
    plain = fr.decode_video(blur, None, z)
    r = noisy_refiner()
    out = fr.decode_video(blur, r, z)
    assert torch.equal(out[:, 0], plain[:, 0]) and not torch.allclose(out[:, 1:], plain[:, 1:])
    assert out.min() >= 0 and out.max() <= 1
    with pytest.raises(MmarError):
        fr.decode_video(blur, r, z, torch.rand(2, 3, 16, 16))  # the previous frame without its latents


def test_decoding_is_causal_and_streams():
    r, z = noisy_refiner(), torch.randn(1, 6, 3, 4, 4)
    prev, prev_z = torch.rand(1, 3, 16, 16), torch.randn(1, 3, 4, 4)
    a = fr.decode_video(blur, r, z, prev, prev_z)
    later = z.clone()
    later[:, 3:] += 1.0
    b = fr.decode_video(blur, r, later, prev, prev_z)
    assert torch.equal(a[:, :3], b[:, :3]) and not torch.allclose(a[:, 3:], b[:, 3:])
    other = fr.decode_video(blur, r, z, torch.rand(1, 3, 16, 16), prev_z)  # the frame shown before counts
    assert not torch.allclose(a[:, 0], other[:, 0])
    dec = fr.VideoDecoder(blur, r, prev, prev_z)  # frame by frame, as the CLI and demo decode
    assert torch.equal(torch.stack([dec(z[:, k]) for k in range(6)], 1), a)


def test_config_bounds_and_shape_errors():
    for bad in ({"channels": [8] * 6}, {"channels": [2]}, {"channels": "8"}, {"res_blocks": 99}, {"groups": True}):
        with pytest.raises(MmarError):
            fr.config_from_dict(bad)
    r = noisy_refiner()
    with pytest.raises(MmarError):
        r(torch.rand(1, 3, 15, 16), torch.rand(1, 3, 15, 16), torch.rand(1, 3, 15, 16))
    with pytest.raises(MmarError):
        r(torch.rand(1, 3, 16, 16), torch.rand(1, 3, 8, 8), torch.rand(1, 3, 16, 16))


@pytest.fixture(scope="module")
def refiner_ckpts(tmp_path_factory):
    from test_image_latent import make_latent_checkpoints

    root = tmp_path_factory.mktemp("refiner")
    _, vae = make_latent_checkpoints(root / "ckpt")
    tok = load_image_vae(vae)
    r = noisy_refiner()
    save_pretrained(r.state_dict(), fr.export_config(r, tok.model_id, tok.weights), root / "good")
    save_pretrained(r.state_dict(), fr.export_config(r, tok.model_id, "0badf00d"), root / "other")
    return vae, root / "good", root / "other"


def test_refiner_checkpoints_name_their_vae(refiner_ckpts):
    vae, good, other = refiner_ckpts
    tok = load_image_vae(vae)
    loaded = tv.refiner_for(tok, good)
    assert isinstance(loaded, fr.FrameRefiner) and tv.refiner_for(tok, good, use=False) is None
    default = tv.refiner_for(tok)  # motion compensation alone: nothing to load, fits any VAE
    assert not default.learned and not list(default.parameters())
    with pytest.raises(MmarError, match="0badf00d"):
        tv.refiner_for(tok, other)
    z = torch.randn(1, 3, 4, 8, 8)
    prompt = np.full((1, 2, 64, 64, 3), 200, np.uint8)
    with_prompt = tv.latents_to_frames(tok, z, loaded, prompt, torch.randn(1, 2, 4, 8, 8))
    assert with_prompt.shape == (1, 3, 64, 64, 3) and with_prompt.dtype == np.uint8
    assert np.array_equal(tv.latents_to_frames(tok, z, loaded)[:, 0], tv.latents_to_frames(tok, z)[:, 0])


def test_cli_refiner_flags(refiner_ckpts, tmp_path):
    vae, good, other = refiner_ckpts
    ar = vae.parent / "ar"
    cmd = [sys.executable, "-m", "mmar", "video", "generate", "--caption", "fox", "--frames", "1",
           "--checkpoint", str(ar), "--tokenizer-checkpoint", str(vae), "--steps", "1"]
    r = subprocess.run(cmd + ["-o", str(tmp_path / "a.gif"), "--refiner", str(good), "--no-refiner"], capture_output=True, text=True)
    assert r.returncode == 2 and "contradict" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run(cmd + ["-o", str(tmp_path / "b.gif"), "--refiner", str(other)], capture_output=True, text=True)
    assert r.returncode != 0 and "Traceback" not in r.stderr and not (tmp_path / "b.gif").exists()


def test_recipe_resume_equals_uninterrupted(named_shapes_dir, tmp_path):
    sys.path.insert(0, str(ROOT / "recipes"))
    import train_video_refiner
    from recipe_helpers import losses, resumed_and_uninterrupted, same_state
    from test_image_latent import make_latent_checkpoints

    _, vae = make_latent_checkpoints(tmp_path / "ckpt")
    cfg = json.loads((ROOT / "recipes/configs/video_refiner_debug.json").read_text())
    a, b = tmp_path / "a", tmp_path / "b"
    resumed_and_uninterrupted(train_video_refiner.train, cfg, a, b, named_shapes_dir, vae)
    assert same_state(a, b) and losses(a) == losses(b) and len(losses(a)) == 8
    tok = load_image_vae(vae)
    r = tv.refiner_for(tok, a / "export")
    assert r.cfg.channels == (8, 16)
    valid = [json.loads(line) for line in (a / "valid.jsonl").read_text().splitlines()]
    assert len(valid) == 2 and all(np.isfinite(v["valid_psnr"]) for v in valid)


def test_bench_scores_the_refined_and_the_plain_decoding(refiner_ckpts, named_shapes_dir, tmp_path):
    from mmar.checkpoint import inference_state
    from mmar.cli import main
    from mmar.text.captions import CaptionVocab

    vae, good, _ = refiner_ckpts
    config = tv.export_config({"dim": 32, "n_layers": 2, "n_heads": 2}, {"width": 32}, CaptionVocab.build(["disc moves"], 6),
                              4, (8, 8), 4, load_image_vae(vae), "video-tiny")
    save_pretrained(inference_state(tv.from_config(config).model), config, tmp_path / "video")
    out = tmp_path / "b.json"
    common = ["bench", "video", "--data", str(named_shapes_dir), "--checkpoint", str(tmp_path / "video"), "--tokenizer-checkpoint",
              str(vae), "--clips", "2", "--horizon", "3", "--steps", "1", "--no-memory", "--json", str(out)]
    assert main(common + ["--refiner", str(good)]) == 0
    r = json.loads(out.read_text())
    cont = r["continuation"]
    assert r["refiner"] == str(good) and {"model_plain_decoder", "vae_round_trip_plain"} <= set(cont)
    assert cont["model"]["psnr"] != cont["model_plain_decoder"]["psnr"]
    assert main(common) == 0 and json.loads(out.read_text())["refiner"] == "motion compensation"
    assert main(common + ["--no-refiner"]) == 0
    r = json.loads(out.read_text())
    assert r["refiner"] is None and "model_plain_decoder" not in r["continuation"]
    assert main(common + ["--no-refiner", "--refiner", str(good)]) == 2
