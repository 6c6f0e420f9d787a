#!/usr/bin/env bash
# Builds fde-verifierd, fde-admin and attest_cpu_bench (Release, own build dir) and measures
# the daemon's CPU per full attestation (one TLS connection per boot) against the crypto +
# handshake bound measured in the same run, with 1 and 2 daemon threads.
#   bench/run-attest-cpu-bench.sh [attest_cpu_bench options: --count N --concurrency C
#                                  --threads 1,2 --repeat R --two-connections --verifierd PATH]
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
build="${FDE_BENCH_BUILD_DIR:-$here/build-bench}"
jobs="${FDE_BENCH_JOBS:-2}"
cmake -S "$here" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DFDE_WITH_SIM=ON >/dev/null
ninja -C "$build" -j"$jobs" attest_cpu_bench fde-verifierd fde-admin >/dev/null
exec "$build/bench/attest_cpu_bench" "$@"
