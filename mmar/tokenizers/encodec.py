"""EnCodec 24 kHz (Défossez et al., 2022) as an mmar tokenizer, without the ``encodec`` package.

The ``encodec`` package imports torchaudio at import time, and torchaudio does not install
beside a plain CPU torch, so mmar carries its own copy of the 24 kHz model: a causal SEANet
encoder (weight-normalised convolutions, strides 2·4·5·8 = 320 samples, a 2-layer LSTM),
a residual VQ with 32 codebooks × 1024 entries over 128-d latents, and the mirror decoder.
That is 75 frames/s and 0.75 kbps per codebook, so 1.5 / 3 / 6 / 12 / 24 kbps use
2 / 4 / 8 / 16 / 32 codebooks.

Modules are named after Meta's module tree, so the published state dict (252 entries such as
``encoder.model.0.conv.conv.weight_g``, ``quantizer.vq.layers.0._codebook.embed``) loads strictly.

Weights. mmar never downloads anything. Fetch Meta's checkpoint yourself from
``https://dl.fbaipublicfiles.com/encodec/v0/encodec_24khz-d7cc33bc.th`` (check Meta's
licence terms for the weights) and pass its path to :func:`load_encodec`. That pickled state
dict is read with ``torch.load(weights_only=True)`` (tensors only, no arbitrary code); a
``.safetensors`` file with the same keys works too. A file name that keeps Meta's ``-<8 hex>``
suffix has that SHA-256 prefix checked. mmar's tests use random weights.

Streaming. The 24 kHz model is causal (left padding, unidirectional LSTM), but
:meth:`EncodecModel.encode` / :meth:`~EncodecModel.decode` run the whole signal at once, as
Meta's package does. mmar's CLI feeds long files in chunks; each chunk starts from a fresh
state (reflect padding at its left edge, zero LSTM state), so chunked codes differ slightly
from a one-pass encode near chunk starts.
"""

from __future__ import annotations

import math
import pickle
import re
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..checkpoint import file_sha256, weights_hash
from ..errors import MmarError
from .base import AudioTokenizer, Encoded, LoadedTokenizer, register_tokenizer

META_URL = "https://dl.fbaipublicfiles.com/encodec/v0/encodec_24khz-d7cc33bc.th"


@dataclass
class EncodecConfig:
    """Hyper-parameters; the defaults are Meta's 24 kHz mono model."""

    sample_rate: int = 24000
    dimension: int = 128  # latent size
    n_filters: int = 32
    ratios: tuple[int, ...] = (8, 5, 4, 2)  # decoder upsampling order; the encoder runs it reversed
    n_residual_layers: int = 1
    kernel_size: int = 7
    last_kernel_size: int = 7
    residual_kernel_size: int = 3
    dilation_base: int = 2
    compress: int = 2  # channel reduction inside residual blocks
    lstm_layers: int = 2
    num_codebooks: int = 32
    codebook_size: int = 1024

    @property
    def hop(self) -> int:
        return math.prod(self.ratios)

    @property
    def frame_rate(self) -> int:
        return math.ceil(self.sample_rate / self.hop)

    @property
    def levels(self) -> int:
        return self.num_codebooks


def _box(**children: nn.Module) -> nn.Module:
    """A bare container, so that state-dict keys follow the module tree of Meta's package."""
    box = nn.Module()
    for name, child in children.items():
        box.add_module(name, child)
    return box


def _split_weight(conv: nn.Module) -> None:
    """Weight normalisation stored as torch's original ``weight_g`` / ``weight_v`` (norm over dims ≠ 0)."""
    v = conv.weight.detach()
    del conv.weight
    conv.weight_g = nn.Parameter(torch.norm_except_dim(v, 2, 0))
    conv.weight_v = nn.Parameter(v.clone())


def _weight(conv: nn.Module) -> torch.Tensor:
    return torch._weight_norm(conv.weight_v, conv.weight_g, 0)


class _WNConv1d(nn.Conv1d):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        _split_weight(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, _weight(self), self.bias)


