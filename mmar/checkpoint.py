"""Shipped checkpoints: ``<dir>/model.safetensors`` (inference weights) + ``<dir>/config.json``.

The weight hash written into codec files is the first 8 hex digits of the SHA-256 of the
safetensors file, so a file names exactly the weights that produced it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .atomic import atomic_write, write_json
from .errors import MmarError


def weights_hash(path: Path) -> str:
    """First 8 hex digits of the SHA-256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:8]


def save_pretrained(state: dict[str, torch.Tensor], config: dict, out_dir: Path, dtype: torch.dtype = torch.float16) -> Path:
    """Write floating tensors of ``state`` in ``dtype`` plus ``config.json`` into ``out_dir`` (atomically per file)."""
    tensors = {k: (v.to(dtype) if v.is_floating_point() else v).contiguous() for k, v in state.items()}
    write_json(config, out_dir / "config.json")
    return atomic_write(out_dir / "model.safetensors", lambda p: save_file(tensors, str(p)))


def load_pretrained(ckpt_dir: Path) -> tuple[dict[str, torch.Tensor], dict, str]:
    """Read a checkpoint directory → (float32 state dict, config dict, weights hash)."""
    ckpt_dir = Path(ckpt_dir)
    weights, cfg = ckpt_dir / "model.safetensors", ckpt_dir / "config.json"
    if not weights.is_file() or not cfg.is_file():
        raise MmarError(f"{ckpt_dir} is not an mmar checkpoint (needs model.safetensors and config.json)")
    try:
        state = {k: (v.float() if v.is_floating_point() else v) for k, v in load_file(str(weights)).items()}
        config = json.loads(cfg.read_text())
    except Exception as e:  # damaged files
        raise MmarError(f"cannot read checkpoint {ckpt_dir}: {e}") from None
    return state, config, weights_hash(weights)
