"""Caption tokenizer, caption-conditioned image AR (generation with CFG, infilling) and its recipe."""

import json
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mmar.checkpoint import inference_state, save_pretrained
from mmar.errors import MmarError
from mmar.generation import SamplingConfig
from mmar.tasks import image as ti
from mmar.text.captions import CaptionVocab, words
from mmar.tokenizers.image_vq import ImageVQ, ImageVQConfig, export_config as vq_config

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "recipes"))
import train_image_ar  # noqa: E402

from recipe_helpers import losses, overridden  # noqa: E402

DEBUG = json.loads((ROOT / "recipes/configs/image_ar_debug.json").read_text())
VQ = ImageVQConfig(**json.loads((ROOT / "recipes/configs/image_vq_debug.json").read_text())["model"])  # 64 codes, 8×8


pytestmark = pytest.mark.usefixtures("one_thread")


def make_checkpoints(root: Path) -> tuple[Path, Path]:
    """A tiny random image_vq checkpoint and a tiny random image_ar checkpoint trained "on" it."""
    torch.manual_seed(0)
    vq = root / "image-vq-tiny"
    save_pretrained(inference_state(ImageVQ(VQ)), vq_config(ImageVQ(VQ), "image-vq-tiny"), vq)
    tok = ti.load_image_tokenizer(vq)
    vocab = CaptionVocab.build(["fox face", "fox", "grinning face", "red heart"], 6)
    config = ti.export_config(DEBUG["model"], vocab, tok.model.codebook_size, VQ.grid, tok, "image-ar-tiny")
    torch.manual_seed(1)
    ar = ti.from_config(config)
    d = root / "image-ar-tiny"
    save_pretrained(inference_state(ar.model), config, d)
    return d, vq


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    return make_checkpoints(tmp_path_factory.mktemp("image_ckpt"))


# -- captions ----------------------------------------------------------------------------------
def test_caption_vocab_round_trip_unknown_and_null():
    v = CaptionVocab.build(["Fox Face", "flag: United States", "t-shirt", "fox"], 5)
    assert v.itos[:3] == ["<pad>", "<null>", "<unk>"] and words("Flag: United-States!") == ["flag", "united", "states"]
    ids = v.encode("FOX  face")
    assert len(ids) == 5 and v.decode(ids) == "fox face" and ids[2:] == [v.pad] * 3
    ids = v.encode("fox zebra face")  # the unknown word keeps its place as <unk>
    assert ids[:3] == [v.stoi["fox"], v.unk, v.stoi["face"]] and v.decode(ids) == "fox <unk> face"
    assert v.unknown("fox zebra") == ["zebra"]
    assert v.encode("") == v.encode("  ") == [v.null] + [v.pad] * 4
    with pytest.raises(MmarError):
        v.encode("a b c d e f")
    assert len(v.encode("a b c d e f", truncate=True)) == 5
    assert CaptionVocab.from_dict(json.loads(json.dumps(v.to_dict()))) == v
    for bad in ({"words": ["a"], "max_len": 3}, {"words": ["<pad>", "<null>", "<unk>", 5], "max_len": 3}, [],
                {"words": ["<pad>", "<null>", "<unk>"], "max_len": 0}, {"words": ["<pad>", "<null>", "<unk>", "a", "a"], "max_len": 2}):
        with pytest.raises(MmarError):
            CaptionVocab.from_dict(bad)
    assert v.batch(["fox", ""]).shape == (2, 5)


# -- generation / infilling ----------------------------------------------------------------------
def test_cached_equals_uncached_with_cfg(ckpts):
    ar = ti.load_image_ar(ckpts[0])
    assert ar.ids.max_spans == 8 and ar.model.cfg.vocab == (64 + 10,) and ar.tokens == 64
    s = SamplingConfig(temperature=1.0, top_k=20, top_p=0.9, cfg_scale=2.5)
    a = ti.generate_codes(ar, ["fox face", "zebra heart", ""], s, seed=7)
    b = ti.generate_codes(ar, ["fox face", "zebra heart", ""], s, seed=7, cached=False)
    assert a.shape == (3, 1, 8, 8) and a.min() >= 0 and a.max() < 64
    assert torch.equal(a, b)
    assert torch.equal(a, ti.generate_codes(ar, ["fox face", "zebra heart", ""], s, seed=7))  # seeded
    assert not torch.equal(a, ti.generate_codes(ar, ["fox face", "zebra heart", ""], s, seed=8))
    greedy = SamplingConfig(temperature=0)
    assert torch.equal(ti.generate_codes(ar, ["fox"], greedy), ti.generate_codes(ar, ["fox"], greedy, cached=False))


