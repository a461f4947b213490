"""LM coding: lossless, tight against cross-entropy, thread-count independent, chunk errors,
streaming == offline; with the entropy model in floats and in integers."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mmar.coding.container import ContainerReader
from mmar.coding.lm_coding import LMEncoder, lm_decode
from mmar.errors import ContainerError
from mmar.tasks.codec import decode_array, encode_array, encode_file, load_codec
from mmar.tasks.codec_lm import load_lm
from mmar.heads import codebook_vocab
from mmar.integer_transformer import IntegerTransformer, integer_identity
from mmar.transformer import CausalTransformer, preset
from synth import speechlike


def _model() -> CausalTransformer:
    torch.manual_seed(0)  # the same weights whatever ran before
    return CausalTransformer(preset("debug", vocab=codebook_vocab(64, 3), init_std=0.3)).eval()


MODEL = _model()
MODELS = {"floats": MODEL, "integers": IntegerTransformer(MODEL)}
arithmetic = pytest.mark.parametrize("arith", MODELS)


def code(codes, pushes, chunk, window, model=MODEL):
    enc, out, i = LMEncoder(model, chunk, window), [], 0
    for n in pushes:
        out += enc.push(codes[:, i : i + n])
        i += n
    return out + enc.push(codes[:, i:]) + enc.flush(), enc.xent_bits


@arithmetic
@settings(max_examples=25, deadline=None)
@given(frames=st.integers(1, 90), chunk=st.integers(1, 40), seed=st.integers(0, 10**6))
def test_lm_coding_round_trip_is_lossless(arith, frames, chunk, seed):
    model = MODELS[arith]
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 64, (3, frames))
    pushes = rng.integers(0, 20, 4).tolist()
    payloads, xent = code(codes, pushes, chunk, 16, model)
    stats = {}
    out = np.concatenate(list(lm_decode(model, iter(payloads), frames, chunk, 16, stats)), axis=1)
    assert np.array_equal(out, codes)
    assert stats["xent_bits"] == pytest.approx(xent)
    # streaming in different pushes gives the same bytes as one push
    assert code(codes, [], chunk, 16, model)[0] == payloads


@arithmetic
def test_coded_size_is_within_one_percent_of_cross_entropy(arith):
    codes = np.random.default_rng(0).integers(0, 64, (3, 2000))
    payloads, xent = code(codes, [], 500, 32, MODELS[arith])
    bits = 8 * sum(map(len, payloads))
    assert xent <= bits <= 1.01 * xent


def test_integer_coding_costs_what_float_coding_costs():
    """The integer model's probabilities are the float model's up to rounding: the same codes cost
    the same bits within 0.5 %."""
    codes = np.random.default_rng(2).integers(0, 64, (3, 1000))
    floats, integers = (code(codes, [], 500, 32, MODELS[a])[1] for a in ("floats", "integers"))
    assert integers == pytest.approx(floats, rel=0.005) and integers != floats


@arithmetic
def test_decode_is_bit_exact_across_thread_counts(arith):
    model = MODELS[arith]
    codes = np.random.default_rng(1).integers(0, 64, (3, 300))
    n = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        a, _ = code(codes, [], 100, 32, model)
        out_2 = np.concatenate(list(lm_decode(model, iter(a), 300, 100, 32)), axis=1)
        torch.set_num_threads(1)
        b, _ = code(codes, [], 100, 32, model)
        out_1 = np.concatenate(list(lm_decode(model, iter(a), 300, 100, 32)), axis=1)
    finally:
        torch.set_num_threads(n)
    assert a == b and np.array_equal(out_1, codes) and np.array_equal(out_2, codes)
    assert torch.get_num_threads() == n  # the coder restores the caller's setting


def test_file_level_lm_coding(tiny_codec_dir, tiny_lm_dir):
    codec, lm = load_codec(tiny_codec_dir), load_lm(tiny_lm_dir)
    audio = speechlike(7.0)
    data = encode_array(codec, audio, 16000, 1.5, lm=lm)
    r = ContainerReader(data)
    assert r.header.mode == "lm" and r.header.levels == 2
    stats = {}
    y, sr = decode_array(codec, data, lm, stats=stats)
    assert sr == 16000 and len(y) == len(audio)
    coarse_only, _ = decode_array(codec, data, lm, fine=False)
    assert len(coarse_only) == len(audio) and not np.allclose(coarse_only, y)
    # the transmitted coarse codes come back exactly: the coarse-only decode equals raw decoding of the same levels
    raw = encode_array(codec, audio, 16000, 2 * codec.cfg.codebook_bits * codec.cfg.frame_rate / 1000)
    assert ContainerReader(raw).header.levels == 2
    y_raw, _ = decode_array(codec, raw)
    assert np.array_equal(coarse_only, y_raw)
    with pytest.raises(ContainerError, match="LM-coded"):
        decode_array(codec, data)


def test_files_name_the_arithmetic_they_were_coded_in(tiny_codec_dir, tiny_lm_dir):
    """New files name the LM's integer identity; files coded in floats (as before) name the
    weights and still decode, in floats; a file naming other weights is refused."""
    codec, lm = load_codec(tiny_codec_dir), load_lm(tiny_lm_dir)
    audio = speechlike(3.0)
    new, old = (encode_array(codec, audio, 16000, 1.5, lm=m) for m in (lm, lm.coding(lm.weights)))
    assert ContainerReader(new).header.extra["lmw"] == integer_identity(lm.weights) != lm.weights
    assert ContainerReader(old).header.extra["lmw"] == lm.weights and list(ContainerReader(old)) != list(ContainerReader(new))
    for data in (new, old):
        coarse, _ = decode_array(codec, data, lm, fine=False)
        assert coarse.shape == audio.shape
    assert decode_array(codec, old, lm, fine=False)[0] == pytest.approx(decode_array(codec, new, lm, fine=False)[0], abs=0.05)
    assert lm.coding("0badf00d") is None


def test_a_forged_integer_chunk_is_called_forged(tiny_codec_dir, tiny_lm_dir):
    """A chunk with a valid CRC that does not decode: in a file coded in integers, the model cannot
    be to blame, so the error says the chunk was forged."""
    from mmar.coding.container import container_bytes

    codec, lm = load_codec(tiny_codec_dir), load_lm(tiny_lm_dir)
    r = ContainerReader(encode_array(codec, speechlike(2.0), 16000, 1.5, lm=lm))
    payloads = list(r)
    payloads[0] = payloads[0] + b"\xff" * 16  # words the steps never consume
    with pytest.raises(ContainerError, match="was forged") as e:
        decode_array(codec, container_bytes(r.header, payloads), lm)
    assert "computes differently" not in str(e.value)


@pytest.mark.parametrize("rdo", [0.0, 2.0])
def test_lm_streaming_file_equals_offline_array(tiny_codec_dir, tiny_lm_dir, wav_file, tmp_path, monkeypatch, rdo):
    import soundfile as sf

    import mmar.tasks.codec as task

    codec, lm = load_codec(tiny_codec_dir), load_lm(tiny_lm_dir)
    src = wav_file(12.5)
    monkeypatch.setattr(task, "CHUNK_FRAMES", 200)
    monkeypatch.setattr(task, "BLOCK_SECONDS", 1.3)  # many small blocks through the streaming encoder
    encode_file(codec, src, tmp_path / "a.mmc", lm=lm, rdo=rdo)
    monkeypatch.setattr(task, "BLOCK_SECONDS", 100.0)

    audio, _ = sf.read(src, dtype="float32")
    assert (tmp_path / "a.mmc").read_bytes() == encode_array(codec, audio, 16000, 1.5, lm=lm, rdo=rdo)


def test_damaged_lm_chunk_names_the_chunk(tiny_codec_dir, tiny_lm_dir, monkeypatch):
    import mmar.tasks.codec as task

    monkeypatch.setattr(task, "CHUNK_FRAMES", 150)  # 3 s per chunk
    codec, lm = load_codec(tiny_codec_dir), load_lm(tiny_lm_dir)
    data = bytearray(encode_array(codec, speechlike(12.0), 16000, 1.5, lm=lm))
    r = ContainerReader(bytes(data))
    payloads = list(r)
    assert len(payloads) >= 3
    # flip a byte inside the second chunk's payload
    offset = bytes(data).index(payloads[1]) + len(payloads[1]) // 2
    data[offset] ^= 0x55
    with pytest.raises(ContainerError, match="chunk 1"):
        decode_array(codec, bytes(data), lm)


def test_fine_generator_is_causal_and_streams_like_one_block(tiny_codec_dir, tiny_lm_dir):
    from mmar.tasks.codec_lm import FineGenerator

    codec, lm = load_codec(tiny_codec_dir), load_lm(tiny_lm_dir)
    books = codec.model.codebooks()
    size = codec.cfg.codebook_size
    coarse = np.random.default_rng(0).integers(0, size, (lm.coarse, 3 * lm.window + 7))
    whole = FineGenerator(lm, books).push(coarse)
    assert whole.shape == (1, codec.cfg.latent_dim, coarse.shape[1])
    gen, cuts = FineGenerator(lm, books), [0, 1, 5, lm.window + 9, 2 * lm.window + 10, coarse.shape[1]]
    pieces = torch.cat([gen.push(coarse[:, a:b]) for a, b in zip(cuts, cuts[1:])], dim=-1)
    assert torch.allclose(pieces, whole, atol=1e-5)
    # the coarse vectors pass through, and the fine estimate is not zero
    sent = sum(books[k][torch.from_numpy(coarse[k])] for k in range(lm.coarse)).T[None]
    assert not torch.allclose(whole, sent, atol=1e-3)
    # causal: changing frame t's coarse codes leaves frames < t alone
    t = 40
    changed = coarse.copy()
    changed[:, t:] = (changed[:, t:] + 1) % size
    other = FineGenerator(lm, books).push(changed)
    assert torch.allclose(other[..., :t], whole[..., :t], atol=1e-5) and not torch.allclose(other[..., t], whole[..., t])


def test_rate_distortion_choice_trades_bits_for_error(tiny_codec_dir, tiny_lm_dir):
    codec, lm = load_codec(tiny_codec_dir), load_lm(tiny_lm_dir)
    audio = speechlike(6.0, seed=4)
    plain = encode_array(codec, audio, 16000, 1.5, lm=lm)
    # λ = 0 is nearest-neighbour RVQ: the very same file (the λ goes into the header only when > 0)
    assert encode_array(codec, audio, 16000, 1.5, lm=lm, rdo=0.0) == plain
    sizes, xents = [], []
    for lam in (0.0, 1.0, 1000.0):
        data = encode_array(codec, audio, 16000, 1.5, lm=lm, rdo=lam)
        stats = {}
        y, _ = decode_array(codec, data, lm, fine=False, stats=stats)
        assert len(y) == len(audio) and np.isfinite(y).all()
        sizes.append(len(data))
        xents.append(stats["xent_bits"])
    assert xents[2] < xents[1] < xents[0] and sizes[2] < sizes[0]
    with pytest.raises(ValueError, match="λ"):
        encode_array(codec, audio, 16000, 1.5, lm=lm, rdo=-1.0)


def test_cli_lm_encode_info_decode(tiny_codec_dir, tiny_lm_dir, wav_file, tmp_path, capsys):
    import json

    from mmar.cli import main

    src, mmc = wav_file(4.0), tmp_path / "a.mmc"
    ck = ["--checkpoint", str(tiny_codec_dir), "--lm-checkpoint", str(tiny_lm_dir)]
    assert main(["codec", "encode", str(src), "-o", str(mmc), "--lm", "--rdo", "2", "-q", *ck]) == 0
    capsys.readouterr()
    assert main(["codec", "info", str(mmc), "--json", *ck]) == 0
    assert json.loads(capsys.readouterr().out)["bits_model_crossentropy"] is None  # info alone never runs the model
    assert main(["codec", "info", str(mmc), "--json", "--crossentropy", *ck]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["mode"] == "lm" and info["rdo_lambda"] == 2.0 and info["levels"] == 2
    assert info["bits_raw"] == 2 * 6 * info["frames"] and 0 < info["bits_model_crossentropy"] < info["bits_total"]
    for extra in ([], ["--coarse-only"]):
        out = tmp_path / f"b{len(extra)}.wav"
        assert main(["codec", "decode", str(mmc), "-o", str(out), "-q", *extra, *ck]) == 0 and out.stat().st_size > 0
    for bad in (["--rdo", "2"], ["--lm", "--rdo", "-1"], ["--lm", "--rdo", "nan"]):
        assert main(["codec", "encode", str(src), "-o", str(tmp_path / "c.mmc"), "-q", *bad, *ck]) == 2
        assert "error" in capsys.readouterr().err.lower()
