"""Package hygiene: a cheap import, a CLI that answers --help."""

import subprocess
import sys


def test_import_is_cheap_and_offline():
    code = "import sys, mmar; bad = [m for m in ('torch', 'numpy', 'soundfile') if m in sys.modules]; print(bad)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_cli_help_lists_subcommands():
    out = subprocess.run([sys.executable, "-m", "mmar", "--help"], capture_output=True, text=True, check=True).stdout
    assert "codec" in out and "bench" in out
