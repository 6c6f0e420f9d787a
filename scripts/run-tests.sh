#!/usr/bin/env bash
# The project's test command: installs dependencies, builds with ASan+UBSan, builds the static
# x86_64 and aarch64 agents (the aarch64 one runs under qemu-user in the integration test),
# runs every CTest test (the QEMU end-to-end boot last, on its own), then builds the libFuzzer targets with clang and runs each for a
# bounded time. FDE_FUZZ_SECONDS (default 25) sets the per-target fuzzing time; the targets run
# one per core (docs/fuzzing.md).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh

echo "== build (ASan+UBSan) and run the test suite =="
BUILD_DIR=build-test BUILD_TYPE=Debug scripts/build.sh -DFDE_SANITIZE=ON

echo "== static agents for x86_64 and aarch64 =="
FDE_HOST_BUILD=build-test scripts/build-agent-aarch64.sh

ctest --test-dir build-test --output-on-failure -j"$(nproc)" -LE '^(e2e|bench-smoke|packaging)'

echo "== packages: the openEuler RPMs (rpmbuild + rpmlint) =="
# Alone: each packaging test compiles a release tree of its own.
ctest --test-dir build-test --output-on-failure -L '^packaging' --verbose

echo "== benchmark smoke test: bench/run-all.sh --quick (every row of the table has figures) =="
# Alone, because it measures; with the sanitized binaries, so its figures are not the product's.
ctest --test-dir build-test --output-on-failure -L '^bench-smoke$'

echo "== end to end: QEMU boots an encrypted image that unlocks through fde-verifierd =="
# Alone, so the TCG guest has the CPU to itself and the other suites' timings are unaffected.
ctest --test-dir build-test --output-on-failure -L '^e2e$' --verbose  # prints each boot's time to unlock

echo "== end to end with real firmware: OVMF + swtpm measure shim, grub and the kernel; the TMM is simulated =="
ctest --test-dir build-test --output-on-failure -L e2e-firmware --verbose  # prints each boot's wall time

echo "== Debian packages: dpkg-buildpackage, lintian, installed on a clean debootstrap root =="
ctest --test-dir build-test --output-on-failure -L e2e-deb --verbose  # prints its phases' times

echo "== build and run the fuzz targets =="
cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DFDE_FUZZ=ON -DFDE_BUILD_TESTS=OFF -DFDE_WITH_SIM=OFF \
  -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ -DFDE_FUZZ_SECONDS="${FDE_FUZZ_SECONDS:-25}" >/dev/null
cmake --build build-fuzz -j"$(nproc)" --target fuzzers
ctest --test-dir build-fuzz --output-on-failure -L fuzz -j"$(nproc)"
