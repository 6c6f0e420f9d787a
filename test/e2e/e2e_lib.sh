# Shared by the end-to-end boot tests (boot_test.sh, firmware_boot_test.sh,
# firmware_boot_aarch64_test.sh); sourced, not run.
# Each piece expects the calling script's variables: work, build, agent, source_dir, kver and
# the functions below it defines through e2e_messages.

# shellcheck source=scripts/lib/free_tcp_port.sh
. "$(dirname "${BASH_SOURCE[0]}")/../../scripts/lib/free_tcp_port.sh"

# e2e_messages PREFIX: setup_error (exit 2), fail (exit 1), step and note, all naming PREFIX.
e2e_messages() {
  e2e_prefix=$1
  setup_error() { echo "$e2e_prefix: setup: $*" >&2; exit 2; }
  fail() { echo "$e2e_prefix: FAILED: $*" >&2; exit 1; }
  step() { printf '\n== %s: %s\n' "$e2e_prefix" "$*"; }
  note() { printf '   %s\n' "$*"; }
}

# The project's binaries (fde_image, daemon, admin, sim) and the static sim agent; the
# newest Debian kernel (kver, kernel) and a static busybox (busybox_bin).
e2e_find_inputs() {
  [ -n "$build" ] || setup_error "--build DIR is required"
  [ -n "$agent" ] || setup_error "--agent PATH (static fde-agent with the sim platform) is required"
  fde_image=$build/image-builder/fde-image
  daemon=$build/verifier-daemon/fde-verifierd
  admin=$build/verifier-daemon/fde-admin
  sim=$build/verifier-daemon/fde-sim
  for b in "$fde_image" "$daemon" "$admin" "$sim" "$agent"; do
    [ -x "$b" ] || setup_error "$b is missing (build first)"
  done
  file -L "$agent" | grep -q 'statically linked' || setup_error "$agent is not a static binary"
  "$agent" --version | grep -q sim || setup_error "$agent was built without the sim platform"
  busybox_bin=$(command -v busybox) || setup_error "busybox is not installed (busybox-static)"
  file -L "$busybox_bin" | grep -q 'statically linked' || setup_error "$busybox_bin is not static (busybox-static)"
  kver=$(ls /lib/modules | sort -V | tail -n 1)
  kernel=/boot/vmlinuz-$kver
  [ -n "$kver" ] && [ -r "$kernel" ] || setup_error "no Debian kernel in /boot (linux-image-amd64)"
}

