#!/usr/bin/env bash
# Train the TTS model (tts-16k) at scale on one CUDA GPU, in about 8 minutes of wall time, from
# the TTS corpus's train and valid splits that travel with the working tree; bring back the
# checkpoint and its metrics.
#
#   bash recipes/device/train_tts.sh DATA OUT [SET [INIT]]
#
#   DATA  train.{safetensors,json} and valid.{safetensors,json} of `python -m mmar.data.tts_corpus`
#         (copied into data/tts_gpu: see recipes/device/README.md); the codec the corpus names
#         must be a shipped checkpoint (slim_tree.sh keeps speech-codec-16k)
#   OUT   where the checkpoint goes: OUT/tts-16k (files over 15 MiB split into .part-*)
#   SET   config set: gpu (default; recipes/configs/tts_gpu.json) or debug (a seconds-long CPU run,
#         used by tests/test_device_command.py)
#   INIT  a TTS checkpoint of the same shape to continue from
source "$(dirname "$0")/common.sh" "$@"
"$py" "$root/recipes/train_tts.py" --config "$root/recipes/configs/tts_$set.json" --data "$data" --out "$work/tts" \
  ${init:+--init "$init"} > "$work/tts.log" 2>&1 || { tail -20 "$work/tts.log"; exit 1; }
ship "$work/tts" tts-16k model.safetensors config.json train_metrics.csv valid.jsonl
finished
