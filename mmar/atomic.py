"""Atomic file writes: write a sibling temp file, fsync it, rename it over the target."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path


def atomic_write(path: Path, write: Callable[[Path], None], tmp_suffix: str = "") -> Path:
    """Call ``write(tmp)`` and move ``tmp`` onto ``path``; readers never see a partial file, and a
    failed write leaves no temp file. ``tmp_suffix`` keeps a format-giving extension (".wav")."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp{tmp_suffix}")
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_json(data: dict, path: Path) -> Path:
    """Write ``data`` as indented JSON, atomically."""
    return atomic_write(path, lambda p: p.write_text(json.dumps(data, indent=1) + "\n"))
