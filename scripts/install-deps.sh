#!/usr/bin/env bash
# Installs the Debian 12 packages needed to build, test and fuzz the project and to boot its
# end-to-end test under QEMU (run as root).
set -euo pipefail
packages=(
  build-essential cmake ninja-build pkg-config clang libclang-rt-14-dev libfuzzer-14-dev
  libssl-dev libcbor-dev rapidjson-dev libexpected-dev catch2
  libboost-dev libboost-system-dev libcryptsetup-dev libsqlite3-dev libtomlplusplus-dev
  # the PostgreSQL store backend (libpq), and the server its tests and the fleet test start
  libpq-dev postgresql
  libext2fs-dev e2fsprogs qemu-utils gdisk cpio bc cryptsetup-bin openssl
  xxd file iproute2
  # the man pages' lint (test/docs/man_pages_test.sh)
  groff-base mandoc
  # the ESP test images and the Authenticode cross-check: real signed EFI binaries and two
  # independent tools that hash them
  dosfstools mtools osslsigncode pesign shim-signed grub-efi-amd64-signed
  # the end-to-end boot test (test/e2e) and the demo: a Debian kernel booted under QEMU with a
  # dracut initramfs, a busybox root, the verifier reached through a socat forward
  qemu-system-x86 linux-image-amd64 dracut-core dracut-network busybox-static socat python3 ipxe-qemu
  # the end-to-end boot with real firmware (test/e2e/firmware_boot_test.sh): OVMF (Secure Boot
  # build), a software TPM, systemd for the systemd-flavour initramfs, rEFInd's EFI drivers
  ovmf swtpm swtpm-tools systemd refind
  # its aarch64 half (test/e2e/firmware_boot_aarch64_test.sh): QEMU's virt machine with AAVMF,
  # grub-mkimage for the arm64-efi grub, the static aarch64 agent run under qemu-user; the
  # test downloads grub-efi-arm64-bin, the arm64 kernel and busybox-static as arm64 .debs
  # (apt-get download, so dpkg must know arm64: added below)
  qemu-system-arm qemu-efi-aarch64 grub-common qemu-user-static
  # bench/run-all.sh and its CTest bench-smoke: Tang and clevis as the peers (served by socat,
  # the recovery request built with jose, checked with curl), hyperfine, the gnuplot chart
  tang clevis jose curl hyperfine gnuplot-nox
  # the openEuler RPMs (packaging/rpm/build-rpms.sh, test/packaging/rpm_packages_test.sh):
  # rpmbuild, find-debuginfo (debugedit, and eu-strip from elfutils), rpmlint; ccache makes a
  # rebuild of an unchanged tree quick
  rpm debugedit elfutils rpmlint ccache
  # the Debian packages (debian/, test/packaging/deb_package_test.sh): built with
  # dpkg-buildpackage and debhelper, checked with lintian, installed on a debootstrap root
  dpkg-dev debhelper lintian debootstrap
)
if ! dpkg --print-foreign-architectures | grep -qx arm64; then
  dpkg --add-architecture arm64
  apt-get update -qq  # the arm64 package lists, for the test's apt-get download
fi
missing=()
for p in "${packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
echo "dependencies present"
