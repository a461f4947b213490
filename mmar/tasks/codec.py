"""The speech codec as users call it: files (or arrays) in, ``.mmc`` files out, and back.

Audio streams through in blocks: read → downmix → resample (soxr) → :class:`StreamingEncoder`
→ bit-packed chunks, so memory stays bounded on hour-long files. Decoding mirrors it and
restores the input's sample rate and length.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import torch

from ..atomic import atomic_write, check_target
from ..audio import read_blocks
from ..coding.bitpack import pack_codes, packed_size, unpack_codes
from ..coding.container import ContainerReader, ContainerWriter, container_bytes
from ..coding.header import Header
from ..errors import ContainerError, MmarError
from ..coding.lm_coding import LMEncoder, RateDistortion, lm_decode
from ..tokenizers.base import AudioTokenizer, LoadedTokenizer, load_tokenizer
from .codec_lm import FineGenerator, LoadedLM

CHUNK_FRAMES = 500  # 10 s of codes (or LM stream steps) per container chunk
BLOCK_SECONDS = 10.0  # audio read per step
MAX_CHUNK_FRAMES = 3000
PROGRESS_SECONDS = 60.0  # files longer than this get a progress bar
MAX_OUTPUT_RATE = {"WAV": 1_000_000, "FLAC": 655_350, "OGG": 192_000}  # Hz: what libsndfile writes safely
MAX_GAIN_DB = 20.0  # the loudness correction sent in the header stays within ±this

LoadedCodec = LoadedTokenizer  # the name codec users know: ``.model`` is an AudioTokenizer


def load_codec(path: Path | None = None, tokenizer: str = "speech16k") -> LoadedCodec:
    """Load the audio tokenizer ``tokenizer`` (a name in the tokenizer registry) from ``path``
    (default: its shipped checkpoint, found by :func:`mmar.checkpoint.find_checkpoint`)."""
    loaded = load_tokenizer(tokenizer, path)
    if not isinstance(loaded.model, AudioTokenizer):
        raise MmarError(f"{tokenizer} is not an audio tokenizer; the speech codec needs one (e.g. speech16k)")
    return loaded


def models_for(header: Header, codec_path: Path | None = None, lm_path: Path | None = None,
               tokenizer: str = "speech16k") -> tuple[LoadedCodec, LoadedLM | None]:
    """The codec and (for an LM-coded file) the LM that decode a file with ``header``: the paths
    given, else the shipped checkpoints holding the weights the header names
    (:data:`mmar.checkpoint.SHIPPED`), else the defaults."""
    from ..checkpoint import checkpoint_for
    from .codec_lm import load_lm

    codec = load_codec(checkpoint_for(header.weights, codec_path), tokenizer)
    lm = load_lm(checkpoint_for(header.extra.get("lmw", ""), lm_path)) if header.mode == "lm" else None
    return codec, lm


# -- streaming core ------------------------------------------------------------------------
def encode_stream(codec: LoadedCodec, blocks: Iterable[np.ndarray], input_rate: int, input_samples: int,
                  levels: int, lm: LoadedLM | None = None, rdo: float | None = None) -> tuple[Header, list[bytes]]:
    """Mono float32 blocks at ``input_rate`` (``input_samples`` in all) → (header, chunk payloads).

    Without ``lm``: ``levels`` levels, bit-packed ("raw"). With ``lm``: its coarse levels,
    range-coded under its entropy model ("lm"); chunks then hold ``CHUNK_FRAMES`` stream steps.
    ``rdo`` (LM only; None = the LM's default) > 0 picks the codes by rate-distortion (λ, see
    :class:`RateDistortion`); 0 sends the nearest codes, losslessly coded.

    The codec's output is quieter than its input (by ~4 dB on speech, ~10 dB on band-limited
    input), so the codes sent are synthesised here once (no entropy decoding needed) and the
    level difference goes into the header (extra ``"gain"``, 0.5 dB steps) for the decoder to
    restore. Payloads and codes are small (≤ 6 kbps), so they are held until the header is
    known; audio still streams.
    """
    tok = codec.model
    n = input_samples if input_rate == tok.sample_rate else math.ceil(input_samples * tok.sample_rate / input_rate)
    extra = {}
    if input_rate != tok.sample_rate:
        extra["ni"] = input_samples
    if lm is not None:
        check_lm(codec, lm)
        levels = lm.coarse
        extra |= {"lm": lm.model_id, "lmw": lm.coded_weights}
        rdo = lm.rdo if rdo is None else rdo
        if rdo:
            extra["rdo"] = rdo
    header = Header(model=codec.model_id, weights=codec.weights, sample_rate=tok.sample_rate, input_rate=input_rate,
                    num_samples=n, levels=levels, bits=tok.codebook_bits, frame_rate=tok.frame_rate,
                    chunk_frames=CHUNK_FRAMES, mode="raw" if lm is None else "lm", extra=extra)
    energy = [0.0]  # sum of squares of the input at the codec's rate
    coded: list[np.ndarray] = []  # the codes sent, [L, t] blocks, to measure the decoded level
    blocks = _finite(blocks, input_rate)
    if lm is None:
        code_blocks = _codes_blocks(codec, blocks, input_rate, n, levels, energy)
        payloads = _raw_payloads(_kept(code_blocks, coded), levels, tok.codebook_bits)
    elif not rdo:
        payloads = _lm_payloads(_codes_blocks(codec, blocks, input_rate, n, levels, energy), lm, None, coded.append)
    else:
        rdo_choice = RateDistortion(tok.codebooks()[:levels], rdo)
        payloads = _lm_payloads(_codes_blocks(codec, blocks, input_rate, n, 0, energy), lm, rdo_choice, coded.append)
    payloads = list(payloads)
    decoded, peak = 0.0, 0.0
    for y in _synthesise(codec, header, coded, lm):
        decoded += float(np.square(y, dtype=np.float64).sum())
        peak = max(peak, float(np.abs(y).max(initial=0.0)))
    gain = _gain_db(energy[0], decoded, n, peak)
    if gain:
        header.extra["gain"] = gain
    return header, payloads


def _kept(blocks: Iterable[np.ndarray], sink: list[np.ndarray]) -> Iterator[np.ndarray]:
    """The blocks, each also appended to ``sink``."""
    for b in blocks:
        sink.append(b)
        yield b


def _finite(blocks: Iterable[np.ndarray], rate: int) -> Iterator[np.ndarray]:
    """The blocks, refusing the first NaN or infinite sample (it would decode to full-scale noise)."""
    seen = 0
    for b in blocks:
        bad = np.flatnonzero(~np.isfinite(b))
        if len(bad):
            raise MmarError(f"the input holds a non-finite sample (NaN or Inf) at {(seen + bad[0]) / rate:.3f} s")
        seen += len(b)
        yield b


def _gain_db(energy_in: float, energy_out: float, n: int, peak: float) -> float:
    """The decoder gain (dB, a multiple of 0.5 within ±MAX_GAIN_DB) that brings the decoded level
    to the input's without lifting the decoded ``peak`` into clipping; 0 for silence (below
    -80 dBFS on either side, the ratio means nothing)."""
    floor = 1e-8 * max(n, 1)
    if energy_in < floor or energy_out < floor:
        return 0.0
    db = min(round(20 * math.log10(energy_in / energy_out)) / 2, math.floor(-40 * math.log10(max(peak, 1e-9))) / 2)
    return max(-MAX_GAIN_DB, min(MAX_GAIN_DB, db)) + 0.0  # + 0.0: no -0.0


def _codes_blocks(codec: LoadedCodec, blocks: Iterable[np.ndarray], input_rate: int, n: int, levels: int,
                  energy: list[float]) -> Iterator[np.ndarray]:
    """Audio blocks → code blocks int64 [levels, t] (levels=0: latents [D, t]), ceil(n / hop) frames in all.
    ``energy[0]`` accumulates the sum of squares of the audio coded."""
    enc, fed = codec.model.stream_encoder(levels), 0
    for x in _resampled(blocks, input_rate, codec.model.sample_rate):
        x = x[: max(0, n - fed)]
        fed += len(x)
        energy[0] += float(np.square(x, dtype=np.float64).sum())
        yield enc.push(torch.from_numpy(np.ascontiguousarray(x))[None])[0].numpy()
    if fed < n:  # the resampler or the file gave fewer samples than announced
        yield enc.push(torch.zeros(1, n - fed))[0].numpy()
    yield enc.flush()[0].numpy()


def _lm_payloads(blocks: Iterable[np.ndarray], lm: LoadedLM, rdo: RateDistortion | None = None,
                 on_frames=None) -> Iterator[bytes]:
    enc = LMEncoder(lm.coder(), CHUNK_FRAMES, lm.window, rdo, on_frames)
    for block in blocks:
        yield from enc.push(block)
    yield from enc.flush()


def _raw_payloads(code_blocks: Iterable[np.ndarray], levels: int, bits: int) -> Iterator[bytes]:
    pending = np.zeros((levels, 0), dtype=np.int64)
    for codes in code_blocks:
        pending = np.concatenate([pending, codes], axis=1)
        while pending.shape[1] >= CHUNK_FRAMES:
            yield pack_codes(pending[:, :CHUNK_FRAMES], bits)
            pending = pending[:, CHUNK_FRAMES:]
    for i in range(0, pending.shape[1], CHUNK_FRAMES):
        yield pack_codes(pending[:, i : i + CHUNK_FRAMES], bits)


def decode_stream(codec: LoadedCodec, header: Header, payloads: Iterable[bytes], lm: LoadedLM | None = None,
                  fine: bool = True, stats: dict | None = None) -> Iterator[np.ndarray]:
    """Header + chunk payloads → float32 mono blocks at the header's input rate (its exact length),
    scaled by the header's gain and clipped to [-1, 1].

    "lm" files need ``lm`` (the models that wrote them); ``fine=False`` decodes the coarse
    levels alone instead of regenerating the fine ones. ``stats`` receives ``xent_bits``.
    """
    check_header(codec, header, lm)
    out_total = header.extra.get("ni", header.num_samples)
    scale = np.float32(10 ** (header.extra.get("gain", 0.0) / 20))
    produced = 0
    for y in _resampled(_audio16k(codec, header, payloads, lm, fine, stats), codec.model.sample_rate, header.input_rate):
        y = y[: out_total - produced]
        produced += len(y)
        yield np.clip(y * scale, -1.0, 1.0)
    if produced < out_total:
        yield np.zeros(out_total - produced, dtype=np.float32)


def _audio16k(codec: LoadedCodec, header: Header, payloads: Iterable[bytes], lm: LoadedLM | None = None,
              fine: bool = True, stats: dict | None = None) -> Iterator[np.ndarray]:
    """Header + payloads → the codec's own output: float32 blocks at its rate, ``num_samples`` in all."""
    frames_total = math.ceil(header.num_samples / codec.model.hop)
    if header.mode == "lm":
        coder = lm.coding(header.extra["lmw"]).coder()
        blocks = lm_decode(coder, payloads, frames_total, header.chunk_frames, lm.window, stats)
    else:
        blocks = _raw_blocks(header, payloads, frames_total, codec.model.codebook_size)
    return _synthesise(codec, header, blocks, lm, fine)


