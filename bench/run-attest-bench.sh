#!/usr/bin/env bash
# Builds fde-verifierd, fde-admin and attest_bench (Release, own build dir) and runs the
# attestation benchmark against the real daemon on 127.0.0.1.
#   bench/run-attest-bench.sh [attest_bench options: --count N --concurrency C --threads T]
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
build="${FDE_BENCH_BUILD_DIR:-$here/build-bench}"
jobs="${FDE_BENCH_JOBS:-2}"
cmake -S "$here" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DFDE_WITH_SIM=ON >/dev/null
ninja -C "$build" -j"$jobs" attest_bench fde-verifierd fde-admin >/dev/null
exec "$build/bench/attest_bench" "$@"
