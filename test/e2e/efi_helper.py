#!/usr/bin/env python3
"""Helpers for the efi-driver scenario of firmware_boot_test.sh, without root.

  efi_helper.py load-option --description D --esp-guid G --esp-start N --esp-sectors N --path P
      writes an efivarfs Driver#### file to stdout: attributes NV|BS|RT (u32), then an
      EFI_LOAD_OPTION (active) whose device path is HD(1,GPT,G,N,S)/P (UEFI 2.x 3.1.3, 10.3.5)
  efi_helper.py initramfs --out FILE NAME=SOURCE[:MODE]...
      writes a newc cpio with the files, their parent directories and a /dev/console node
      (which needs no mknod: the node is only a cpio header)
"""
import argparse
import os
import struct
import sys
import uuid


def load_option(a):
    hd = struct.pack('<BBH', 4, 1, 42) + struct.pack('<IQQ', 1, a.esp_start, a.esp_sectors) + \
        uuid.UUID(a.esp_guid).bytes_le + bytes([2, 2])
    path = (a.path + '\0').encode('utf-16-le')
    fp = struct.pack('<BBH', 4, 4, 4 + len(path)) + path
    end = bytes([0x7F, 0xFF, 4, 0])
    dp = hd + fp + end
    desc = (a.description + '\0').encode('utf-16-le')
    option = struct.pack('<IH', 1, len(dp)) + desc + dp
    sys.stdout.buffer.write(struct.pack('<I', 7) + option)


def initramfs(a):
    entries = {}  # name -> (mode, data, rdev)
    for spec in a.files:
        name, source = spec.split('=', 1)
        mode = 0o644
        if ':' in source:
            source, m = source.rsplit(':', 1)
            mode = int(m, 8)
        parts = name.strip('/').split('/')
        for i in range(1, len(parts)):
            entries.setdefault('/'.join(parts[:i]), (0o040755, b'', 0))
        entries[name.strip('/')] = (0o100000 | mode, open(source, 'rb').read(), 0)
    entries.setdefault('dev', (0o040755, b'', 0))
    entries['dev/console'] = (0o020600, b'', (5, 1))
    out = bytearray()

    def add(name, mode, data, rdev, ino):
        nb = name.encode() + b'\0'
        rmaj, rmin = rdev if rdev else (0, 0)
        hdr = '070701' + ''.join('%08x' % v for v in (ino, mode, 0, 0, 1, 0, len(data), 0, 0, rmaj, rmin, len(nb), 0))
        out.extend(hdr.encode() + nb)
        out.extend(b'\0' * (-len(out) % 4))
        out.extend(data)
        out.extend(b'\0' * (-len(out) % 4))

    for ino, name in enumerate(sorted(entries), 1):
        mode, data, rdev = entries[name]
        add(name, mode, data, rdev, ino)
    add('TRAILER!!!', 0, b'', 0, 0)
    open(a.out, 'wb').write(out)


ap = argparse.ArgumentParser()
sub = ap.add_subparsers(dest='cmd', required=True)
lo = sub.add_parser('load-option')
lo.add_argument('--description', required=True)
lo.add_argument('--esp-guid', required=True)
lo.add_argument('--esp-start', type=int, required=True)
lo.add_argument('--esp-sectors', type=int, required=True)
lo.add_argument('--path', required=True)
ir = sub.add_parser('initramfs')
ir.add_argument('--out', required=True)
ir.add_argument('files', nargs='+')
a = ap.parse_args()
load_option(a) if a.cmd == 'load-option' else initramfs(a)