def _synthesise(codec: LoadedCodec, header: Header, blocks: Iterable[np.ndarray], lm: LoadedLM | None = None,
                fine: bool = True) -> Iterator[np.ndarray]:
    """Code blocks [levels, t] → the codec's own output (LM files: plus the fine levels the LM
    predicts, unless ``fine`` is False): float32 blocks at its rate, ``num_samples`` in all."""
    tok = codec.model
    gen = FineGenerator(lm, tok.codebooks()) if header.mode == "lm" and fine else None
    dec, emitted = tok.stream_decoder(), 0
    for codes in blocks:
        y = dec.push_latents(gen.push(codes)) if gen else dec.push(torch.from_numpy(codes)[None])
        y = y[0].numpy()[: max(0, header.num_samples - emitted)]
        emitted += len(y)
        yield y
    yield dec.flush()[0].numpy()[: max(0, header.num_samples - emitted)]


def _raw_blocks(header: Header, payloads: Iterable[bytes], frames_total: int, codebook_size: int) -> Iterator[np.ndarray]:
    done = 0
    for i, payload in enumerate(payloads):
        t = min(header.chunk_frames, frames_total - done)
        if t <= 0 or len(payload) != packed_size(header.levels, t, header.bits):
            raise ContainerError(f"chunk {i} holds {len(payload)} bytes, expected {packed_size(header.levels, max(t, 0), header.bits)}")
        codes = unpack_codes(payload, header.levels, t, header.bits)
        if codes.max(initial=0) >= codebook_size:
            raise ContainerError(f"chunk {i} holds a code outside the codebook")
        done += t
        yield codes
    if done != frames_total:
        raise ContainerError(f"file holds {done} frames, header announces {frames_total}")


