"""Long files stream through in blocks: peak memory does not grow with the file's length."""

import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from synth import speechlike

SCRIPT = """
import resource, sys
from mmar.tasks.codec import decode_file, encode_file, load_codec
codec = load_codec(sys.argv[1])
encode_file(codec, sys.argv[2], sys.argv[3], kbps=6)
decode_file(codec, sys.argv[3], sys.argv[4])
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def peak_kib(ckpt, src, tmp_path) -> int:
    r = subprocess.run([sys.executable, "-c", SCRIPT, str(ckpt), str(src), str(tmp_path / f"{src.stem}.mmc"),
                        str(tmp_path / f"{src.stem}.out.wav")], capture_output=True, text=True, check=True)
    return int(r.stdout.split()[-1])


@pytest.mark.slow
def test_memory_is_flat_in_file_length(tiny_codec_dir, tmp_path):
    minute = np.tile(speechlike(10.0), 6)
    short, long = tmp_path / "short.wav", tmp_path / "long.wav"
    sf.write(short, minute, 16000)
    with sf.SoundFile(long, "w", 16000, 1) as f:  # 10 minutes, written without holding it in memory
        for _ in range(10):
            f.write(minute)
    a, b = peak_kib(tiny_codec_dir, short, tmp_path), peak_kib(tiny_codec_dir, long, tmp_path)
    assert b < a + 30 * 1024, json.dumps({"1 min KiB": a, "10 min KiB": b})  # 10 min of PCM alone would be ~38 MiB
    assert sf.info(str(tmp_path / "long.out.wav")).frames == 10 * len(minute)
