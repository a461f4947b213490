#!/usr/bin/env bash
# Before a device call: make the working tree that travels fit the 64 MiB limit.
#
#   [KEEP="speech-codec-16k tts-16k"] bash recipes/device/slim_tree.sh [CARRY ...]
#                                                    (default CARRY: data/gpu .whl)
#
# Removes, from the working tree only, the shipped checkpoints that the device scripts do not read
# (everything in checkpoints/ but those named in KEEP, default speech-codec-16k; `git checkout --
# checkpoints` restores them),
# then adds up the tracked files still present and the CARRY paths and fails if they exceed
# 64 MiB. Prints the total.
set -euo pipefail
cd "$(dirname "$0")/../.."
[ $# -gt 0 ] || set -- data/gpu .whl
keep=" ${KEEP:-speech-codec-16k} "
for d in checkpoints/*/; do
  name=$(basename "$d")
  [[ "$keep" == *" $name "* ]] || rm -rf "$d"
done
tracked=$( { git ls-files -z | xargs -0 stat -c %s 2>/dev/null || true; } | awk '{s += $1} END {print s + 0}')  # removed files: skipped
for p in "$@"; do [ -e "$p" ] || { echo "missing: $p (build it first: see recipes/device/README.md)" >&2; exit 1; }; done
carried=$(du -sb "$@" | awk '{s += $1} END {print s + 0}')
total=$((tracked + carried))
limit=$((64 << 20))
echo "travels: tracked $((tracked >> 20)) MiB + carried $((carried >> 20)) MiB = $((total >> 20)) MiB of $((limit >> 20)) MiB"
[ "$total" -le "$limit" ] || { echo "too large for a device call: remove more, or pack less (--max-mib)" >&2; exit 1; }
