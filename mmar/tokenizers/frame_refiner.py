"""A temporal decoder for σ-VAE video latents: each frame is decoded by the image VAE, then given
back the detail of the frame before it, moved to where this frame's content went.

An 8 × 8 × 4 latent grid cannot hold a 64 × 64 frame's detail (the VAE round trip of sprite
clips scores about 27 dB), but in a video that detail is almost all in the previous frame,
displaced. :class:`FrameRefiner` reads three images: the VAE decoding of this frame's latents,
the previous frame as shown (a true prompt frame, or the refiner's own last output) and the VAE
decoding of the previous frame's latents. The last two differ by the detail the latents lost.
Block matching (:func:`block_motion`, a video codec's motion search) finds where each 32 × 32
block of this frame's decoding came from in the previous one; both previous images are warped by
that motion (:func:`warp`), and their difference, the moved detail, is added to this frame's
decoding. This needs no weights (``FrameRefinerConfig(channels=())``, the default decoder of
:func:`mmar.tasks.video.refiner_for`). With ``channels``, a small U-Net also learns a correction
of what the motion model misses (``recipes/train_video_refiner.py``; it starts at zero). The
encoder is untouched, so every model trained on the VAE's latents keeps working; only decoding
changes. With no previous frame (the first frame of a clip generated from a caption alone) a
frame is the plain VAE decoding.

Decoding is causal and sequential: :class:`VideoDecoder` feeds each output to the next frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..checkpoint import load_pretrained
from ..errors import MmarError
from .image_cnn import ResBlock, _norm

NAME = "video-refiner"


@dataclass
class FrameRefinerConfig:
    """The correcting U-Net: widths per resolution (full, 1/2, 1/4, ...; none: no U-Net, motion
    compensation alone) and residual blocks per resolution below the full one."""

    channels: tuple[int, ...] = (32, 64, 96)
    res_blocks: int = 1
    groups: int = 8


def config_from_dict(config: dict, where: str = "config") -> FrameRefinerConfig:
    """A checked :class:`FrameRefinerConfig` from a config's ``model`` dict (bounded before it sizes anything)."""
    ch, rb, g = config.get("channels", [32, 64, 96]), config.get("res_blocks", 1), config.get("groups", 8)
    if (not isinstance(ch, list) or not 0 <= len(ch) <= 5
            or any(isinstance(c, bool) or not isinstance(c, int) or not 4 <= c <= 512 for c in ch)
            or any(isinstance(v, bool) or not isinstance(v, int) for v in (rb, g)) or not 0 <= rb <= 8 or not 1 <= g <= 64):
        raise MmarError(f"{where}: a frame refiner needs 0-5 channel widths of 4..512, res_blocks 0..8 and groups 1..64")
    return FrameRefinerConfig(tuple(ch), rb, g)


