#!/usr/bin/env python3
"""Decodes a TCG2 crypto-agile event log (a TPM log with PCR indices, or a CCEL log with MR
indices: --mr) into one line per event: index, PCR/MR, type, SHA-256 digest prefix, and
what the data says. --pcrs FILE ("N hex" lines) replays the SHA-256 bank per PCR and
prints MATCH/MISMATCH for every PCR the log extends; --mr prints the REM replay."""
import argparse
import hashlib
import struct
import uuid

TYPES = {0x0: 'EV_PREBOOT_CERT', 0x1: 'EV_POST_CODE', 0x3: 'EV_NO_ACTION', 0x4: 'EV_SEPARATOR', 0x5: 'EV_ACTION',
         0x6: 'EV_EVENT_TAG', 0x7: 'EV_S_CRTM_CONTENTS', 0x8: 'EV_S_CRTM_VERSION', 0xD: 'EV_IPL',
         0xE: 'EV_IPL_PARTITION_DATA', 0x80000001: 'EV_EFI_VARIABLE_DRIVER_CONFIG',
         0x80000002: 'EV_EFI_VARIABLE_BOOT', 0x80000003: 'EV_EFI_BOOT_SERVICES_APPLICATION',
         0x80000004: 'EV_EFI_BOOT_SERVICES_DRIVER', 0x80000005: 'EV_EFI_RUNTIME_SERVICES_DRIVER',
         0x80000006: 'EV_EFI_GPT_EVENT', 0x80000007: 'EV_EFI_ACTION', 0x80000008: 'EV_EFI_PLATFORM_FIRMWARE_BLOB',
         0x80000009: 'EV_EFI_HANDOFF_TABLES', 0x8000000A: 'EV_EFI_PLATFORM_FIRMWARE_BLOB2',
         0x8000000B: 'EV_EFI_HANDOFF_TABLES2', 0x800000E0: 'EV_EFI_VARIABLE_AUTHORITY'}
SIZES = {0x4: 20, 0xB: 32, 0xC: 48, 0xD: 64, 0x12: 32}


def devpath(b):
    out, i = [], 0
    while i + 4 <= len(b):
        t, s, n = b[i], b[i + 1], struct.unpack_from('<H', b, i + 2)[0]
        if n < 4:
            break
        body = b[i + 4:i + n]
        if t == 0x7F:
            break
        if t == 4 and s == 4:
            out.append(body.decode('utf-16-le', 'replace').rstrip('\0'))
        elif t == 4 and s == 1 and len(body) >= 38:
            part, start, size = struct.unpack_from('<IQQ', body)
            out.append('HD(%d,GPT,%s,0x%x,0x%x)' % (part, uuid.UUID(bytes_le=bytes(body[20:36])), start, size))
        elif t == 2 and s == 1:
            out.append('Acpi(%08x)' % struct.unpack_from('<I', body)[0])
        elif t == 1 and s == 1:
            out.append('Pci(0x%x,0x%x)' % (body[1], body[0]))
        elif t == 1 and s == 3:
            out.append('MemoryMapped(0x%x,0x%x,0x%x)' % struct.unpack_from('<IQQ', body))
        elif t == 4 and s == 6:
            out.append('FvFile(%s)' % uuid.UUID(bytes_le=bytes(body[:16])))
        elif t == 4 and s == 7:
            out.append('Fv(%s)' % uuid.UUID(bytes_le=bytes(body[:16])))
        else:
            out.append('node(%d,%d)' % (t, s))
        i += n
    return '/'.join(out)