def check_lm(codec: LoadedCodec, lm: LoadedLM) -> None:
    """The LM must have been trained on this codec's tokens."""
    if not codec.speaks(lm.codec_weights) or lm.levels > codec.model.num_codebooks:
        raise MmarError(f"language model {lm.model_id} was trained for codec weights {lm.codec_weights}, not {codec.weights}")


def check_header(codec: LoadedCodec, header: Header, lm: LoadedLM | None = None) -> None:
    """Refuse files written by another model or weights, or with settings this codec cannot decode."""
    tok = codec.model
    if header.model != codec.model_id or not codec.speaks(header.weights):
        raise ContainerError(f"file was written by model {header.model} (weights {header.weights}); this is {codec.model_id} "
                             f"(weights {codec.weights}): decode with the matching --checkpoint")
    if header.mode == "lm":
        if lm is None:
            raise ContainerError("file is LM-coded: it needs the language model that wrote it (--lm-checkpoint)")
        if header.extra.get("lm") != lm.model_id or lm.coding(header.extra.get("lmw", "")) is None \
                or header.levels != lm.coarse:
            raise ContainerError(f"file was LM-coded by {header.extra.get('lm')} (weights {header.extra.get('lmw')}); "
                                 f"this is {lm.model_id} (weights {lm.coded_weights}, or {lm.weights} in floats)")
    if (header.sample_rate, header.frame_rate, header.bits) != (tok.sample_rate, tok.frame_rate, tok.codebook_bits) \
            or header.levels > tok.num_codebooks:
        raise ContainerError("header does not match the codec (sample rate, frame rate, bits or levels)")
    if header.chunk_frames > MAX_CHUNK_FRAMES:  # bounds the work one (possibly forged) chunk can ask for
        raise ContainerError(f"header announces {header.chunk_frames} frames per chunk (at most {MAX_CHUNK_FRAMES})")
    if header.mode == "lm" and header.chunk_frames != CHUNK_FRAMES:  # with non-empty chunks: ≤ 56 steps per file byte
        raise ContainerError(f"header announces {header.chunk_frames} steps per LM chunk; LM-coded files hold {CHUNK_FRAMES}")


