"""Shared pieces of every training recipe: distributed set-up, device and precision, LR
schedule (by steps or by a wall-clock budget), weight EMA, and resumable checkpoints stored as
safetensors + JSON (never pickle), written atomically."""

from __future__ import annotations

import json
import contextlib
import copy
import csv
import math
import os
import time
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


def pick_device(name: str = "auto") -> torch.device:
    """``auto``: the GPU of this process (``LOCAL_RANK`` under torchrun) when CUDA is there, else the CPU."""
    if name == "auto":
        name = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return device


def autocast(device: torch.device, enabled: bool = True, cpu_bfloat16: bool = False):
    """bfloat16 autocast on a GPU; on the CPU only with ``cpu_bfloat16`` (else training stays float32)."""
    if enabled and (device.type == "cuda" or (cpu_bfloat16 and device.type == "cpu")):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


class Budget:
    """Where a run stands: by steps, or, with ``minutes``, by wall-clock time (the LR schedule
    then follows elapsed time, so a run of fixed minutes still warms up and decays fully)."""

    def __init__(self, steps: int, minutes: float | None = None):
        self.steps, self.seconds, self.t0 = steps, None if minutes is None else 60.0 * minutes, time.monotonic()

    def schedule_step(self, step: int) -> int:
        """The step the LR schedule should use now."""
        if self.seconds is None:
            return step
        return min(self.steps, int(self.steps * (time.monotonic() - self.t0) / self.seconds))

    def done(self, step: int) -> bool:
        return step >= self.steps or (self.seconds is not None and time.monotonic() - self.t0 >= self.seconds)


class WeightEMA:
    """Exponential moving average of a model's parameters (the copy that is exported when
    ``decay`` > 0): ema ← decay · ema + (1 − decay) · weights, every step. Buffers (e.g. EMA
    codebooks, which restart dead codes abruptly) are copied as they are, never averaged."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        for e, w in zip(self.model.parameters(), model.parameters()):
            e.lerp_(w.detach(), 1.0 - self.decay)
        for e, w in zip(self.model.buffers(), model.buffers()):
            e.copy_(w)


def optimizer_step(loss: torch.Tensor, optim: torch.optim.Optimizer, params, grad_clip: float,
                   ema: WeightEMA | None = None, model: torch.nn.Module | None = None) -> None:
    """One update: zero the gradients, backpropagate ``loss``, clip the gradient norm of
    ``params`` to ``grad_clip``, step, then fold ``model``'s new weights into ``ema``."""
    optim.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, grad_clip)
    optim.step()
    if ema is not None:
        ema.update(model)


class MetricsLog:
    """A ``metrics.csv``-style log: the header on a fresh run, then one row per :meth:`write`
    (when :meth:`due`, every ``every`` steps), ending with the seconds per step since the previous
    row. With ``enabled`` False (ranks other than the main one) it does nothing."""

    def __init__(self, path: Path, columns: list[str], every: int, fresh: bool, enabled: bool = True):
        self.every, self.t0 = every, time.time()
        self.file = open(path, "a", newline="") if enabled else None
        self.writer = csv.writer(self.file) if self.file else None
        if self.writer and fresh:
            self.writer.writerow(["step", *columns, "sec_per_step"])

    def due(self, step: int, last: bool = False) -> bool:
        return self.writer is not None and (step % self.every == 0 or last)

    def write(self, step: int, values: list) -> None:
        seconds, self.t0 = (time.time() - self.t0) / self.every, time.time()
        self.writer.writerow([step, *values, f"{seconds:.3f}"])
        self.file.flush()

    def close(self) -> None:
        if self.file:
            self.file.close()


def append_jsonl(path: Path, record: dict) -> None:
    """Append one JSON line (e.g. a validation record) to ``path``."""
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def lr_at(step: int, base: float, warmup: int, total: int, final_ratio: float = 0.1) -> float:
    """Linear warm-up for ``warmup`` steps, then cosine decay to ``final_ratio * base`` at ``total``."""
    if step < warmup:
        return base * (step + 1) / warmup
    p = min(1.0, (step - warmup) / max(1, total - warmup))
    return base * (final_ratio + (1 - final_ratio) * 0.5 * (1 + math.cos(math.pi * p)))


def save_weights(path: Path, model: torch.nn.Module) -> None:
    """Write the model's weights alone to ``path`` (.safetensors), atomically."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write(path, lambda p: save_file(tensors, str(p)))


def save_state(path: Path, model: torch.nn.Module, optim: torch.optim.Optimizer, step: int,
               generator: torch.Generator, meta: dict, ema: WeightEMA | None = None) -> None:
    """Write model (+ its EMA copy) + optimizer + RNG state to ``path`` (.safetensors) and
    ``path``.json, atomically. Tensors are saved from wherever they live (GPU included)."""
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if ema is not None:
        tensors |= {f"ema.{k}": v.detach().cpu().contiguous() for k, v in ema.model.state_dict().items()}
    osd = optim.state_dict()
    for pid, st in osd["state"].items():
        for k, v in st.items():
            tensors[f"optim.{pid}.{k}"] = (v.cpu() if torch.is_tensor(v) else torch.tensor(v)).contiguous()
    tensors["rng"] = generator.get_state()
    info = {"step": step, "param_groups": osd["param_groups"], "meta": meta}
    atomic_write(path, lambda p: save_file(tensors, str(p)))
    js = path.with_suffix(".json")
    atomic_write(js, lambda p: p.write_text(json.dumps(info, indent=1)))


def load_state(path: Path, model: torch.nn.Module, optim: torch.optim.Optimizer, generator: torch.Generator,
               ema: WeightEMA | None = None) -> int:
    """Restore what :func:`save_state` wrote (onto the model's device); returns the step to continue from."""
    tensors = load_file(str(path))
    info = json.loads(path.with_suffix(".json").read_text())
    model.load_state_dict(substate(tensors, "model."))
    if ema is not None:
        ema.model.load_state_dict(substate(tensors, "ema."))
    state: dict = {}
    for k, v in substate(tensors, "optim.").items():
        pid, name = k.split(".", 1)
        state.setdefault(int(pid), {})[name] = v
    optim.load_state_dict({"state": state, "param_groups": info["param_groups"]})
    generator.set_state(tensors["rng"])
    return int(info["step"])
