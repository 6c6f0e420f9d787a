#!/usr/bin/env bash
# The CTest bench-smoke: bench/run-all.sh --quick with a build's binaries, then a check that
# the table it wrote has every row, each with a number for ours and for the peer or bound
# (a missing measurement shows as n/a or an empty cell). It checks the harness, not speeds:
# no figure is compared with a goal here, but a failed release or storm agent fails it.
#   bench/smoke_test.sh BUILD_DIR OUT_DIR
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
build=${1:?usage: smoke_test.sh BUILD_DIR OUT_DIR}
out=${2:?usage: smoke_test.sh BUILD_DIR OUT_DIR}
rm -rf "$out"
"$here/bench/run-all.sh" --quick --build "$build" --out "$out"
"$here/bench/check_results.sh" "$out"
