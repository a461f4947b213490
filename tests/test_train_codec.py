"""The codec recipe on its debug config: loss falls, resume == uninterrupted, DDP runs."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file

from mmar.checkpoint import load_pretrained

from synth import speechlike

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "recipes"))
import train_codec  # noqa: E402

from recipe_helpers import losses, overridden  # noqa: E402

DEBUG = json.loads((ROOT / "recipes/configs/codec_debug.json").read_text())


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("speech")
    for i in range(4):
        sf.write(d / f"clip{i}.wav", speechlike(1.5, seed=i), 16000)
    return d




def test_debug_run_loss_falls_and_exports(data_dir, tmp_path):
    train_codec.train(overridden(DEBUG, steps=30, lr=3e-3), tmp_path, [str(data_dir)], progress=False)
    curve = losses(tmp_path)
    assert len(curve) == 30
    assert sum(curve[-5:]) / 5 < 0.8 * sum(curve[:5]) / 5
    assert (tmp_path / "export/model.safetensors").exists()
    from mmar.tasks.codec import load_codec

    assert load_codec(tmp_path / "export").cfg.levels == DEBUG["model"]["levels"]


def test_resume_equals_uninterrupted(data_dir, tmp_path):
    """With the weight EMA and on-the-fly augmentation on: both resume exactly too."""
    a, b = tmp_path / "a", tmp_path / "b"
    ema, aug = {"weight_ema": 0.9}, {"augment": 0.7}
    train_codec.train(overridden(DEBUG, ema, aug), a, [str(data_dir)], progress=False)
    train_codec.train(overridden(DEBUG, ema, aug), b, [str(data_dir)], stop_after=4, progress=False)
    assert json.loads((b / "state.json").read_text())["step"] == 4
    train_codec.train(overridden(DEBUG, ema, aug), b, [str(data_dir)], progress=False)
    sa, sb = load_file(str(a / "state.safetensors")), load_file(str(b / "state.safetensors"))
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    assert losses(a) == losses(b)
    assert any(k.startswith("ema.") for k in sa)
    exported, _, _ = load_pretrained(a / "export")
    assert torch.equal(exported["decoder.out.weight"], sa["ema.decoder.out.weight"].half().float())  # the EMA is exported


def test_adversarial_run_resumes_exactly_and_logs_its_losses(data_dir, tmp_path):
    """With the discriminator switched on mid-run (step 2), a run stopped at step 4 and resumed
    (codec, discriminator, both optimisers, RNG) equals an uninterrupted one."""
    adv = {"adversarial": {"start": 2, "weight": 0.5, "feature_weight": 1.0,
                           "model": {"n_ffts": [128, 64], "filters": 4, "dilations": [1]}}}
    a, b = tmp_path / "a", tmp_path / "b"
    train_codec.train(overridden(DEBUG, adv), a, [str(data_dir)], progress=False)
    train_codec.train(overridden(DEBUG, adv), b, [str(data_dir)], stop_after=4, progress=False)
    train_codec.train(overridden(DEBUG, adv), b, [str(data_dir)], progress=False)
    for name in ("state.safetensors", "disc.safetensors"):
        sa, sb = load_file(str(a / name)), load_file(str(b / name))
        assert sa.keys() == sb.keys()
        for k in sa:
            assert torch.equal(sa[k], sb[k]), (name, k)
    assert losses(a) == losses(b)
    with open(a / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert float(rows[0]["disc"]) == 0.0 and float(rows[-1]["disc"]) > 0  # off before step 2, on after


def test_augmenting_in_worker_processes_equals_augmenting_here():
    """The process pool that keeps a GPU fed changes nothing: the same crops, the same seeds, the
    same result; crops not picked stay untouched."""
    audio = torch.randn(6, 4000) * 0.1
    serial = train_codec.augmented(audio, 0.6, torch.Generator().manual_seed(3), 16000)
    pool = train_codec.augment_pool(2)
    try:
        parallel = train_codec.augmented(audio, 0.6, torch.Generator().manual_seed(3), 16000, pool)
    finally:
        pool.shutdown()
    assert torch.equal(serial, parallel)
    changed = [not torch.equal(serial[i], audio[i]) for i in range(6)]
    assert 0 < sum(changed) < 6
    assert train_codec.augment_pool(0) is None


def test_decoder_only_fine_tune_keeps_the_codes(data_dir, tmp_path):
    """freeze = encoder + quantizer: a run started from a checkpoint changes only the decoder, so
    files and models made with the old codes stay valid."""
    from mmar.tasks.codec import load_codec

    train_codec.train(overridden(DEBUG), tmp_path / "base", [str(data_dir)], progress=False)
    train_codec.train(overridden(DEBUG, {"freeze": ["encoder", "quantizer"]}), tmp_path / "ft", [str(data_dir)], progress=False,
                      init=tmp_path / "base/export")
    old_loaded, new_loaded = load_codec(tmp_path / "base/export"), load_codec(tmp_path / "ft/export")
    old, new = old_loaded.model, new_loaded.model
    audio = torch.from_numpy(speechlike(2.0, seed=7))[None]
    assert torch.equal(old.encode(audio).codes, new.encode(audio).codes)
    codes = old.encode(audio).codes
    assert not torch.equal(old.decode(codes), new.decode(codes))
    # the new checkpoint says whose codes it speaks: files written with the old one decode with it
    from mmar.tasks.codec import decode_array, encode_array

    assert new_loaded.tokens == old_loaded.weights != new_loaded.weights
    y, _ = decode_array(new_loaded, encode_array(old_loaded, audio[0].numpy(), 16000, 1.5))
    assert len(y) == audio.shape[-1]


@pytest.mark.slow
def test_ddp_two_processes(data_dir, tmp_path):
    conf = tmp_path / "c.json"
    conf.write_text(json.dumps(overridden(DEBUG, steps=3)))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        str(ROOT / "recipes/train_codec.py"), "--config", str(conf), "--out", str(tmp_path / "ddp"),
                        "--data", str(data_dir)], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (tmp_path / "ddp/export/model.safetensors").exists()
    assert len(losses(tmp_path / "ddp")) == 3


def test_ablation_harness_scores_each_variant_once(data_dir, tiny_codec_dir, tmp_path):
    """recipes/ablate_codec.py: the reference (0 minutes) and a trained variant are scored by real
    .mmc round trips on a validation split; a second call reruns nothing."""
    import ablate_codec

    valid = tmp_path / "valid" / "spk_a"
    valid.mkdir(parents=True)
    sf.write(valid / "u0.wav", speechlike(1.5, seed=42), 16000)
    base = tmp_path / "base.json"
    base.write_text(json.dumps(overridden(DEBUG, data={"train": [str(data_dir)]})))
    conf = tmp_path / "ablation.json"
    conf.write_text(json.dumps({"base": str(base), "valid": str(tmp_path / "valid"), "bitrates": [1.5], "steps": 3,
                                "variants": [{"name": "reference", "steps": 0, "init": str(tiny_codec_dir)},
                                             {"name": "scratch"}]}))
    assert ablate_codec.main(["--config", str(conf), "--out", str(tmp_path / "out")]) == 0
    r = json.loads((tmp_path / "out/ablation.json").read_text())
    assert list(r) == ["reference", "scratch"]
    for v in r.values():
        s = v["scores"]["1.5"]
        assert 1.0 <= s["pesq_wb"] <= 4.7 and 0 < s["kbps"] and set(s["per_speaker_pesq_wb"]) == {"spk_a"}
    mtime = (tmp_path / "out/ablation.json").stat().st_mtime_ns
    assert ablate_codec.main(["--config", str(conf), "--out", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out/ablation.json").stat().st_mtime_ns == mtime
