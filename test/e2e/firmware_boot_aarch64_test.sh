#!/usr/bin/env bash
# End to end with real aarch64 firmware: QEMU's `virt` machine with edk2's AAVMF (Secure Boot
# off) and a software TPM (swtpm behind QEMU's tpm-tis-device); grub for arm64-efi, built
# with grub-mkimage from Debian's arm64 modules with its `tpm` module, starts Debian's arm64
# kernel through the firmware's LoadImage, as grub does on Kunpeng. The disk is the fde-image
# output of an arm64 image (ESP with EFI/BOOT/BOOTAA64.EFI and EFI/BOOT/grub.cfg, ext4 /boot,
# ext4 root). Only virtCCA's TMM is simulated.
#
# Debian's arm64 kernel has no tpm_tis driver, so the guest cannot read the TPM: the harness
# reads the firmware's event log from guest memory over QMP (the EFI tables the kernel names
# TPMEventLog and TPMFinalLog) and the PCRs from the swtpm once QEMU is stopped
# (test/e2e/fw_vm.py --capture). The static aarch64 agent then runs on the host under
# qemu-aarch64-static with a sim_dir holding that log and those PCRs: its `sim` platform with
# measurements = tpm does what it does in a guest (the log must replay to the PCRs; the TMM's
# PCR -> REM conversion to a CCEL log; a token signed by the simulated device), attests to
# fde-verifierd on loopback, which decides with the reference values fde-image computed from
# the image alone, and checks the released key against the image's LUKS2 header
# (--test-passphrase).
#
# usage: firmware_boot_aarch64_test.sh --build DIR --agent STATIC_AARCH64_AGENT [--work DIR]
#                                      [--scenarios "LIST"] [--keep]
#   --scenarios  any of: positive grub-edit (default: both)
# FDE_E2E_ARTIFACTS=DIR: the positive boot leaves its TPM event log, PCRs, CCEL log, reference
# values and token in DIR/aarch64 (DIR/README.txt says which is which).
# FDE_E2E_BOOT_TIMEOUT (default 180 s): hard limit per boot; QEMU and swtpm are killed.
# FDE_E2E_CACHE (default ~/.cache/fde-e2e): where the arm64 .debs (grub-efi-arm64-bin, the
# kernel, busybox-static) are downloaded with apt-get (arm64 in dpkg's architectures) and
# unpacked; later runs reuse them.
# Needs (scripts/install-deps.sh): qemu-system-arm, qemu-efi-aarch64, swtpm, swtpm-tools,
# grub-common (grub-mkimage), qemu-user-static, gdisk, dosfstools, mtools, e2fsprogs,
# qemu-utils, cryptsetup-bin, openssl, python3.
# Exit status: 0 every scenario passed, 1 a scenario failed, 2 setup problem.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
source_dir=$(cd "$here/../.." && pwd)
build= agent= work= keep=0
scenarios="positive grub-edit"
while [ $# -gt 0 ]; do
  case "$1" in
    --build) build=$(cd "$2" && pwd); shift 2 ;;
    --agent) agent=$(readlink -f "$2"); shift 2 ;;
    --work) work=$2; shift 2 ;;
    --scenarios) scenarios=$2; shift 2 ;;
    --keep) keep=1; shift ;;
    *) echo "firmware_boot_aarch64_test.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
boot_timeout=${FDE_E2E_BOOT_TIMEOUT:-180}
artifacts=${FDE_E2E_ARTIFACTS:-}
cache=${FDE_E2E_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/fde-e2e}/aarch64

# shellcheck source=test/e2e/e2e_lib.sh
. "$here/e2e_lib.sh"
e2e_messages e2e-firmware-aarch64
[ -n "$build" ] || setup_error "--build DIR is required"
[ -n "$agent" ] || setup_error "--agent PATH (static aarch64 fde-agent with the sim platform) is required"
fde_image=$build/image-builder/fde-image
daemon=$build/verifier-daemon/fde-verifierd
admin=$build/verifier-daemon/fde-admin
sim=$build/verifier-daemon/fde-sim
for b in "$fde_image" "$daemon" "$admin" "$sim" "$agent"; do
  [ -x "$b" ] || setup_error "$b is missing (build first; the agent: scripts/build-agent-aarch64.sh)"
