#!/usr/bin/env bash
# End to end with real firmware: OVMF (edk2, Secure Boot build) and the image's own shim and
# grub measure the boot into a software TPM (swtpm); only virtCCA's TMM is simulated, by the
# agent's `sim` provider with measurements = tpm: it checks that the TPM event log replays
# to the TPM's PCRs, converts it to a CCEL log with edk2's PCR -> MR mapping and signs
# tokens whose REMs are that log's replay (common/sim/tpm_log_conversion.hpp). No -kernel:
# the firmware boots the fde-image output from its ESP (shim -> grub -> kernel + a dracut
# initramfs in the systemd flavour), and the verifier decides with the reference values
# fde-image computed from the image alone.
#
# usage: firmware_boot_test.sh --build DIR --agent STATIC_AGENT [--work DIR] [--scenarios "LIST"] [--keep]
#   --scenarios  any of: positive grub-edit efi-driver (default: all three)
# FDE_E2E_ARTIFACTS=DIR: the positive boot leaves the firmware's TPM event log, the PCRs, the
# converted CCEL log, the reference values and the token in DIR/x86_64 (DIR/README.txt says
# which is which; the aarch64 test fills DIR/aarch64 alike).
# FDE_E2E_BOOT_TIMEOUT (default 180 s): hard limit per boot; QEMU and swtpm are killed.
# Needs (scripts/install-deps.sh): ovmf, swtpm, swtpm-tools, shim-signed, grub-efi-amd64-signed,
# refind, qemu-system-x86, dracut-core, dracut-network, systemd, linux-image-amd64, busybox-static,
# socat, gdisk, dosfstools, mtools, e2fsprogs, qemu-utils, openssl, python3.
# Exit status: 0 every scenario passed, 1 a scenario failed, 2 setup problem.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
source_dir=$(cd "$here/../.." && pwd)
build= agent= work= keep=0
scenarios="positive grub-edit efi-driver"
while [ $# -gt 0 ]; do
  case "$1" in
    --build) build=$(cd "$2" && pwd); shift 2 ;;
    --agent) agent=$(readlink -f "$2"); shift 2 ;;
    --work) work=$2; shift 2 ;;
    --scenarios) scenarios=$2; shift 2 ;;
    --keep) keep=1; shift ;;
    *) echo "firmware_boot_test.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
boot_timeout=${FDE_E2E_BOOT_TIMEOUT:-180}
artifacts=${FDE_E2E_ARTIFACTS:-}

# shellcheck source=test/e2e/e2e_lib.sh
. "$here/e2e_lib.sh"
e2e_messages e2e-firmware
e2e_find_inputs
for tool in qemu-system-x86_64 swtpm swtpm_setup dracut socat sgdisk mke2fs debugfs mkfs.vfat mcopy mtype \
  qemu-img openssl busybox cpio python3 ss; do
  command -v "$tool" >/dev/null || setup_error "$tool is not installed (scripts/install-deps.sh)"
done
ovmf_code=/usr/share/OVMF/OVMF_CODE_4M.ms.fd ovmf_vars=/usr/share/OVMF/OVMF_VARS_4M.ms.fd
shim=/usr/lib/shim/shimx64.efi.signed grub_efi=/usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed
efi_driver=/usr/share/refind/refind/drivers_x64/ext4_x64.efi
nic_rom=/usr/lib/ipxe/qemu/efi-virtio.rom
for f in "$ovmf_code" "$ovmf_vars" "$shim" "$grub_efi" "$efi_driver" "$nic_rom"; do
  [ -r "$f" ] || setup_error "$f is missing (ovmf, shim-signed, grub-efi-amd64-signed, refind)"