class _WNConvTranspose1d(nn.ConvTranspose1d):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        _split_weight(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv_transpose1d(x, _weight(self), self.bias, self.stride)


def _reflect_pad(x: torch.Tensor, left: int, right: int) -> torch.Tensor:
    """Reflect padding that also works when the signal is shorter than the padding."""
    n, most = x.shape[-1], max(left, right)
    short = most - n + 1 if n <= most else 0
    if short:
        x = F.pad(x, (0, short))
    y = F.pad(x, (left, right), mode="reflect")
    return y[..., : y.shape[-1] - short]


class CausalConv(nn.Module):
    """Strided convolution padded on the left (reflect), plus just enough on the right to fill the last frame."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1, dilation: int = 1):
        super().__init__()
        self.conv = _box(conv=_WNConv1d(c_in, c_out, kernel, stride, dilation=dilation))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv = self.conv.conv
        k, s, d = conv.kernel_size[0], conv.stride[0], conv.dilation[0]
        left = (k - 1) * d - (s - 1)
        n = x.shape[-1]
        frames = -((k - left - n) // s) + 1  # ceil((n - k + left) / s) + 1
        right = (frames - 1) * s + k - left - n
        return conv(_reflect_pad(x, left, right))


class CausalConvTranspose(nn.Module):
    """Transposed convolution with the overhang (kernel - stride samples) trimmed on the right."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int):
        super().__init__()
        self.convtr = _box(convtr=_WNConvTranspose1d(c_in, c_out, kernel, stride))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv = self.convtr.convtr
        y = conv(x)
        return y[..., : y.shape[-1] - (conv.kernel_size[0] - conv.stride[0])]


class ResidualUnit(nn.Module):
    """ELU → dilated conv (C → C/compress) → ELU → 1×1 conv (→ C), plus a 1×1 conv shortcut."""

    def __init__(self, dim: int, kernel: int, dilation: int, compress: int):
        super().__init__()
        hidden = dim // compress
        self.block = nn.Sequential(nn.ELU(), CausalConv(dim, hidden, kernel, dilation=dilation),
                                   nn.ELU(), CausalConv(hidden, dim, 1))
        self.shortcut = CausalConv(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shortcut(x) + self.block(x)


class SkipLSTM(nn.Module):
    """Unidirectional LSTM over time on [B, C, T] with a residual connection."""

    def __init__(self, dim: int, layers: int):
        super().__init__()
        self.lstm = nn.LSTM(dim, dim, layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(2, 0, 1)  # [T, B, C]
        y, _ = self.lstm(x)
        return (y + x).permute(1, 2, 0)


def _encoder(c: EncodecConfig) -> nn.Sequential:
    width = c.n_filters
    layers: list[nn.Module] = [CausalConv(1, width, c.kernel_size)]
    for ratio in reversed(c.ratios):
        layers += [ResidualUnit(width, c.residual_kernel_size, c.dilation_base**j, c.compress)
                   for j in range(c.n_residual_layers)]
        layers += [nn.ELU(), CausalConv(width, 2 * width, 2 * ratio, ratio)]
        width *= 2
    if c.lstm_layers:
        layers.append(SkipLSTM(width, c.lstm_layers))
    layers += [nn.ELU(), CausalConv(width, c.dimension, c.last_kernel_size)]
    return nn.Sequential(*layers)


def _decoder(c: EncodecConfig) -> nn.Sequential:
    width = c.n_filters * 2 ** len(c.ratios)
    layers: list[nn.Module] = [CausalConv(c.dimension, width, c.kernel_size)]
    if c.lstm_layers:
        layers.append(SkipLSTM(width, c.lstm_layers))
    for ratio in c.ratios:
        layers += [nn.ELU(), CausalConvTranspose(width, width // 2, 2 * ratio, ratio)]
        width //= 2
        layers += [ResidualUnit(width, c.residual_kernel_size, c.dilation_base**j, c.compress)
                   for j in range(c.n_residual_layers)]
    layers += [nn.ELU(), CausalConv(width, 1, c.last_kernel_size)]
    return nn.Sequential(*layers)


class Codebook(nn.Module):
    """One VQ level. Buffers as in Meta's EMA codebook; only ``embed`` is used for inference."""

    def __init__(self, size: int, dim: int):
        super().__init__()
        embed = torch.randn(size, dim)
        self.register_buffer("inited", torch.ones(1))
        self.register_buffer("cluster_size", torch.zeros(size))
        self.register_buffer("embed", embed)
        self.register_buffer("embed_avg", embed.clone())

    def encode(self, x: torch.Tensor) -> torch.Tensor:  # [B, D, T] → nearest entries [B, T]
        b, d, t = x.shape
        flat = x.transpose(1, 2).reshape(-1, d)
        e = self.embed.t()
        dist = -(flat.pow(2).sum(1, keepdim=True) - 2 * flat @ e + e.pow(2).sum(0, keepdim=True))
        return dist.max(dim=-1).indices.view(b, t)

    def decode(self, idx: torch.Tensor) -> torch.Tensor:  # [B, T] → vectors [B, D, T]
        return F.embedding(idx, self.embed).transpose(1, 2)


class ResidualQuantizer(nn.Module):
    def __init__(self, levels: int, size: int, dim: int):
        super().__init__()
        self.layers = nn.ModuleList(_box(_codebook=Codebook(size, dim)) for _ in range(levels))

    def encode(self, z: torch.Tensor, levels: int) -> torch.Tensor:  # [B, D, T] → [B, levels, T]
        residual, codes = z, []
        for layer in self.layers[:levels]:
            idx = layer._codebook.encode(residual)
            residual = residual - layer._codebook.decode(idx)
            codes.append(idx)
        return torch.stack(codes, dim=1)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:  # [B, k, T] → summed vectors [B, D, T]
        out = torch.zeros((), device=codes.device)
        for k in range(codes.shape[1]):
            out = out + self.layers[k]._codebook.decode(codes[:, k])
        return out


class EncodecModel(nn.Module, AudioTokenizer):
    """EnCodec 24 kHz implementing :class:`mmar.tokenizers.base.AudioTokenizer` (random weights until loaded).

    Its bitrates count codebooks as Meta's package does: floor(kbps / 0.75) codebooks.
    """

    def __init__(self, cfg: EncodecConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or EncodecConfig()
        self.encoder = _box(model=_encoder(cfg))
        self.quantizer = _box(vq=ResidualQuantizer(cfg.num_codebooks, cfg.codebook_size, cfg.dimension))
        self.decoder = _box(model=_decoder(cfg))
        self.eval()

    sample_rate = property(lambda self: self.cfg.sample_rate, doc="24000 samples per second.")
    hop = property(lambda self: self.cfg.hop, doc="320 samples per code frame.")
    frame_rate = property(lambda self: self.cfg.frame_rate, doc="75 code frames per second.")
    num_codebooks = property(lambda self: self.cfg.num_codebooks, doc="K = 32 RVQ levels.")
    codebook_size = property(lambda self: self.cfg.codebook_size, doc="V = 1024 entries per codebook.")

    @torch.no_grad()
    def encode(self, signal: torch.Tensor, levels: int | None = None) -> Encoded:
        """signal float [B, N] at 24 kHz → Encoded(codes int64 [B, levels, ceil(N / 320)])."""
        levels = self.num_codebooks if levels is None else levels
        if not 1 <= levels <= self.num_codebooks:
            raise MmarError(f"EnCodec levels must be 1..{self.num_codebooks}, got {levels}")
        z = self.encoder.model(signal[:, None, :])
        return Encoded(self.quantizer.vq.encode(z, levels))

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes int64 [B, k, T] (k ≤ 32) → signal float [B, T * 320]."""
        return self.decode_latents(self.latents_from_codes(codes))

    def codebooks(self) -> list[torch.Tensor]:
        """32 codebooks [1024, 128]."""
        return [layer._codebook.embed for layer in self.quantizer.vq.layers]

    def latents_from_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """codes int64 [B, k, T] → quantized latents [B, 128, T]."""
        return self.quantizer.vq.decode(codes)

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Quantized latents [B, 128, T] → signal float [B, T * 320]."""
        return self.decoder.model(latents)[:, 0]


def _read_state(path: Path) -> dict:
    m = re.fullmatch(r".*-([0-9a-f]{8})", path.stem)
    if m:  # Meta names files <model>-<first 8 hex digits of the SHA-256>
        digest = file_sha256(path)
        if not digest.startswith(m.group(1)):
            raise MmarError(f"{path.name}: SHA-256 {digest[:8]} does not match the name (damaged download?)")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise MmarError(f"{path.name}: not a tensors-only torch state dict (read with weights_only=True)") from None
    except Exception as e:  # noqa: BLE001 - every reader failure means "not a usable checkpoint"
        first = (str(e).strip().splitlines() or [""])[0][:120]
        raise MmarError(f"{path.name}: not a readable EnCodec checkpoint ({type(e).__name__}: {first})") from None


def load_encodec(path: Path | str, cfg: EncodecConfig | None = None) -> EncodecModel:
    """Build :class:`EncodecModel` from a local checkpoint (Meta's ``.th`` or ``.safetensors``).

    Nothing is downloaded: get ``encodec_24khz-d7cc33bc.th`` from :data:`META_URL` yourself.
    A missing, damaged or foreign file raises :class:`MmarError` with a one-line message.
    """
    path = Path(path)
    if not path.is_file():
        raise MmarError(f"EnCodec checkpoint not found: {path} (download it yourself from {META_URL})")
    state = _read_state(path)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise MmarError(f"{path.name}: not an EnCodec state dict (expected a mapping of names to tensors)")
    # torch.nn.utils.parametrizations.weight_norm saves g / v as original0 / original1
    state = {k.replace("parametrizations.weight.original0", "weight_g")
             .replace("parametrizations.weight.original1", "weight_v"): v for k, v in state.items()}
    with torch.device("meta"):  # shapes only: the checkpoint supplies every tensor
        model = EncodecModel(cfg)
    want = model.state_dict()
    missing = sorted(want.keys() - state.keys())
    extra = sorted(state.keys() - want.keys())
    shape = sorted(k for k in want.keys() & state.keys() if want[k].shape != state[k].shape)
    if missing or extra or shape:
        parts = [f"{len(v)} {what} (e.g. {v[0]})" for v, what in
                 ((missing, "missing"), (extra, "unexpected"), (shape, "of another shape")) if v]
        raise MmarError(f"{path.name}: not an EnCodec 24 kHz checkpoint: keys " + ", ".join(parts))
    model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True, assign=True)
    return model.eval()


@register_tokenizer("encodec_24khz")
def build_encodec(path: Path | None) -> LoadedTokenizer:
    """Meta's EnCodec 24 kHz checkpoint file (``.th`` / ``.safetensors``; required: nothing ships) → the model."""
    if path is None:
        raise MmarError("the EnCodec backend needs --checkpoint PATH to Meta's encodec_24khz .th file")
    return LoadedTokenizer(load_encodec(path), "encodec_24khz", weights_hash(path))
