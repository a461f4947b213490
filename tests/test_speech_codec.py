"""The speech codec: streaming == offline, bitrate → levels, file round trips and refusals."""

import json
import random

import pytest
import soundfile as sf
import torch

from mmar.cli import main
from mmar.errors import ContainerError, MmarError
from mmar.tasks.codec import decode_array, decode_file, encode_array, encode_file, load_codec
from mmar.tokenizers.base import Tokenizer
from mmar.tokenizers.speech_codec import CodecConfig, SpeechCodec, StreamingDecoder, StreamingEncoder

from synth import speechlike


def test_codec_implements_the_tokenizer_interface(tiny_codec_dir):
    codec = load_codec(tiny_codec_dir).model
    assert isinstance(codec, Tokenizer)
    audio = torch.from_numpy(speechlike(1.0))[None]
    codes = codec.encode(audio, levels=3).codes
    assert codes.shape == (1, 3, 50) and codes.dtype == torch.long
    assert codec.decode(codes).shape == (1, 16000)


@pytest.mark.parametrize("seed", [0, 1])
def test_streaming_equals_offline(tiny_codec_dir, seed):
    codec = load_codec(tiny_codec_dir).model
    audio = torch.from_numpy(speechlike(3.1, seed=seed))[None]
    offline_codes = codec.encode(audio, 4).codes
    offline_audio = codec.decode(offline_codes)
    rng = random.Random(seed)
    enc, parts, i = StreamingEncoder(codec, 4), [], 0
    while i < audio.shape[1]:
        n = rng.randint(1, 2500)
        parts.append(enc.push(audio[:, i : i + n]))
        i += n
    parts.append(enc.flush())
    assert torch.equal(torch.cat(parts, -1), offline_codes)
    dec, outs, t = StreamingDecoder(codec), [], 0
    while t < offline_codes.shape[-1]:
        n = rng.randint(1, 9)
        outs.append(dec.push(offline_codes[..., t : t + n]))
        t += n
    outs.append(dec.flush())
    streamed = torch.cat(outs, -1)
    assert streamed.shape == offline_audio.shape
    assert (streamed - offline_audio).abs().max() <= 1e-4 * max(1.0, offline_audio.abs().max().item())


