"""The image tokenizer (FSQ + CNN), its checkpoint builder, and its recipe on the debug config."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from mmar.checkpoint import inference_state, load_pretrained, save_pretrained
from mmar.data.emoji import SPLITS, save_images
from mmar.errors import MmarError
from mmar.tokenizers.base import load_tokenizer, tokenizer_names
from mmar.tokenizers.fsq import FSQ
from mmar.tokenizers.image_vq import ImageVQ, ImageVQConfig, export_config

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "recipes"))
import train_image_tokenizer as train_image_vq  # noqa: E402

from recipe_helpers import losses, overridden  # noqa: E402

DEBUG = json.loads((ROOT / "recipes/configs/image_vq_debug.json").read_text())
TINY = ImageVQConfig(**DEBUG["model"])


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_model(seed=0) -> ImageVQ:
    torch.manual_seed(seed)
    return ImageVQ(TINY).eval()


def images(n=3, seed=0, side=64) -> torch.Tensor:
    return torch.rand(n, 3, side, side, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("levels", [[8, 5, 5, 5], [2, 3], [7], [4, 4, 4]])
def test_fsq_index_round_trip_is_exact(levels):
    fsq = FSQ(levels)
    idx = torch.arange(fsq.codebook_size).view(1, -1, 1)
    codes = fsq.indices_to_codes(idx)
    assert codes.shape == (1, len(levels), fsq.codebook_size, 1) and codes.abs().max() <= 1
    assert torch.equal(fsq.codes_to_indices(codes), idx)
    book = fsq.codebook()
    assert book.shape == (fsq.codebook_size, len(levels)) and len(torch.unique(book, dim=0)) == fsq.codebook_size
    z = torch.randn(5, len(levels), 3, 3, requires_grad=True) * 4
    q = fsq(z)
    assert torch.equal(fsq.indices_to_codes(fsq.codes_to_indices(q)), q.detach())  # forward output is on the grid
    idx = fsq.encode(z)
    assert idx.min() >= 0 and idx.max() < fsq.codebook_size
    z2 = torch.randn(2, len(levels), 4, requires_grad=True)
    fsq(z2).sum().backward()
    assert z2.grad is not None and z2.grad.abs().sum() > 0  # straight-through


def test_encode_decode_shapes_range_and_determinism():
    model, x = tiny_model(), images()
    enc = model.encode(x)
    rows = 64 // TINY.factor
    assert enc.codes.shape == (3, 1, rows, rows) and enc.codes.dtype == torch.int64 and enc.grid == (rows, rows)
    assert enc.codes.min() >= 0 and enc.codes.max() < model.codebook_size == 64
    assert torch.equal(model.encode(x).codes, enc.codes)
    assert torch.equal(model.encode(x[1:2]).codes, enc.codes[1:2])  # batch-independent
    y = model.decode(enc.codes)
    assert y.shape == x.shape and y.dtype == torch.float32 and 0 <= y.min() and y.max() <= 1
    assert model.num_codebooks == 1 and model.codebooks()[0].shape == (64, 3)
    z = model.latents_from_codes(enc.codes)
    assert z.shape == (3, 3, rows, rows)
    assert torch.equal(model.decode_latents(z), y)
    assert model.encode(images(1, side=32)).codes.shape == (1, 1, 32 // TINY.factor, 32 // TINY.factor)


def test_bad_inputs_raise_mmar_error():
    model = tiny_model()
    for bad in (torch.rand(3, 64, 64), torch.rand(1, 1, 64, 64), torch.rand(1, 3, 62, 64), torch.zeros(1, 3, 64, 64, dtype=torch.uint8)):
        with pytest.raises(MmarError):
            model.encode(bad)
    with pytest.raises(MmarError):
        model.encode(images(1), levels=2)
    for codes in (torch.full((1, 1, 16, 16), 64), torch.full((1, 1, 16, 16), -1), torch.zeros(1, 2, 16, 16, dtype=torch.long)):
        with pytest.raises(MmarError):
            model.decode(codes)


@pytest.fixture
def tiny_ckpt(tmp_path):
    model = tiny_model()
    d = tmp_path / "image-vq-tiny"
    save_pretrained(inference_state(model), export_config(model, "image-vq-tiny"), d)
    return d, model


def test_load_tokenizer_builds_the_saved_model(tiny_ckpt):
    d, model = tiny_ckpt
    assert "image_vq" in tokenizer_names()
    loaded = load_tokenizer("image_vq", d)
    assert loaded.model_id == "image-vq-tiny" and len(loaded.weights) == 8
    assert loaded.model.cfg == TINY and not loaded.model.training
    model.load_state_dict({k: v.half().float() for k, v in model.state_dict().items()})  # what fp16 weights hold
    x = images(2, seed=3)
    assert torch.equal(loaded.model.encode(x).codes, model.encode(x).codes)
    assert torch.equal(load_tokenizer("image-vq-64", d).model.encode(x).codes, model.encode(x).codes)  # alias


@pytest.mark.parametrize("change", [
    {"kind": "speech_codec"},
    {"channels": [8, 16, 10**9]},
    {"channels": [8] * 40},
    {"channels": "many"},
    {"levels": [64] * 8},
    {"levels": [1, 4]},
    {"res_blocks": True},
    {"image_size": 2.5},
    {"image_size": 66},
    {"channels": [8, 16, 32]},  # valid config, but the weights are another shape
])
def test_builder_refuses_a_bad_config(tiny_ckpt, change):
    d, _ = tiny_ckpt
    cfg = json.loads((d / "config.json").read_text()) | change
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(MmarError):
        load_tokenizer("image_vq", d)


def test_builder_refuses_a_missing_checkpoint(tmp_path):
    with pytest.raises(MmarError):
        load_tokenizer("image_vq", tmp_path / "nowhere")


# -- recipe ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def shapes_dir(tmp_path_factory):
    """An emoji-format folder of synthetic images (coloured discs and squares on white), so the
    recipe is tested without the font."""
    d = tmp_path_factory.mktemp("shapes")
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:64, :64]
    entries = []
    for s, n in zip(SPLITS, (24, 6, 6)):
        imgs = np.full((n, 64, 64, 3), 255, np.uint8)
        for i in range(n):
            cy, cx, r = rng.integers(16, 48, 2).tolist() + [int(rng.integers(6, 16))]
            mask = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r if i % 2 else (abs(yy - cy) < r) & (abs(xx - cx) < r)
            imgs[i][mask] = rng.integers(0, 200, 3)
            entries.append({"seq": f"{s}{i}", "name": f"shape {i}", "cldr": "shape", "group": "Shapes", "subgroup": "x",
                            "flippable": bool(i % 3), "split": s, "row": i})
        save_images(d / f"{s}.npz", imgs)
    (d / "index.json").write_text(json.dumps({"options": {}, "entries": entries}))
    return d




def test_debug_run_loss_falls_and_exports(shapes_dir, tmp_path):
    metrics = train_image_vq.train(overridden(DEBUG, steps=40, lr=5e-3, warmup=2), tmp_path, shapes_dir, progress=False)
    curve = losses(tmp_path)
    assert len(curve) == 40
    assert sum(curve[-5:]) / 5 < 0.7 * sum(curve[:5]) / 5
    assert 0 < metrics["codebook_usage"] <= 1 and metrics["valid_psnr"] > 5
    rows = [json.loads(line) for line in (tmp_path / "valid.jsonl").read_text().splitlines()]
    assert "thumbnail16_psnr" in rows[0] and rows[-1]["step"] == 40
    loaded = load_tokenizer("image_vq", tmp_path / "export")
    assert loaded.model.cfg == TINY and loaded.model.encode(images(1)).codes.shape == (1, 1, 8, 8)


def test_resume_equals_uninterrupted(shapes_dir, tmp_path):
    """With augmentation and the weight EMA on: both resume exactly too."""
    a, b = tmp_path / "a", tmp_path / "b"
    ema = {"weight_ema": 0.9}
    train_image_vq.train(overridden(DEBUG, ema), a, shapes_dir, progress=False)
    train_image_vq.train(overridden(DEBUG, ema), b, shapes_dir, stop_after=3, progress=False)
    assert json.loads((b / "state.json").read_text())["step"] == 3
    train_image_vq.train(overridden(DEBUG, ema), b, shapes_dir, progress=False)
    sa, sb = load_file(str(a / "state.safetensors")), load_file(str(b / "state.safetensors"))
    assert sa.keys() == sb.keys() and any(k.startswith("ema.") for k in sa)
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    assert losses(a) == losses(b)
    exported, _, _ = load_pretrained(a / "export")
    assert torch.equal(exported["decoder.out.weight"], sa["ema.decoder.out.weight"].half().float())  # the EMA is exported


@pytest.mark.slow
def test_ddp_two_processes(shapes_dir, tmp_path):
    conf = tmp_path / "c.json"
    conf.write_text(json.dumps(overridden(DEBUG, steps=3)))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        str(ROOT / "recipes/train_image_tokenizer.py"), "--config", str(conf), "--out", str(tmp_path / "ddp"),
                        "--data", str(shapes_dir)], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (tmp_path / "ddp/export/model.safetensors").exists()
    assert len(losses(tmp_path / "ddp")) == 3
