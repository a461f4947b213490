# Sourced by the device training scripts as `source common.sh "$@"`: reads DATA OUT [SET [INIT]]
# into $data $out $set $init, sets $root, $py (PYTHON, default python3), PYTHONPATH, a scratch
# dir $work removed on exit, and the start time $t0.
set -euo pipefail
usage="usage: $(basename "$0") DATA OUT [SET [INIT]]"
data=${1:?$usage}
out=${2:?$usage}
set=${3:-gpu}
init=${4:-}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
py=${PYTHON:-python3}
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$out"
t0=$(date +%s)

# ship RUN NAME FILES...: copy RUN's training metrics (metrics.csv as train_metrics.csv,
# valid.jsonl) into RUN/export, then FILES of RUN/export into $out/NAME (missing ones skipped),
# splitting files over 15 MiB into FILE.part-aa, .part-ab, … (`cat FILE.part-* > FILE` joins them).
ship() {
  local run=$1 name=$2; shift 2
  [ -f "$run/metrics.csv" ] && cp "$run/metrics.csv" "$run/export/train_metrics.csv"
  [ -f "$run/valid.jsonl" ] && cp "$run/valid.jsonl" "$run/export/"
  mkdir -p "$out/$name"
  for f in "$@"; do
    [ -f "$run/export/$f" ] || continue
    if [ "$(stat -c %s "$run/export/$f")" -gt $((15 << 20)) ]; then
      split -b 15M "$run/export/$f" "$out/$name/$f.part-"
    else
      cp "$run/export/$f" "$out/$name/"
    fi
  done
}

# finished: say how long it took and what is in $out.
finished() {
  echo "trained in $(( $(date +%s) - t0 )) s; files in $out:"
  find "$out" -type f -printf '%P %s\n' | sort
}
