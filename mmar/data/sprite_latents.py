"""Sprite clips as σ-VAE latents, encoded once and cached (what the video recipes train on).

:func:`load_data` renders ``clips`` training and ``valid_clips`` validation clips of
:class:`mmar.data.sprites.SpriteClips`, encodes every frame with the σ-VAE and caches the latents
in a ``.safetensors`` file with a ``.json`` beside it, keyed by the VAE's weights and the data
settings: a cache made for other settings is rebuilt, never reused.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..atomic import atomic_write
from ..tokenizers.image_cnn import from_uint8
from .sprites import SpriteClips

CACHE_FORMAT = 1


@torch.no_grad()
def encode_clips(tok, root: Path, split: str, count: int, frames: int, seed: int, max_words: int,
                 batch: int = 256) -> tuple[torch.Tensor, list[str]]:
    """``count`` clips of ``split`` → (latents float [count, frames, N, C] on the CPU, captions of at
    most ``max_words`` words: long sprite names are shortened, the motion is kept). The σ-VAE
    encodes on whichever device it is on."""
    clips = SpriteClips(root, split, frames=frames, seed=seed, max_words=max_words)
    dev = next(tok.model.parameters()).device
    out, captions = [], []
    pending: list[torch.Tensor] = []
    for i in range(count):
        c = clips.clip(i)
        captions.append(c.caption)
        pending.append(from_uint8(c.frames))
        if len(pending) * frames >= batch or i + 1 == count:
            x = torch.cat(pending).to(dev)
            z = tok.model.encode(x).latents.float().cpu()  # [n · frames, C, rows, cols]
            out.append(z.flatten(2).transpose(1, 2).reshape(len(pending), frames, -1, z.shape[1]))
            pending = []
    return torch.cat(out).contiguous(), captions


def load_data(tok, root: Path, dc: dict, seed: int, max_words: int, out: Path | None) -> dict:
    """Train and valid latents and captions, from ``out`` when it holds them for these settings."""
    key = {"format": CACHE_FORMAT, "tokenizer": tok.weights, "clips": dc["clips"], "valid_clips": dc["valid_clips"],
           "frames": dc["frames"], "seed": seed, "caption_words": max_words}
    meta = out.with_suffix(".json") if out is not None else None
    if out is not None and out.is_file() and meta.is_file() and json.loads(meta.read_text())["key"] == key:
        return {**load_file(str(out)), **json.loads(meta.read_text())["captions"]}
    tl, tc = encode_clips(tok, root, "train", dc["clips"], dc["frames"], seed, max_words)
    vl, vc = encode_clips(tok, root, "valid", dc["valid_clips"], dc["frames"], seed, max_words)
    if out is not None:
        atomic_write(out, lambda p: save_file({"train": tl, "valid": vl}, str(p)))
        atomic_write(meta, lambda p: p.write_text(json.dumps({"key": key, "captions": {"train_captions": tc, "valid_captions": vc}})))
    return {"train": tl, "valid": vl, "train_captions": tc, "valid_captions": vc}
