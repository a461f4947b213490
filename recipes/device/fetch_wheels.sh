#!/usr/bin/env bash
# Download, here, the wheels the GPU machine's image lacks (it has torch, numpy, einops, tqdm,
# safetensors; no network) into .whl/ (git-ignored through .git/info/exclude), for Python 3.12.
set -euo pipefail
cd "$(dirname "$0")/../.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
py=${PYTHON:-.venv/bin/python}
for spec in soundfile==0.14.0 cffi==2.1.1 pycparser==3.12 soxr==1.1.0 constriction==0.5.0; do
  "$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any -d .whl "$spec"
done
ls -la .whl
