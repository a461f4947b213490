"""What the recipe tests share: a config with overrides, and the loss column of metrics.csv."""

from __future__ import annotations

import copy
import csv
from pathlib import Path


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
