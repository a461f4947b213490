"""Atomic writes: the user's umask, unique temp names, nothing left behind on failure."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from container_helpers import make_header
from mmar.atomic import AtomicFile, atomic_write
from mmar.coding.container import ContainerWriter
from mmar.errors import MmarError


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_files_get_the_umask_mode_and_unique_temp_names(tmp_path, umask):
    old = os.umask(umask)
    try:
        with ContainerWriter(tmp_path / "a.mmc", make_header()) as w:
            w.write_chunk(b"x")
        atomic_write(tmp_path / "b.json", lambda p: p.write_text("{}"))
        atomic_write(tmp_path / "e.safetensors", lambda p: save_file({"x": torch.zeros(1)}, str(p)))  # replaces its file 0600
        with AtomicFile(tmp_path / "c.bin") as f:
            f.write(b"c")
        one, two = AtomicFile(tmp_path / "d.bin"), AtomicFile(tmp_path / "d.bin")  # two writers, one target
        assert one.tmp != two.tmp
        one.write(b"1")
        two.write(b"2")
        one.commit()
        two.commit()
    finally:
        os.umask(old)
    for name in ("a.mmc", "b.json", "c.bin", "d.bin", "e.safetensors"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~umask, name
    assert (tmp_path / "d.bin").read_bytes() == b"2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.mmc", "b.json", "c.bin", "d.bin", "e.safetensors"]


def test_atomic_write_failure_leaves_nothing(tmp_path):
    def fail(p: Path):
        p.write_text("partial")
        raise OSError("disk full")

    (tmp_path / "a.txt").write_text("old")
    with pytest.raises(MmarError, match="cannot write .*a.txt: disk full"):  # one clear error
        atomic_write(tmp_path / "a.txt", fail)
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"] and (tmp_path / "a.txt").read_text() == "old"
    assert atomic_write(tmp_path / "new" / "b.wav", lambda p: p.write_bytes(p.suffix.encode()), ".wav").read_bytes() == b".wav"
