"""What the recipe tests share: a config with overrides, the loss column of metrics.csv, and a run
resumed after 3 steps next to an uninterrupted one."""

from __future__ import annotations

import copy
import csv
from pathlib import Path

import torch
from safetensors.torch import load_file


def overridden(config: dict, train: dict | None = None, data: dict | None = None, **optim) -> dict:
    """A copy of a recipe config with ``train``, ``data`` and ``optim`` fields replaced."""
    c = copy.deepcopy(config)
    c["optim"].update(optim)
    c["train"].update(train or {})
    c["data"].update(data or {})
    return c


def losses(out: Path, name: str = "metrics.csv") -> list[float]:
    """The ``loss`` column of ``<out>/<name>``."""
    with open(out / name) as f:
        return [float(r["loss"]) for r in csv.DictReader(f)]


def resumed_and_uninterrupted(train, cfg: dict, a: Path, b: Path, *args, **kwargs) -> None:
    """``train(cfg, a, *args)`` without a break, and ``train(cfg, b, *args)`` stopped after 3 steps
    and resumed (``progress`` off; ``kwargs`` go to every call)."""
    train(cfg, a, *args, progress=False, **kwargs)
    train(cfg, b, *args, stop_after=3, progress=False, **kwargs)
    train(cfg, b, *args, progress=False, **kwargs)


def same_state(a: Path, b: Path) -> bool:
    """True if ``<a>/state.safetensors`` and ``<b>/state.safetensors`` hold identical tensors."""
    sa, sb = load_file(str(a / "state.safetensors")), load_file(str(b / "state.safetensors"))
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