def _resampled(blocks: Iterable[np.ndarray], rate_in: int, rate_out: int) -> Iterator[np.ndarray]:
    if rate_in == rate_out:
        for b in blocks:
            yield np.asarray(b, dtype=np.float32)
        return
    import soxr

    rs = soxr.ResampleStream(rate_in, rate_out, 1, dtype="float32", quality="HQ")
    for b in blocks:
        yield rs.resample_chunk(np.asarray(b, dtype=np.float32))
    yield rs.resample_chunk(np.zeros(0, dtype=np.float32), last=True)


# -- files ---------------------------------------------------------------------------------
def _read_blocks(path: Path, progress: bool) -> tuple[Iterator[np.ndarray], int, int]:
    """:func:`mmar.audio.read_blocks`, with a progress bar for long files."""
    blocks, rate, frames = read_blocks(path, BLOCK_SECONDS)

    def gen() -> Iterator[np.ndarray]:
        from tqdm import tqdm

        with tqdm(total=frames / rate, unit="s", disable=not (progress and frames / rate > PROGRESS_SECONDS),
                  desc="encode", leave=False) as bar:
            for b in blocks:
                bar.update(len(b) / rate)
                yield b

    return gen(), rate, frames


def _check_paths(src: Path, dst: Path, overwrite: bool) -> None:
    """Refuse an output that exists (without ``overwrite``), is not a regular file, or is the input."""
    check_target(dst, overwrite)
    if dst.exists() and os.path.samefile(src, dst):
        raise MmarError(f"{dst} is the input file; choose another output")


