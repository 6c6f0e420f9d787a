#!/usr/bin/env bash
# Regenerates the seed corpora in seeds/ from real data (test/data/external's token and
# device certificate, images made by sgdisk, mkfs.vfat, qemu-img and cryptsetup). Run from
# anywhere; needs python3, gdisk, dosfstools, mtools, qemu-utils and cryptsetup. Crashing
# inputs found by fuzzing are kept beside these as seeds/<target>/crash-* (docs/fuzzing.md).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
data=$here/../data
seeds=$here/seeds
tmp=$(mktemp -d /tmp/fde-make-seeds-XXXXXX)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$seeds"/{fuzz_protocol_json,fuzz_http_request,fuzz_agent_config,fuzz_luks2_header,fuzz_gpt,fuzz_fat,fuzz_pe,fuzz_qcow2_header,fuzz_qcow2_image}

# Protocol bodies around the virtCCA token and AIK certificate secGear publishes.
python3 - "$data/external/virtcca-secgear" "$data/firmware-boot/aarch64/positive-tpm-event-log.bin" "$seeds" <<'PY'
import base64, json, sys, os
src, log, out = sys.argv[1], sys.argv[2], sys.argv[3]
b = lambda raw: base64.b64encode(raw).decode()
token = open(os.path.join(src, "virtcca.cbor"), "rb").read()
cert = open(os.path.join(src, "virtcca_aik_cert.der"), "rb").read()
event_log = open(log, "rb").read()
nonce = bytes(range(64))
bodies = {
  "challenge_request.json": {"image_id": "openeuler-2403-web"},
  "challenge_response.json": {"nonce": b(nonce), "expires_at": "2026-12-06T23:05:00Z"},
  "attest_request.json": {"image_id": "openeuler-2403-web", "nonce": b(nonce), "ephemeral_public": b(bytes(32)),
                          "token": b(token), "device_cert": b(cert), "event_log": b(event_log)},
  "attest_request_direct.json": {"image_id": "openeuler-2403-web", "nonce": b(nonce), "ephemeral_public": b(bytes(32)),
                                 "token": b(token), "device_cert": b(cert)},
  "attest_response.json": {"enc": b(bytes(range(32))), "sealed_key": b(bytes(80))},
  "error.json": {"error": "attestation_failed", "message": "attestation failed"},
}
for name, body in bodies.items():
  text = json.dumps(body, separators=(",", ":"))
  open(os.path.join(out, "fuzz_protocol_json", name), "w").write(text)
  target = "/v1/challenge" if name.startswith("challenge_request") else "/v1/attest"
  if name.startswith(("challenge_request", "attest_request")):
    request = (f"POST {target} HTTP/1.1\r\nHost: 192.0.2.10:8443\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(text)}\r\n\r\n{text}")
    open(os.path.join(out, "fuzz_http_request", name.replace(".json", ".http")), "w").write(request)
chunked = "POST /v1/challenge HTTP/1.1\r\nHost: v\r\nTransfer-Encoding: chunked\r\n\r\n1f\r\n" \
          '{"image_id":"openeuler-2403-we\r\n2\r\nb"}\r\n0\r\n\r\n'
open(os.path.join(out, "fuzz_http_request", "chunked.http"), "w").write(chunked)
open(os.path.join(out, "fuzz_http_request", "get.http"), "w").write("GET /healthz HTTP/1.1\r\nHost: v\r\n\r\n")
open(os.path.join(out, "fuzz_http_request", "keepalive.http"), "w").write(
    "POST /v1/challenge HTTP/1.0\r\nConnection: keep-alive\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n{}")
PY

# The agent's configuration as docs/fde-agent.md shows it, with a kernel command line.
cat > "$seeds/fuzz_agent_config/agent.conf" <<'CONF'
# /etc/fde/agent.conf
image_id = openeuler-2403-web
verifier = https://192.0.2.10:8443
verifier = https://[2001:db8::1]:8443, https://192.0.2.11
ca_file = /etc/fde/verifier-ca.pem
server_name = verifier.example
luks_uuid = 493500c5-ec0f-4ce7-8ccf-1ae6f2168f3e
luks_cipher = aes-xts-plain64
failure_policy = poweroff
attempt_timeout = 1.5s
overall_timeout = 5m
backoff_initial = 500ms
backoff_max = 30
released_key_check = 0c4f0c4f0c4f0c4f0c4f0c4f0c4f0c4f0c4f0c4f0c4f0c4f0c4f0c4f0c4f0c4f
volume_key_check = 9a7e9a7e9a7e9a7e9a7e9a7e9a7e9a7e9a7e9a7e9a7e9a7e9a7e9a7e9a7e9a7e

