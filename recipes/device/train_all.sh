#!/usr/bin/env bash
# Train every shipped speech model at scale on one CUDA GPU, in about 8 minutes of wall time,
# from the compact corpus that travels with the working tree; bring back checkpoints + metrics.
#
#   bash recipes/device/train_all.sh DATA OUT [SET [INIT]]
#
#   DATA  the packed corpus: DATA/train, DATA/valid (python -m mmar.data.pack --out data/gpu)
#   OUT   where the new checkpoints go: OUT/speech-codec-16k, OUT/speech-lm-16k (files larger
#         than 15 MiB are split into .part-aa, .part-ab, …: `cat F.part-* > F` joins them)
#   SET   config set: gpu (default; recipes/configs/*_gpu.json), gpu_decoder (with INIT: only the
#         decoder trains, so the codes stay and no LM is trained: codec_gpu_decoder.json), or
#         debug / debug_decoder (seconds-long CPU runs of the same, used by tests/test_device_command.py)
#   INIT  a codec checkpoint to continue from (e.g. checkpoints/speech-codec-16k) instead of
#         training the codec from scratch
#
# On the device machine (no network; Python packages the image lacks travel as wheels, see
# recipes/device/README.md):
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
#   bash recipes/device/train_all.sh data/gpu $OUT
source "$(dirname "$0")/common.sh" "$@"

"$py" "$root/recipes/train_codec.py" --config "$root/recipes/configs/codec_$set.json" --data "$data/train" \
  --out "$work/codec" ${init:+--init "$init"} > "$work/codec.log" 2>&1 || { tail -20 "$work/codec.log"; exit 1; }
if [ -f "$root/recipes/configs/codec_lm_$set.json" ]; then  # a set without one keeps the codes: the shipped LM stays valid
  "$py" "$root/recipes/train_codec_lm.py" --config "$root/recipes/configs/codec_lm_$set.json" --codec "$work/codec/export" \
    --data "$data/train" --valid "$data/valid" --out "$work/lm" > "$work/lm.log" 2>&1 || { tail -20 "$work/lm.log"; exit 1; }
fi

ship "$work/codec" speech-codec-16k model.safetensors config.json train_metrics.csv valid.jsonl
[ -d "$work/lm/export" ] && ship "$work/lm" speech-lm-16k model.safetensors config.json held_out_metrics.json
finished