done
if [ -z "$work" ]; then work=$(mktemp -d /tmp/fde-e2e-fw.XXXXXX); else rm -rf "$work"; mkdir -p "$work"; fi
work=$(cd "$work" && pwd)
cleanup() {
  stop_verifier
  if [ "$keep" = 1 ]; then echo "e2e-firmware: work directory kept: $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
umask 077
started_all=$(date +%s)

# Fixed identities, so that the firmware's GPT measurement (PCR 5) and the image are the same
# on every run.
disk_guid=6f1c0a52-4d3e-4b8a-9e21-fde000000000
esp_guid=6f1c0a52-4d3e-4b8a-9e21-fde000000001
boot_guid=6f1c0a52-4d3e-4b8a-9e21-fde000000002
root_guid=6f1c0a52-4d3e-4b8a-9e21-fde000000003
esp_volume_id=FDE0E5B1
boot_uuid=3c1e5a2b-7f64-4c1d-9a0e-fde0000b0071
root_uuid=3c1e5a2b-7f64-4c1d-9a0e-fde000000007
esp_mib=64 boot_mib=96 root_mib=40

# ---------------------------------------------------------------------------------------
step "1. a Debian-like GPT image: ESP (shim, grub, EFI/debian/grub.cfg), /boot (kernel $kver, systemd-flavour dracut initramfs), ext4 root"
mkdir -p "$work/boot/grub"
e2e_initramfs systemd "$work/boot/initrd.img-$kver"
cp "$kernel" "$work/boot/vmlinuz-$kver"

e2e_root "$work/root"

# The input image's own boot configuration, on the ESP (EFI/debian, where Debian's signed grub
# looks) and in /boot/grub. fde-image replaces both with its locked straight-line grub.cfg, and
# takes the kernel arguments from here; everything below boots what is on the output image's
# ESP, read back, never assumed.
cmdline_args="root=UUID=$root_uuid ro console=ttyS0 ip=dhcp panic=-1 ima_rot=tpm"
cat >"$work/grub.cfg" <<EOF
set superusers=""
search --no-floppy --fs-uuid --set=root $boot_uuid
linux /vmlinuz-$kver $cmdline_args
initrd /initrd.img-$kver
boot
EOF
cp "$work/grub.cfg" "$work/boot/grub/grub.cfg"
chmod -R go+rX "$work/boot" "$work/root"

# 8300: Linux filesystem.
e2e_gpt_disk 8300 "$work/plain.qcow2" "$shim" /EFI/BOOT/BOOTX64.EFI "$grub_efi" /EFI/BOOT/grubx64.efi \
  "$work/grub.cfg" /EFI/debian/grub.cfg

# ---------------------------------------------------------------------------------------
step "2. the verifier: TLS certificate, simulated device CA, fresh SQLite store on 127.0.0.1"
e2e_verifier

# ---------------------------------------------------------------------------------------
step "3. fde-image build (references from the image alone) and fde-admin enroll"
# The simulated TMM's RIM stands for the firmware it measured: the OVMF code volume.
rim=$(sha256sum "$ovmf_code" | cut -d' ' -f1)
t0=$(date +%s)
"$fde_image" build --quiet --input "$work/plain.qcow2" --output "$work/encrypted.qcow2" --image-id e2e-fw-image \
  --verifier "https://10.0.2.100:$port" --verifier-ca "$work/tls-ca.pem" --agent "$agent" --agent-platform sim \
  --rim "$rim" --bundle "$work/bundle.json" --reference-out "$work/reference.json"
note "fde-image build took $(($(date +%s) - t0)) s"
adm enroll --bundle "$work/bundle.json"
rm -f "$work/bundle.json"

# What the firmware will find on the output image: read back, never assumed.
qemu-img convert -O raw "$work/encrypted.qcow2" "$work/encrypted.raw"
esp_offset=$(($(sgdisk -i 1 "$work/encrypted.raw" | sed -n 's/^First sector: \([0-9]*\).*/\1/p') * 512))
boot_offset=$(($(sgdisk -i 2 "$work/encrypted.raw" | sed -n 's/^First sector: \([0-9]*\).*/\1/p') * 512))
mtype -i "$work/encrypted.raw@@$esp_offset" ::/EFI/debian/grub.cfg >"$work/esp-grub.cfg" ||
  fail "the output image has no EFI/debian/grub.cfg on its ESP"
note "the ESP's EFI/debian/grub.cfg that grub will run:"
sed 's/^/   | /' "$work/esp-grub.cfg"

# fw_cfg inputs of the simulated TMM: the device, the RIM, and measurements = tpm.
mkdir -p "$work/fwcfg"
cp "$work/device/ca.pem" "$work/device/device-cert.pem" "$work/device/device-key.pem" "$work/fwcfg/"
echo "$rim" >"$work/fwcfg/rim"
echo tpm >"$work/fwcfg/measurements"
echo 1 >"$work/dump-flag"

# boot NAME DISK [fw_vm.py options...]: one boot with a fresh VARS copy (unless --vars is
# given) and a fresh swtpm; sets boot_seconds and unlock_seconds.
boot() {
  local name=$1 disk=$2 fw=() f result
  shift 2
  for f in "$work/fwcfg"/*; do fw+=(--fw-cfg "$(basename "$f")=$f"); done
  [ -e "$work/$name.vars" ] || cp "$ovmf_vars" "$work/$name.vars"
  result=$(python3 "$here/fw_vm.py" --disk "$disk" --vars "$work/$name.vars" --tpm-dir "$work/$name.tpm" \
    --serial "$work/$name.serial" --port "$port" --timeout "$boot_timeout" "${fw[@]}" "$@") || true
  echo "$result" >"$work/$name.result"
  boot_seconds=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["seconds"])' "$work/$name.result" 2>/dev/null || echo 0)
  unlock_seconds=$(python3 -c 'import json,sys; v=json.load(open(sys.argv[1]))["unlock_seconds"]; print("" if v is None else v)' "$work/$name.result" 2>/dev/null || true)
  grep -q '"status": "poweroff"' "$work/$name.result" ||
    { tail -n 40 "$work/$name.serial" >&2; fail "$name: QEMU did not power off within ${boot_timeout} s (killed): $result"; }
  grep -aoE 'fde-agent: .*|e2e-init: .*' "$work/$name.serial" | tr -d '\r' | sed 's/^/   | /' || true
  printf '   %s: wall time %.1f s (QEMU start to power-off)\n' "$name" "$boot_seconds"
}

expect_unlocked() {
  local name=$1 serial=$work/$1.serial luks_uuid
  luks_uuid=$(sed -n 's/.*"luks_uuid": *"\([^"]*\)".*/\1/p' "$work/reference.json" | head -n 1)
  if [ -z "$unlock_seconds" ]; then
    adm explain e2e-fw-image | sed 's/^/   | /' || true
    tail -n 60 "$serial" >&2
    fail "$name: the agent did not unlock the volume"
  fi
  grep -aq "e2e-init: $marker reached" "$serial" || { tail -n 60 "$serial" >&2; fail "$name: the root's marker did not appear"; }
  grep -aEq 'e2e-init: root is /dev/(mapper/luks-|dm-)' "$serial" || fail "$name: / is not the dm-crypt device"
  grep -aq "fde-agent: the root filesystem at /sysroot is the unlocked volume" "$serial" ||
    fail "$name: the pre-pivot hook did not check the root"
  printf '   %s: unlocked %.1f s after QEMU started; root marker seen\n' "$name" "$unlock_seconds"
}

# expect_denied NAME REGEX: refused with 403, powered off, and `fde-admin explain` has a
# failed check whose text matches REGEX.
expect_denied() {
  local name=$1 why=$2 serial=$work/$1.serial
  [ -z "$unlock_seconds" ] || fail "$name: the volume was unlocked"
  grep -aq "$marker" "$serial" && fail "$name: the root's marker appeared"
  grep -aq 'fde-agent: .*refused: attest: HTTP 403' "$serial" || { tail -n 60 "$serial" >&2; fail "$name: no 403 denial on the console"; }
  adm audit --image e2e-fw-image --decision deny --limit 1 | sed 's/^/   | /'
  adm explain e2e-fw-image >"$work/$name.explain"
  grep -E 'FAIL|expected|found' "$work/$name.explain" | sed 's/^/   | /' || true
  sed -n '/FAIL/,/found:/p' "$work/$name.explain" | grep -Eq "$why" ||
    fail "$name: no failed check in fde-admin explain matches '$why'"
  printf '   %s: denied (%s)\n' "$name" "$why"
}

scenario_positive() {
  step "positive: OVMF -> shim -> grub -> kernel + systemd initramfs; the TMM converts the TPM log; unlock"
  cp "$work/dump-flag" "$work/fwcfg/dump"
  boot positive "file=$work/encrypted.qcow2,format=qcow2"
  rm -f "$work/fwcfg/dump"
  local dir=$work/positive-artifacts
  mkdir -p "$dir"
  extract_dump "$work/positive.serial" tpm-event-log "$dir/tpm-event-log.bin" || fail "positive: no TPM event log dump"
  extract_dump "$work/positive.serial" pcrs-sha256 "$dir/pcrs-sha256.txt" || fail "positive: no PCR dump"
  extract_dump "$work/positive.serial" ccel-event-log "$dir/ccel-event-log.bin" || fail "positive: no CCEL log dump"
  extract_dump "$work/positive.serial" token "$dir/token.cbor" || note "positive: no token dump (the agent did not attest?)"
  cp "$work/reference.json" "$dir/reference-values.json"
  cp "$work/esp-grub.cfg" "$dir/grub.cfg"
  python3 "$here/tcg_log.py" "$dir/tpm-event-log.bin" --pcrs "$dir/pcrs-sha256.txt" >"$dir/tpm-event-log.txt"
  python3 "$here/tcg_log.py" "$dir/ccel-event-log.bin" --mr >"$dir/ccel-event-log.txt"
  note "the firmware's TPM event log, as the guest read it:"
  sed 's/^/   | /' "$dir/tpm-event-log.txt"
  grep -q 'MISMATCH' "$dir/tpm-event-log.txt" && fail "positive: the host's replay of the TPM log differs from a PCR"
  if [ -n "$artifacts" ]; then
    e2e_artifacts x86_64 "$dir" "OVMF $(dpkg-query -W -f='${Version}' ovmf) (Secure Boot) + swtpm + Debian's shim and grub, kernel $kver"
    note "artifacts written to $artifacts/x86_64 (README: $artifacts/README.txt)"
  fi
  expect_unlocked positive
}

scenario_grub_edit() {
  step "grub-edit: the host puts a menu with a timeout on the ESP and appends a second initrd in grub's editor"
  # The entry runs the image's own boot commands (without the final "boot").
  local body down
  grep -Ev '^[[:space:]]*(boot|set superusers.*|password.*)[[:space:]]*$' "$work/esp-grub.cfg" | grep -v '^[[:space:]]*$' >"$work/entry-body"
  down=$(($(grep -n '^[[:space:]]*initrd' "$work/entry-body" | head -n 1 | cut -d: -f1) + 1))
  [ "$down" -gt 1 ] || fail "grub-edit: the ESP's grub.cfg has no initrd line"
  { echo 'set timeout=30'; echo "menuentry 'Debian' {"; sed 's/^/  /' "$work/entry-body"; echo '}'; } >"$work/menu-grub.cfg"
  cp "$work/encrypted.raw" "$work/grub-edit.raw"
  mcopy -o -i "$work/grub-edit.raw@@$esp_offset" "$work/menu-grub.cfg" ::/EFI/debian/grub.cfg
  # The second initramfs: a cpio the host controls, on the boot partition.
  echo "host-controlled initramfs" >"$work/extra-marker"
  python3 "$here/efi_helper.py" initramfs --out "$work/extra.img" "etc/extra-marker=$work/extra-marker"
  dd if="$work/grub-edit.raw" of="$work/boot.ext4" bs=512 skip=$((boot_offset / 512)) count=$((boot_mib * 2048)) status=none
  debugfs -w -R "write $work/extra.img extra.img" "$work/boot.ext4" >/dev/null 2>&1
  dd if="$work/boot.ext4" of="$work/grub-edit.raw" bs=512 seek=$((boot_offset / 512)) conv=notrunc status=none
  rm -f "$work/boot.ext4"
  boot grub-edit "file=$work/grub-edit.raw,format=raw" --edit-initrd " /extra.img" --edit-down "$down"
  grep -q '"edited": true' "$work/grub-edit.result" || fail "grub-edit: the grub editor was not reached"
  rm -f "$work/grub-edit.raw"
  expect_denied grub-edit 'extra\.img|initrd|initramfs|grub_cmd|grub_commands|grub_cfg|grub\.cfg'
}

scenario_efi_driver() {
  step "efi-driver: the host adds Driver0000/DriverOrder (rEFInd's ext4 driver on the ESP) to the VARS file, and a NIC option ROM"
  # A helper boot of the same firmware with the same VARS file writes the variables through
  # efivarfs: the helper's grub.cfg boots the Debian kernel with a busybox initramfs whose
  # init does it (host tooling only: Debian's kernel, busybox, efivarfs).
  cp "$work/encrypted.raw" "$work/efi-driver.raw"
  mmd -i "$work/efi-driver.raw@@$esp_offset" ::/EFI/drivers 2>/dev/null || true
  mcopy -o -i "$work/efi-driver.raw@@$esp_offset" "$efi_driver" ::/EFI/drivers/ext4_x64.efi
  python3 "$here/efi_helper.py" load-option --description "host driver" --esp-guid "$esp_guid" \
    --esp-start "$esp_start" --esp-sectors $((esp_mib * 2048)) --path '\EFI\drivers\ext4_x64.efi' >"$work/driver0000"
  printf '\007\000\000\000\000\000' >"$work/driverorder"  # attributes NV|BS|RT, then Driver0000
  cat >"$work/helper-init" <<'EOF'
#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
insmod /efivarfs.ko
mount -t efivarfs efivarfs /sys/firmware/efi/efivars
g=8be4df61-93ca-11d2-aa0d-00e098032b8c
cat /driver0000 > /sys/firmware/efi/efivars/Driver0000-$g && echo "helper: Driver0000 written"
cat /driverorder > /sys/firmware/efi/efivars/DriverOrder-$g && echo "helper: DriverOrder written"
sync
poweroff -f
EOF
  python3 "$here/efi_helper.py" initramfs --out "$work/helper.img" "init=$work/helper-init:755" \
    "bin/busybox=$busybox_bin:755" "driver0000=$work/driver0000" "driverorder=$work/driverorder" \
    "efivarfs.ko=/lib/modules/$kver/kernel/fs/efivarfs/efivarfs.ko"
  mcopy -o -i "$work/efi-driver.raw@@$esp_offset" "$work/helper.img" ::/helper.img
  mcopy -o -i "$work/efi-driver.raw@@$esp_offset" "$kernel" ::/helper-vmlinuz
  printf 'linux /helper-vmlinuz console=ttyS0 panic=-1 rdinit=/init\ninitrd /helper.img\nboot\n' >"$work/helper-grub.cfg"
  cp "$work/efi-driver.raw" "$work/helper.raw"
  mcopy -o -i "$work/helper.raw@@$esp_offset" "$work/helper-grub.cfg" ::/EFI/debian/grub.cfg
  cp "$ovmf_vars" "$work/efi-driver.vars"
  cp "$ovmf_vars" "$work/helper.vars"
  boot helper "file=$work/helper.raw,format=raw" --unlock-marker 'helper: DriverOrder written'
  rm -f "$work/helper.raw"
  grep -aq 'helper: DriverOrder written' "$work/helper.serial" || fail "efi-driver: the helper did not write the variables"
  cp "$work/helper.vars" "$work/efi-driver.vars"
  # Under Secure Boot OVMF refuses the unsigned Driver0000 image without measuring it (and
  # Driver#### variables are not measured), so that alone changes nothing the TMM sees. The
  # host's driver that does run: a PCI option ROM (QEMU's iPXE for the NIC), which OVMF loads
  # and measures as EV_EFI_BOOT_SERVICES_DRIVER into PCR 2 (REM[1]).
  boot efi-driver "file=$work/efi-driver.raw,format=raw" --nic-rom "$nic_rom"
  rm -f "$work/efi-driver.raw"
  expect_denied efi-driver 'DRIVER|driver|ext4_x64|REM\[1\]|rems|eventlog'
}

failed=()
for s in $scenarios; do
  case "$s" in
    positive | grub-edit | efi-driver) ;;
    *) setup_error "unknown scenario $s" ;;
  esac
  t0=$(date +%s)
  # Each in a subshell, so one failure does not hide the others.
  if ("scenario_${s//-/_}"); then note "$s: passed ($(($(date +%s) - t0)) s)"; else failed+=("$s"); note "$s: FAILED ($(($(date +%s) - t0)) s)"; fi
done
adm audit --verify | sed 's/^/   | /'
[ ${#failed[@]} -eq 0 ] || fail "scenarios failed: ${failed[*]} ($(($(date +%s) - started_all)) s in all)"
step "passed: $scenarios ($(($(date +%s) - started_all)) s in all)"
