"""How tests/data/portable was made (run from the repository root): the 2 s clip of tests/data/v1
LM-coded in integers by the shipped codec and LM, and the codes it holds. Kept for the record:
the reference files must never be rewritten by newer code."""
import numpy as np
import soundfile as sf
from pathlib import Path
from mmar.coding.container import ContainerReader
from mmar.coding.lm_coding import lm_decode
from mmar.tasks.codec import encode_array, load_codec
from mmar.tasks.codec_lm import load_lm

out = Path("tests/data/portable")
clip, rate = sf.read("tests/data/v1/clip_16000.flac", dtype="float32")
codec, lm = load_codec(), load_lm()
data = encode_array(codec, clip, rate, 1.5, lm=lm)
(out / "lm_integers.mmc").write_bytes(data)
r = ContainerReader(data)
frames = -(-r.header.num_samples // codec.model.hop)
codes = np.concatenate(list(lm_decode(lm.coder(), r, frames, r.header.chunk_frames, lm.window)), axis=1)
np.save(out / "lm_integers_codes.npy", codes.astype(np.int16))
print(len(data), r.header.extra, codes.shape)
