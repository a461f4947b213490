"""`mmar bench image`: the tokenizer against JPEG and WebP at the same bytes, on a tiny emoji
set and a tiny (untrained) tokenizer: the table and JSON hold what they promise."""

import json

import numpy as np
import pytest
import torch

from mmar.bench.image import at_bytes, psnr, ssim
from mmar.checkpoint import inference_state, save_pretrained
from mmar.cli import main
from mmar.data import emoji as E
from mmar.tokenizers.image_vq import ImageVQ, ImageVQConfig, export_config


def test_metrics_and_size_search():
    rng = np.random.default_rng(0)
    img = (rng.random((64, 64, 3)) * 255).astype(np.uint8)
    assert psnr(img, img) == 100.0 and ssim(img, img) == pytest.approx(1.0)
    noisy = np.clip(img.astype(int) + rng.integers(-20, 21, img.shape), 0, 255).astype(np.uint8)
    assert 15 < psnr(noisy, img) < 40 and ssim(noisy, img) < 1.0
    for fmt in ("JPEG", "WEBP"):
        small, n_small = at_bytes(img, fmt, 600)
        big, n_big = at_bytes(img, fmt, 20_000)
        assert small.shape == img.shape and n_small <= n_big <= 20_000 and psnr(big, img) >= psnr(small, img)


@pytest.mark.skipif(not (E.FONT.is_file() and E.EMOJI_TEST.is_file()), reason="needs fonts-noto-color-emoji and unicode-data")
def test_bench_image_cli(tmp_path, capsys):
    torch.set_num_threads(1)
    E.build(tmp_path / "emoji", limit=60)
    torch.manual_seed(0)
    model = ImageVQ(ImageVQConfig(channels=[8, 8, 8], res_blocks=0, groups=4)).eval()
    ckpt = tmp_path / "vq"
    save_pretrained(inference_state(model), export_config(model, "vq-tiny"), ckpt)
    out = tmp_path / "b.json"
    assert main(["bench", "image", "--data", str(tmp_path / "emoji"), "--split", "train", "--tokenizer-checkpoint", str(ckpt),
                 "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert set(r["systems"]) == {"tokenizer", "jpeg", "webp"} and r["bytes_per_image_tokens"] == 80
    assert 0 < r["codebook_usage"] <= 1 and r["images"] > 0
    for s in r["systems"].values():
        assert 5 < s["psnr"] < 100 and s["per_group_psnr"]
    assert "PSNR per group" in capsys.readouterr().out
    assert main(["bench", "image", "--data", str(tmp_path / "none")]) == 2


@pytest.mark.skipif(not (E.FONT.is_file() and E.EMOJI_TEST.is_file()), reason="needs fonts-noto-color-emoji and unicode-data")
def test_bench_image_generation_rows(tmp_path, capsys):
    from test_image_ar import make_checkpoints

    torch.set_num_threads(1)
    E.build(tmp_path / "emoji", limit=80)
    ar, vq = make_checkpoints(tmp_path)
    out = tmp_path / "g.json"
    assert main(["bench", "image", "--data", str(tmp_path / "emoji"), "--tokenizer-checkpoint", str(vq), "--checkpoint", str(ar),
                 "--generation", "3", "--limit", "5", "--json", str(out)]) == 0
    g = json.loads(out.read_text())["generation"]
    assert set(g["scores"]) == {f"{s}@cfg{c}" for s in ("train", "test") for c in ("1", "1.5", "3")}
    for v in g["scores"].values():
        assert 0 <= v["emoji"] <= v["subgroup"] <= v["group"] <= 1 and v["seconds_per_image_cached"] > 0
    assert "nearest render" in capsys.readouterr().out
