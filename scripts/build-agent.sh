#!/usr/bin/env bash
# Builds the static fde-agent (Release, FDE_AGENT_ONLY, FDE_AGENT_STATIC) and a stripped copy
# beside it, which is what fde-image puts into initramfs images:
#   ARCH=x86_64  (default) build-agent-x86_64/guest-agent/fde-agent.stripped
#   ARCH=aarch64 build-aarch64/guest-agent/fde-agent.stripped (Debian's cross toolchain; the
#                binary is smoke-tested under qemu-aarch64-static; see build-agent-aarch64.sh)
# FDE_WITH_SIM=OFF builds the production agent without the simulated platform; the default,
# ON, is what the end-to-end test and the demo boot, since they simulate the virtCCA TMM.
set -euo pipefail
cd "$(dirname "$0")/.."
with_sim=${FDE_WITH_SIM:-ON}
case "${ARCH:-x86_64}" in
  x86_64) dir=build-agent-x86_64 toolchain=() kind='x86-64' run=() ;;
  aarch64) dir=build-aarch64 toolchain=(-DCMAKE_TOOLCHAIN_FILE=cmake/aarch64-linux-gnu.cmake)
    kind='ARM aarch64' run=(qemu-aarch64-static) ;;
  *) echo "ARCH must be x86_64 or aarch64" >&2; exit 2 ;;
esac
cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=Release -DFDE_AGENT_ONLY=ON -DFDE_AGENT_STATIC=ON \
  -DFDE_WITH_SIM="$with_sim" -DFDE_INSTALL_SPLIT_DEBUG=ON "${toolchain[@]}" >/dev/null
cmake --build "$dir" --target fde-agent -j"$(nproc)"
agent=$dir/guest-agent/fde-agent
file "$agent" | grep -q "$kind.*statically linked" || { echo "$agent is not a static $kind binary" >&2; exit 1; }
# The stripped copy every link makes for the install (cmake/FdeInstall.cmake), the same bytes
# cmake --install puts in sbin; its debug info is guest-agent/installed/fde-agent.debug.
cp "$dir/guest-agent/installed/fde-agent" "$agent.stripped"
"${run[@]}" "$agent.stripped" --version
echo "stripped static fde-agent for ${ARCH:-x86_64} (FDE_WITH_SIM=$with_sim): $(stat -c %s "$agent.stripped") bytes"
