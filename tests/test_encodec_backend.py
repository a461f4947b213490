"""mmar's own EnCodec 24 kHz: shapes, checkpoint layout, loading, and parity with Meta's package.

All weights are random; nothing is downloaded.
"""

import sys
import types
import warnings
from unittest import mock

import pytest
import torch
from safetensors.torch import save_file

from mmar.errors import MmarError
from mmar.tokenizers.base import Tokenizer
from mmar.tokenizers.encodec import EncodecModel, load_encodec
from synth import speechlike

# A sample of the published checkpoint's keys (encodec_24khz-d7cc33bc.th) with their shapes,
# read off Meta's module tree in encodec 0.1.1 (SEANet + weight_norm convs, SLSTM, RVQ).
PUBLISHED_KEYS = {
    "encoder.model.0.conv.conv.weight_g": (32, 1, 1),
    "encoder.model.0.conv.conv.weight_v": (32, 1, 7),
    "encoder.model.0.conv.conv.bias": (32,),
    "encoder.model.1.block.1.conv.conv.weight_v": (16, 32, 3),
    "encoder.model.1.block.3.conv.conv.weight_v": (32, 16, 1),
    "encoder.model.1.shortcut.conv.conv.weight_g": (32, 1, 1),
    "encoder.model.3.conv.conv.weight_v": (64, 32, 4),
    "encoder.model.12.conv.conv.weight_v": (512, 256, 16),
    "encoder.model.13.lstm.weight_ih_l0": (2048, 512),
    "encoder.model.13.lstm.weight_hh_l1": (2048, 512),
    "encoder.model.13.lstm.bias_ih_l1": (2048,),
    "encoder.model.15.conv.conv.weight_v": (128, 512, 7),
    "decoder.model.0.conv.conv.weight_v": (512, 128, 7),
    "decoder.model.1.lstm.bias_hh_l0": (2048,),
    "decoder.model.3.convtr.convtr.weight_g": (512, 1, 1),
    "decoder.model.3.convtr.convtr.weight_v": (512, 256, 16),
    "decoder.model.4.block.1.conv.conv.weight_v": (128, 256, 3),
    "decoder.model.12.convtr.convtr.weight_v": (64, 32, 4),
    "decoder.model.13.shortcut.conv.conv.bias": (32,),
    "decoder.model.15.conv.conv.weight_v": (1, 32, 7),
    "quantizer.vq.layers.0._codebook.inited": (1,),
    "quantizer.vq.layers.0._codebook.cluster_size": (1024,),
    "quantizer.vq.layers.0._codebook.embed": (1024, 128),
    "quantizer.vq.layers.31._codebook.embed_avg": (1024, 128),
}
PUBLISHED_KEY_COUNT = 252  # 2 × (18 convs × 3 + 2 LSTM layers × 4) + 32 codebooks × 4 buffers


def _spread_codebooks(model: EncodecModel, x: torch.Tensor) -> None:
    """Centre random codebooks on this random encoder's latents, so that codes actually vary."""
    with torch.no_grad():
        z = model.encoder.model(x[:, None])[0]
        mu, sd = z.mean(1), z.std(1)
        for k, layer in enumerate(model.quantizer.vq.layers):
            layer._codebook.embed.copy_((mu if k == 0 else 0) + torch.randn(1024, 128) * sd * 0.8**k)


@pytest.fixture(scope="module")
def model_and_audio():
    torch.manual_seed(0)
    model = EncodecModel()
    x = torch.from_numpy(speechlike(0.2, 24000)).float()[None]  # 15 frames keeps this fast
    _spread_codebooks(model, x)
    return model, x


def test_protocol_shapes_and_bitrates(model_and_audio):
    model, _ = model_and_audio
    assert isinstance(model, Tokenizer)
    assert (model.sample_rate, model.frame_rate, model.num_codebooks, model.codebook_size) == (24000, 75, 32, 1024)
    assert [model.levels_for_kbps(b) for b in (1.5, 3, 6, 12, 24)] == [2, 4, 8, 16, 32]
    assert model.levels_for_kbps(0.1) == 1 and model.levels_for_kbps(100) == 32
    one_second = torch.from_numpy(speechlike(1.0, 24000)).float()[None]
    codes = model.encode(one_second, levels=2).codes
    assert codes.shape == (1, 2, 75) and codes.dtype == torch.int64
    assert 0 <= codes.min() and codes.max() < 1024
    assert model.decode(codes).shape == (1, 24000)
    assert model.encode(one_second[:, :1000], levels=1).codes.shape == (1, 1, 4)  # ceil(1000 / 320)
    with pytest.raises(MmarError):
        model.encode(one_second, levels=33)


