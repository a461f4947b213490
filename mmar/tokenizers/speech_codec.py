"""A causal, frame-rate speech codec: STFT encoder → residual VQ → Vocos-style iSTFT decoder.

All computation after the STFT runs at the frame rate (50 frames/s at 16 kHz), which is
what lets a useful codec train on a laptop CPU (see shared/research/codec-cpu-experiment.md).

Latency: the encoder needs one hop (20 ms) of new audio per frame and looks at the
``n_fft`` samples that end there (no lookahead). The decoder overlap-adds ``n_fft``-long
frames, so a sample is final once the ``n_fft // hop - 1`` frames after it have been
decoded: with n_fft 1280 and hop 320, 20 ms + 60 ms = 80 ms algorithmic latency.

Streaming (:class:`StreamingEncoder`, :class:`StreamingDecoder`) keeps the left context of
every causal convolution and the overlap-add tail, so chunked processing gives the codes of
the offline pass and its audio up to float rounding.
"""

from __future__ import annotations

import re

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..checkpoint import check_weights_fit, find_checkpoint, inference_state, load_pretrained
from ..errors import MmarError
from .base import AudioTokenizer, Encoded, LoadedTokenizer, register_tokenizer
from .rvq import ResidualVQ, RVQOutput
from .spectral import causal_frames, hann, log_magnitude, overlap_add

Cache = dict  # module id → left context [B, C, k-1]; None means "offline, zero history"


@dataclass
class CodecConfig:
    """Hyper-parameters of :class:`SpeechCodec` (the checkpoint's config.json holds these)."""

    sample_rate: int = 16000
    hop: int = 320  # samples per frame → 50 frames/s
    n_fft: int = 1280
    enc_dim: int = 256
    enc_blocks: int = 4
    dec_dim: int = 256
    dec_blocks: int = 8
    mlp_ratio: int = 3
    kernel: int = 7
    latent_dim: int = 64
    levels: int = 12  # 12 × 10 bits × 50/s = 6 kbps at most
    codebook_size: int = 1024
    ema_decay: float = 0.97
    dead_threshold: float = 0.05

    @property
    def frame_rate(self) -> int:
        return self.sample_rate // self.hop

    @property
    def codebook_bits(self) -> int:
        return (self.codebook_size - 1).bit_length()

    @property
    def receptive_field(self) -> int:
        """Frames of past input that one output frame depends on (encoder STFT + convs, decoder convs + overlap-add).

        Training crops must be clearly longer: a model that only ever sees crops within its
        receptive field learns to lean on the zero padding at the start, and goes silent
        once a stream runs longer than that.
        """
        overlap = self.n_fft // self.hop - 1
        return 2 * overlap + (self.enc_blocks + self.dec_blocks) * (self.kernel - 1) + 2 + 1


class CausalConv1d(nn.Conv1d):
    """Conv1d padded on the left only; with a cache it carries its left context across calls."""

    def forward(self, x: torch.Tensor, cache: Cache | None = None) -> torch.Tensor:  # x [B, C, T]
        ctx = self.kernel_size[0] - 1
        if ctx:
            key = id(self)
            prev = cache.get(key) if cache is not None else None
            if prev is None:
                prev = x.new_zeros(x.shape[0], x.shape[1], ctx)
            x = torch.cat([prev, x], dim=-1)
            if cache is not None:
                cache[key] = x[..., -ctx:]
        return super().forward(x)


class ConvNeXtBlock(nn.Module):
    """Causal depthwise conv → LayerNorm → MLP (GELU) → layer scale, residual. [B, C, T] → same."""

    def __init__(self, dim: int, hidden: int, kernel: int):
        super().__init__()
        self.dw = CausalConv1d(dim, dim, kernel, groups=dim)
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.scale = nn.Parameter(torch.full((dim,), 0.1))

    def forward(self, x: torch.Tensor, cache: Cache | None = None) -> torch.Tensor:
        h = self.dw(x, cache).transpose(1, 2)
        h = self.fc2(F.gelu(self.fc1(self.norm(h)))) * self.scale
        return x + h.transpose(1, 2)


