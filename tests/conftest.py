import json

import numpy as np
import pytest
import soundfile as sf
import torch

from mmar.checkpoint import inference_state, save_pretrained
from mmar.data.emoji import SPLITS, save_images
from mmar.tokenizers.speech_codec import CodecConfig, SpeechCodec
from synth import speechlike

TINY = dict(enc_dim=32, enc_blocks=1, dec_dim=32, dec_blocks=1, latent_dim=16, levels=6, codebook_size=64, n_fft=640)


@pytest.fixture
def one_thread():
    """Small models on a busy 2-core machine: one thread avoids OpenMP stalls (100× here).
    Modules opt in with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def tiny_codec_dir(tmp_path_factory):
    """A randomly initialised (k-means-initialised codebooks) tiny codec saved as a checkpoint."""
    torch.manual_seed(0)
    codec = SpeechCodec(CodecConfig(**TINY))
    audio = torch.from_numpy(speechlike(4.0))[None]
    with torch.no_grad():
        codec.quantizer.init_kmeans(codec.analyse(codec.pad(audio)), torch.Generator().manual_seed(0))
    d = tmp_path_factory.mktemp("ckpt") / "tiny-codec"
    save_pretrained(inference_state(codec), {"kind": "speech_codec", "name": "tiny", **codec.config_dict()}, d)
    return d


@pytest.fixture
def wav_file(tmp_path):
    def make(seconds=2.0, sr=16000, channels=1, name="in.wav", seed=0):
        x = speechlike(seconds, sr, seed)
        if channels > 1:
            x = np.stack([x * (0.5 + 0.5 * c / channels) for c in range(channels)], 1)
        p = tmp_path / name
        sf.write(p, x, sr)
        return p

    return make


@pytest.fixture(scope="session")
def tiny_lm_dir(tiny_codec_dir, tmp_path_factory):
    """Randomly initialised tiny entropy + fine models for the tiny codec (2 of 6 levels sent)."""
    import json
    from pathlib import Path

    from mmar.checkpoint import weights_hash
    from mmar.tasks.codec_lm import build_models

    cfg = json.loads((Path(__file__).parents[1] / "recipes/configs/codec_lm_debug.json").read_text())["model"]
    torch.manual_seed(1)
    ent, fine = build_models(cfg)
    state = {f"entropy.{k}": v for k, v in ent.state_dict().items()} | {f"fine.{k}": v for k, v in fine.state_dict().items()}
    d = tmp_path_factory.mktemp("lm") / "tiny-lm"
    codec_hash = weights_hash(tiny_codec_dir / "model.safetensors")
    save_pretrained(state, {"kind": "speech_lm", "name": "tiny-lm", **cfg, "codec_weights": codec_hash}, d)
    return d


@pytest.fixture(scope="session")
def named_shapes_dir(tmp_path_factory):
    """An emoji-format folder (:mod:`mmar.data.emoji`) of coloured discs and squares with names,
    CLDR names and aliases: caption-conditioned recipes run on it without the font."""
    d = tmp_path_factory.mktemp("shapes")
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:64, :64]
    colours = {"red": (220, 30, 30), "blue": (30, 30, 220), "green": (30, 180, 30)}
    entries = []
    for s, n in zip(SPLITS, (12, 4, 4)):
        imgs = np.full((n, 64, 64, 3), 255, np.uint8)
        for i in range(n):
            colour = list(colours)[i % 3]
            shape = "disc" if i % 2 else "square"
            cy, cx, r = rng.integers(20, 44, 2).tolist() + [int(rng.integers(8, 16))]
            mask = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r if i % 2 else (abs(yy - cy) < r) & (abs(xx - cx) < r)
            imgs[i][mask] = colours[colour]
            entries.append({"seq": f"{s}{i}", "name": f"large {colour} {shape}", "cldr": f"{colour} {shape}",
                            "aliases": [f"{shape} {i}"], "group": "Shapes", "subgroup": "x", "flippable": True,
                            "split": s, "row": i})
        save_images(d / f"{s}.npz", imgs)
    (d / "index.json").write_text(json.dumps({"options": {}, "entries": entries}))
    return d
