"""A temporal decoder for σ-VAE video latents: each frame is decoded by the image VAE, then refined
from the frame before it.

An 8 × 8 × 4 latent grid cannot hold a 64 × 64 frame's detail (the VAE round trip of sprite
clips scores about 27 dB), but in a video that detail is almost all in the previous frame,
displaced. :class:`FrameRefiner` is a small U-Net that reads three images: the VAE decoding of
this frame's latents, the previous frame as shown (a true prompt frame, or the refiner's own
last output) and the VAE decoding of the previous frame's latents. The last two differ by the
detail the latents lost; the network moves it to where this frame's latents put the content,
and adds it to this frame's decoding. The encoder is untouched, so every model trained on the
VAE's latents keeps working; only decoding changes. With no previous frame (the first frame of a
clip generated from a caption alone) the frame is the plain VAE decoding.

Decoding is causal and sequential: :func:`decode_video` feeds each output to the next frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from ..checkpoint import load_pretrained
from ..errors import MmarError
from .image_cnn import ResBlock, _norm

NAME = "video-refiner-64"


@dataclass
class FrameRefinerConfig:
    """Widths per resolution (full, 1/2, 1/4, ...) and residual blocks per resolution."""

    channels: tuple[int, ...] = (32, 64, 96)
    res_blocks: int = 1
    groups: int = 8


def config_from_dict(config: dict, where: str = "config") -> FrameRefinerConfig:
    """A checked :class:`FrameRefinerConfig` from a config's ``model`` dict (bounded before it sizes anything)."""
    ch, rb, g = config.get("channels", [32, 64, 96]), config.get("res_blocks", 1), config.get("groups", 8)
    if (not isinstance(ch, list) or not 1 <= len(ch) <= 5
            or any(isinstance(c, bool) or not isinstance(c, int) or not 4 <= c <= 512 for c in ch)
            or any(isinstance(v, bool) or not isinstance(v, int) for v in (rb, g)) or not 0 <= rb <= 8 or not 1 <= g <= 64):
        raise MmarError(f"{where}: a frame refiner needs 1-5 channel widths of 4..512, res_blocks 0..8 and groups 1..64")
    return FrameRefinerConfig(tuple(ch), rb, g)


class FrameRefiner(nn.Module):
    """U-Net: (decoding of z_t, previous frame, decoding of z_{t-1}), each [B, 3, H, W] in [0, 1]
    → frame t [B, 3, H, W] = decoding of z_t + a learnt correction (zero at initialisation).
    H and W must be divisible by 2 ** (len(channels) − 1)."""

    def __init__(self, cfg: FrameRefinerConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or FrameRefinerConfig()
        ch, g = cfg.channels, cfg.groups
        self.stem = nn.Conv2d(9, ch[0], 3, padding=1)
        self.down = nn.ModuleList(nn.Conv2d(a, b, 4, stride=2, padding=1) for a, b in zip(ch, ch[1:]))
        blocks = lambda i, c: [ResBlock(c, g) for _ in range(cfg.res_blocks if i else 0)]  # noqa: E731  (none at full resolution: CPU cost)
        self.enc = nn.ModuleList(nn.Sequential(*blocks(i, c)) for i, c in enumerate(ch))
        self.mid = ResBlock(ch[-1], g)
        self.up = nn.ModuleList(nn.ConvTranspose2d(b, a, 4, stride=2, padding=1) for a, b in zip(ch, ch[1:]))
        self.dec = nn.ModuleList(nn.Sequential(nn.Conv2d(2 * c, c, 3, padding=1), *blocks(i, c)) for i, c in enumerate(ch[:-1]))
        self.out = nn.Sequential(_norm(ch[0], g), nn.SiLU(), nn.Conv2d(ch[0], 3, 3, padding=1))
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)

    @property
    def factor(self) -> int:
        return 2 ** (len(self.cfg.channels) - 1)

    def forward(self, base: torch.Tensor, prev: torch.Tensor, prev_base: torch.Tensor) -> torch.Tensor:
        if base.shape != prev.shape or base.shape != prev_base.shape or base.dim() != 4 or base.shape[1] != 3:
            raise MmarError(f"a frame refiner reads three [B, 3, H, W] images of one shape, got {tuple(base.shape)}, "
                            f"{tuple(prev.shape)}, {tuple(prev_base.shape)}")
        if base.shape[-1] % self.factor or base.shape[-2] % self.factor:
            raise MmarError(f"frame sides must be multiples of {self.factor}, got {tuple(base.shape[-2:])}")
        x = self.stem(torch.cat([base, prev, prev_base], 1) * 2 - 1)
        skips = []
        for i, block in enumerate(self.enc):
            x = block(x)
            if i < len(self.down):
                skips.append(x)
                x = self.down[i](x)
        x = self.mid(x)
        for i in reversed(range(len(self.up))):
            x = self.dec[i](torch.cat([self.up[i](x), skips[i]], 1))
        return base + self.out(x)


