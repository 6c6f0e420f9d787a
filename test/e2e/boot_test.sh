#!/usr/bin/env bash
# End to end: a real Debian kernel boots an image encrypted by fde-image under QEMU (TCG),
# and its dracut initramfs unlocks the root volume with the real dm-crypt after fde-agent
# attested to a real fde-verifierd on loopback. Only the virtCCA hardware is simulated: this
# script plays the platform firmware. It measures the kernel, initramfs and command line it
# is about to boot into a CCEL event log and hands the log, the RIM and the simulated
# device's keys to the guest over QEMU fw_cfg, where the agent's `sim` provider signs tokens
# with them (docs/firmware-boot-test.md, "The simulated TMM").
#
# usage: boot_test.sh --build DIR --agent STATIC_AGENT [--work DIR] [--scenarios "LIST"] [--keep]
#   --build      a build tree with fde-image, fde-verifierd, fde-admin and fde-sim
#   --agent      the static fde-agent built with the sim platform (FDE_WITH_SIM=ON)
#   --scenarios  any of: positive tampered late revoked hostile-disk shadow-root host-volume
#                moved (default: all)
#   --work       work directory (default: a new one under /tmp, removed at the end)
#   --keep       keep the work directory
# Needs (scripts/install-deps.sh): qemu-system-x86_64, dracut-core and dracut-network,
# linux-image-amd64, busybox-static, socat, sgdisk, e2fsprogs, qemu-utils, openssl, python3,
# pesign.
# Every QEMU run has a hard timeout (FDE_E2E_BOOT_TIMEOUT, default 240 s) and is killed on
# failure. Exit status: 0 every scenario passed, 1 a scenario failed, 2 setup problem.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
source_dir=$(cd "$here/../.." && pwd)
build= agent= work= keep=0
scenarios="positive tampered late revoked hostile-disk shadow-root host-volume moved"
while [ $# -gt 0 ]; do
  case "$1" in
    --build) build=$(cd "$2" && pwd); shift 2 ;;
    --agent) agent=$(readlink -f "$2"); shift 2 ;;
    --work) work=$2; shift 2 ;;
    --scenarios) scenarios=$2; shift 2 ;;
    --keep) keep=1; shift ;;
    *) echo "boot_test.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
boot_timeout=${FDE_E2E_BOOT_TIMEOUT:-240}
late_start=${FDE_E2E_LATE_START:-20}

# shellcheck source=test/e2e/e2e_lib.sh
. "$here/e2e_lib.sh"
e2e_messages e2e
e2e_find_inputs
for tool in qemu-system-x86_64 dracut socat sgdisk mke2fs debugfs qemu-img openssl busybox cpio python3 bc ss pesign; do
  command -v "$tool" >/dev/null || setup_error "$tool is not installed (scripts/install-deps.sh)"