def describe(etype, data):
    try:
        if etype in (0xD, 0x80000007, 0x5, 0x8):
            t = data.rstrip(b'\0')
            if etype == 0x8:
                return 'crtm ' + data.decode('utf-16-le', 'replace').rstrip('\0')
            return repr(t.decode('utf-8', 'replace'))[:160]
        if etype == 0x4:
            return 'sep ' + data.hex()
        if etype in (0x80000003, 0x80000004, 0x80000005):
            addr, length, link, dplen = struct.unpack_from('<QQQQ', data)
            return 'image len=%d path=%s' % (length, devpath(data[32:32 + dplen]))
        if etype in (0x80000001, 0x80000002, 0x800000E0):
            g = uuid.UUID(bytes_le=bytes(data[:16]))
            nlen, dlen = struct.unpack_from('<QQ', data, 16)
            name = data[32:32 + 2 * nlen].decode('utf-16-le', 'replace')
            vdata = data[32 + 2 * nlen:32 + 2 * nlen + dlen]
            extra = ''
            if etype == 0x80000002 and name.startswith(('Boot', 'Driver')) and name[-4:].isalnum() and 'Order' not in name:
                attr, fplen = struct.unpack_from('<IH', vdata)
                d = vdata[6:]
                end = 0
                while end + 1 < len(d) and d[end:end + 2] != b'\0\0':
                    end += 2
                extra = " desc=%r path=%s" % (d[:end].decode('utf-16-le', 'replace'), devpath(d[end + 2:end + 2 + fplen]))
            elif 'Order' in name:
                extra = ' order=' + ','.join('%04x' % v for v in struct.unpack('<%dH' % (len(vdata) // 2), vdata))
            elif len(vdata) <= 4:
                extra = ' data=' + vdata.hex()
            else:
                extra = ' datalen=%d' % len(vdata)
            return 'var %s %s%s' % (g, name, extra)
        if etype == 0x80000006:
            return 'gpt disk=%s' % uuid.UUID(bytes_le=bytes(data[56:72]))
        if etype in (0x80000008,):
            base, length = struct.unpack_from('<QQ', data)
            return 'blob base=0x%x len=0x%x' % (base, length)
        if etype == 0x8000000A:
            n = data[0]
            return 'blob2 %r' % data[1:1 + n].decode('ascii', 'replace')
        if etype == 0x3:
            return 'no-action ' + data[:24].rstrip(b'\0').decode('ascii', 'replace')
    except Exception as e:  # decoding is best effort; the digests are what counts
        return 'undecoded (%s) %s' % (e, data[:32].hex())
    return 'hex:' + data[:48].hex()


def parse(buf):
    pcr, etype = struct.unpack_from('<II', buf, 0)
    size = struct.unpack_from('<I', buf, 28)[0]
    spec = buf[32:32 + size]
    n = struct.unpack_from('<I', spec, 24)[0]
    algs = [struct.unpack_from('<HH', spec, 28 + 4 * i) for i in range(n)]
    off, events = 32 + size, []
    while off + 12 <= len(buf):
        pcr, etype, count = struct.unpack_from('<III', buf, off)
        if pcr == 0xFFFFFFFF:
            break
        o = off + 12
        digests = {}
        for _ in range(count):
            alg = struct.unpack_from('<H', buf, o)[0]
            digests[alg] = buf[o + 2:o + 2 + SIZES[alg]]
            o += 2 + SIZES[alg]
        dsize = struct.unpack_from('<I', buf, o)[0]
        events.append((pcr, etype, digests, buf[o + 4:o + 4 + dsize]))
        off = o + 4 + dsize
    return algs, events


ap = argparse.ArgumentParser()
ap.add_argument('log')
ap.add_argument('--pcrs')
ap.add_argument('--mr', action='store_true')
a = ap.parse_args()
buf = open(a.log, 'rb').read()
algs, events = parse(buf)
label = 'MR' if a.mr else 'PCR'
print('# %d bytes, %d events after the Spec ID event, banks: %s' % (
    len(buf), len(events), ', '.join('0x%04x(%d)' % x for x in algs)))
reg = {}
for i, (pcr, etype, digests, data) in enumerate(events):
    d = digests.get(0xB)
    print('%3d %-5s %-34s %s %s' % (i, '%s%d' % (label, pcr), TYPES.get(etype, hex(etype)),
                                     (d.hex()[:16] + '..') if d is not None and etype != 3 else '-' * 18,
                                     describe(etype, data)))
    if etype == 3 or d is None:
        if etype == 3 and data.startswith(b'StartupLocality\0'):
            reg[pcr] = bytes(31) + data[16:17]
        continue
    reg[pcr] = hashlib.sha256(reg.get(pcr, bytes(32)) + d).digest()
if a.pcrs:
    values = {}
    for line in open(a.pcrs):
        if line.strip():
            n, v = line.split()
            values[int(n)] = v.lower()
    print('# replay (sha256) vs the TPM')
    for p in sorted(reg):
        ok = values.get(p) == reg[p].hex()
        print('%s%-2d replay=%s tpm=%s %s' % (label, p, reg[p].hex()[:16], (values.get(p) or '-')[:16], 'MATCH' if ok else 'MISMATCH'))
if a.mr:
    print('# REM replay')
    for m in range(1, 5):
        print('REM[%d] (MR%d) = %s' % (m - 1, m, reg.get(m, bytes(32)).hex()))