def encode_file(codec: LoadedCodec, src: Path, dst: Path, kbps: float = 1.5, overwrite: bool = False,
                progress: bool = False, lm: LoadedLM | None = None, rdo: float | None = None) -> Header:
    """Encode an audio file (anything soundfile reads; any rate; any channel count) to ``dst`` (.mmc).
    With ``lm`` the file is LM-coded (its coarse levels; ``kbps`` is then not used; ``rdo``: λ)."""
    src, dst = Path(src), Path(dst)
    _check_paths(src, dst, overwrite)
    blocks, rate, frames = _read_blocks(src, progress)
    header, payloads = encode_stream(codec, blocks, rate, frames, codec.model.levels_for_kbps(kbps), lm, rdo)
    with ContainerWriter(dst, header, overwrite=overwrite) as w:
        for p in payloads:
            w.write_chunk(p)
    return header


def decode_file(codec: LoadedCodec, src: Path, dst: Path, overwrite: bool = False, progress: bool = False,
                lm: LoadedLM | None = None, fine: bool = True) -> Header:
    """Decode a ``.mmc`` file to audio at the original sample rate (format from dst's suffix: WAV and
    FLAC 16-bit PCM, OGG Vorbis; a rate the format cannot hold is refused before anything is written)."""
    import soundfile as sf
    from tqdm import tqdm

    src, dst = Path(src), Path(dst)
    _check_paths(src, dst, overwrite)
    fmt = {".wav": "WAV", ".flac": "FLAC", ".ogg": "OGG"}.get(dst.suffix.lower())
    if fmt is None:
        raise MmarError(f"cannot write {dst.suffix or 'files without a suffix'}: use .wav, .flac or .ogg")
    subtype = "VORBIS" if fmt == "OGG" else "PCM_16"
    with ContainerReader(src) as reader:
        header = reader.header
        if header.input_rate > MAX_OUTPUT_RATE[fmt]:  # libsndfile fails on these, or crashes (Vorbis)
            raise MmarError(f"{dst.suffix} cannot hold {header.input_rate} Hz audio (at most {MAX_OUTPUT_RATE[fmt]} Hz); use .wav")

        def write(tmp: Path) -> None:
            try:
                with sf.SoundFile(tmp, "w", samplerate=header.input_rate, channels=1, format=fmt, subtype=subtype) as out, \
                        tqdm(total=header.duration, unit="s", disable=not (progress and header.duration > PROGRESS_SECONDS),
                             desc="decode", leave=False) as bar:
                    for y in decode_stream(codec, header, reader, lm, fine):
                        out.write(y)
                        bar.update(len(y) / header.input_rate)
            except sf.SoundFileRuntimeError as e:  # libsndfile could not open or write the file
                raise MmarError(f"cannot write {dst}: {(str(e).strip().splitlines() or ['libsndfile failed'])[-1]}") from None

        atomic_write(dst, write, tmp_suffix=dst.suffix)
    return header


# -- arrays (benchmarks, tests, notebooks) ------------------------------------------------
def encode_array(codec: LoadedCodec, audio: np.ndarray, sample_rate: int, kbps: float, lm: LoadedLM | None = None,
                 rdo: float | None = None) -> bytes:
    """audio float32 [N] mono → the bytes of a complete ``.mmc`` file."""
    header, payloads = encode_stream(codec, [audio], sample_rate, len(audio), codec.model.levels_for_kbps(kbps), lm, rdo)
    return container_bytes(header, list(payloads))


def decode_array(codec: LoadedCodec, data: bytes, lm: LoadedLM | None = None, fine: bool = True,
                 stats: dict | None = None) -> tuple[np.ndarray, int]:
    """Bytes of a ``.mmc`` file → (audio float32 [N], sample rate)."""
    reader = ContainerReader(data)
    audio = np.concatenate(list(decode_stream(codec, reader.header, reader, lm, fine, stats)))
    return audio, reader.header.input_rate
