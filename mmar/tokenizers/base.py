"""One interface for every modality tokenizer, and the registry that builds them by name.

A tokenizer turns a signal into discrete codes ``[B, K, *grid]`` (K codebook levels; the grid
is ``(frames,)`` for audio, ``(rows, cols)`` for an image, ``(frames, rows, cols)`` for video)
and back. Results are dataclasses, never tuples whose length depends on flags.

Tasks and the CLI get tokenizers from :func:`load_tokenizer` only; a module adds one with
``@register_tokenizer("name")`` on its builder ``build(path: Path | None) -> LoadedTokenizer``.
Builders are the only code that reads a checkpoint's config.
"""

from __future__ import annotations

import abc
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import MmarError

# Modules whose import registers the built-in tokenizers (imported on first use of the registry).
BUILTIN_MODULES = ("mmar.tokenizers.speech_codec", "mmar.tokenizers.encodec", "mmar.tokenizers.image_vq",
                   "mmar.tokenizers.image_vae")


@dataclass
class Encoded:
    """Output of :meth:`Tokenizer.encode`: discrete codes, continuous latents, or both.

    codes: int64 [B, K, *grid], values in [0, codebook_size) (None for a latent-only tokenizer);
    latents: float [B, D, *grid] (before quantization; None when not asked for);
    grid: the shape the tokens tile, ``(frames,)``, ``(rows, cols)`` or ``(frames, rows, cols)``.
    """

    codes: torch.Tensor | None = None
    latents: torch.Tensor | None = None
    grid: tuple[int, ...] = field(init=False)

    def __post_init__(self):
        if self.codes is None and self.latents is None:
            raise ValueError("Encoded needs codes, latents or both")
        grids = {tuple(x.shape[2:]) for x in (self.codes, self.latents) if x is not None}
        if len(grids) != 1:
            raise ValueError(f"codes and latents tile different grids: {sorted(grids)}")
        self.grid = grids.pop()