def test_key_layout_matches_published_checkpoint():
    state = EncodecModel().state_dict()
    assert len(state) == PUBLISHED_KEY_COUNT
    for key, shape in PUBLISHED_KEYS.items():
        assert tuple(state[key].shape) == shape, key
    assert not any("parametrizations" in k for k in state)


def test_checkpoint_round_trip_th_and_safetensors(model_and_audio, tmp_path):
    model, x = model_and_audio
    state = model.state_dict()
    torch.save(state, tmp_path / "x.th")
    save_file(state, str(tmp_path / "x.safetensors"))
    newer = {k.replace("weight_g", "parametrizations.weight.original0")
             .replace("weight_v", "parametrizations.weight.original1"): v for k, v in state.items()}
    torch.save(newer, tmp_path / "newer.th")
    codes = model.encode(x, 8).codes
    audio = model.decode(codes)
    assert len({tuple(c.tolist()) for c in codes[0]}) > 1  # the codebooks were spread
    for name in ("x.th", "x.safetensors", "newer.th"):
        loaded = load_encodec(tmp_path / name)
        assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in state.items())
        assert torch.equal(loaded.encode(x, 8).codes, codes)
        assert torch.equal(loaded.decode(codes), audio)


def test_bad_checkpoints_raise_one_line_errors(tmp_path):
    cases = {
        "missing.th": None,
        "garbage.th": b"not a pickle at all",
        "garbage.safetensors": b"\x00" * 64,
        "encodec_24khz-d7cc33bc.th": b"a damaged download",  # name's SHA-256 prefix does not match
    }
    for name, data in cases.items():
        if data is not None:
            (tmp_path / name).write_bytes(data)
    torch.save(torch.nn.Linear(2, 2).state_dict(), tmp_path / "foreign.th")
    torch.save({"encoder": 1}, tmp_path / "not_tensors.th")
    for name in [*cases, "foreign.th", "not_tensors.th"]:
        with pytest.raises(MmarError) as err:
            load_encodec(tmp_path / name)
        assert "\n" not in str(err.value), name


def _import_meta_encodec():
    """encodec.model from Meta's package; torchaudio (imported at the top but unused here) is stubbed."""
    try:
        import encodec.model as em
        return em
    except Exception:  # torchaudio missing or broken: retry with a stub, then forget it
        for name in [n for n in sys.modules if n == "encodec" or n.startswith("encodec.")]:
            del sys.modules[name]
    with mock.patch.dict(sys.modules, {"torchaudio": types.ModuleType("torchaudio")}):
        try:
            import encodec.model as em
        except ImportError as e:
            pytest.skip(f"encodec package not importable: {e}")
    return em


def test_parity_with_meta_encodec(model_and_audio):
    em = _import_meta_encodec()
    model, x = model_and_audio
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.nn.utils.weight_norm is deprecated
        ref = em.EncodecModel.encodec_model_24khz(pretrained=False)
    ref.load_state_dict(model.state_dict(), strict=True)  # the key layout, checked by Meta's own tree
    for kbps in (1.5, 6.0):
        ref.set_target_bandwidth(kbps)
        with torch.no_grad():
            frames = ref.encode(x[:, None])
            ref_audio = ref.decode(frames)[:, 0]
        codes = model.encode(x, model.levels_for_kbps(kbps)).codes
        assert torch.equal(codes, frames[0][0])
        torch.testing.assert_close(model.decode(codes), ref_audio, atol=1e-4, rtol=0)


def test_cli_round_trip_with_the_encodec_backend(tmp_path):
    import soundfile as sf

    from mmar.cli import main
    from mmar.tokenizers.encodec import EncodecModel
    from synth import speechlike

    torch.manual_seed(0)
    ckpt = tmp_path / "encodec_24khz.th"
    torch.save(EncodecModel().state_dict(), ckpt)
    src = tmp_path / "in.wav"
    sf.write(src, speechlike(1.3, 22050), 22050)
    common = ["--tokenizer", "encodec_24khz", "--checkpoint", str(ckpt), "-q"]
    assert main(["codec", "encode", str(src), "-o", str(tmp_path / "a.mmc"), "--bitrate", "3", *common]) == 0
    assert main(["codec", "decode", str(tmp_path / "a.mmc"), "-o", str(tmp_path / "a.wav"), *common]) == 0
    info = sf.info(str(tmp_path / "a.wav"))
    assert info.samplerate == 22050 and info.frames == sf.info(str(src)).frames
    assert main(["codec", "encode", str(src), "-o", str(tmp_path / "b.mmc"), "--tokenizer", "encodec_24khz"]) == 2
