#!/usr/bin/env bash
# Train the video model (video-64) at scale on one CUDA GPU, in about 8 minutes of wall time, from
# the emoji renders that travel with the working tree; bring back the checkpoint and its metrics.
#
#   [TOKENIZER=DIR] bash recipes/device/train_video.sh DATA OUT [SET [INIT]]
#
#   DATA       the emoji folder of `python -m mmar.data.emoji` (data/emoji, 14 MiB); the clips
#              are drawn from it and encoded with the σ-VAE on the GPU at the start (seconds)
#   OUT        where the checkpoint goes: OUT/video-64
#   SET        config set: gpu (default; recipes/configs/video_gpu.json) or debug (a seconds-long
#              CPU run, used by tests/test_device_command.py)
#   INIT       a video checkpoint of the same shape to continue from (e.g. checkpoints/video-64)
#   TOKENIZER  the image_vae checkpoint (default checkpoints/image-vae-64: slim_tree.sh must keep it)
source "$(dirname "$0")/common.sh" "$@"
tok=${TOKENIZER:-$root/checkpoints/image-vae-64}
"$py" "$root/recipes/train_video.py" --config "$root/recipes/configs/video_$set.json" --data "$data" \
  --tokenizer-checkpoint "$tok" --out "$work/video" ${init:+--init "$init"} > "$work/video.log" 2>&1 \
  || { tail -20 "$work/video.log"; exit 1; }
ship "$work/video" video-64 model.safetensors config.json train_metrics.csv valid.jsonl
finished
