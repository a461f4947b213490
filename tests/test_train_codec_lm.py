"""The LMCodec recipe on its debug config: tokenizes, trains both models, exports a loadable checkpoint."""

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file

from mmar.tasks.codec import decode_array, encode_array, load_codec
from mmar.tasks.codec_lm import load_lm
from synth import speechlike

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "recipes"))
import train_codec_lm  # noqa: E402


def test_debug_recipe_trains_and_exports(tiny_codec_dir, tmp_path):
    data = tmp_path / "audio"
    data.mkdir()
    for i in range(3):
        sf.write(data / f"{i}.wav", speechlike(3.0, seed=i), 16000)
    out, config = tmp_path / "run", tmp_path / "debug.json"
    cfg = json.loads((ROOT / "recipes/configs/codec_lm_debug.json").read_text())
    config.write_text(json.dumps({**cfg, "data": {"train": [str(data)], "valid": [str(data)]}}))
    args = ["--config", str(config), "--codec", str(tiny_codec_dir), "--out", str(out)]
    assert train_codec_lm.main(args) == 0
    for kind in ("entropy", "fine"):
        rows = list(csv.DictReader(open(out / f"{kind}_metrics.csv")))
        assert len(rows) == 6 and all(np.isfinite(float(r["bits_per_symbol"])) for r in rows)
    # the export holds the weights with the best held-out loss, and their held-out metrics
    best_step = min(rows, key=lambda r: float(r["valid_bits_per_symbol"]))["step"]
    assert json.loads((out / "fine.state.json").read_text())["meta"]["best_valid"] == pytest.approx(
        min(float(r["valid_bits_per_symbol"]) for r in rows), abs=1e-4)
    best = load_file(str(out / "fine.best.safetensors"))
    exported = load_file(str(out / "export" / "model.safetensors"))
    assert all(torch.equal(exported[f"fine.{k}"], v.half()) for k, v in best.items()), best_step
    held_out = json.loads((out / "export" / "held_out_metrics.json").read_text())
    assert held_out["held_out_frames"] > 0 and len(held_out["entropy_bits_per_level"]) == cfg["model"]["coarse"]
    lm = load_lm(out / "export")
    codec = load_codec(tiny_codec_dir)
    audio = speechlike(2.0, seed=9)
    y, _ = decode_array(codec, encode_array(codec, audio, 16000, 1.5, lm=lm), lm)
    assert len(y) == len(audio)
    # resuming a finished run changes nothing: saved states, weights, metrics and export stay byte-identical
    before = {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    assert train_codec_lm.main(args) == 0
    assert {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()} == before


def test_held_out_metrics_match_the_range_coder(tiny_codec_dir, tiny_lm_dir):
    """The recipe's per-level held-out bits are the cross-entropy the coder itself measures."""
    import json

    import torch

    from mmar.coding.lm_coding import LMEncoder

    lm, codec = load_lm(tiny_lm_dir), load_codec(tiny_codec_dir)
    mc = json.loads((tiny_lm_dir / "config.json").read_text())
    frames = mc["window"] - lm.coarse + 1  # one window holds the whole delayed stream
    codes = torch.from_numpy(np.random.default_rng(3).integers(0, mc["codebook_size"], (mc["levels"], frames)))
    books = codec.model.codebooks()
    m = train_codec_lm.held_out_metrics(lm.entropy, lm.fine, codes, {**mc, "window": frames}, books)
    enc = LMEncoder(lm.entropy, 10**6, mc["window"])
    enc.push(codes[: lm.coarse].numpy())
    enc.flush()
    assert m["held_out_frames"] == frames and len(m["entropy_bits_per_level"]) == lm.coarse
    assert m["entropy_bits_per_symbol"] * lm.coarse * frames == pytest.approx(enc.xent_bits, rel=2e-3)
    assert len(m["fine_bits_per_level"]) == mc["levels"] - lm.coarse and m["fine_residual_error_left"] > 0