class FrameRefiner(nn.Module):
    """(decoding of z_t, previous frame, decoding of z_{t-1}), each [B, 3, H, W] in [0, 1] → frame t
    [B, 3, H, W] = decoding of z_t + the previous frame's detail moved by block motion (+ the
    U-Net's correction when ``cfg.channels``; zero at initialisation). H and W must be multiples
    of 2 ** (len(channels) − 1); the motion blocks are the largest divisor of H, W and 32."""

    def __init__(self, cfg: FrameRefinerConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or FrameRefinerConfig()
        # motion search: 32 × 32 blocks (chosen on validation clips over 8, 16 and 64), ±6 px (sprites move 2-4 px a frame)
        self.block, self.radius = 32, 6
        ch, g = cfg.channels, cfg.groups
        self.learned = bool(ch)  # no channels: motion compensation alone, no weights
        if not ch:
            return
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
        return 2 ** max(len(self.cfg.channels) - 1, 0)

    def forward(self, base: torch.Tensor, prev: torch.Tensor, prev_base: torch.Tensor) -> torch.Tensor:
        """(decoding of z_t, previous frame, decoding of z_{t-1}) [B, 3, H, W] in [0, 1] → frame t [B, 3, H, W]."""
        if base.shape != prev.shape or base.shape != prev_base.shape or base.dim() != 4 or base.shape[1] != 3:
            raise MmarError(f"a frame refiner reads three [B, 3, H, W] images of one shape, got {tuple(base.shape)}, "
                            f"{tuple(prev.shape)}, {tuple(prev_base.shape)}")
        if base.shape[-1] % self.factor or base.shape[-2] % self.factor:
            raise MmarError(f"frame sides must be multiples of {self.factor}, got {tuple(base.shape[-2:])}")
        flow = block_motion(base, prev_base, math.gcd(self.block, *base.shape[-2:]), self.radius)
        prev, prev_base = warp(prev, flow), warp(prev_base, flow)
        moved = base + prev - prev_base  # this frame's decoding plus the detail moved from the frame before
        if not self.learned:
            return moved
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
        return moved + self.out(x)


@torch.no_grad()
def block_motion(cur: torch.Tensor, ref: torch.Tensor, block: int = 8, radius: int = 6, step: float = 0.5,
                 penalty: float = 1e-3) -> torch.Tensor:
    """Motion search: images [B, 3, H, W] → a per-pixel displacement field [B, 2, H, W] (dy, dx in
    pixels, constant over each ``block`` × ``block`` block) such that ``cur`` ≈ ``warp(ref, field)``.
    Each block takes the candidate of a grid of ``step`` px within ±``radius`` px that minimises the
    block's mean absolute grey-level difference plus ``penalty`` per pixel of displacement (flat
    blocks, which match anywhere, stay put). A whole-pixel ``step`` reads each candidate as a slice
    of the edge-extended image (what :func:`warp` gives there, without interpolating)."""
    b, _, h, w = cur.shape
    if h % block or w % block:
        raise MmarError(f"frame sides must be multiples of the {block}-pixel block, got {h}×{w}")
    dev, dt = cur.device, cur.dtype
    g_cur, g_ref = cur.mean(1, keepdim=True), ref.mean(1, keepdim=True)
    n = int(round(radius / step))
    offsets = torch.arange(-n, n + 1, dtype=dt, device=dev) * step
    cands = torch.cartesian_prod(offsets, offsets)  # [K, 2]
    best = torch.full((b, 1, h // block, w // block), float("inf"), dtype=dt, device=dev)
    field = torch.zeros(b, 2, h // block, w // block, dtype=dt, device=dev)
    whole = float(step).is_integer()
    if whole:
        r = int(round(n * step))
        padded = F.pad(g_ref, (r, r, r, r), mode="replicate")
    for chunk in cands.split(1 if whole else 64):  # whole pixels: one slice at a time, no copies
        k = len(chunk)
        if whole:
            dy, dx = (int(v) for v in chunk[0].tolist())
            moved = padded[None, :, :, r - dy:r - dy + h, r - dx:r - dx + w]  # moved(p) = ref(p − d)
        else:
            moved = warp(g_ref.repeat(k, 1, 1, 1), chunk.repeat_interleave(b, 0)[:, :, None, None].expand(k * b, 2, h, w))
        cost = F.avg_pool2d((moved.reshape(k, b, 1, h, w) - g_cur).abs().flatten(0, 1), block).view(k, b, 1, h // block, w // block)
        cost = cost + penalty * chunk.norm(dim=1).view(k, 1, 1, 1, 1)
        low, arg = cost.min(0)
        better = low < best
        best = torch.where(better, low, best)
        field = torch.where(better, chunk[arg.squeeze(1)].permute(0, 3, 1, 2), field)
    return field.repeat_interleave(block, 2).repeat_interleave(block, 3)


def warp(img: torch.Tensor, field: torch.Tensor) -> torch.Tensor:
    """images [B, C, H, W] moved by a displacement field [B, 2, H, W] (dy, dx px): out(p) = img(p − d),
    bilinear, edges extended."""
    b, _, h, w = img.shape
    ys, xs = torch.meshgrid(torch.arange(h, dtype=img.dtype, device=img.device),
                            torch.arange(w, dtype=img.dtype, device=img.device), indexing="ij")
    y, x = ys - field[:, 0], xs - field[:, 1]
    grid = torch.stack([2 * (x + 0.5) / w - 1, 2 * (y + 0.5) / h - 1], -1)
    return F.grid_sample(img, grid, mode="bilinear", padding_mode="border", align_corners=False)


@torch.no_grad()
def extrapolate(last: torch.Tensor, before: torch.Tensor, radius: int = 6) -> torch.Tensor:
    """The next frame if the motion from ``before`` to ``last`` (images [B, C, H, W]) goes on:
    ``last`` moved once more by the whole-pixel shift within ±``radius`` px that best maps
    ``before`` onto it (:func:`block_motion`, one block per 64 × 64: the whole frame of a 64 × 64
    clip) → [B, C, H, W]."""
    return warp(last, block_motion(last, before, math.gcd(64, *last.shape[-2:]), radius, step=1.0))


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