class VideoDecoder:
    """Streaming decoding of a video's latents: ``decoder(z [B, C, rows, cols])`` → the next frame
    [B, 3, H, W] in [0, 1], refined from the frame it returned before (``refiner`` None: the plain
    VAE decoding). ``decode_latents``: the VAE's latents [N, C, rows, cols] → images [N, 3, H, W]
    in [0, 1]. ``prev`` [B, 3, H, W] with its latents ``prev_z`` [B, C, rows, cols]: the frame shown
    before the first (e.g. the last prompt frame); without them the first frame is the plain
    decoding."""

    def __init__(self, decode_latents, refiner: FrameRefiner | None = None, prev: torch.Tensor | None = None,
                 prev_z: torch.Tensor | None = None):
        if (prev is None) != (prev_z is None):
            raise MmarError("a video decoder needs the previous frame and its latents together")
        self.decode, self.refiner, self.prev = decode_latents, refiner, prev
        self.prev_base = None if prev_z is None or refiner is None else decode_latents(prev_z)

    @torch.no_grad()
    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        base = self.decode(z)
        if self.refiner is None:
            return base
        out = base if self.prev is None else self.refiner(base, self.prev, self.prev_base).clamp(0, 1)
        self.prev, self.prev_base = out, base
        return out


def decode_video(decode_latents, refiner: FrameRefiner | None, z: torch.Tensor,
                 prev: torch.Tensor | None = None, prev_z: torch.Tensor | None = None) -> torch.Tensor:
    """Latents [B, F, C, rows, cols] → frames [B, F, 3, H, W] in [0, 1] through one
    :class:`VideoDecoder` (arguments as there), frame after frame."""
    dec = VideoDecoder(decode_latents, refiner, prev, prev_z)
    return torch.stack([dec(z[:, k]) for k in range(z.shape[1])], 1)


# -- checkpoint --------------------------------------------------------------------------------
def export_config(refiner: FrameRefiner, vae_name: str, vae_weights: str, name: str = NAME) -> dict:
    """The ``config.json`` of a refiner checkpoint: its network and the σ-VAE whose decoding it refines."""
    c = refiner.cfg
    return {"kind": "frame_refiner", "name": name, "model": {"channels": list(c.channels), "res_blocks": c.res_blocks,
                                                              "groups": c.groups},
            "tokenizer": {"name": vae_name, "weights": vae_weights}}


@dataclass
class LoadedRefiner:
    """A trained :class:`FrameRefiner` with the weights hash of the σ-VAE it was trained on."""

    model: FrameRefiner
    name: str
    vae_weights: str


def load_refiner(path: Path) -> LoadedRefiner:
    """A ``frame_refiner`` checkpoint directory → :class:`LoadedRefiner` (eval mode, float32)."""
    state, cfg, _ = load_pretrained(path, "frame_refiner")
    where = f"{path}/config.json"
    tokenizer = cfg.get("tokenizer")
    if not isinstance(tokenizer, dict) or not isinstance(tokenizer.get("weights"), str):
        raise MmarError(f"{where}: a frame refiner must name the σ-VAE weights it refines (tokenizer.weights)")
    model = FrameRefiner(config_from_dict(cfg.get("model") or {}, where))
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise MmarError(f"{path}: weights do not match config.json ({str(e).splitlines()[0]})") from None
    return LoadedRefiner(model.eval(), str(cfg.get("name", NAME)), tokenizer["weights"])
