#!/bin/bash
# fde-image build on an image with holes and with free blocks that still hold data (a file
# written, then deleted): the output carries ciphertext only for the blocks the filesystem
# relies on, so it is no larger than the input's data, and after unlocking it with the real
# cryptsetup (a loop device on the output's root partition) e2fsck finds the filesystem clean
# and the files read back as they were.
# usage: image_builder_sparse_test.sh FDE_IMAGE_BINARY
# Needs root, loop devices and device-mapper; exits 77 (skipped) without them.
set -euo pipefail
bin=$(realpath "$1")
if [ "$(id -u)" != 0 ] || ! dmsetup version >/dev/null 2>&1 || ! losetup -f >/dev/null 2>&1 || ! command -v cryptsetup >/dev/null; then
  echo "SKIP: needs root, a free loop device, device-mapper and cryptsetup"
  exit 77
fi
work=$(mktemp -d /tmp/fde-image-sparse.XXXXXX)
name="fde-sparse-$$"
loop=""
cleanup() {
  [ -e "/dev/mapper/$name" ] && cryptsetup close "$name" || true
  [ -n "$loop" ] && losetup -d "$loop" || true
  rm -rf "$work"
}
trap cleanup EXIT
cd "$work"
fail() { echo "FAIL: $*" >&2; exit 1; }

truncate -s 1G disk.raw
sgdisk -n1:2048:+32M -t1:8300 -n2:0:+960M -t2:8300 disk.raw >/dev/null
root_start=$(sgdisk -i 2 disk.raw | awk '/First sector/{print $3}')
mkdir -p boot/grub root/etc root/data
head -c 300000 /dev/urandom | gzip -c > boot/vmlinuz-6.1.0-sparse
echo x | gzip -c > boot/initrd.img-6.1.0-sparse
printf 'menuentry x {\n linux /vmlinuz-6.1.0-sparse root=UUID=abc ro\n}\n' > boot/grub/grub.cfg
echo "UUID=abc / ext4 defaults 0 1" > root/etc/fstab
head -c 24M /dev/urandom > root/data/kept
# A sparse file: 2 MiB of data inside 300 MiB of holes.
truncate -s 300M root/data/sparse
head -c 2M /dev/urandom | dd of=root/data/sparse bs=1M seek=150 conv=notrunc status=none
head -c 96M /dev/urandom > root/data/junk
mke2fs -q -t ext4 -L boot -d boot -E offset=1048576 disk.raw 32M
mke2fs -q -t ext4 -b 4096 -L sparse-root -d root root.img 960M
# Deleted: its 96 MiB stay in the image as data in free blocks.
debugfs -w -R "rm /data/junk" root.img >/dev/null 2>&1
dd if=root.img of=disk.raw bs=512 seek="$root_start" conv=sparse,notrunc status=none
qemu-img convert -O qcow2 disk.raw in.qcow2
sha_kept=$(sha256sum < root/data/kept | cut -c1-64)
sha_sparse=$(sha256sum < root/data/sparse | cut -c1-64)
rm -rf boot root root.img disk.raw
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem -subj /CN=t -days 1 2>/dev/null

"$bin" build --input in.qcow2 --output out.qcow2 --image-id sparse --verifier https://v.example \
  --verifier-ca ca.pem --grub-efi-digest "$(printf x | sha256sum | cut -c1-64)" \
  --rim "$(printf y | sha256sum | cut -c1-64)" --no-agent --quiet >/dev/null
qemu-img check -q out.qcow2 || fail "qemu-img check found errors in the output"

in_b=$(du -B1 in.qcow2 | cut -f1)
out_b=$(du -B1 out.qcow2 | cut -f1)
echo "allocated: input $in_b B, output $out_b B"
# The input holds ~122 MiB (the deleted file included); the output the 26 MiB of live data,
# the filesystem's metadata and the LUKS2 keyslots.
[ "$out_b" -lt $((in_b - 64 * 1024 * 1024)) ] || fail "the output ($out_b B) carries the free blocks of the input ($in_b B)"

python3 -c 'import json,base64,sys; sys.stdout.buffer.write(base64.b64decode(json.load(open("out.qcow2.enrollment.json"))["disk_key"]))' > key.bin
qemu-img convert -f qcow2 -O raw out.qcow2 out.raw
out_root_start=$(sgdisk -i 2 out.raw | awk '/First sector/{print $3}')
out_root_end=$(sgdisk -i 2 out.raw | awk '/Last sector/{print $3}')
loop=$(losetup -r -f --show --offset $((out_root_start * 512)) \
  --sizelimit $(((out_root_end - out_root_start + 1) * 512)) out.raw)
cryptsetup open --readonly --key-file key.bin "$loop" "$name"
e2fsck -fn "/dev/mapper/$name" || fail "e2fsck of the unlocked root is not clean"
[ "$(debugfs -R "cat /data/kept" "/dev/mapper/$name" 2>/dev/null | sha256sum | cut -c1-64)" = "$sha_kept" ] ||
  fail "/data/kept differs after decryption"
[ "$(debugfs -R "cat /data/sparse" "/dev/mapper/$name" 2>/dev/null | sha256sum | cut -c1-64)" = "$sha_sparse" ] ||
  fail "/data/sparse differs after decryption"
echo "PASS"
