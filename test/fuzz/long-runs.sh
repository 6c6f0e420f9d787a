#!/usr/bin/env bash
# The long fuzzing runs of docs/fuzzing.md: each target given for SECONDS (default 600) from
# its seed corpus, JOBS (default 2) targets at a time, niced, one process each; prints one
# markdown table row per target (run time, executions, executions/s, final coverage and
# features, corpus, crashes) and keeps each log and any crashing input under OUT.
# usage: long-runs.sh BUILD_FUZZ_DIR OUT [TARGET...]   (env SECONDS_PER_TARGET, JOBS)
set -euo pipefail
build=$1 out=$2
shift 2
seconds=${SECONDS_PER_TARGET:-600}
jobs=${JOBS:-2}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out"
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(fuzz_protocol_json fuzz_http_request fuzz_agent_config fuzz_luks2_header
  fuzz_gpt fuzz_fat fuzz_pe fuzz_qcow2_header fuzz_qcow2_image fuzz_token fuzz_event_log fuzz_reference fuzz_enrollment_bundle)

run_one() {
  local target=$1
  # The same seeds and size limit as the CTest test (test/fuzz/CMakeLists.txt).
  local line
  line=$(ctest --test-dir "$build" -N -V -R "^$target\$" | sed -n 's/^[0-9]*: Test command: //p' | tr -d '"' | head -1)
  local max_len
  max_len=$(ctest --test-dir "$build" -N -V -R "^$target\$" | sed -n 's/.*FDE_FUZZ_MAX_LEN=\([0-9]*\).*/\1/p' | head -1)
  # shellcheck disable=SC2086
  set -- $line
  local script=$1 fuzzer=$2
  shift 3
  local start end status=0
  start=$(date +%s)
  FDE_FUZZ_MAX_LEN=${max_len:-16384} FDE_FUZZ_ARTIFACTS="$out/$target-crashes" \
    nice -n 10 "$script" "$fuzzer" "$seconds" "$@" > "$out/$target.log" 2>&1 || status=$?
  end=$(date +%s)
  echo "$target $((end - start)) $status" > "$out/$target.status"
}

running=0
for target in "${targets[@]}"; do
  run_one "$target" &
  running=$((running + 1))
  if [ "$running" -ge "$jobs" ]; then wait -n; running=$((running - 1)); fi
done
wait

echo "| target | run time (s) | executions | exec/s | final cov | final ft | corpus | crashes |"
echo "|---|---|---|---|---|---|---|---|"
for target in "${targets[@]}"; do
  read -r _ took status < "$out/$target.status"
  log=$out/$target.log
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1 || true)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1 || true)
  cov=$(grep -ao 'cov: [0-9]*' "$log" | tail -1 | cut -d' ' -f2 || true)
  ft=$(grep -ao 'ft: [0-9]*' "$log" | tail -1 | cut -d' ' -f2 || true)
  corpus=$(grep -ao 'corp: [0-9]*' "$log" | tail -1 | cut -d' ' -f2 || true)
  crashes=0
  [ "$status" -ne 0 ] && crashes="1 (exit $status, input in $target-crashes/)"
  echo "| $target | $took | ${execs:-?} | ${rate:-?} | ${cov:-?} | ${ft:-?} | ${corpus:-?} | $crashes |"
done
