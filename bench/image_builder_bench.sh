#!/bin/bash
# Benchmark: fde-image build on a multi-GiB synthetic CVM image, next to `qemu-img convert`
# of the same image in the same run, plus input vs output allocated sizes.
# usage: bench/image_builder_bench.sh [FDE_IMAGE_BINARY] [SIZE_GIB (default 4)] [FILL_MIB (default 1024)]
set -euo pipefail
bin=$(realpath "${1:-build/image-builder/fde-image}")
size_gib=${2:-4}
fill_mib=${3:-1024}
work=$(mktemp -d "${TMPDIR:-/tmp}/fde-image-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT
cd "$work"
root_mib=$((size_gib * 1024 - 64))
truncate -s "${size_gib}G" disk.raw
sgdisk -n1:2048:+32M -t1:8300 -n2:0:+${root_mib}M -t2:8300 disk.raw >/dev/null
mkdir -p boot/grub root/etc root/data
head -c 300000 /dev/urandom | gzip -c > boot/vmlinuz-6.1.0-bench
echo x | gzip -c > boot/initrd.img-6.1.0-bench
printf 'menuentry x {\n linux /vmlinuz-6.1.0-bench root=UUID=abc ro\n}\n' > boot/grub/grub.cfg
echo "UUID=abc / ext4 defaults 0 1" > root/etc/fstab
for i in $(seq 1 $((fill_mib / 64))); do head -c 64M /dev/urandom > root/data/f$i; done
mke2fs -q -t ext4 -L boot -d boot -E offset=1048576 disk.raw 32M
root_start=$(sgdisk -i 2 disk.raw | awk '/First sector/{print $3}')
mke2fs -q -t ext4 -b 4096 -d root -E offset=$((root_start * 512)) disk.raw ${root_mib}M
qemu-img convert -O qcow2 disk.raw in.qcow2
rm -rf boot root disk.raw
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem -subj /CN=b -days 1 2>/dev/null

t0=$(date +%s.%N)
qemu-img convert -f qcow2 -O qcow2 -S 4k in.qcow2 copy.qcow2
t1=$(date +%s.%N)
"$bin" build --input in.qcow2 --output out.qcow2 --image-id bench --verifier https://v.example \
  --verifier-ca ca.pem --grub-efi-digest "$(printf x | sha256sum | cut -c1-64)" --rim "$(printf y | sha256sum | cut -c1-64)" --no-agent --quiet >/dev/null
t2=$(date +%s.%N)
alloc() { du -B1 "$1" | cut -f1; }
printf 'image: %s GiB virtual, %s MiB of file data in the root filesystem\n' "$size_gib" "$fill_mib"
printf 'qemu-img convert qcow2->qcow2: %6.2f s\n' "$(echo "$t1 - $t0" | bc)"
printf 'fde-image build:               %6.2f s\n' "$(echo "$t2 - $t1" | bc)"
printf 'allocated: input %s MiB, qemu-img copy %s MiB, fde-image output %s MiB\n' \
  $(( $(alloc in.qcow2) >> 20 )) $(( $(alloc copy.qcow2) >> 20 )) $(( $(alloc out.qcow2) >> 20 ))