class Encoder(nn.Module):
    """Causal log-|STFT| frames [B, n_fft//2+1, T] → latents [B, latent_dim, T]."""

    def __init__(self, cfg: CodecConfig):
        super().__init__()
        self.inp = nn.Conv1d(cfg.n_fft // 2 + 1, cfg.enc_dim, 1)
        self.blocks = nn.ModuleList(ConvNeXtBlock(cfg.enc_dim, cfg.enc_dim * cfg.mlp_ratio, cfg.kernel) for _ in range(cfg.enc_blocks))
        self.norm = nn.LayerNorm(cfg.enc_dim)
        self.out = nn.Linear(cfg.enc_dim, cfg.latent_dim)

    def forward(self, spec: torch.Tensor, cache: Cache | None = None) -> torch.Tensor:
        h = self.inp(spec)
        for block in self.blocks:
            h = block(h, cache)
        return self.out(self.norm(h.transpose(1, 2))).transpose(1, 2)


class Decoder(nn.Module):
    """Latents [B, latent_dim, T] → per-frame complex spectra [B, T, n_fft//2+1] (Vocos-style head)."""

    def __init__(self, cfg: CodecConfig):
        super().__init__()
        self.bins = cfg.n_fft // 2 + 1
        self.inp = CausalConv1d(cfg.latent_dim, cfg.dec_dim, 3)
        self.blocks = nn.ModuleList(ConvNeXtBlock(cfg.dec_dim, cfg.dec_dim * cfg.mlp_ratio, cfg.kernel) for _ in range(cfg.dec_blocks))
        self.norm = nn.LayerNorm(cfg.dec_dim)
        self.out = nn.Linear(cfg.dec_dim, 2 * self.bins)

    def forward(self, z: torch.Tensor, cache: Cache | None = None) -> torch.Tensor:
        h = self.inp(z, cache)
        for block in self.blocks:
            h = block(h, cache)
        logmag, phase = self.out(self.norm(h.transpose(1, 2))).split(self.bins, dim=-1)
        mag = torch.exp(logmag.clamp(max=8.0))
        return torch.polar(mag, phase)


class SpeechCodec(nn.Module, AudioTokenizer):
    """The mmar speech tokenizer: audio float [B, N] at 16 kHz ↔ codes int64 [B, K, N // hop]."""

    def __init__(self, cfg: CodecConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or CodecConfig()
        self.encoder = Encoder(cfg)
        self.quantizer = ResidualVQ(cfg.levels, cfg.codebook_size, cfg.latent_dim, cfg.ema_decay, cfg.dead_threshold)
        self.decoder = Decoder(cfg)
        self.register_buffer("window", hann(cfg.n_fft), persistent=False)

    sample_rate = property(lambda self: self.cfg.sample_rate, doc="Audio samples per second.")
    hop = property(lambda self: self.cfg.hop, doc="Audio samples per code frame.")
    frame_rate = property(lambda self: self.cfg.frame_rate, doc="Code frames per second.")
    num_codebooks = property(lambda self: self.cfg.levels, doc="K: RVQ levels.")
    codebook_size = property(lambda self: self.cfg.codebook_size, doc="V: entries per codebook.")

    def config_dict(self) -> dict:
        return asdict(self.cfg)

    # -- offline -------------------------------------------------------------------------
    def analyse(self, audio: torch.Tensor, cache: Cache | None = None) -> torch.Tensor:
        """audio [B, N] (N a multiple of hop) → latents [B, latent_dim, N // hop]."""
        ctx = self.cfg.n_fft - self.cfg.hop
        prev = cache.get("samples") if cache is not None else None
        if prev is None:
            prev = audio.new_zeros(audio.shape[0], ctx)
        x = torch.cat([prev, audio], dim=-1)
        if cache is not None:
            cache["samples"] = x[:, -ctx:]
        frames = causal_frames(x, self.cfg.n_fft, self.cfg.hop)
        return self.encoder(log_magnitude(frames, self.window), cache)

    def pad(self, audio: torch.Tensor) -> torch.Tensor:
        """Right-pad audio [B, N] with zeros to a whole number of frames."""
        rem = (-audio.shape[-1]) % self.cfg.hop
        return F.pad(audio, (0, rem)) if rem else audio

    def encode(self, audio: torch.Tensor, levels: int | None = None) -> Encoded:
        """audio float [B, N] → Encoded(codes int64 [B, levels, ceil(N / hop)])."""
        levels = self.cfg.levels if levels is None else levels
        z = self.analyse(self.pad(audio))
        return Encoded(self.quantizer.encode(z, levels))

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes int64 [B, k, T] (k ≤ levels) → audio float [B, T * hop]."""
        return self.decode_latents(self.latents_from_codes(codes))

    def codebooks(self) -> list[torch.Tensor]:
        """K codebooks [V, D] (latent_dim D)."""
        return self.quantizer.books

    def latents_from_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """codes int64 [B, k, T] → quantized latents [B, D, T]."""
        return self.quantizer.decode(codes)

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Quantized latents [B, D, T] → audio float [B, T * hop]."""
        dec = StreamingDecoder(self)
        return torch.cat([dec.push_latents(latents), dec.flush()], dim=-1)

    def stream_encoder(self, levels: int) -> StreamingEncoder:
        """See :class:`StreamingEncoder` (levels=0: unquantized latents)."""
        return StreamingEncoder(self, levels)

    def stream_decoder(self) -> StreamingDecoder:
        """See :class:`StreamingDecoder`."""
        return StreamingDecoder(self)

    def synthesise(self, spectra: torch.Tensor) -> torch.Tensor:
        """spectra complex [B, T, bins] → audio [B, T * hop] (offline overlap-add, used in training)."""
        n_fft, hop = self.cfg.n_fft, self.cfg.hop
        frames = torch.fft.irfft(spectra, n=n_fft, dim=-1) * self.window
        t = frames.shape[1]
        y = overlap_add(frames, hop)
        env = overlap_add((self.window**2).expand(1, t, n_fft), hop)
        ctx = n_fft - hop
        return y[:, ctx:] / env[:, ctx:].clamp_min(1e-6)

    def forward(self, audio: torch.Tensor, levels: int | None = None, update: bool = False,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, RVQOutput]:
        """Training pass. audio [B, N] (N a multiple of hop) → (reconstruction [B, N], RVQOutput)."""
        z = self.analyse(audio)
        q = self.quantizer(z, levels=levels, update=update, generator=generator)
        return self.synthesise(self.decoder(q.quantized)), q


class StreamingEncoder:
    """Feed audio chunks of any length; get the codes of every completed frame.

    push(audio [B, n]) → codes [B, levels, frames completed] (with ``levels=0``: the unquantized
    latents [B, D, frames completed]); flush() zero-pads the last partial frame.
    """

    def __init__(self, codec: SpeechCodec, levels: int):
        self.codec, self.levels = codec, levels
        self.cache: Cache = {}
        self.pending: torch.Tensor | None = None

    @torch.no_grad()
    def push(self, audio: torch.Tensor) -> torch.Tensor:
        hop = self.codec.cfg.hop
        x = audio if self.pending is None else torch.cat([self.pending, audio], dim=-1)
        n = (x.shape[-1] // hop) * hop
        self.pending = x[:, n:]
        if n == 0:
            return self._empty(x.shape[0])
        z = self.codec.analyse(x[:, :n], self.cache)
        return self.codec.quantizer.encode(z, self.levels) if self.levels else z

    @torch.no_grad()
    def flush(self) -> torch.Tensor:
        rest, self.pending = self.pending, None
        if rest is None or rest.shape[-1] == 0:
            return self._empty(1 if rest is None else rest.shape[0])
        return self.push(self.codec.pad(rest))

    def _empty(self, batch: int) -> torch.Tensor:
        if self.levels:
            return torch.zeros(batch, self.levels, 0, dtype=torch.long)
        return torch.zeros(batch, self.codec.cfg.latent_dim, 0)


class StreamingDecoder:
    """Feed code frames; get every audio sample that no later frame can change.

    push(codes [B, k, t]) or push_latents(z [B, D, t]) → audio [B, m]; flush() → the remaining
    samples (the last ``n_fft - hop`` of the stream, normalised by the frames that reached them).

    The very end is reached by the falling edge of the last window alone: dividing by its
    near-zero envelope turned any error there into a full-scale click. flush() divides by at
    least ``TAIL_FLOOR`` × the full envelope instead, which fades the last few ms out with the
    window (only samples whose envelope is below the floor change: the final < 20 ms).
    """

    TAIL_FLOOR = 0.1

    def __init__(self, codec: SpeechCodec):
        self.codec = codec
        self.cache: Cache = {}
        self.acc: torch.Tensor | None = None  # [B, pending samples], starts at self.start
        self.env: torch.Tensor | None = None
        self.start = -(codec.cfg.n_fft - codec.cfg.hop)  # absolute position of acc[:, 0]
        self.frames = 0

    @torch.no_grad()
    def push(self, codes: torch.Tensor) -> torch.Tensor:
        """codes int64 [B, k, t] → audio [B, m] (every sample no later frame can change)."""
        return self.push_latents(self.codec.latents_from_codes(codes))

    @torch.no_grad()
    def push_latents(self, z: torch.Tensor) -> torch.Tensor:
        """Quantized latents [B, D, t] (sums of codebook vectors, or estimates of them) → audio [B, m]."""
        codec, (n_fft, hop) = self.codec, (self.codec.cfg.n_fft, self.codec.cfg.hop)
        b, t = z.shape[0], z.shape[-1]
        if t == 0:
            return torch.zeros(b, 0)
        spectra = codec.decoder(z, self.cache)
        frames = torch.fft.irfft(spectra, n=n_fft, dim=-1) * codec.window
        y = overlap_add(frames, hop)
        env = overlap_add((codec.window**2).expand(1, t, n_fft), hop).expand(b, -1)
        if self.acc is not None:  # the pending tail overlaps the first new frames
            keep = self.acc.shape[-1]
            y = torch.cat([y[:, :keep] + self.acc, y[:, keep:]], dim=-1) if keep else y
            env = torch.cat([env[:, :keep] + self.env, env[:, keep:]], dim=-1) if keep else env
        self.frames += t
        final = (self.frames * hop - (n_fft - hop)) - self.start  # samples no later frame reaches
        return self._emit(y, env, final)

    def _emit(self, y: torch.Tensor, env: torch.Tensor, n: int) -> torch.Tensor:
        out = y[:, :n] / env[:, :n].clamp_min(1e-6)
        self.acc, self.env = y[:, n:], env[:, n:]
        skip = max(0, -self.start)  # positions < 0 belong to the left padding
        self.start += n
        return out[:, min(skip, n):]

    @torch.no_grad()
    def flush(self) -> torch.Tensor:
        if self.acc is None:
            return torch.zeros(1, 0)
        full = float((self.codec.window**2).sum()) / self.codec.cfg.hop  # the envelope where all frames overlap
        return self._emit(self.acc, self.env.clamp_min(self.TAIL_FLOOR * full), self.acc.shape[-1])


def _config(path: Path, config: dict, state: dict[str, torch.Tensor]) -> CodecConfig:
    """config.json → a :class:`CodecConfig` whose every field is of its type and in range, and whose
    model has exactly the weights' shapes (checked on the meta device: nothing is allocated), so a
    damaged or hostile config cannot make the builder allocate without bound."""
    fields = {k: v for k, v in config.items() if k in CodecConfig.__dataclass_fields__}
    for name, value in fields.items():
        want = type(getattr(CodecConfig, name))
        if isinstance(value, bool) or not isinstance(value, (int, float) if want is float else want) \
                or not (0 < value <= 1_000_000 if want is int else 0 <= value <= 1):
            raise MmarError(f"{path}: config field {name}={value!r:.40} is not a valid {want.__name__}")
    cfg = CodecConfig(**fields)
    if cfg.hop > cfg.n_fft or cfg.n_fft % cfg.hop or cfg.sample_rate % cfg.hop:
        raise MmarError(f"{path}: config hop {cfg.hop} must divide n_fft {cfg.n_fft} and sample_rate {cfg.sample_rate}")
    check_weights_fit(path, lambda: SpeechCodec(cfg), state, "a codec", spare=64)
    return cfg


@register_tokenizer("speech16k", aliases=("mmar",))
def build_speech_codec(path: Path | None) -> LoadedTokenizer:
    """A speech-codec checkpoint directory (default: the shipped ``speech-codec-16k``) → the codec."""
    path = find_checkpoint("speech-codec-16k", path)
    state, config, digest = load_pretrained(path, kind="speech_codec")
    model = SpeechCodec(_config(path, config, state))
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if k in inference_state(model)]  # training-only buffers may be absent
    if missing or unexpected:
        raise MmarError(f"{path}: weights do not match the config (missing {missing[:3]}, unexpected {unexpected[:3]})")
    name, tokens = config.get("name", path.name), config.get("tokens", "")
    if not (isinstance(tokens, str) and re.fullmatch(r"[0-9a-f]{0,64}", tokens)):
        raise MmarError(f"{path}: config field 'tokens' must be a weights hash (hex digits)")
    return LoadedTokenizer(model.eval(), name if isinstance(name, str) else path.name, digest, tokens)