@pytest.mark.parametrize("box", [(2, 1, 5, 4), (0, 0, 8, 8), (3, 0, 6, 8), (7, 7, 8, 8), (0, 2, 8, 3)])
def test_infill_keeps_tokens_outside_the_box(ckpts, box):
    ar = ti.load_image_ar(ckpts[0])
    codes = torch.randint(0, 64, (2, 1, 8, 8), generator=torch.Generator().manual_seed(0))
    s = SamplingConfig(temperature=1.0, cfg_scale=1.5)
    out = ti.infill_codes(ar, codes, box, ["fox", ""], s, seed=3)
    inside = ti.box_mask(ar.grid, box).view(8, 8)
    assert out.shape == codes.shape and out.min() >= 0 and out.max() < 64
    assert torch.equal(out[..., ~inside], codes[..., ~inside])  # token level: untouched outside
    assert bool((out[..., inside] != codes[..., inside]).any())  # regenerated inside (random model: some differ)
    assert torch.equal(out, ti.infill_codes(ar, codes, box, ["fox", ""], s, seed=3, cached=False))


def test_mask_infill_keeps_every_unmasked_token_it_can(ckpts):
    ar = ti.load_image_ar(ckpts[0])
    codes = torch.randint(0, 64, (1, 1, 8, 8), generator=torch.Generator().manual_seed(1))
    mask = torch.zeros(8, 8, dtype=torch.bool)
    mask[1, 2], mask[3, 3:6], mask[6, 0] = True, True, True  # three runs: one span each
    spans = ti.mask_spans(ar.grid, mask.flatten(), 8)
    assert spans == [(10, 11), (27, 30), (48, 49)]
    out = ti.infill_codes(ar, codes, mask.flatten(), None, SamplingConfig(), seed=0)
    assert torch.equal(out[..., ~mask], codes[..., ~mask])
    many = torch.zeros(64, dtype=torch.bool)
    many[::5] = True  # 13 runs: merged down to 8 spans that cover them all
    merged = ti.mask_spans(ar.grid, many, 8)
    assert len(merged) == 8 and all(any(a <= i < b for a, b in merged) for i in range(0, 64, 5))
    with pytest.raises(MmarError, match="nothing"):
        ti.mask_spans(ar.grid, torch.zeros(64, dtype=torch.bool), 8)


def test_box_spans_and_training_streams(ckpts):
    ar = ti.load_image_ar(ckpts[0])
    assert ti.box_spans((8, 8), (1, 2, 3, 5)) == [(10, 13), (18, 21)]
    assert ti.box_spans((8, 8), (1, 0, 3, 8)) == [(8, 24)]
    for bad in [(0, 0, 0, 1), (0, 0, 9, 1), (-1, 0, 1, 1)]:
        with pytest.raises(MmarError):
            ti.box_spans((8, 8), bad)
    gen = torch.Generator().manual_seed(0)
    boxes = [ti.random_box((8, 8), gen) for _ in range(200)]
    assert all(0 <= r0 < r1 <= 8 and 0 <= c0 < c1 <= 8 for r0, c0, r1, c1 in boxes)
    codes = torch.randint(0, 64, (3, 1, 8, 8))
    stream, lengths = ti.training_streams(ar, codes, [None, (0, 0, 8, 8), (1, 2, 4, 5)])
    assert lengths.tolist() == [64, 66, 70] and torch.equal(stream[0, :, :64], codes[0].flatten(1))
    back, _, spans = ar.layout.restore(stream, lengths)
    assert torch.equal(back, codes.flatten(2)) and spans[0] == []
    loss = ti.TrainingLoss(ar.model)(stream, lengths, ar.vocab.batch(["fox", "", "red heart"]))
    assert loss.ndim == 0 and 3.0 < float(loss.detach()) < 6.0  # ~ln 74 for a random model


