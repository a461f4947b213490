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
                 "--paths", "image_vq", "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert set(r["systems"]) == {"tokenizer", "jpeg", "webp"} and r["bytes_per_image_tokens"] == 80
    assert 0 < r["codebook_usage"] <= 1 and r["images"] > 0
    for s in r["systems"].values():
        assert 5 < s["psnr"] < 100 and s["per_group_psnr"]
    assert "PSNR per group" in capsys.readouterr().out
    assert main(["bench", "image", "--data", str(tmp_path / "none")]) == 2


@pytest.mark.skipif(not (E.FONT.is_file() and E.EMOJI_TEST.is_file()), reason="needs fonts-noto-color-emoji and unicode-data")
def test_bench_image_generation_rows_for_both_paths(tmp_path, capsys):
    from test_image_ar import make_checkpoints
    from test_image_latent import make_latent_checkpoints

    from mmar.eval import image_classifier as ic

    torch.set_num_threads(1)
    E.build(tmp_path / "emoji", limit=80)
    ar, vq = make_checkpoints(tmp_path)
    lat, vae = make_latent_checkpoints(tmp_path)
    index = json.loads((tmp_path / "emoji/index.json").read_text())["entries"]
    groups, subgroups = sorted({e["group"] for e in index}), sorted({e["subgroup"] for e in index})
    torch.manual_seed(0)
    clf = ic.EmojiClassifier(len(groups), len(subgroups), 8, 16)
    save_pretrained(inference_state(clf), ic.export_config(groups, subgroups, 8, 16), tmp_path / "clf")
    out = tmp_path / "g.json"
    assert main(["bench", "image", "--data", str(tmp_path / "emoji"), "--tokenizer-checkpoint", str(vq), "--checkpoint", str(ar),
                 "--vae-checkpoint", str(vae), "--latent-checkpoint", str(lat), "--classifier", str(tmp_path / "clf"),
                 "--steps", "2", "--generation", "4", "--limit", "5", "--json", str(out), "--png", str(tmp_path / "s.png")]) == 0
    r = json.loads(out.read_text())
    assert set(r["systems"]) == {"tokenizer", "jpeg", "webp", "vae"} and r["systems"]["vae"]["bytes"] == 512
    g = r["generation"]
    assert set(g["paths"]) == {"image_vq", "image_vae"} and set(g["real"]) == {"train", "test"}
    for p in g["paths"].values():
        assert set(p["scores"]) == {f"{s}@cfg{c}" for s in ("train", "test") for c in ("1", "1.5", "3")}
        for v in p["scores"].values():
            assert 0 <= v["group_top1"] <= v["group_top5"] <= 1 and 0 <= v["subgroup_top1"] <= v["subgroup_top5"] <= 1
            assert v["fd"] >= 0 and v["seconds_per_image_batched"] > 0
        assert p["speed_one_image_cfg1.5"]["cached"] > 0 and p["diversity_same_caption"] >= 0
    assert g["paths"]["image_vq"]["infill"]["tokens_changed_outside"] == 0
    from PIL import Image

    for name in ("image_vq", "image_vae"):  # 4 + 4 caption rows × 6 seeds (the tiny set has 4 test emoji at most)
        w, h = Image.open(tmp_path / f"s_{name}.png").size
        assert w == 6 * 64 and h == 64 * len(g["paths"][name]["png_captions"])
    text = capsys.readouterr().out
    assert "FD" in text and "image_vae" in text and "infill" in text
    # decisions (ablations) score on the valid split, never the test split
    assert main(["bench", "image", "--data", str(tmp_path / "emoji"), "--tokenizer-checkpoint", str(vq), "--paths", "image_vae",
                 "--vae-checkpoint", str(vae), "--latent-checkpoint", str(lat), "--classifier", str(tmp_path / "clf"),
                 "--steps", "2", "--generation", "4", "--limit", "1", "--held-out", "valid", "--json", str(out)]) == 0
    g = json.loads(out.read_text())["generation"]
    assert set(g["real"]) == {"train", "valid"} and g["held_out"] == "valid"
    assert set(g["paths"]["image_vae"]["scores"]) == {f"{s}@cfg{c}" for s in ("train", "valid") for c in ("1", "1.5", "3")}


def test_frechet_distance_properties():
    from mmar.eval.image_classifier import frechet_distance

    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(20000, 4, generator=g), torch.randn(20000, 4, generator=g)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    assert frechet_distance(a, b) < 0.01  # same distribution
    assert frechet_distance(a, b + 3) == pytest.approx(36.0, rel=0.1)  # mean shift: 4 · 3²
    assert frechet_distance(a, 2 * b) == pytest.approx(4.0, rel=0.05)  # σ 1 vs 2 per dim: 4 · (2 − 1)²
