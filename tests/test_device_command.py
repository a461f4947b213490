"""The GPU training commands (recipes/device/*.sh) run end to end on their tiny debug config
sets on the CPU: a codec and an LM come back as loadable checkpoints that work together, and so
do the TTS and video models."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf

from synth import speechlike

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_train_all_debug_set_brings_back_working_checkpoints(tmp_path):
    import torch

    from mmar.tasks.codec import decode_array, encode_array, load_codec
    from mmar.tasks.codec_lm import load_lm

    for split, n in (("train", 4), ("valid", 2)):
        d = tmp_path / "data" / split / "spk"
        d.mkdir(parents=True)
        for i in range(n):
            sf.write(d / f"{i}.wav", speechlike(2.0, seed=10 * n + i), 16000)
    out = tmp_path / "out"
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    r = subprocess.run(["bash", str(ROOT / "recipes/device/train_all.sh"), str(tmp_path / "data"), str(out), "debug"],
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    for name in ("speech-codec-16k/model.safetensors", "speech-codec-16k/config.json", "speech-codec-16k/train_metrics.csv",
                 "speech-lm-16k/model.safetensors", "speech-lm-16k/config.json", "speech-lm-16k/held_out_metrics.json"):
        assert (out / name).is_file(), name
    codec, lm = load_codec(out / "speech-codec-16k"), load_lm(out / "speech-lm-16k")
    audio = speechlike(1.5, seed=99)
    y, _ = decode_array(codec, encode_array(codec, audio, 16000, 1.5, lm=lm), lm)
    assert len(y) == len(audio)
    # INIT: the next run continues from the codec just made (its weights, not a fresh k-means)
    r = subprocess.run(["bash", str(ROOT / "recipes/device/train_all.sh"), str(tmp_path / "data"), str(tmp_path / "again"), "debug",
                        str(out / "speech-codec-16k")], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    again = load_codec(tmp_path / "again" / "speech-codec-16k")
    assert again.weights != codec.weights and again.model.codebook_size == codec.model.codebook_size
    # the decoder-only set: the codes stay those of INIT, so no LM is trained and the old one still works
    r = subprocess.run(["bash", str(ROOT / "recipes/device/train_all.sh"), str(tmp_path / "data"), str(tmp_path / "dec"), "debug_decoder",
                        str(out / "speech-codec-16k")], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    dec = load_codec(tmp_path / "dec" / "speech-codec-16k")
    assert not (tmp_path / "dec" / "speech-lm-16k").exists()
    assert dec.weights != codec.weights and dec.speaks(codec.weights)
    coded = encode_array(codec, audio, 16000, 1.5, lm=lm)
    assert torch.equal(dec.model.encode(torch.from_numpy(audio)[None]).codes, codec.model.encode(torch.from_numpy(audio)[None]).codes)
    assert len(decode_array(dec, coded, lm)[0]) == len(audio)


@pytest.mark.parametrize("keep, carried_mib", [(("speech-codec-16k",), 24 + 3),  # the packed corpus (--max-mib 24) + wheels
                                               (("image-vae-64", "video-64"), 16)])  # data/emoji (14 MiB) + room
def test_what_travels_fits_the_device_limit(keep, carried_mib):
    """Tracked files minus the checkpoints slim_tree.sh removes (all but KEEP), plus what the
    call carries, fit the 64 MiB a device call carries."""
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    kept = [f for f in files if not f.startswith("checkpoints/") or f.split("/")[1] in keep]
    tracked = sum((ROOT / f).stat().st_size for f in kept if (ROOT / f).is_file())
    assert tracked + (carried_mib << 20) <= 64 << 20, f"{tracked >> 20} MiB of tracked files travel"


@pytest.mark.slow
def test_train_tts_debug_set_brings_back_a_working_checkpoint(tmp_path):
    import numpy as np
    import torch

    from mmar.data.tts_corpus import write_split
    from mmar.tasks import tts as T
    from recipe_helpers import losses
    from test_tts import random_utterance

    rng = np.random.default_rng(0)
    for split, n in (("train", 24), ("valid", 4)):
        write_split(tmp_path / "data", split, [random_utterance(rng) for _ in range(n)])
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    runs = {}
    for name, extra in (("out", []), ("again", [str(tmp_path / "out/tts-16k")])):  # INIT: continue from the first
        r = subprocess.run(["bash", str(ROOT / "recipes/device/train_tts.sh"), str(tmp_path / "data"), str(tmp_path / name), "debug", *extra],
                           env=env, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
        for f in ("model.safetensors", "config.json", "train_metrics.csv", "valid.jsonl"):
            assert (tmp_path / name / "tts-16k" / f).is_file(), f
        runs[name] = T.load_tts(tmp_path / name / "tts-16k")
    tts = runs["again"]
    codes = T.synthesize_codes(tts, torch.tensor([0, 3, 0]), T.Voice.from_dict(tts.default_voice, tts))[0]
    assert codes.shape[0] == 3
    first = {name: losses(tmp_path / name / "tts-16k", "train_metrics.csv")[0] for name in runs}
    assert first["again"] < 0.9 * first["out"]  # the second run started where the first ended


@pytest.mark.slow
def test_train_video_debug_set_brings_back_a_working_checkpoint(tmp_path, named_shapes_dir):
    from mmar.tasks import video as V
    from recipe_helpers import losses
    from test_image_latent import make_latent_checkpoints

    _, vae = make_latent_checkpoints(tmp_path / "ckpt")
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1", "TOKENIZER": str(vae)}
    for name, extra in (("out", []), ("again", [str(tmp_path / "out/video-64")])):  # INIT: continue from the first
        r = subprocess.run(["bash", str(ROOT / "recipes/device/train_video.sh"), str(named_shapes_dir), str(tmp_path / name), "debug",
                            *extra], env=env, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
        for f in ("model.safetensors", "config.json", "train_metrics.csv", "valid.jsonl"):
            assert (tmp_path / name / "video-64" / f).is_file(), f
    vm = V.load_video(tmp_path / "again/video-64")
    assert V.generate_frames(vm, ["red disc moves left"], 2, steps=1).shape == (1, 2, 4, 8, 8)
    first = {name: losses(tmp_path / name / "video-64", "train_metrics.csv")[0] for name in ("out", "again")}
    assert first["again"] < first["out"]  # the second run started where the first ended
