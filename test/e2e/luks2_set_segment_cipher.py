#!/usr/bin/env python3
"""Plays a hostile host for the end-to-end test: rewrites the data segment's cipher in both
LUKS2 headers of a volume inside a disk image and recomputes their checksums, so that
cryptsetup accepts the header. The keyslots are untouched, so the genuine key still opens
them; only the agent's own header checks stand between this header and a mapping with the
host's choice of cipher (with cipher_null, a plaintext root the host wrote).

usage: luks2_set_segment_cipher.py IMAGE OFFSET CIPHER
  IMAGE   raw disk image, changed in place
  OFFSET  byte offset of the LUKS2 volume (its partition) in IMAGE
  CIPHER  the new segment encryption, e.g. cipher_null-ecb
"""
import hashlib
import json
import struct
import sys

BINARY_HEADER = 4096
CSUM_OFFSET, CSUM_SIZE = 448, 64  # LUKS2 on-disk format: checksum field of the binary header


def rewrite(disk, volume_offset, header_offset, cipher):
    disk.seek(volume_offset + header_offset)
    binary = bytearray(disk.read(BINARY_HEADER))
    if binary[:6] not in (b"LUKS\xba\xbe", b"SKUL\xba\xbe"):
        raise SystemExit(f"no LUKS2 header at {header_offset}")
    (hdr_size,) = struct.unpack(">Q", binary[8:16])
    csum_alg = binary[72:104].rstrip(b"\0").decode()
    if csum_alg != "sha256":
        raise SystemExit(f"checksum algorithm {csum_alg} is not handled")
    json_area = bytearray(disk.read(hdr_size - BINARY_HEADER))
    metadata = json.loads(json_area.rstrip(b"\0").decode())
    for segment in metadata["segments"].values():
        segment["encryption"] = cipher
    text = json.dumps(metadata, separators=(",", ":")).encode()
    if len(text) >= len(json_area):
        raise SystemExit("the rewritten metadata does not fit the JSON area")
    json_area[:] = text + b"\0" * (len(json_area) - len(text))
    binary[CSUM_OFFSET:CSUM_OFFSET + CSUM_SIZE] = b"\0" * CSUM_SIZE
    digest = hashlib.sha256(bytes(binary) + bytes(json_area)).digest()
    binary[CSUM_OFFSET:CSUM_OFFSET + len(digest)] = digest
    disk.seek(volume_offset + header_offset)
    disk.write(bytes(binary) + bytes(json_area))
    return hdr_size


def main():
    if len(sys.argv) != 4:
        raise SystemExit(__doc__)
    image, offset, cipher = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    with open(image, "r+b") as disk:
        hdr_size = rewrite(disk, offset, 0, cipher)  # primary header
        rewrite(disk, offset, hdr_size, cipher)      # secondary header follows it


if __name__ == "__main__":
    main()
