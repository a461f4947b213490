"""How tests/data/v1 was made, with mmar at commit 78461da (container v1), run from the repository root.
Kept for the record: the reference files must never be rewritten by newer code."""
import hashlib, json
import numpy as np, soundfile as sf, soxr
from pathlib import Path
from mmar.tasks.codec import load_codec, encode_array, decode_array
from mmar.tasks.codec_lm import load_lm
from mmar.coding.lm_coding import lm_decode
from mmar.coding.container import ContainerReader
out = Path("tests/data/v1")
x, sr = sf.read("demos/samples/speech_en.flac", dtype="float32")
clip = x[int(0.2*sr):int(2.2*sr)]
x22 = soxr.resample(clip, 16000, 22050).astype(np.float32)
sf.write(out / "clip_22050.flac", x22, 22050, subtype="PCM_16")
sf.write(out / "clip_16000.flac", clip, 16000, subtype="PCM_16")
x22, _ = sf.read(out / "clip_22050.flac", dtype="float32"); clip, _ = sf.read(out / "clip_16000.flac", dtype="float32")
codec, lm = load_codec(), load_lm()
raw = encode_array(codec, x22, 22050, 1.5)
lmf = encode_array(codec, clip, 16000, 1.5, lm=lm)
(out / "raw_1k5.mmc").write_bytes(raw); (out / "lm.mmc").write_bytes(lmf)
r = ContainerReader(lmf)
codes = np.concatenate(list(lm_decode(lm.entropy, r, 100, r.header.chunk_frames, lm.window)), axis=1)
np.save(out / "lm_codes.npy", codes.astype(np.int16))
meta = {}
for name, data in [("raw_1k5.mmc", raw), ("lm.mmc", lmf)]:
    y, rate = decode_array(codec, data, lm=lm)
    sf.write(out / (name + ".decoded.flac"), y, rate, subtype="PCM_24")
    meta[name] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(), "rate": rate, "samples": len(y)}
(out / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
print(meta, codes.shape)
