# Sourced by the device training scripts.
# ship SRC_DIR NAME FILES...: copy FILES of SRC_DIR into $out/NAME (missing ones skipped), splitting
# files over 15 MiB into FILE.part-aa, .part-ab, … (`cat FILE.part-* > FILE` joins them).
ship() {
  local src=$1 name=$2; shift 2
  mkdir -p "$out/$name"
  for f in "$@"; do
    [ -f "$src/$f" ] || continue
    if [ "$(stat -c %s "$src/$f")" -gt $((15 << 20)) ]; then
      split -b 15M "$src/$f" "$out/$name/$f.part-"
    else
      cp "$src/$f" "$out/$name/"
    fi
  done
}