done
for tool in qemu-system-aarch64 qemu-aarch64-static swtpm swtpm_setup grub-mkimage apt-get dpkg-deb sgdisk \
  mke2fs debugfs mkfs.vfat mcopy mtype qemu-img openssl cryptsetup python3 ss file; do
  command -v "$tool" >/dev/null || setup_error "$tool is not installed (scripts/install-deps.sh)"
done
file -L "$agent" | grep -q 'ARM aarch64.*statically linked' || setup_error "$agent is not a static aarch64 binary"
qemu-aarch64-static "$agent" --version | grep -q sim || setup_error "$agent was built without the sim platform"
aavmf_code=/usr/share/AAVMF/AAVMF_CODE.fd aavmf_vars=/usr/share/AAVMF/AAVMF_VARS.fd
for f in "$aavmf_code" "$aavmf_vars"; do [ -r "$f" ] || setup_error "$f is missing (qemu-efi-aarch64)"; done
if [ -z "$work" ]; then work=$(mktemp -d /tmp/fde-e2e-fw-aarch64.XXXXXX); else rm -rf "$work"; mkdir -p "$work"; fi
work=$(cd "$work" && pwd)
cleanup() {
  stop_verifier
  if [ "$keep" = 1 ]; then echo "e2e-firmware-aarch64: work directory kept: $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
umask 077
started_all=$(date +%s)

# ---------------------------------------------------------------------------------------
step "0. arm64 packages from Debian (cached in $cache): grub-efi-arm64-bin, the arm64 kernel, busybox-static"
dpkg --print-foreign-architectures | grep -qx arm64 ||
  setup_error "dpkg has no arm64 architecture (scripts/install-deps.sh adds it: dpkg --add-architecture arm64; apt-get update)"
mkdir -p "$cache/debs"
# The kernel package the metapackage names now; with no network, whatever the cache has.
kpkg=$(apt-cache depends linux-image-arm64:arm64 2>/dev/null | sed -n 's/^ *Depends: \(linux-image-[0-9].*-arm64\).*/\1/p' | head -n 1)
fetch_deb() {  # fetch_deb PACKAGE GLOB: a .deb of PACKAGE:arm64 in the cache
  local pkg=$1 glob=$2
  if ! compgen -G "$cache/debs/$glob" >/dev/null; then
    # Stale package lists name files the mirror no longer has: refresh them once and retry.
    (cd "$cache/debs" && apt-get download -q "$pkg:arm64" >/dev/null 2>"$work/apt.log") ||
      { apt-get update -qq >/dev/null 2>&1 && (cd "$cache/debs" && apt-get download -q "$pkg:arm64" >/dev/null 2>"$work/apt.log"); } ||
      { cat "$work/apt.log" >&2; setup_error "apt-get download $pkg:arm64 failed (and nothing is cached)"; }
  fi
  ls -t "$cache"/debs/$glob | head -n 1
}
grub_deb=$(fetch_deb grub-efi-arm64-bin 'grub-efi-arm64-bin_*_arm64.deb')
busybox_deb=$(fetch_deb busybox-static 'busybox-static_*_arm64.deb')
if [ -n "$kpkg" ]; then kernel_deb=$(fetch_deb "$kpkg" "${kpkg}_*_arm64.deb")
else kernel_deb=$(ls -t "$cache"/debs/linux-image-*-arm64_*_arm64.deb 2>/dev/null | head -n 1); fi
[ -n "$kernel_deb" ] || setup_error "no arm64 kernel package (apt-cache knows no linux-image-arm64:arm64, none cached)"
unpack() {  # unpack DEB: its tree, unpacked once into the cache
  local dir=$cache/root/$(basename "$1" .deb)
  if [ ! -e "$dir/.unpacked" ]; then
    rm -rf "$dir" && mkdir -p "$dir" && dpkg-deb -x "$1" "$dir" && touch "$dir/.unpacked"
  fi
  echo "$dir"
}
grub_root=$(unpack "$grub_deb") busybox_root=$(unpack "$busybox_deb") kernel_root=$(unpack "$kernel_deb")
arm_kernel=$(ls "$kernel_root"/boot/vmlinuz-*-arm64 | head -n 1)
kver=${arm_kernel##*/vmlinuz-}
arm_busybox=$busybox_root/bin/busybox
file -L "$arm_busybox" | grep -q 'ARM aarch64.*statically linked' || setup_error "$arm_busybox is not a static aarch64 busybox"
note "grub $(basename "$grub_deb"), kernel $kver, $(basename "$busybox_deb")"

# The grub Kunpeng machines run is built the same way: grub-mkimage with the tpm module, so it
# measures its commands (PCR 8) and the files it reads (PCR 9); no embedded configuration,
# prefix /EFI/BOOT (grub reads EFI/BOOT/grub.cfg on the ESP it was loaded from). Secure Boot
# is off: the image is not signed.
grub_version=$(dpkg-deb -f "$grub_deb" Version)
host_grub_version=$(dpkg-query -W -f='${Version}' grub-common 2>/dev/null || true)
[ "$grub_version" = "$host_grub_version" ] ||
  note "warning: grub-mkimage is grub-common $host_grub_version, the arm64 modules are $grub_version"
grub-mkimage -O arm64-efi -d "$grub_root/usr/lib/grub/arm64-efi" -p /EFI/BOOT -o "$work/BOOTAA64.EFI" \
  tpm part_gpt fat ext2 normal linux boot search search_fs_uuid password_pbkdf2 echo test configfile ||
  setup_error "grub-mkimage for arm64-efi failed"

# Fixed identities, so that the firmware's GPT measurement (PCR 5) and the image are the same
# on every run.
disk_guid=6f1c0a52-4d3e-4b8a-9e21-fde0000a0000
esp_guid=6f1c0a52-4d3e-4b8a-9e21-fde0000a0001
boot_guid=6f1c0a52-4d3e-4b8a-9e21-fde0000a0002
root_guid=6f1c0a52-4d3e-4b8a-9e21-fde0000a0003
esp_volume_id=FDE0A64E
boot_uuid=3c1e5a2b-7f64-4c1d-9a0e-fde0000a0b71
root_uuid=3c1e5a2b-7f64-4c1d-9a0e-fde0000a0007
esp_mib=64 boot_mib=96 root_mib=40

# ---------------------------------------------------------------------------------------
step "1. an arm64 GPT image: ESP (BOOTAA64.EFI, EFI/BOOT/grub.cfg), ext4 /boot (kernel $kver, busybox initramfs), ext4 root"
# The guest's initramfs only has to show that the kernel started and hold still while the host
# reads the log: the kernel prints the EFI tables' addresses; the host reads them, stops the VM.
mkdir -p "$work/boot/grub"
cat >"$work/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
echo "e2e-init: kernel $(/bin/busybox uname -r) on $(/bin/busybox uname -m) started"
echo "e2e-init: TPM devices: $(/bin/busybox ls /sys/class/tpm 2>/dev/null | /bin/busybox tr '\n' ' ')"
echo "e2e-init: $(/bin/busybox dmesg | /bin/busybox grep -o 'TPMFinalLog=0x[0-9a-f]*') $(/bin/busybox dmesg | /bin/busybox grep -o 'TPMEventLog=0x[0-9a-f]*')"
echo "e2e-init: waiting for the host"
read -t 300 answer
/bin/busybox poweroff -f
EOF
python3 "$here/efi_helper.py" initramfs --out "$work/boot/initrd.img-$kver" "init=$work/init:755" "bin/busybox=$arm_busybox:755"
cp "$arm_kernel" "$work/boot/vmlinuz-$kver"
busybox_bin=$arm_busybox  # the root (never booted here) is an arm64 one
e2e_root "$work/root"
cmdline_args="root=UUID=$root_uuid ro console=ttyAMA0 panic=-1 ima_rot=tpm"
cat >"$work/grub.cfg" <<EOF
set superusers=""
search --no-floppy --fs-uuid --set=root $boot_uuid
linux /vmlinuz-$kver $cmdline_args
initrd /initrd.img-$kver
boot
EOF
cp "$work/grub.cfg" "$work/boot/grub/grub.cfg"
chmod -R go+rX "$work/boot" "$work/root"

# 8305: Linux root (ARM64).
e2e_gpt_disk 8305 "$work/plain.qcow2" "$work/BOOTAA64.EFI" /EFI/BOOT/BOOTAA64.EFI "$work/grub.cfg" /EFI/BOOT/grub.cfg

# ---------------------------------------------------------------------------------------
step "2. the verifier: TLS certificate, simulated device CA, fresh SQLite store on 127.0.0.1"
e2e_verifier

# ---------------------------------------------------------------------------------------
step "3. fde-image build (references from the image alone, the aarch64 agent) and fde-admin enroll"
image_id=e2e-fw-aarch64
# The simulated TMM's RIM stands for the firmware it measured: the AAVMF code volume.
rim=$(sha256sum "$aavmf_code" | cut -d' ' -f1)
t0=$(date +%s)
"$fde_image" build --quiet --input "$work/plain.qcow2" --output "$work/encrypted.qcow2" --image-id "$image_id" \
  --verifier "https://127.0.0.1:$port" --verifier-ca "$work/tls-ca.pem" --agent "$agent" --agent-platform sim \
  --rim "$rim" --bundle "$work/bundle.json" --reference-out "$work/reference.json"
note "fde-image build took $(($(date +%s) - t0)) s"
adm enroll --bundle "$work/bundle.json"
rm -f "$work/bundle.json"

# What the firmware will find on the output image: read back, never assumed.
qemu-img convert -O raw "$work/encrypted.qcow2" "$work/encrypted.raw"
first_sector() { sgdisk -i "$1" "$work/encrypted.raw" | sed -n 's/^First sector: \([0-9]*\).*/\1/p'; }
last_sector() { sgdisk -i "$1" "$work/encrypted.raw" | sed -n 's/^Last sector: \([0-9]*\).*/\1/p'; }
esp_offset=$(($(first_sector 1) * 512)) boot_offset=$(($(first_sector 2) * 512))
mtype -i "$work/encrypted.raw@@$esp_offset" ::/EFI/BOOT/grub.cfg >"$work/esp-grub.cfg" ||
  fail "the output image has no EFI/BOOT/grub.cfg on its ESP"
grep -q '^linux ' "$work/esp-grub.cfg" || fail "fde-image did not write its grub.cfg to EFI/BOOT/grub.cfg"
note "the ESP's EFI/BOOT/grub.cfg that grub will run:"
sed 's/^/   | /' "$work/esp-grub.cfg"
# The LUKS2 volume, for the agent's --test-passphrase check of the released key.
dd if="$work/encrypted.raw" of="$work/root.luks" bs=512 skip="$(first_sector 3)" \
  count=$(($(last_sector 3) - $(first_sector 3) + 1)) status=none
luks_uuid=$(cryptsetup luksUUID "$work/root.luks") || fail "partition 3 of the output is not a LUKS volume"
# The key check values fde-image wrote into the measured agent configuration (appended to the
# initramfs on /boot): the host-run agent must judge the released key with the same ones.
dd if="$work/encrypted.raw" of="$work/boot-part.ext4" bs=512 skip="$(first_sector 2)" \
  count=$(($(last_sector 2) - $(first_sector 2) + 1)) status=none
debugfs -R "dump /initrd.img-$kver $work/initrd.fde" "$work/boot-part.ext4" >/dev/null 2>&1 ||
  fail "cannot read /initrd.img-$kver from the output's /boot"
key_checks=$(python3 - "$work/initrd.fde" <<'PY'
import sys
data = open(sys.argv[1], "rb").read()
name = b"etc/fde/agent.conf\0"
at = data.rfind(name)
head = data.rfind(b"070701", 0, at) if at > 0 else -1
if head < 0 or at - head > 111:
    sys.exit("no newc entry etc/fde/agent.conf in the initramfs")
size, namesize = int(data[head + 54:head + 62], 16), int(data[head + 94:head + 102], 16)
start = (head + 110 + namesize + 3) & ~3
for line in data[start:start + size].decode().splitlines():
    if line.split("=")[0].strip() in ("released_key_check", "volume_key_check"):
        print(line)
PY
) || fail "fde-image's agent.conf has no key check values"
[ "$(echo "$key_checks" | wc -l)" = 2 ] || fail "fde-image's agent.conf lacks a key check value: $key_checks"
rm -f "$work/boot-part.ext4" "$work/initrd.fde"

# boot NAME DISK [fw_vm.py options...]: one boot with a fresh VARS copy and a fresh swtpm, up
# to the guest's wait; the log and PCRs land in $work/NAME.tpm-capture. Sets boot_seconds.
boot() {
  local name=$1 disk=$2 result
  shift 2
  cp "$aavmf_vars" "$work/$name.vars"
  result=$(python3 "$here/fw_vm.py" --arch aarch64 --disk "$disk" --vars "$work/$name.vars" \
    --tpm-dir "$work/$name.tpm" --serial "$work/$name.serial" --timeout "$boot_timeout" \
    --capture "$work/$name.tpm-capture" "$@") || true
  echo "$result" >"$work/$name.result"
  boot_seconds=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["seconds"])' "$work/$name.result" 2>/dev/null || echo 0)
  grep -aoE 'e2e-init: .*' "$work/$name.serial" | tr -d '\r' | sed 's/^/   | /' || true
  grep -q '"status": "captured"' "$work/$name.result" ||
    { tail -n 40 "$work/$name.serial" >&2; fail "$name: no event log captured within ${boot_timeout} s: $result"; }
  grep -aq 'EFI stub: Booting Linux Kernel' "$work/$name.serial" || note "$name: (the EFI stub's banner is not on the console)"
  printf '   %s: wall time %.1f s (QEMU start to the captured log and PCRs)\n' "$name" "$boot_seconds"
  python3 "$here/tcg_log.py" "$work/$name.tpm-capture/tpm-event-log.bin" \
    --pcrs "$work/$name.tpm-capture/pcrs-sha256.txt" >"$work/$name.tpm-capture/tpm-event-log.txt"
  grep -q 'MISMATCH' "$work/$name.tpm-capture/tpm-event-log.txt" &&
    { cat "$work/$name.tpm-capture/tpm-event-log.txt" >&2; fail "$name: the log does not replay to the swtpm's PCRs"; }
  grep -q ' MATCH' "$work/$name.tpm-capture/tpm-event-log.txt" || fail "$name: no PCR was compared with the log"
  true
}

# attest NAME: the aarch64 agent (qemu-aarch64-static) on the host, sim platform with
# measurements = tpm over NAME's captured log and PCRs, against the verifier, --test-passphrase
# on the image's LUKS2 volume. Sets agent_status; the agent's output is $work/NAME.agent.log.
attest() {
  local name=$1 simdir=$work/$1.sim n value
  rm -rf "$simdir"
  mkdir -p "$simdir/pcr-sha256"
  cp "$work/device/ca.pem" "$work/device/device-cert.pem" "$work/device/device-key.pem" "$simdir/"
  echo "$rim" >"$simdir/rim"
  echo tpm >"$simdir/measurements"
  echo 1 >"$simdir/dump"
  cp "$work/$name.tpm-capture/tpm-event-log.bin" "$simdir/tpm-event-log"
  while read -r n value; do echo "$value" >"$simdir/pcr-sha256/$n"; done <"$work/$name.tpm-capture/pcrs-sha256.txt"
  cat >"$work/$name.agent.conf" <<EOF
image_id = $image_id
verifier = https://127.0.0.1:$port
ca_file = $work/tls-ca.pem
luks_uuid = $luks_uuid
sim_dir = $simdir
failure_policy = poweroff
network_timeout = 2s
device_timeout = 2s
attempt_timeout = 20s
overall_timeout = 40s
backoff_initial = 1s
backoff_max = 2s
$key_checks
EOF
  local t0
  t0=$(date +%s.%N)
  agent_status=0
  qemu-aarch64-static "$agent" --platform sim --config "$work/$name.agent.conf" --cmdline /dev/null \
    --device "$work/root.luks" --header-dir "$work/$name.luks-header" --test-passphrase \
    >"$work/$name.agent.log" 2>&1 || agent_status=$?
  grep -aE '^fde-agent: ' "$work/$name.agent.log" | sed 's/^/   | /' || true
  printf '   %s: the aarch64 agent (qemu-aarch64-static) ran %.1f s, exit status %d\n' "$name" \
    "$(echo "$(date +%s.%N) - $t0" | bc)" "$agent_status"
}

scenario_positive() {
  step "positive: AAVMF -> grub (arm64-efi, tpm) -> LoadImage(kernel $kver); the TMM converts the TPM log; release"
  boot positive "file=$work/encrypted.qcow2,format=qcow2"
  local dir=$work/positive-artifacts
  mkdir -p "$dir"
  cp "$work/positive.tpm-capture"/* "$dir/"
  note "the firmware's TPM event log, read from guest memory, replayed against the swtpm:"
  sed 's/^/   | /' "$dir/tpm-event-log.txt"
  grep -Eq 'PCR4 +EV_EFI_BOOT_SERVICES_APPLICATION .*path=MemoryMapped' "$dir/tpm-event-log.txt" ||
    fail "positive: no EFI application from a memory-mapped device path (grub's LoadImage of the kernel) in PCR 4"
  attest positive
  extract_dump "$work/positive.agent.log" ccel-event-log "$dir/ccel-event-log.bin" || fail "positive: no CCEL log dump"
  extract_dump "$work/positive.agent.log" token "$dir/token.cbor" || fail "positive: no token dump (the agent did not attest?)"
  python3 "$here/tcg_log.py" "$dir/ccel-event-log.bin" --mr >"$dir/ccel-event-log.txt"
  cp "$work/reference.json" "$dir/reference-values.json"
  cp "$work/esp-grub.cfg" "$dir/grub.cfg"
  if [ -n "$artifacts" ]; then
    e2e_artifacts aarch64 "$dir" "AAVMF $(dpkg-query -W -f='${Version}' qemu-efi-aarch64) (Secure Boot off) + swtpm + grub-mkimage arm64-efi ($grub_version, tpm module), kernel $kver"
    note "artifacts written to $artifacts/aarch64 (README: $artifacts/README.txt)"
  fi
  if [ "$agent_status" != 0 ] || ! grep -aq 'key released' "$work/positive.agent.log"; then
    tail -n 30 "$work/positive.agent.log" >&2
    adm explain "$image_id" | sed 's/^/   | /' || true
    fail "positive: the verifier did not release the key (agent exit status $agent_status)"
  fi
  grep -aq "the released key opens a keyslot of $work/root.luks" "$work/positive.agent.log" ||
    fail "positive: the released key did not open the image's LUKS2 keyslot"
  adm audit --image "$image_id" --decision release --limit 1 | sed 's/^/   | /'
  note "positive: released; the key opens the arm64 image's LUKS2 volume"
}

scenario_grub_edit() {
  step "grub-edit: the host puts a menu with a timeout on the ESP and appends a second initrd in grub's editor"
  local body down
  grep -Ev '^[[:space:]]*(boot|set superusers.*|password.*)[[:space:]]*$' "$work/esp-grub.cfg" | grep -v '^[[:space:]]*$' >"$work/entry-body"
  down=$(($(grep -n '^[[:space:]]*initrd' "$work/entry-body" | head -n 1 | cut -d: -f1) + 1))
  [ "$down" -gt 1 ] || fail "grub-edit: the ESP's grub.cfg has no initrd line"
  { echo 'set timeout=30'; echo "menuentry 'Debian' {"; sed 's/^/  /' "$work/entry-body"; echo '}'; } >"$work/menu-grub.cfg"
  cp "$work/encrypted.raw" "$work/grub-edit.raw"
  mcopy -o -i "$work/grub-edit.raw@@$esp_offset" "$work/menu-grub.cfg" ::/EFI/BOOT/grub.cfg
  echo "host-controlled initramfs" >"$work/extra-marker"
  python3 "$here/efi_helper.py" initramfs --out "$work/extra.img" "etc/extra-marker=$work/extra-marker"
  dd if="$work/grub-edit.raw" of="$work/boot.ext4" bs=512 skip=$((boot_offset / 512)) count=$((boot_mib * 2048)) status=none
  debugfs -w -R "write $work/extra.img extra.img" "$work/boot.ext4" >/dev/null 2>&1
  dd if="$work/boot.ext4" of="$work/grub-edit.raw" bs=512 seek=$((boot_offset / 512)) conv=notrunc status=none
  rm -f "$work/boot.ext4"
  boot grub-edit "file=$work/grub-edit.raw,format=raw" --edit-initrd " /extra.img" --edit-down "$down"
  rm -f "$work/grub-edit.raw"
  grep -q '"edited": true' "$work/grub-edit.result" || fail "grub-edit: the grub editor was not reached"
  grep -q "grub_cmd: initrd /initrd.img-$kver /extra.img" "$work/grub-edit.tpm-capture/tpm-event-log.txt" ||
    fail "grub-edit: grub did not measure the edited initrd command"
  attest grub-edit
  [ "$agent_status" != 0 ] || fail "grub-edit: the agent succeeded"
  grep -aq 'key released' "$work/grub-edit.agent.log" && fail "grub-edit: the key was released"
  grep -aq 'refused: attest: HTTP 403' "$work/grub-edit.agent.log" ||
    { tail -n 30 "$work/grub-edit.agent.log" >&2; fail "grub-edit: no 403 denial"; }
  adm audit --image "$image_id" --decision deny --limit 1 | sed 's/^/   | /'
  adm explain "$image_id" >"$work/grub-edit.explain"
  grep -E 'FAIL|expected|found' "$work/grub-edit.explain" | sed 's/^/   | /' || true
  sed -n '/FAIL/,/found:/p' "$work/grub-edit.explain" | grep -Eq 'extra\.img|initrd|grub_commands|grub_cfg|grub\.cfg' ||
    fail "grub-edit: no failed check in fde-admin explain names the edit"
  note "grub-edit: denied"
}

failed=()
for s in $scenarios; do
  case "$s" in
    positive | grub-edit) ;;
    *) setup_error "unknown scenario $s" ;;
  esac
  t0=$(date +%s)
  if ("scenario_${s//-/_}"); then note "$s: passed ($(($(date +%s) - t0)) s)"; else failed+=("$s"); note "$s: FAILED ($(($(date +%s) - t0)) s)"; fi
done
adm audit --verify | sed 's/^/   | /'
[ ${#failed[@]} -eq 0 ] || fail "scenarios failed: ${failed[*]} ($(($(date +%s) - started_all)) s in all)"
step "passed: $scenarios ($(($(date +%s) - started_all)) s in all)"
