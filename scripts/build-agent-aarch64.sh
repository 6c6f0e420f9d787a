#!/usr/bin/env bash
# Builds the static fde-agent for aarch64 (build-aarch64) and x86_64 (build-agent-x86_64) with
# Debian's toolchains, smoke-tests the aarch64 one under qemu-aarch64-static (--version) and
# prints both stripped sizes. With FDE_HOST_BUILD=DIR (an x86_64 build that has
# test/test_agent_integration, fde-verifierd and fde-admin) it also runs a simulated
# attestation of the aarch64 agent, under QEMU, against the real verifier on loopback.
#
# Installs what it needs (as root): crossbuild-essential-arm64, libssl-dev:arm64 (after
# `dpkg --add-architecture arm64`) and qemu-user-static. FDE_WITH_SIM=OFF builds production
# agents without the simulated platform (the QEMU attestation is then skipped).
set -euo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)
with_sim=${FDE_WITH_SIM:-ON}

echo "== dependencies for the aarch64 agent =="
missing=()
if ! dpkg --print-foreign-architectures | grep -qx arm64; then
  dpkg --add-architecture arm64  # then libssl-dev:arm64 is missing below, so apt-get update runs
fi
for p in crossbuild-essential-arm64 libssl-dev:arm64 qemu-user-static file; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

echo "== aarch64: static fde-agent in build-aarch64 =="
ARCH=aarch64 scripts/build-agent.sh
aarch64=build-aarch64/guest-agent/fde-agent

echo "== x86_64: static fde-agent in build-agent-x86_64 =="
ARCH=x86_64 scripts/build-agent.sh
x86_64=build-agent-x86_64/guest-agent/fde-agent

if [ -n "${FDE_HOST_BUILD:-}" ] && [ "$with_sim" = ON ]; then
  echo "== aarch64 agent under QEMU against fde-verifierd on loopback (simulated platform) =="
  FDE_TEST_AGENT="$PWD/$aarch64.stripped" FDE_TEST_AGENT_EMULATOR="$(command -v qemu-aarch64-static)" \
    "$FDE_HOST_BUILD/test/test_agent_integration" --warn NoTests "[cross]"
fi

size() { stat -c %s "$1"; }
echo "stripped static fde-agent (FDE_WITH_SIM=$with_sim): aarch64 $(size "$aarch64.stripped") bytes," \
     "x86_64 $(size "$x86_64.stripped") bytes"
echo "build-agent-aarch64.sh took $(( $(date +%s) - started ))s"
