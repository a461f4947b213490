"""A non-editable install works on its own: code and shipped checkpoints come from the installed
copy, not from the repository."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_installed_package_encodes_with_its_shipped_checkpoint(tmp_path, wav_file):
    src, target, work = tmp_path / "src", tmp_path / "site", tmp_path / "elsewhere"
    skip = shutil.ignore_patterns("__pycache__", "*.png", "*.json.bak", "bench_*.json")
    shutil.copytree(ROOT / "mmar", src / "mmar", symlinks=True, ignore=skip)  # mmar/checkpoints stays a link
    shutil.copytree(ROOT / "checkpoints", src / "checkpoints", ignore=skip)
    for f in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / f, src / f)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-compile",
                    "--target", str(target), str(src)], check=True, capture_output=True)
    assert (target / "mmar/checkpoints/speech-codec-16k/model.safetensors").is_file()

    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "MMAR_CHECKPOINTS"} | {"PYTHONPATH": str(target)}
    where = subprocess.run([sys.executable, "-c", "import mmar; print(mmar.__file__)"], cwd=work, env=env,
                           capture_output=True, text=True, check=True).stdout.strip()
    assert Path(where).is_relative_to(target)

    wav = wav_file(1.0)
    run = subprocess.run([sys.executable, "-m", "mmar", "codec", "encode", str(wav), "-o", "out.mmc", "-q"],
                         cwd=work, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert (work / "out.mmc").stat().st_size > 0