# -- recipe -------------------------------------------------------------------------------------




def test_debug_run_loss_falls_and_exports(named_shapes_dir, ckpts, tmp_path):
    metrics = train_image_ar.train(overridden(DEBUG, steps=40, lr=1e-2, warmup=2), tmp_path, named_shapes_dir, ckpts[1], progress=False)
    curve = losses(tmp_path)
    assert len(curve) == 40 and sum(curve[-5:]) / 5 < 0.8 * sum(curve[:5]) / 5
    assert metrics["valid_ce"] > 0 and metrics["valid_ce_uncond"] > 0
    ar = ti.load_image_ar(tmp_path / "export")
    assert {"large", "red", "disc", "square"} <= set(ar.vocab.itos) and ar.vocab.max_len == 8
    ti.check_pair(ar, ti.load_image_tokenizer(ckpts[1]))
    assert ti.generate_codes(ar, ["red disc"], SamplingConfig(cfg_scale=1.5)).shape == (1, 1, 8, 8)
    codes = load_file(str(tmp_path / "codes.safetensors"))
    assert codes["train"].shape == (24, 1, 8, 8) and codes["valid"].shape == (4, 1, 8, 8)  # original + 1 augmented copy


def test_resume_equals_uninterrupted(named_shapes_dir, ckpts, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    c = overridden(DEBUG)
    c["train"]["weight_ema"] = 0.9
    train_image_ar.train(c, a, named_shapes_dir, ckpts[1], progress=False)
    train_image_ar.train(c, b, named_shapes_dir, ckpts[1], stop_after=3, progress=False)
    assert json.loads((b / "state.json").read_text())["step"] == 3
    train_image_ar.train(c, b, named_shapes_dir, ckpts[1], progress=False)
    sa, sb = load_file(str(a / "state.safetensors")), load_file(str(b / "state.safetensors"))
    assert sa.keys() == sb.keys() and any(k.startswith("ema.") for k in sa)
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    assert losses(a) == losses(b)
    assert (a / "export/model.safetensors").read_bytes() == (b / "export/model.safetensors").read_bytes()
    assert (a / "export/config.json").read_bytes() == (b / "export/config.json").read_bytes()


def test_checkpoint_mismatch_and_bad_config(ckpts, tmp_path):
    ar_dir, vq_dir = ckpts
    other = tmp_path / "vq2"
    torch.manual_seed(5)
    save_pretrained(inference_state(ImageVQ(VQ)), vq_config(ImageVQ(VQ)), other)
    with pytest.raises(MmarError, match="trained on tokenizer"):
        ti.check_pair(ti.load_image_ar(ar_dir), ti.load_image_tokenizer(other))
    config = json.loads((ar_dir / "config.json").read_text())
    for change in ({"kind": "image_vq"}, {"grid": [8]}, {"max_spans": 3}, {"model": {"dim": 10**9}},
                   {"captions": {"words": ["x"], "max_len": 4}}, {"model": {"dim": 32, "n_layers": 2, "n_heads": 3}}):
        with pytest.raises(MmarError):
            ti.from_config(config | change)


@pytest.mark.slow
def test_ddp_two_processes(named_shapes_dir, ckpts, tmp_path):
    import os
    import subprocess

    conf = tmp_path / "c.json"
    conf.write_text(json.dumps(overridden(DEBUG, steps=3)))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        str(ROOT / "recipes/train_image_ar.py"), "--config", str(conf), "--out", str(tmp_path / "ddp"),
                        "--data", str(named_shapes_dir), "--tokenizer-checkpoint", str(ckpts[1])],
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (tmp_path / "ddp/export/model.safetensors").exists() and len(losses(tmp_path / "ddp")) == 3