---cmdline---
BOOT_IMAGE=/vmlinuz root=/dev/mapper/root ro "fde.verifier=https://192.0.2.12:8443" fde.failure_policy=wait fde.image_id=x
CONF

# A LUKS2 header made by cryptsetup (first 64 KiB: both binary headers and JSON areas) and
# its JSON metadata as luksDump prints it.
truncate -s 20M "$tmp/luks.img"
printf 'seed-passphrase' | cryptsetup luksFormat --type luks2 --batch-mode --pbkdf pbkdf2 --pbkdf-force-iterations 1000 \
  --key-file - "$tmp/luks.img" >/dev/null
head -c 65536 "$tmp/luks.img" > "$seeds/fuzz_luks2_header/luks2-head.bin"
cryptsetup luksDump --dump-json-metadata "$tmp/luks.img" > "$seeds/fuzz_luks2_header/luks2-dump.json"

# Partition tables: GPT by sgdisk (entries through LBA 33), an MBR with an ESP.
truncate -s 8M "$tmp/gpt.img"
sgdisk -n 1:2048:+2M -t 1:ef00 -n 2:0:0 -t 2:8309 "$tmp/gpt.img" >/dev/null
head -c 17408 "$tmp/gpt.img" > "$seeds/fuzz_gpt/gpt.bin"
python3 - "$seeds/fuzz_gpt/mbr.bin" <<'PY'
import struct, sys
mbr = bytearray(512)
mbr[446:462] = bytes([0x80, 0, 0, 0, 0xEF, 0, 0, 0]) + struct.pack("<II", 2048, 4096)
mbr[462:478] = bytes([0, 0, 0, 0, 0x83, 0, 0, 0]) + struct.pack("<II", 6144, 8192)
mbr[510:512] = b"\x55\xaa"
open(sys.argv[1], "wb").write(mbr)
PY

# Small FAT12 ESPs (FAT16 and FAT32 need megabytes) with /EFI/BOOT/BOOTX64.EFI (the first
# bytes of a real EFI binary), one and four sectors per cluster.
pe=/usr/lib/shim/fbx64.efi.signed
for spc in 1 4; do
  rm -f "$tmp/esp.img"
  mkfs.vfat -C -F 12 -s "$spc" -n ESP "$tmp/esp.img" 64 >/dev/null
  export MTOOLS_SKIP_CHECK=1
  mmd -i "$tmp/esp.img" ::/EFI ::/EFI/BOOT ::/EFI/debian
  head -c 4096 "$pe" > "$tmp/BOOTX64.EFI"
  mcopy -i "$tmp/esp.img" "$tmp/BOOTX64.EFI" ::/EFI/BOOT/BOOTX64.EFI
  echo 'configfile $prefix/grub.cfg' > "$tmp/grub.cfg"
  mcopy -i "$tmp/esp.img" "$tmp/grub.cfg" ::/EFI/debian/grub.cfg
  cp "$tmp/esp.img" "$seeds/fuzz_fat/fat12-spc$spc.img"
done

# PE: the headers of a real signed EFI binary (the whole file is passed as a seed by CMake).
head -c 4096 "$pe" > "$seeds/fuzz_pe/fbx64-headers.bin"

# qcow2 headers: plain, with a backing file, with an external data file, v2.
cd "$tmp"
qemu-img create -q -f qcow2 plain.qcow2 64M
qemu-img create -q -f qcow2 -b plain.qcow2 -F qcow2 backed.qcow2
qemu-img create -q -f qcow2 -o data_file=data.raw external.qcow2 64M
qemu-img create -q -f qcow2 -o compat=0.10 v2.qcow2 64M
for f in plain backed external v2; do head -c 4096 "$f.qcow2" > "$seeds/fuzz_qcow2_header/$f.bin"; done

# Whole small qcow2 images for the reader (512-byte clusters keep them a few KiB): data,
# zero clusters and holes; deflate-compressed clusters; an empty 1 GiB disk.
qemu-img create -q -f qcow2 -o cluster_size=512 small.qcow2 64K
qemu-io -c 'write -P 0xab 0 1k' -c 'write -P 0x5c 8k 512' -c 'write -z 16k 1k' small.qcow2 >/dev/null
cp small.qcow2 "$seeds/fuzz_qcow2_image/plain.qcow2"
{ head -c 4096 /dev/urandom; printf 'a%.0s' $(seq 4400); } > mixed.raw
truncate -s 32K mixed.raw
qemu-img convert -q -c -f raw -O qcow2 -o cluster_size=512 mixed.raw "$seeds/fuzz_qcow2_image/compressed.qcow2"
qemu-img create -q -f qcow2 -o cluster_size=4096 "$seeds/fuzz_qcow2_image/empty.qcow2" 1G
echo "seeds written to $seeds"
