"""Shared pieces of every training recipe: distributed set-up, LR schedule, and resumable
checkpoints stored as safetensors + JSON (never pickle), written atomically."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file

from .atomic import atomic_write
from .checkpoint import substate


@dataclass
class DistInfo:
    rank: int
    world: int

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed() -> DistInfo:
    """Initialise torch.distributed (gloo on CPU, nccl on GPU) when launched by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return DistInfo(rank=int(os.environ.get("RANK", "0")), world=world)


def lr_at(step: int, base: float, warmup: int, total: int, final_ratio: float = 0.1) -> float:
    """Linear warm-up for ``warmup`` steps, then cosine decay to ``final_ratio * base`` at ``total``."""
    if step < warmup:
        return base * (step + 1) / warmup
    p = min(1.0, (step - warmup) / max(1, total - warmup))
    return base * (final_ratio + (1 - final_ratio) * 0.5 * (1 + math.cos(math.pi * p)))


def save_weights(path: Path, model: torch.nn.Module) -> None:
    """Write the model's weights alone to ``path`` (.safetensors), atomically."""
    tensors = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    atomic_write(path, lambda p: save_file(tensors, str(p)))


def save_state(path: Path, model: torch.nn.Module, optim: torch.optim.Optimizer, step: int,
               generator: torch.Generator, meta: dict) -> None:
    """Write model + optimizer + RNG state to ``path`` (.safetensors) and ``path``.json, atomically."""
    tensors = {f"model.{k}": v.detach().contiguous() for k, v in model.state_dict().items()}
    osd = optim.state_dict()
    for pid, st in osd["state"].items():
        for k, v in st.items():
            tensors[f"optim.{pid}.{k}"] = (v if torch.is_tensor(v) else torch.tensor(v)).contiguous()
    tensors["rng"] = generator.get_state()
    info = {"step": step, "param_groups": osd["param_groups"], "meta": meta}
    atomic_write(path, lambda p: save_file(tensors, str(p)))
    js = path.with_suffix(".json")
    atomic_write(js, lambda p: p.write_text(json.dumps(info, indent=1)))


def load_state(path: Path, model: torch.nn.Module, optim: torch.optim.Optimizer, generator: torch.Generator) -> int:
    """Restore what :func:`save_state` wrote; returns the step to continue from."""
    tensors = load_file(str(path))
    info = json.loads(path.with_suffix(".json").read_text())
    model.load_state_dict(substate(tensors, "model."))
    state: dict = {}
    for k, v in substate(tensors, "optim.").items():
        pid, name = k.split(".", 1)
        state.setdefault(int(pid), {})[name] = v
    optim.load_state_dict({"state": state, "param_groups": info["param_groups"]})
    generator.set_state(tensors["rng"])
    return int(info["step"])