# e2e_initramfs FLAVOUR OUT [MODULE_DIR]: a dracut initramfs with our module, built from a private copy of
# dracut's module tree (the build host's /usr/lib/dracut stays untouched). FLAVOUR is
# "script" (dracut's own init) or "systemd" (openEuler's default: systemd runs the initramfs,
# dracut's hooks run from its dracut-*.service units and the agent from fde-agent.service).
# Only the NIC QEMU gives the guest (virtio_net) is taken instead of every wired network
# driver: that halves the initramfs and its build time. No agent or configuration on this
# "build host": fde-image adds them to the initramfs. MODULE_DIR (default: the source tree's
# guest-agent/dracut) is the module to use, e.g. an installed copy.
e2e_initramfs() {
  local flavour=$1 out=$2 module_dir=${3:-$source_dir/guest-agent/dracut} modules omit t0
  case "$flavour" in
    script)
      modules="bash base udev-rules crypt dm network-legacy fde-agent"
      omit="systemd plymouth kernel-modules i18n lvm mdraid dmraid multipath btrfs nvdimm qemu qemu-net" ;;
    systemd)
      # network-legacy brings up no route under systemd; systemd-networkd does.
      modules="bash systemd systemd-initrd dracut-systemd base udev-rules crypt dm systemd-networkd fde-agent"
      omit="plymouth kernel-modules i18n lvm mdraid dmraid multipath btrfs nvdimm qemu qemu-net network-legacy network-manager" ;;
    *) setup_error "unknown dracut flavour $flavour" ;;
  esac
  rm -rf "$work/dracut"
  cp -a /usr/lib/dracut "$work/dracut"
  mkdir -p "$work/dracut/modules.d/90fde-agent" "$work/dracut-conf.d"
  cp "$module_dir"/* "$work/dracut/modules.d/90fde-agent/"
  cat >"$work/dracut/modules.d/90kernel-network-modules/module-setup.sh" <<'EOF'
#!/bin/bash
# e2e test: the guest's only NIC is QEMU's virtio-net.
check() { return 255; }
depends() { return 0; }
installkernel() { instmods virtio_net af_packet; }
install() { return 0; }
EOF
  t0=$(date +%s)
  FDE_AGENT_BINARY=/nonexistent FDE_AGENT_CONFIG=/nonexistent dracutbasedir="$work/dracut" \
    dracut --force --no-hostonly --no-hostonly-cmdline --no-early-microcode --reproducible --gzip \
    --conf /dev/null --confdir "$work/dracut-conf.d" --kver "$kver" --modules "$modules" --omit "$omit" \
    --add-drivers "virtio_pci virtio_blk virtio_net ext4 dm_crypt qemu_fw_cfg" \
    "$out" >"$work/dracut.log" 2>&1 || { cat "$work/dracut.log" >&2; setup_error "dracut failed"; }
  note "dracut ($flavour flavour): $(stat -c %s "$out") bytes in $(($(date +%s) - t0)) s"
}

# e2e_root DIR: the root filesystem's tree: busybox and an init that prints what it finds and
# powers off. The marker (set here) is random per run and lives only on the encrypted root,
# so seeing it on the console proves that the guest decrypted the volume.
e2e_root() {
  local root=$1
  marker="root-marker-$(openssl rand -hex 8)"
  mkdir -p "$root"/{bin,sbin,dev,proc,sys,run,etc,tmp}
  cp "$busybox_bin" "$root/bin/busybox"
  echo "$marker" >"$root/etc/e2e-marker"
  # systemd's switch-root refuses a root without os-release ("does not seem to be an OS tree").
  printf 'ID=fde-e2e\nNAME="fde e2e root"\n' >"$root/etc/os-release"
  cat >"$root/sbin/init" <<'EOF'
#!/bin/busybox sh
bb=/bin/busybox
$bb mount -t proc proc /proc 2>/dev/null
$bb mount -t sysfs sysfs /sys 2>/dev/null
echo "e2e-init: $($bb cat /etc/e2e-marker) reached"
for d in /sys/block/dm-*; do
  [ -e "$d/dm/uuid" ] && echo "e2e-init: $($bb basename "$d") $($bb cat "$d/dm/name") $($bb cat "$d/dm/uuid")"
done
echo "e2e-init: root is $($bb awk '$2 == "/" { print $1 }' /proc/mounts | $bb tail -n 1)"
$bb sync
$bb poweroff -f
EOF
  chmod 0755 "$root/sbin/init" "$root/bin/busybox"
}

# The verifier with a fresh TLS CA, simulated device CA ($work/device), KEK, nonce secret and
# SQLite store, on a free loopback port (port). The guest reaches it as 10.0.2.100 (QEMU
# guestfwd), the host as 127.0.0.1. Defines start_verifier, stop_verifier and adm.
e2e_verifier() {
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/CN=e2e TLS CA" \
    -keyout "$work/tls-ca.key" -out "$work/tls-ca.pem" 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=fde-verifierd" \
    -keyout "$work/server.key" -out "$work/server.csr" 2>/dev/null
  openssl x509 -req -in "$work/server.csr" -CA "$work/tls-ca.pem" -CAkey "$work/tls-ca.key" -CAcreateserial \
    -days 2 -extfile <(printf 'subjectAltName=IP:127.0.0.1,IP:10.0.2.100\n') -out "$work/server.crt" 2>/dev/null
  chmod 600 "$work/server.key"  # fde-verifierd refuses a TLS key that group or others can read
  "$sim" device --out "$work/device" --type p521 >/dev/null
  head -c 32 /dev/urandom >"$work/kek"
  head -c 32 /dev/urandom >"$work/nonce-secret"
  # A free port, chosen now because QEMU's forwarding names it at start.
  port=$(free_tcp_port) || setup_error "no free TCP port on 127.0.0.1"
  printf '%s\n' '[server]' "listen = [\"127.0.0.1:$port\"]" '[tls]' 'certificate = "server.crt"' \
    'private_key = "server.key"' '[attestation]' 'trusted_roots = ["device/ca.pem"]' '[nonce]' \
    'secret_file = "nonce-secret"' '[store]' 'database = "verifier.db"' 'kek_file = "kek"' \
    '[operator]' 'listen = "127.0.0.1:0"' '[admin]' 'socket = "admin.sock"' >"$work/verifier.toml"
  # The admin socket serves root only, unless one more uid is named (a developer's own runs).
  [ "$(id -u)" = 0 ] || echo "allowed_uid = $(id -u)" >>"$work/verifier.toml"
  start_verifier
  note "fde-verifierd is listening on $(tr '\n' ' ' <"$work/ready")"
}

daemon_pid=
start_verifier() {
  rm -f "$work/ready"
  # verifier_config: another configuration (a second verifier); default the one made above.
  "$daemon" --config "${verifier_config:-$work/verifier.toml}" --ready-file "$work/ready" 2>>"$work/verifierd.log" &
  daemon_pid=$!
  for _ in $(seq 100); do [ -s "$work/ready" ] && return 0; sleep 0.1; done
  cat "$work/verifierd.log" >&2
  fail "fde-verifierd did not start"
}
stop_verifier() {
  if [ -n "$daemon_pid" ]; then
    kill "$daemon_pid" 2>/dev/null || true
    wait "$daemon_pid" 2>/dev/null || true
    daemon_pid=
  fi
}
adm() { "$admin" --socket "$work/admin.sock" "$@"; }

# extract_dump LOG NAME FILE: cuts the "fde-sim-dump: NAME" blob (the agent's sim platform
# with `dump`) out of a serial console or agent log into FILE; checks size and sha256.
extract_dump() {
  python3 - "$1" "$2" "$3" <<'EOF'
import base64, hashlib, re, sys
serial, name, out = sys.argv[1:]
text = open(serial, 'rb').read().decode('latin-1')
begin = [m for m in re.finditer(r'fde-sim-dump: %s begin (\d+) ([0-9a-f]{64})' % re.escape(name), text)]
if not begin:
    sys.exit('no dump of %s' % name)
m = begin[-1]
size, digest = int(m.group(1)), m.group(2)
chunks = re.findall(r'fde-sim-dump: %s data ([A-Za-z0-9+/=]+)\r?$' % re.escape(name), text[m.end():].split('fde-sim-dump: %s end' % name)[0], re.M)
data = base64.b64decode(''.join(chunks))
if len(data) != size or hashlib.sha256(data).hexdigest() != digest:
    sys.exit('%s: the dump does not match its size/sha256 (console interleaving?)' % name)
open(out, 'wb').write(data)
EOF
}

# e2e_artifacts ARCH SRC DESCRIPTION: FDE_E2E_ARTIFACTS (artifacts) receives SRC's files in
# ARCH/ (x86_64 or aarch64), and one README.txt for both architectures.
e2e_artifacts() {
  local arch=$1 src=$2 what=$3
  mkdir -p "$artifacts/$arch"
  rm -f "$artifacts/$arch"/*
  cp "$src"/* "$artifacts/$arch/"
  echo "$what" >"$artifacts/$arch/BOOT.txt"
  cat >"$artifacts/README.txt" <<'EOF'
Artifacts of the positive boots of the real-firmware tests (test/e2e/firmware_boot_test.sh
for x86_64/, firmware_boot_aarch64_test.sh for aarch64/; docs/firmware-boot-test.md). Each
directory holds the same files; BOOT.txt names the firmware, grub and kernel of that boot.
  tpm-event-log.bin   the firmware's raw TCG2 event log (PCR indices, SHA-1 and SHA-256 banks)
                      x86_64: as the guest read it from
                        /sys/kernel/security/tpm0/binary_bios_measurements
                      aarch64: read from guest memory over QMP (the EFI tables the kernel
                        names TPMEventLog and TPMFinalLog), rebuilt as the kernel would
  tpm-event-log.txt   the same, decoded, with the host's replay against the PCRs
  pcrs-sha256.txt     the TPM's SHA-256 PCRs, "N hex" lines
                      x86_64: read in the guest (/sys/class/tpm/tpm0/pcr-sha256/N)
                      aarch64: read from the swtpm after QEMU stopped (TPM2_PCR_Read)
  ccel-event-log.bin  the CCEL log the simulated TMM made of it (MR indices, SHA-256 only),
                      which the agent sent to the verifier
  ccel-event-log.txt  the same, decoded, with its REM replay
  token.cbor          the last attestation token the simulated TMM signed (REMs = the replay
                      of the CCEL log)
  reference-values.json  what fde-image computed from the image alone (--reference-out)
  grub.cfg            the grub.cfg on the output image's ESP (what grub ran): x86_64
                      EFI/debian/grub.cfg, aarch64 EFI/BOOT/grub.cfg
EOF
}

# The plain disk of a firmware boot, as a qcow2: GPT with fixed disk and partition GUIDs (so
# PCR 5 is the same on every run), an ESP holding the listed files, an ext4 /boot made from
# $work/boot and an ext4 root from $work/root. Reads the caller's esp_mib, boot_mib,
# root_mib, disk_guid, esp_guid, boot_guid, root_guid, esp_volume_id, boot_uuid and
# root_uuid; sets esp_start, boot_start and root_start (sectors).
# Usage: e2e_gpt_disk ROOT_TYPE OUT.qcow2 [FILE ESP_PATH]...   (ROOT_TYPE: an sgdisk type code)
e2e_gpt_disk() {
  local root_type=$1 out=$2
  shift 2
  export MTOOLS_SKIP_CHECK=1
  truncate -s "${esp_mib}M" "$work/esp.fat"
  mkfs.vfat -F 32 -i "$esp_volume_id" -n ESP "$work/esp.fat" >/dev/null
  while [ $# -gt 0 ]; do
    local file=$1 path=$2 dir= part
    shift 2
    local IFS=/
    for part in ${path%/*}; do
      [ -n "$part" ] || continue
      dir=$dir/$part
      mmd -i "$work/esp.fat" "::$dir" 2>/dev/null || true
    done
    unset IFS
    mcopy -i "$work/esp.fat" "$file" "::$path"
  done
  esp_start=2048 boot_start=$((2048 + esp_mib * 2048)) root_start=$((2048 + (esp_mib + boot_mib) * 2048))
  truncate -s $((1 + esp_mib + boot_mib + root_mib + 1))M "$work/disk.raw"
  # No -q: gdisk 1.0.9 then exits 0 without writing the partitions.
  sgdisk -U "$disk_guid" \
    -n 1:$esp_start:+${esp_mib}M -t 1:ef00 -c 1:ESP -u 1:$esp_guid \
    -n 2:$boot_start:+${boot_mib}M -t 2:8300 -c 2:boot -u 2:$boot_guid \
    -n 3:$root_start:+${root_mib}M -t 3:$root_type -c 3:root -u 3:$root_guid "$work/disk.raw" >/dev/null
  dd if="$work/esp.fat" of="$work/disk.raw" bs=1M seek=1 conv=notrunc status=none
  rm -f "$work/esp.fat"
  mke2fs -q -t ext4 -L boot -U "$boot_uuid" -d "$work/boot" -E offset=$((boot_start * 512)) "$work/disk.raw" "${boot_mib}M"
  mke2fs -q -t ext4 -b 4096 -L root -U "$root_uuid" -d "$work/root" -E offset=$((root_start * 512)) \
    "$work/disk.raw" "${root_mib}M"
  qemu-img convert -f raw -O qcow2 "$work/disk.raw" "$out"
  rm -f "$work/disk.raw"
  note "plain image: $(stat -c %s "$out") bytes (qcow2)"
}