class Tokenizer(abc.ABC):
    """What every tokenizer (speech codec, EnCodec backend, image VQ) provides."""

    @property
    @abc.abstractmethod
    def num_codebooks(self) -> int:
        """K: the most levels the tokenizer can emit."""

    @property
    @abc.abstractmethod
    def codebook_size(self) -> int:
        """V: entries per codebook."""

    @property
    def codebook_bits(self) -> int:
        """Bits that hold one code: ceil(log2 V)."""
        return (self.codebook_size - 1).bit_length()

    @abc.abstractmethod
    def encode(self, signal: torch.Tensor, levels: int | None = None) -> Encoded:
        """signal float [B, C?, *samples] → Encoded(codes int64 [B, levels, *grid]); levels=None: all K."""

    @abc.abstractmethod
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes int64 [B, k, *grid] (any k ≤ K) → signal float."""

    @abc.abstractmethod
    def codebooks(self) -> list[torch.Tensor]:
        """Each level's codebook vectors: K tensors [V, D]."""

    @abc.abstractmethod
    def latents_from_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """codes int64 [B, k, *grid] → quantized latents [B, D, *grid] (the sum of the k levels' vectors)."""

    @abc.abstractmethod
    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Quantized latents [B, D, *grid] (sums of codebook vectors, or estimates of them) → signal float."""

    def stream_encoder(self, levels: int):
        """An object with ``push(signal chunk) → codes`` and ``flush() → codes`` (modalities that stream)."""
        raise MmarError(f"{type(self).__name__} does not stream")

    def stream_decoder(self):
        """An object with ``push(codes) / push_latents(latents) → signal`` and ``flush() → signal``."""
        raise MmarError(f"{type(self).__name__} does not stream")


class AudioTokenizer(Tokenizer):
    """A tokenizer of mono audio: signal float [B, N] at ``sample_rate`` ↔ codes [B, K, ceil(N / hop)]."""

    @property
    @abc.abstractmethod
    def sample_rate(self) -> int:
        """Audio samples per second."""

    @property
    @abc.abstractmethod
    def hop(self) -> int:
        """Audio samples per code frame."""

    @property
    @abc.abstractmethod
    def frame_rate(self) -> int:
        """Code frames per second of audio."""

    def levels_for_kbps(self, kbps: float) -> int:
        """Most levels whose raw bitrate (levels × bits × frame rate) stays ≤ kbps (at least 1, at most K)."""
        if not kbps > 0:
            raise MmarError(f"bitrate must be positive, got {kbps}")
        per_level = self.codebook_bits * self.frame_rate / 1000.0
        return max(1, min(self.num_codebooks, int(kbps / per_level + 1e-9)))

    def stream_encoder(self, levels: int) -> BlockEncoder:
        """push(audio [B, n]) → codes [B, levels, frames completed]; flush() → the last partial frame's codes.
        Without streaming state: each pushed block of whole frames is encoded on its own."""
        return BlockEncoder(self, levels)

    def stream_decoder(self) -> BlockDecoder:
        """push(codes [B, k, t]) or push_latents(z [B, D, t]) → audio [B, t * hop]; flush() → audio [B, 0]."""
        return BlockDecoder(self)


class BlockEncoder:
    """Streaming for audio tokenizers without streaming state (the EnCodec backend): each pushed
    block of whole frames is encoded on its own, so codes near block starts differ from a
    whole-file pass."""

    def __init__(self, tokenizer: AudioTokenizer, levels: int):
        self.tokenizer, self.levels, self.pending = tokenizer, levels, torch.zeros(1, 0)

    def push(self, audio: torch.Tensor) -> torch.Tensor:
        """audio [1, n] → codes int64 [1, levels, frames completed]."""
        x = torch.cat([self.pending, audio], dim=-1)
        n = x.shape[-1] // self.tokenizer.hop * self.tokenizer.hop
        self.pending = x[:, n:]
        return self._encode(x[:, :n])

    def flush(self) -> torch.Tensor:
        """The codes of the remaining partial frame (zero-padded): [1, levels, 0 or 1]."""
        rest, self.pending = self.pending, torch.zeros(1, 0)
        return self._encode(rest)

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.tokenizer.encode(x, self.levels).codes if x.shape[-1] else torch.zeros(1, self.levels, 0, dtype=torch.long)


class BlockDecoder:
    """Streaming decode for audio tokenizers without streaming state: each block decodes on its own."""

    def __init__(self, tokenizer: AudioTokenizer):
        self.tokenizer = tokenizer

    def push(self, codes: torch.Tensor) -> torch.Tensor:
        """codes int64 [1, k, t] → audio [1, t * hop]."""
        return self.tokenizer.decode(codes) if codes.shape[-1] else torch.zeros(1, 0)

    def push_latents(self, z: torch.Tensor) -> torch.Tensor:
        """Quantized latents [1, D, t] → audio [1, t * hop]."""
        return self.tokenizer.decode_latents(z) if z.shape[-1] else torch.zeros(1, 0)

    def flush(self) -> torch.Tensor:
        """Nothing is held back: audio [1, 0]."""
        return torch.zeros(1, 0)


@dataclass
class LoadedTokenizer:
    """A tokenizer with the identity that goes into file headers."""

    model: Tokenizer
    model_id: str  # e.g. "speech-codec-16k"
    weights: str  # 8 hex digits of the weights' SHA-256
    tokens: str = ""  # the token space: weights of the tokenizer whose codes these are (default: ``weights``)

    def __post_init__(self):
        self.tokens = self.tokens or self.weights

    def speaks(self, weights: str) -> bool:
        """True if codes made by the tokenizer with ``weights`` are this one's codes (the same
        weights, or a decoder retrained on frozen codes of those weights)."""
        return weights in (self.weights, self.tokens)

    @property
    def cfg(self):
        """The model's typed config dataclass (hyper-parameters; not part of the interface)."""
        return self.model.cfg


Builder = Callable[[Path | None], LoadedTokenizer]
_BUILDERS: dict[str, Builder] = {}
_ALIASES: dict[str, str] = {}


def register_tokenizer(name: str, aliases: tuple[str, ...] = ()) -> Callable[[Builder], Builder]:
    """Decorator: ``build(path: Path | None) -> LoadedTokenizer`` becomes the tokenizer ``name``
    (``aliases``: other names accepted for it)."""

    def add(build: Builder) -> Builder:
        _BUILDERS[name] = build
        _ALIASES.update({a: name for a in aliases})
        return build

    return add


def tokenizer_names(aliases: bool = False) -> list[str]:
    """The registered tokenizer names (with ``aliases``: also the names accepted for them)."""
    for module in BUILTIN_MODULES:
        importlib.import_module(module)
    return list(_BUILDERS) + (list(_ALIASES) if aliases else [])


def load_tokenizer(name: str, path: Path | None = None) -> LoadedTokenizer:
    """Build the tokenizer ``name`` from ``path`` (None: its default checkpoint, where it has one)."""
    names = tokenizer_names()
    build = _BUILDERS.get(_ALIASES.get(name, name))
    if build is None:
        raise MmarError(f"unknown tokenizer {name!r}; choose from {', '.join(names)}")
    return build(None if path is None else Path(path))