def test_decoder_latency_is_bounded(tiny_codec_dir):
    """Fed one frame at a time, the decoder gives each sample as soon as no later frame can change it.
    Frame t needs input up to (t + 1) * hop, so a sample's latency is that minus its own position;
    the worst case is the documented algorithmic latency: one hop + (n_fft - hop) overlap = n_fft."""
    codec = load_codec(tiny_codec_dir).model
    hop, n_fft, frames = codec.hop, codec.cfg.n_fft, 50
    codes = codec.encode(torch.from_numpy(speechlike(frames * hop / codec.sample_rate))[None], 3).codes
    dec, arrival = StreamingDecoder(codec), []  # arrival[s]: the frame after which sample s came out
    for t in range(frames):
        arrival += [t] * dec.push(codes[..., t : t + 1]).shape[-1]
    assert len(arrival) == (frames - (n_fft // hop - 1)) * hop  # the rest waits for frames that never come
    assert arrival[0] == n_fft // hop - 1  # the first sample: once the frames overlapping it are in
    latency = [(t + 1) * hop - s for s, t in enumerate(arrival)]
    assert max(latency) == n_fft and min(latency) == n_fft - hop + 1
    assert arrival == sorted(arrival) and len(arrival) + dec.flush().shape[-1] == frames * hop
    assert CodecConfig().n_fft / CodecConfig().sample_rate == pytest.approx(0.08)  # the shipped codec: 80 ms


def test_bitrate_to_levels():
    codec = SpeechCodec(CodecConfig())
    assert [codec.levels_for_kbps(k) for k in (0.5, 1.5, 3, 6, 100)] == [1, 3, 6, 12, 12]
    with pytest.raises(MmarError, match="positive"):
        codec.levels_for_kbps(0)


@pytest.mark.parametrize("sr,channels", [(16000, 1), (44100, 2), (8000, 1)])
def test_file_round_trip_restores_rate_and_length(tiny_codec_dir, wav_file, tmp_path, sr, channels):
    codec = load_codec(tiny_codec_dir)
    src = wav_file(1.37, sr, channels)
    header = encode_file(codec, src, tmp_path / "a.mmc", kbps=1.5)
    assert header.levels == 5 and header.input_rate == sr  # 6-bit codes: 0.3 kbps per level
    decode_file(codec, tmp_path / "a.mmc", tmp_path / "out.wav")
    info = sf.info(str(tmp_path / "out.wav"))
    assert info.samplerate == sr and info.frames == sf.info(str(src)).frames and info.channels == 1


def test_file_and_array_paths_agree_bit_exactly(tiny_codec_dir, wav_file, tmp_path):
    codec = load_codec(tiny_codec_dir)
    src = wav_file(2.0)
    encode_file(codec, src, tmp_path / "a.mmc", kbps=3)
    audio, _ = sf.read(src, dtype="float32")
    assert (tmp_path / "a.mmc").read_bytes() == encode_array(codec, audio, 16000, 3)
    y, sr = decode_array(codec, (tmp_path / "a.mmc").read_bytes())
    assert sr == 16000 and len(y) == len(audio)


def test_refuses_overwrite_and_other_models(tiny_codec_dir, wav_file, tmp_path):
    codec = load_codec(tiny_codec_dir)
    src = wav_file(1.0)
    encode_file(codec, src, tmp_path / "a.mmc")
    with pytest.raises(MmarError, match="exists"):
        encode_file(codec, src, tmp_path / "a.mmc")
    codec.weights = codec.tokens = "00000000"  # another model: other weights and other codes
    with pytest.raises(ContainerError, match="written by model"):
        decode_file(codec, tmp_path / "a.mmc", tmp_path / "b.wav")
    assert not (tmp_path / "b.wav").exists() and not list(tmp_path.glob(".b.wav*"))


def test_cli_round_trip_and_info(tiny_codec_dir, wav_file, tmp_path, capsys):
    src = wav_file(2.0, 22050, 2)
    mmc, out = tmp_path / "s.mmc", tmp_path / "s.wav"
    assert main(["codec", "encode", str(src), "-o", str(mmc), "--bitrate", "1.8", "--checkpoint", str(tiny_codec_dir), "-q"]) == 0
    assert main(["codec", "decode", str(mmc), "-o", str(out), "--checkpoint", str(tiny_codec_dir), "-q"]) == 0
    capsys.readouterr()
    assert main(["codec", "info", str(mmc), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["levels"] == 6 and info["input_rate"] == 22050 and info["bytes"] == mmc.stat().st_size
    assert info["bits_raw"] == 6 * 6 * 100  # 6 levels × 6 bits × 100 frames
    assert main(["codec", "encode", str(src), "-o", str(mmc), "--checkpoint", str(tiny_codec_dir), "-q"]) == 2  # exists


def test_cli_errors_are_one_line(tmp_path, capsys, tiny_codec_dir):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF....not audio")
    assert main(["codec", "encode", str(bad), "-o", str(tmp_path / "x.mmc"), "--checkpoint", str(tiny_codec_dir)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot read") and err.count("\n") == 1
    junk = tmp_path / "junk.mmc"
    junk.write_bytes(b"MMAC\x07" + bytes(20))
    assert main(["codec", "decode", str(junk), "-o", str(tmp_path / "y.wav"), "--checkpoint", str(tiny_codec_dir)]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert main(["codec", "encode"]) == 2
    assert main(["bench", "generate", "--frames", "x"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 2 and all(line.startswith("error:") for line in err.splitlines())


def test_truncated_file_gives_clean_error(tiny_codec_dir, wav_file, tmp_path):
    codec = load_codec(tiny_codec_dir)
    data = encode_array(codec, speechlike(6.0), 16000, 1.5)
    for cut in (5, len(data) // 2, len(data) - 1):
        with pytest.raises(ContainerError):
            decode_array(codec, data[:cut])
