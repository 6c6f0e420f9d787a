#!/usr/bin/env bash
# Builds fde-verifierd, fde-admin and flood_bench (Release, own build dir) and measures the
# daemon's resident memory and an honest attestation under a body flood on 127.0.0.1. The
# default is the security review's case: 300 connections each sending all but the last byte
# of a 1.4 MB body and holding it. Give --verifierd PATH to measure another build of the
# daemon (for example one from before the body budget) with the same load.
#   bench/run-flood-bench.sh [flood_bench options: --bodies N --idle N --partial N
#                             --slow-headers N --seconds S --body-first-burst BYTES --verifierd PATH]
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
build="${FDE_BENCH_BUILD_DIR:-$here/build-bench}"
jobs="${FDE_BENCH_JOBS:-2}"
cmake -S "$here" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DFDE_WITH_SIM=ON >/dev/null
ninja -C "$build" -j"$jobs" flood_bench fde-verifierd fde-admin >/dev/null
exec "$build/bench/flood_bench" "$@"
