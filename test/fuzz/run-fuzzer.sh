#!/usr/bin/env bash
# Runs one libFuzzer target for a bounded time from its seed corpus plus extra seed folders.
# usage: run-fuzzer.sh FUZZER SECONDS SEED_DIR [EXTRA_SEED_DIR_OR_FILE...]
# FDE_FUZZ_MAX_LEN (default 16384) bounds the input size; FDE_FUZZ_ARTIFACTS=DIR keeps the
# crashing inputs there (to add them to seeds/<target>/ once fixed).
set -euo pipefail
fuzzer=$1 seconds=$2 seeds=$3
shift 3
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/corpus" "$work/artifacts"
[ -d "$seeds" ] && cp -r "$seeds"/. "$work/corpus/" 2>/dev/null || true
for extra in "$@"; do
  # Only files the target's size limit admits are useful seeds.
  if [ -d "$extra" ]; then
    find "$extra" -maxdepth 1 -type f -size -1100k -exec cp {} "$work/corpus/" \;
  elif [ -f "$extra" ]; then
    cp "$extra" "$work/corpus/"
  fi
done
max_len=${FDE_FUZZ_MAX_LEN:-16384}
echo "fuzzing $(basename "$fuzzer") for ${seconds}s from $(ls "$work/corpus" | wc -l) seeds"
"$fuzzer" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len="$max_len" \
  -artifact_prefix="$work/artifacts/" -print_final_stats=1 "$work/corpus" 2>&1 |
  grep -av -e '# Uses: ' -e 'recommended dictionary' | tail -n 30
status=${PIPESTATUS[0]}
if [ "$status" -ne 0 ]; then
  echo "fuzzer failed with status $status; crashing inputs:"
  for f in "$work"/artifacts/*; do [ -f "$f" ] && { echo "$f"; xxd "$f" | head -20; }; done
  if [ -n "${FDE_FUZZ_ARTIFACTS:-}" ]; then
    mkdir -p "$FDE_FUZZ_ARTIFACTS" && cp "$work"/artifacts/* "$FDE_FUZZ_ARTIFACTS"/ 2>/dev/null || true
  fi
fi
exit "$status"
