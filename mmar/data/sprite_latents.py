"""Sprite clips as σ-VAE latents, encoded once and cached (what the video recipes train on).

:func:`load_data` renders ``clips`` training and ``valid_clips`` validation clips of
:class:`mmar.data.sprites.SpriteClips`, encodes every frame with the σ-VAE and caches the latents
in a ``.safetensors`` file with a ``.json`` beside it, keyed by the VAE's weights and the data
settings: a cache made for other settings is rebuilt, never reused. With ``bases`` it also holds
each frame's motion-predicted base (:mod:`mmar.tasks.video_base`), built from the true frames.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..atomic import atomic_write
from ..tokenizers.image_cnn import from_uint8
from ..tasks.video_base import motion_bases
from .sprites import SpriteClips

CACHE_FORMAT = 1
BASES_FORMAT = 1  # how motion-predicted bases are made: bump when that changes


def tokens(z: torch.Tensor) -> torch.Tensor:
    """Latent grids [B, F, C, rows, cols] → token rows [B, F, N, C] (N = rows · cols), as cached."""
    return z.flatten(3).transpose(2, 3)


@torch.no_grad()
def encode_clips(tok, root: Path, split: str, count: int, frames: int, seed: int, max_words: int,
                 batch: int = 256, bases: bool = False) -> tuple[torch.Tensor, list[str], torch.Tensor | None]:
    """``count`` clips of ``split`` → (latents float [count, frames, N, C] on the CPU, captions of at
    most ``max_words`` words: long sprite names are shortened, the motion is kept, and with
    ``bases`` the frames' motion-predicted bases [count, frames, N, C] (:mod:`mmar.tasks.video_base`),
    else None). The σ-VAE encodes on whichever device it is on."""
    clips = SpriteClips(root, split, frames=frames, seed=seed, max_words=max_words)
    dev = next(tok.model.parameters()).device
    encode = lambda x: tok.model.encode(x).latents.float()  # noqa: E731  [M, 3, H, W] → [M, C, rows, cols]
    out, based, captions = [], [], []
    pending: list[torch.Tensor] = []
    for i in range(count):
        c = clips.clip(i)
        captions.append(c.caption)
        pending.append(from_uint8(c.frames))
        if len(pending) * frames >= batch or i + 1 == count:
            x = torch.stack(pending).to(dev)  # [n, frames, 3, H, W]
            z = encode(x.flatten(0, 1))
            z = z.view(len(pending), frames, *z.shape[1:])
            out.append(tokens(z).cpu())
            if bases:
                based.append(tokens(motion_bases(encode, x, z, batch)).cpu())
            pending = []
    return torch.cat(out).contiguous(), captions, torch.cat(based).contiguous() if bases else None


def load_data(tok, root: Path, dc: dict, seed: int, max_words: int, out: Path | None, bases: bool = False) -> dict:
    """Train and valid latents and captions (with ``bases``, also their motion-predicted bases
    ``train_base`` and ``valid_base``), from ``out`` when it holds them for these settings."""
    key = {"format": CACHE_FORMAT, "tokenizer": tok.weights, "clips": dc["clips"], "valid_clips": dc["valid_clips"],
           "frames": dc["frames"], "seed": seed, "caption_words": max_words, **({"bases": BASES_FORMAT} if bases else {})}
    meta = out.with_suffix(".json") if out is not None else None
    if out is not None and out.is_file() and meta.is_file() and json.loads(meta.read_text())["key"] == key:
        return {**load_file(str(out)), **json.loads(meta.read_text())["captions"]}
    tl, tc, tb = encode_clips(tok, root, "train", dc["clips"], dc["frames"], seed, max_words, bases=bases)
    vl, vc, vb = encode_clips(tok, root, "valid", dc["valid_clips"], dc["frames"], seed, max_words, bases=bases)
    tensors = {"train": tl, "valid": vl, **({"train_base": tb, "valid_base": vb} if bases else {})}
    if out is not None:
        atomic_write(out, lambda p: save_file(tensors, str(p)))
        atomic_write(meta, lambda p: p.write_text(json.dumps({"key": key, "captions": {"train_captions": tc, "valid_captions": vc}})))
    return {**tensors, "train_captions": tc, "valid_captions": vc}