done
if [ -z "$work" ]; then work=$(mktemp -d /tmp/fde-e2e.XXXXXX); else rm -rf "$work"; mkdir -p "$work"; fi
work=$(cd "$work" && pwd)
qemu_pid=
cleanup() {
  [ -n "$qemu_pid" ] && kill -9 "$qemu_pid" 2>/dev/null || true
  stop_verifier
  if [ "$keep" = 1 ]; then echo "e2e: work directory kept: $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
umask 077
started_all=$(date +%s)

# ---------------------------------------------------------------------------------------
step "1. a small bootable CVM image: Debian kernel $kver, a dracut initramfs with the fde-agent module, an ext4 root"
mkdir -p "$work/boot/grub"
e2e_initramfs script "$work/boot/initrd.img-$kver"
cp "$kernel" "$work/boot/vmlinuz-$kver"

root_uuid=$(cat /proc/sys/kernel/random/uuid)
e2e_root "$work/root"

# Kernel arguments, as the image's grub.cfg gives them. fde-image replaces that file with its
# own straight-line grub.cfg, which keeps these arguments (and adds ima_rot=tpm). No
# rd.shell=0 here: the agent's files in the initramfs must provide it (fde-agent-cmdline.conf).
cmdline_args="root=UUID=$root_uuid ro console=ttyS0 ip=dhcp panic=-1"
cat >"$work/boot/grub/grub.cfg" <<EOF
set timeout=0
menuentry 'Debian (e2e)' {
	linux /vmlinuz-$kver $cmdline_args
	initrd /initrd.img-$kver
}
EOF
chmod -R go+rX "$work/boot" "$work/root"

# make_plain_image ROOT OUT.qcow2: GPT with a 72 MiB boot partition ($work/boot) and a 40 MiB
# ext4 root partition (ROOT, filesystem UUID root_uuid), made without root privileges.
boot_mib=72 root_mib=40
make_plain_image() {
  truncate -s $((1 + boot_mib + root_mib + 1))M "$work/disk.raw"
  sgdisk -n1:2048:+${boot_mib}M -t1:8300 -c1:boot -n2:0:+${root_mib}M -t2:8300 -c2:root "$work/disk.raw" >/dev/null
  mke2fs -q -t ext4 -L boot -d "$work/boot" -E offset=$((1 << 20)) "$work/disk.raw" ${boot_mib}M
  mke2fs -q -t ext4 -b 4096 -L root -U "$root_uuid" -d "$1" -E offset=$(((1 + boot_mib) << 20)) \
    "$work/disk.raw" ${root_mib}M
  qemu-img convert -f raw -O qcow2 "$work/disk.raw" "$2"
  rm -f "$work/disk.raw"
}
make_plain_image "$work/root" "$work/plain.qcow2"
note "plain image: $(stat -c %s "$work/plain.qcow2") bytes (qcow2), root filesystem UUID $root_uuid"

# ---------------------------------------------------------------------------------------
step "2. the verifier: TLS certificate, simulated device CA, fresh SQLite store on 127.0.0.1"
e2e_verifier

# ---------------------------------------------------------------------------------------
step "3. fde-image build: encrypt the root, add the agent to the initramfs, write references and the bundle"
# What this simulated platform's firmware and grub measure: a RIM for the firmware and an
# Authenticode digest for grub (neither exists for real under QEMU direct boot).
rim=$(printf 'e2e simulated virtCCA firmware' | sha256sum | cut -d' ' -f1)
grub_digest=$(printf 'e2e simulated grub' | sha256sum | cut -d' ' -f1)
t0=$(date +%s)
"$fde_image" build --quiet --input "$work/plain.qcow2" --output "$work/encrypted.qcow2" --image-id e2e-image \
  --verifier "https://10.0.2.100:$port" --verifier-ca "$work/tls-ca.pem" --agent "$agent" --agent-platform sim \
  --rim "$rim" --grub-efi-digest "$grub_digest" --bundle "$work/bundle.json" --reference-out "$work/reference.json"
note "fde-image build took $(($(date +%s) - t0)) s; $(stat -c %s "$work/encrypted.qcow2") bytes"
"$fde_image" inspect "$work/encrypted.qcow2" | sed 's/^/   | /'
luks_uuid=$(sed -n 's/.*"luks_uuid": *"\([^"]*\)".*/\1/p' "$work/bundle.json")
[ -n "$luks_uuid" ] || fail "no luks_uuid in the bundle"

step "4. fde-admin enroll: the verifier stores the key (wrapped) and the reference values"
adm enroll --bundle "$work/bundle.json"
rm -f "$work/bundle.json"  # the key now exists only in the verifier (wrapped) and in the keyslot
adm list | sed 's/^/   | /'

# ---------------------------------------------------------------------------------------
# The firmware's view of the image: the boot partition's kernel, initramfs and grub.cfg, as
# the guest will load them.
qemu-img convert -O raw "$work/encrypted.qcow2" "$work/encrypted.raw"
dd if="$work/encrypted.raw" of="$work/boot.ext4" bs=1M skip=1 count=$boot_mib status=none
rm -f "$work/encrypted.raw"
for f in "vmlinuz-$kver" "initrd.img-$kver" grub/grub.cfg; do
  debugfs -R "dump /$f $work/$(basename "$f").booted" "$work/boot.ext4" >/dev/null 2>&1
  [ -s "$work/$(basename "$f").booted" ] || fail "cannot read /$f from the encrypted image's boot partition"
done
cmp -s "$work/vmlinuz-$kver.booted" "$kernel" || fail "fde-image changed the kernel"
sed 's/^/   | /' "$work/grub.cfg.booted"
# The kernel boots with the arguments of fde-image's grub.cfg, as grub would pass them.
boot_args=$(sed -n "s|^linux /vmlinuz-$kver ||p" "$work/grub.cfg.booted")
[ "$boot_args" = "$cmdline_args ima_rot=tpm" ] || fail "grub.cfg boots with unexpected arguments: $boot_args"
grep -q '^password_pbkdf2 ' "$work/grub.cfg.booted" || fail "grub.cfg does not lock grub's console"
grep -q 'menuentry' "$work/grub.cfg.booted" && fail "grub.cfg has a menu"
# Under Secure Boot shim measures the kernel as an EFI application: its Authenticode digest,
# computed here by pesign, independently of fde-image.
kernel_efi=$(pesign -h -i "$work/vmlinuz-$kver.booted" 2>/dev/null | sed -n 's/^hash: //p')
[ ${#kernel_efi} = 64 ] || setup_error "pesign could not hash $kernel"
grep -q "$kernel_efi" "$work/reference.json" || fail "the reference values lack the kernel's Authenticode digest"

# play_firmware INITRAMFS [GRUB_CFG]: the measurements of a boot of this kernel, INITRAMFS and command
# line, as fw_cfg entries under opt/fde/ (the agent's sim provider reads them). grub runs the
# lines of fde-image's grub.cfg one by one; shim logs the kernel it verifies.
play_firmware() {
  local initramfs=$1 grub_cfg=${2:-$work/grub.cfg.booted} dir=$work/fwcfg
  rm -rf "$dir"
  mkdir -p "$dir"
  cp "$work/device/ca.pem" "$work/device/device-cert.pem" "$work/device/device-key.pem" "$dir/"
  echo "$rim" >"$dir/rim"
  "$sim" eventlog --grub-digest "$grub_digest" --grub-cfg "$grub_cfg" --grub-cfg-path /grub/grub.cfg \
    --script-from-grub-cfg --kernel "$work/vmlinuz-$kver.booted" --kernel-efi-digest "$kernel_efi" \
    --initramfs "$initramfs" --out-log "$dir/event-log" >/dev/null
}

# boot NAME INITRAMFS [DISK]: boots the encrypted image under QEMU with a hard timeout; the serial
# console goes to $work/NAME.serial. The guest's network is QEMU user networking with
# restrict=on (no route out of the guest) plus one forward: a connection to 10.0.2.100:PORT
# starts a socat that connects to the daemon on 127.0.0.1:PORT (its error messages must not
# reach the guest's socket: QEMU runs the command without a shell, hence -lf /dev/null). Sets boot_seconds and unlock_seconds (empty if the
# agent never unlocked). With boot_typing=1 the console also takes input: whatever is written
# to $work/NAME.pipe.in reaches the guest's ttyS0 (a QEMU pipe chardev).
boot() {
  local name=$1 initramfs=$2 disk=${3:-file=$work/encrypted.qcow2,format=qcow2} serial=$work/$1.serial
  local fw_args=() extra_disk=() f start now serial_args=(-serial "file:$serial") reader=
  # A second disk, for the shadow-root scenario.
  [ -n "${4:-}" ] && extra_disk=(-drive "$4,if=virtio,snapshot=on")
  for f in "$work/fwcfg"/*; do fw_args+=(-fw_cfg "name=opt/fde/$(basename "$f"),file=$f"); done
  : >"$serial"
  if [ "${boot_typing:-0}" = 1 ]; then
    rm -f "$work/$name.pipe.in" "$work/$name.pipe.out"
    mkfifo "$work/$name.pipe.in" "$work/$name.pipe.out"
    serial_args=(-chardev "pipe,id=console0,path=$work/$name.pipe" -serial chardev:console0)
  fi
  start=$(date +%s.%N)
  qemu-system-x86_64 -M q35 -m 768 -smp 1 -display none -no-reboot -monitor none \
    "${serial_args[@]}" \
    -kernel "$work/vmlinuz-$kver.booted" -initrd "$initramfs" -append "$boot_args" \
    -drive "$disk,if=virtio,snapshot=on" "${extra_disk[@]}" \
    -netdev "user,id=n0,restrict=on,guestfwd=tcp:10.0.2.100:$port-cmd:socat -lf /dev/null - TCP:127.0.0.1:$port" \
    -device virtio-net-pci,netdev=n0 "${fw_args[@]}" >"$work/$name.qemu.log" 2>&1 &
  qemu_pid=$!
  if [ "${boot_typing:-0}" = 1 ]; then
    cat "$work/$name.pipe.out" >>"$serial" &
    reader=$!
  fi
  unlock_seconds=
  while kill -0 "$qemu_pid" 2>/dev/null; do
    now=$(date +%s.%N)
    if [ -z "$unlock_seconds" ] && grep -q 'fde-agent: unlocked' "$serial"; then
      unlock_seconds=$(echo "$now - $start" | bc)
    fi
    if [ "$(echo "$now - $start > $boot_timeout" | bc)" = 1 ]; then
      kill -9 "$qemu_pid" 2>/dev/null || true
      wait "$qemu_pid" 2>/dev/null || true
      qemu_pid=
      tail -n 40 "$serial" >&2
      fail "$name: QEMU did not power off within ${boot_timeout} s (killed)"
    fi
    # Only the test's own late start runs in parallel with the boot.
    if [ -n "${on_boot_tick:-}" ]; then "$on_boot_tick" "$start" "$now"; fi
    sleep 0.2
  done
  wait "$qemu_pid" 2>/dev/null || true
  qemu_pid=
  [ -z "$reader" ] || wait "$reader" 2>/dev/null || true
  boot_seconds=$(echo "$(date +%s.%N) - $start" | bc)
  if [ -z "$unlock_seconds" ] && grep -q 'fde-agent: unlocked' "$serial"; then unlock_seconds=$boot_seconds; fi
  grep -E '^fde-agent:|^e2e-init:' "$serial" | sed 's/^/   | /' || true
}

expect_unlocked() {
  local name=$1 serial=$work/$1.serial
  [ -n "$unlock_seconds" ] || { tail -n 60 "$serial" >&2; fail "$name: the agent did not unlock the volume"; }
  grep -q "e2e-init: $marker reached" "$serial" || { tail -n 60 "$serial" >&2; fail "$name: the root's marker did not appear"; }
  # dm-crypt's mapping, named by cryptsetup after the LUKS2 UUID, carries the root.
  grep -Eq "e2e-init: dm-[0-9]+ luks-$luks_uuid CRYPT-LUKS2-${luks_uuid//-/}-" "$serial" ||
    fail "$name: no dm-crypt mapping of LUKS2 volume $luks_uuid in the guest"
  grep -Eq 'e2e-init: root is /dev/(mapper/luks-|dm-)' "$serial" || fail "$name: / is not the dm-crypt device"
  grep -q "fde-agent: the root filesystem at /sysroot is the unlocked volume luks-$luks_uuid" "$serial" ||
    fail "$name: the pre-pivot hook did not check the root"
  printf '   %s: unlocked %.1f s after QEMU started; root marker seen; powered off after %.1f s\n' \
    "$name" "$unlock_seconds" "$boot_seconds"
}

expect_denied() {
  local name=$1 why=$2 serial=$work/$1.serial
  [ -z "$unlock_seconds" ] || fail "$name: the volume was unlocked"
  grep -q "$marker" "$serial" && fail "$name: the root's marker appeared"
  grep -q 'fde-agent: .*refused: attest: HTTP 403' "$serial" || { tail -n 60 "$serial" >&2; fail "$name: no 403 denial on the console"; }
  grep -q "failure policy 'poweroff'" "$serial" || fail "$name: the agent did not apply its failure policy"
  adm audit --image e2e-image --decision deny --limit 1 >"$work/$name.audit"
  sed 's/^/   | /' "$work/$name.audit"
  grep -q "$why" "$work/$name.audit" || fail "$name: the audit record does not name '$why'"
  printf '   %s: denied (%s), the agent powered the VM off after %.1f s; no marker\n' "$name" "$why" "$boot_seconds"
}

scenario_positive() {
  step "positive: boot, attest, unlock with dm-crypt, reach the encrypted root"
  play_firmware "$work/initrd.img-$kver.booted"
  boot positive "$work/initrd.img-$kver.booted"
  expect_unlocked positive
}

scenario_tampered() {
  step "tampered: one byte of the initramfs changed (in the agent's configuration comment)"
  cp "$work/initrd.img-$kver.booted" "$work/initrd.tampered"
  local offset
  offset=$(grep -boa 'written by fde-image' "$work/initrd.tampered" | head -n 1 | cut -d: -f1)
  [ -n "$offset" ] || fail "tampered: the appended agent configuration was not found in the initramfs"
  printf 'W' | dd of="$work/initrd.tampered" bs=1 seek="$offset" conv=notrunc status=none
  cmp -s "$work/initrd.tampered" "$work/initrd.img-$kver.booted" && fail "tampered: nothing changed"
  play_firmware "$work/initrd.tampered"
  boot tampered "$work/initrd.tampered"
  expect_denied tampered "reference.initramfs"
  adm explain e2e-image | grep -E 'FAIL' | sed 's/^/   | /' || true
}

# Starts the verifier late_start seconds after the agent's first attempt failed, so the
# agent's retries are exercised however long the boot took to get there.
late_tick() {
  [ -z "$daemon_pid" ] || return 0
  if [ -z "${late_first_failure:-}" ]; then
    grep -q 'fde-agent: attempt 1 .*failed' "$work/late.serial" && late_first_failure=$2
    return 0
  fi
  if [ "$(echo "$2 - $late_first_failure >= $late_start" | bc)" = 1 ]; then
    start_verifier
    note "fde-verifierd started $(printf '%.1f' "$(echo "$2 - $late_first_failure" | bc)") s after the agent's first attempt failed"
  fi
}

scenario_late() {
  step "late: the verifier is down when the agent starts and comes up ${late_start} s later; the agent retries"
  stop_verifier
  play_firmware "$work/initrd.img-$kver.booted"
  late_first_failure=
  on_boot_tick=late_tick boot late "$work/initrd.img-$kver.booted"
  [ -n "$daemon_pid" ] || start_verifier
  grep -Eq 'fde-agent: attempt [0-9]+ .*failed' "$work/late.serial" || fail "late: no failed attempt before the verifier came up"
  expect_unlocked late
}

scenario_revoked() {
  step "revoked: fde-admin revoke, then boot the genuine image"
  adm revoke e2e-image
  play_firmware "$work/initrd.img-$kver.booted"
  boot revoked "$work/initrd.img-$kver.booted"
  expect_denied revoked "revoked"
  adm reinstate e2e-image >/dev/null
}

# make_host_root DIR: the host's own root tree: the same init, its own marker.
make_host_root() {
  mkdir -p "$1"
  cp -a "$work/root/." "$1/"
  echo "host-controlled-root" >"$1/etc/e2e-marker"
}

scenario_hostile_disk() {
  step "hostile disk: the host rewrites the LUKS2 header's data cipher to cipher_null and writes its own plaintext root"
  # The genuine keyslots stay, so the released key still opens them; without the agent's
  # header checks dm-crypt would map the host's plaintext as the root (same filesystem UUID).
  qemu-img convert -O raw "$work/encrypted.qcow2" "$work/hostile.raw"
  local start
  start=$(sgdisk -i 2 "$work/hostile.raw" | sed -n 's/^First sector: \([0-9]*\).*/\1/p')
  [ -n "$start" ] || fail "hostile-disk: no partition 2"
  python3 "$here/luks2_set_segment_cipher.py" "$work/hostile.raw" $((start * 512)) cipher_null-ecb
  make_host_root "$work/hostile-root"
  mke2fs -q -t ext4 -b 4096 -U "$root_uuid" -d "$work/hostile-root" -E offset=$((start * 512 + (16 << 20))) \
    "$work/hostile.raw" ${root_mib}M
  play_firmware "$work/initrd.img-$kver.booted"
  boot hostile-disk "$work/initrd.img-$kver.booted" "file=$work/hostile.raw,format=raw"
  rm -f "$work/hostile.raw"
  local serial=$work/hostile-disk.serial
  [ -z "$unlock_seconds" ] || fail "hostile-disk: the agent unlocked a cipher_null volume"
  grep -q 'e2e-init:' "$serial" && fail "hostile-disk: a root filesystem was reached"
  grep -q 'fde-agent: .*LUKS header of /dev/vda2 refused' "$serial" ||
    { tail -n 60 "$serial" >&2; fail "hostile-disk: the agent did not refuse the header"; }
  grep -q "failure policy 'poweroff'" "$serial" || fail "hostile-disk: the agent did not apply its failure policy"
  printf '   hostile-disk: header refused after the key was released; powered off after %.1f s\n' "$boot_seconds"
}

scenario_shadow_root() {
  step "shadow root: the host attaches a second disk, a plaintext ext4 with the root's filesystem UUID"
  # Without the agent's finished and pre-pivot hooks, dracut would mount whichever device
  # carries root=UUID=... (before even running the agent). The host's root must never run.
  rm -f "$work/shadow.ext4"
  make_host_root "$work/shadow-root"
  mke2fs -q -t ext4 -b 4096 -U "$root_uuid" -d "$work/shadow-root" "$work/shadow.ext4" ${root_mib}M >/dev/null
  play_firmware "$work/initrd.img-$kver.booted"
  boot shadow-root "$work/initrd.img-$kver.booted" "file=$work/encrypted.qcow2,format=qcow2" \
    "file=$work/shadow.ext4,format=raw"
  rm -f "$work/shadow.ext4"
  local serial=$work/shadow-root.serial
  grep -q 'host-controlled-root' "$serial" && fail "shadow-root: the host's root filesystem ran"
  if grep -q "e2e-init: $marker reached" "$serial"; then
    expect_unlocked shadow-root  # udev linked the UUID to the unlocked volume: a normal boot
  else
    grep -q 'fde-agent: the root filesystem at /sysroot .* is not the unlocked volume' "$serial" ||
      { tail -n 60 "$serial" >&2; fail "shadow-root: neither the genuine root nor the agent's refusal"; }
    printf '   shadow-root: dracut mounted the host disk; the pre-pivot check powered off after %.1f s\n' "$boot_seconds"
  fi
}

# extract_appended FILE PATH OUT: PATH's content in the uncompressed archive fde-image appended
# to the initramfs FILE (the last newc entry of that name).
extract_appended() {
  python3 - "$@" <<'EOF'
import sys
data = open(sys.argv[1], 'rb').read()
name = sys.argv[2].lstrip('/').encode() + b'\0'
at = data.rfind(name) - 110
if at < 0 or data[at:at + 6] != b'070701':
    sys.exit('no newc entry ' + sys.argv[2])
size, name_size = int(data[at + 54:at + 62], 16), int(data[at + 94:at + 102], 16)
start = (at + 110 + name_size + 3) & ~3
open(sys.argv[3], 'wb').write(data[start:start + size])
EOF
}

# The host-made volume behind the passphrase fallback, set up and played like a host would.
host_volume_tick() {
  local serial=$work/host-volume.serial prompts
  # The host withheld the verifier only until the agent gave up; its own root will need it.
  if [ -z "$daemon_pid" ] && grep -q 'fde-agent: asking for the LUKS passphrase' "$serial"; then start_verifier; fi
  # The host types its passphrase at each prompt (a moment after it appears: cryptsetup
  # flushes the console's input once it has printed the prompt).
  prompts=$(grep -c 'Enter passphrase' "$serial" || true)
  [ "$prompts" -gt "$hv_typed" ] || return 0
  if [ -z "$hv_prompt_seen" ]; then hv_prompt_seen=$2; return 0; fi
  [ "$(echo "$2 - $hv_prompt_seen >= 1.5" | bc)" = 1 ] || return 0
  printf '%s\n' "$host_passphrase" >"$work/host-volume.pipe.in"
  hv_typed=$prompts hv_prompt_seen=
}

scenario_host_volume() {
  step "host volume: failure policy passphrase; the host withholds the verifier, presents its own LUKS2 volume with the genuine UUID and types its own passphrase"
  # The image of an operator who chose the passphrase fallback (in the measured grub.cfg).
  local pass_args="$cmdline_args rd.fde.failure_policy=passphrase rd.fde.overall_timeout=8s rd.fde.attempt_timeout=4s"
  "$fde_image" build --quiet --input "$work/plain.qcow2" --output "$work/pass.qcow2" --image-id e2e-pass \
    --verifier "https://10.0.2.100:$port" --verifier-ca "$work/tls-ca.pem" --agent "$agent" --agent-platform sim \
    --rim "$rim" --grub-efi-digest "$grub_digest" --kernel-cmdline "$pass_args" --bundle "$work/pass-bundle.json" \
    --reference-out "$work/pass-reference.json"
  local pass_uuid
  pass_uuid=$(sed -n 's/.*"luks_uuid": *"\([^"]*\)".*/\1/p' "$work/pass-bundle.json")
  adm enroll --bundle "$work/pass-bundle.json" >/dev/null
  rm -f "$work/pass-bundle.json"
  qemu-img convert -O raw "$work/pass.qcow2" "$work/pass.raw"
  dd if="$work/pass.raw" of="$work/pass-boot.ext4" bs=1M skip=1 count=$boot_mib status=none
  rm -f "$work/pass.raw" "$work/pass.qcow2"
  debugfs -R "dump /initrd.img-$kver $work/pass-initrd.booted" "$work/pass-boot.ext4" >/dev/null 2>&1
  debugfs -R "dump /grub/grub.cfg $work/pass-grub.cfg.booted" "$work/pass-boot.ext4" >/dev/null 2>&1
  [ -s "$work/pass-initrd.booted" ] && [ -s "$work/pass-grub.cfg.booted" ] || fail "host-volume: no boot files in the image"

  # The host's volume: its own root (whose init asks the verifier for the disk key), made with
  # the vendor's fde-image, a keyslot for the host's passphrase, then the genuine LUKS UUID.
  # Everything it copies from the image is public: the agent, its configuration, the CA.
  make_host_root "$work/hv-root"
  mkdir -p "$work/hv-root/usr/sbin" "$work/hv-root/etc/fde"
  cp "$agent" "$work/hv-root/usr/sbin/fde-agent"
  extract_appended "$work/pass-initrd.booted" /etc/fde/agent.conf "$work/hv-root/etc/fde/agent.conf"
  cp "$work/tls-ca.pem" "$work/hv-root/etc/fde/verifier-ca.pem"
  cat >"$work/hv-root/sbin/init" <<'EOF'
#!/bin/busybox sh
bb=/bin/busybox
$bb mount -t proc proc /proc 2>/dev/null
$bb mount -t sysfs sysfs /sys 2>/dev/null
echo "e2e-init: $($bb cat /etc/e2e-marker) reached"
# The host's code, in a CVM whose boot measured exactly as enrolled, asks for the disk key
# (the agent copied from the initramfs will do); once it has it, the point is made. The root
# is mounted read-only: the agent's output goes to a tmpfs.
$bb mount -t tmpfs tmpfs /tmp
/usr/sbin/fde-agent --config /etc/fde/agent.conf --test-passphrase >/tmp/agent.log 2>&1 &
i=0
while [ $i -lt 60 ] && ! $bb grep -q 'key released' /tmp/agent.log; do $bb sleep 1; i=$((i + 1)); done
$bb cat /tmp/agent.log
$bb sync
$bb poweroff -f
EOF
  chmod 0755 "$work/hv-root/sbin/init" "$work/hv-root/usr/sbin/fde-agent"
  make_plain_image "$work/hv-root" "$work/hv-plain.qcow2"
  "$fde_image" build --quiet --input "$work/hv-plain.qcow2" --output "$work/hv.raw" --output-format raw \
    --image-id host-made --verifier https://10.0.2.100:1 --verifier-ca "$work/tls-ca.pem" --agent-platform sim --no-agent \
    --rim "$rim" --grub-efi-digest "$grub_digest" --bundle "$work/hv-bundle.json" --reference-out "$work/hv-reference.json"
  host_passphrase="host-passphrase-$(openssl rand -hex 4)"
  printf '%s' "$host_passphrase" >"$work/hv-passphrase"
  sed -n 's/.*"disk_key": *"\([^"]*\)".*/\1/p' "$work/hv-bundle.json" | base64 -d >"$work/hv-machine.key"
  local start
  start=$(sgdisk -i 2 "$work/hv.raw" | sed -n 's/^First sector: \([0-9]*\).*/\1/p')
  [ -n "$start" ] || fail "host-volume: no partition 2"
  dd if="$work/hv.raw" of="$work/hv-part.raw" bs=512 skip="$start" count=$(((root_mib + 16) << 11)) status=none
  cryptsetup luksAddKey --batch-mode --disable-locks --pbkdf pbkdf2 --pbkdf-force-iterations 1000 \
    --key-file "$work/hv-machine.key" "$work/hv-part.raw" "$work/hv-passphrase"
  cryptsetup luksUUID --batch-mode --disable-locks --uuid "$pass_uuid" "$work/hv-part.raw"
  dd if="$work/hv-part.raw" of="$work/hv.raw" bs=512 seek="$start" conv=notrunc status=none
  rm -f "$work/hv-part.raw" "$work/hv-machine.key" "$work/hv-plain.qcow2"

  stop_verifier
  play_firmware "$work/pass-initrd.booted" "$work/pass-grub.cfg.booted"
  local genuine_args=$boot_args
  boot_args=$(sed -n "s|^linux /vmlinuz-$kver ||p" "$work/pass-grub.cfg.booted")
  hv_typed=0 hv_prompt_seen=
  boot_typing=1 on_boot_tick=host_volume_tick boot host-volume "$work/pass-initrd.booted" "file=$work/hv.raw,format=raw"
  boot_args=$genuine_args
  [ -n "$daemon_pid" ] || start_verifier
  rm -f "$work/hv.raw"
  local serial=$work/host-volume.serial
  grep -q 'fde-agent: asking for the LUKS passphrase' "$serial" ||
    { tail -n 60 "$serial" >&2; fail "host-volume: the agent did not fall back to the passphrase prompt"; }
  [ "$hv_typed" -gt 0 ] || { tail -n 60 "$serial" >&2; fail "host-volume: no passphrase prompt appeared"; }
  adm audit --image e2e-pass >"$work/host-volume.audit"
  sed 's/^/   | /' "$work/host-volume.audit"
  grep -q 'host-controlled-root' "$serial" && fail "host-volume: the host's root filesystem ran"
  # Columns: SEQ TIME IMAGE PEER DECISION REASON.
  awk '$5 == "release"' "$work/host-volume.audit" | grep -q . && fail "host-volume: the verifier released the key of e2e-pass"
  grep -q "fde-agent: /dev/mapper/luks-$pass_uuid is not the enrolled volume: its volume key does not match volume_key_check" \
    "$serial" || { tail -n 60 "$serial" >&2; fail "host-volume: the pre-pivot check did not refuse the host's volume"; }
  printf '   host-volume: the host passphrase opened its volume; the pre-pivot check powered off after %.1f s; no key released\n' \
    "$boot_seconds"
}

# moved: the service moves to a second verifier (another TLS CA, another port) with a backup
# of the store; fde-image rebind points the encrypted image at it without touching the
# encrypted root, the set it prints is loaded, and the rebound image unlocks with its old
# enrollment. The first verifier (and its store) are back afterwards.
scenario_moved() {
  step "moved: fde-admin backup to a second verifier (new CA, new port), fde-image rebind, unlock there"
  adm backup --output "$work/moved.db" | sed 's/^/   | /'
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/CN=e2e second TLS CA" \
    -keyout "$work/tls2-ca.key" -out "$work/tls2-ca.pem" 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=fde-verifierd second" \
    -keyout "$work/server2.key" -out "$work/server2.csr" 2>/dev/null
  openssl x509 -req -in "$work/server2.csr" -CA "$work/tls2-ca.pem" -CAkey "$work/tls2-ca.key" -CAcreateserial \
    -days 2 -extfile <(printf 'subjectAltName=IP:127.0.0.1,IP:10.0.2.100\n') -out "$work/server2.crt" 2>/dev/null
  chmod 600 "$work/server2.key"
  local first_port=$port port2
  port2=$(free_tcp_port "$port") || setup_error "no second free TCP port on 127.0.0.1"
  sed -e "s|127.0.0.1:$port\"|127.0.0.1:$port2\"|" -e 's|"server.crt"|"server2.crt"|' -e 's|"server.key"|"server2.key"|' \
    -e 's|"verifier.db"|"moved.db"|' "$work/verifier.toml" >"$work/moved.toml"
  grep -q "127.0.0.1:$port2" "$work/moved.toml" || setup_error "moved: the second configuration has no new port"
  stop_verifier
  verifier_config=$work/moved.toml start_verifier
  note "the second fde-verifierd is listening on $(tr '\n' ' ' <"$work/ready")"

  local t0 old_set
  t0=$(date +%s.%N)
  "$fde_image" rebind --quiet "$work/encrypted.qcow2" --output "$work/moved.qcow2" \
    --verifier "https://10.0.2.100:$port2" --verifier-ca "$work/tls2-ca.pem" \
    --rim "$rim" --grub-efi-digest "$grub_digest" --reference-out "$work/moved-reference.json" >"$work/rebind.out"
  note "fde-image rebind took $(printf '%.1f' "$(echo "$(date +%s.%N) - $t0" | bc)") s"
  sed 's/^/   | /' "$work/rebind.out"
  grep -q 'no re-enrollment is needed' "$work/rebind.out" || fail "moved: rebind did not say the enrollment stays"
  old_set=$(sed -n 's/.*fde-admin add-reference e2e-image --file [^ ]* --replace \([^ ]*\)$/\1/p' "$work/rebind.out")
  [ -n "$old_set" ] || fail "moved: rebind printed no add-reference --replace command"
  # The rebound image's root partition (LUKS2 header and ciphertext) is the build's, byte for byte.
  qemu-img convert -O raw "$work/encrypted.qcow2" "$work/a.raw"
  qemu-img convert -O raw "$work/moved.qcow2" "$work/b.raw"
  local start
  start=$(sgdisk -i 2 "$work/b.raw" | sed -n 's/^First sector: \([0-9]*\).*/\1/p')
  [ "$(tail -c +$((start * 512 + 1)) "$work/a.raw" | sha256sum)" = "$(tail -c +$((start * 512 + 1)) "$work/b.raw" | sha256sum)" ] ||
    fail "moved: rebind changed the root partition"
  rm -f "$work/a.raw"
  dd if="$work/b.raw" of="$work/moved-boot.ext4" bs=1M skip=1 count=$boot_mib status=none
  rm -f "$work/b.raw"
  debugfs -R "dump /initrd.img-$kver $work/moved-initrd.booted" "$work/moved-boot.ext4" >/dev/null 2>&1
  [ -s "$work/moved-initrd.booted" ] || fail "moved: cannot read the rebound initramfs"
  cmp -s "$work/moved-initrd.booted" "$work/initrd.img-$kver.booted" && fail "moved: the initramfs did not change"

  adm add-reference e2e-image --file "$work/moved-reference.json" --replace "$old_set" | sed 's/^/   | /'
  play_firmware "$work/moved-initrd.booted"
  port=$port2
  boot moved "$work/moved-initrd.booted" "file=$work/moved.qcow2,format=qcow2"
  port=$first_port
  grep -q "https://10.0.2.100:$port2: key released" "$work/moved.serial" ||
    fail "moved: the key was not released by the second verifier"
  expect_unlocked moved
  adm audit --image e2e-image --decision release --limit 1 | grep -q . || fail "moved: no release at the second verifier"

  stop_verifier
  rm -f "$work/moved.qcow2" "$work/moved.db"*
  start_verifier
}

for s in $scenarios; do
  case "$s" in
    positive | tampered | late | revoked) "scenario_$s" ;;
    hostile-disk) scenario_hostile_disk ;;
    shadow-root) scenario_shadow_root ;;
    host-volume) scenario_host_volume ;;
    moved) scenario_moved ;;
    *) setup_error "unknown scenario $s" ;;
  esac
done
adm audit --verify | sed 's/^/   | /'
step "passed: $scenarios ($(($(date +%s) - started_all)) s in all)"
