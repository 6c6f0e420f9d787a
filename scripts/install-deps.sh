#!/usr/bin/env bash
# Installs the Debian 12 packages needed to build, test and fuzz the project (run as root).
set -euo pipefail
packages=(
  build-essential cmake ninja-build pkg-config clang libclang-rt-14-dev libfuzzer-14-dev
  libssl-dev libcbor-dev rapidjson-dev libexpected-dev catch2
  libboost-dev libboost-system-dev libcryptsetup-dev libsqlite3-dev libtomlplusplus-dev
  libext2fs-dev e2fsprogs qemu-utils gdisk cpio bc cryptsetup-bin openssl
  xxd
)
missing=()
for p in "${packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
echo "dependencies present"
