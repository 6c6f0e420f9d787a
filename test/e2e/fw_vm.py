#!/usr/bin/env python3
"""One QEMU boot with real firmware for the firmware e2e tests (firmware_boot_test.sh,
firmware_boot_aarch64_test.sh).

x86_64: OVMF (Secure Boot build, SMM, secure pflash) with a private copy of a VARS file, a
fresh swtpm (TPM 2.0) that OVMF and grub measure into, the disk, QEMU user networking with
restrict=on and one guestfwd to the verifier on 127.0.0.1, and fw_cfg entries opt/fde/* for
the agent's simulated TMM.
aarch64 (--arch aarch64): the `virt` machine with AAVMF (Secure Boot off), the swtpm behind
QEMU's tpm-tis-device, the disk, and no network.
The serial console goes to --serial. Hard timeout: QEMU and swtpm are killed. Optionally
drives grub's menu editor on the serial console to append a file to the `initrd` line
(grub's default console terminal, one key at a time, waiting for each redraw).

--capture DIR takes the firmware's TPM event log and the TPM's PCRs from outside the guest,
for a guest kernel without a TPM driver (Debian's arm64 kernel has no tpm_tis): once the
guest prints --capture-marker, the log is read from guest memory over QMP (pmemsave of the
LINUX_EFI_TPM_EVENT_LOG and EFI_TCG2_FINAL_EVENTS tables whose addresses the kernel printed
as "TPMEventLog=" and "TPMFinalLog="), rebuilt as the kernel's binary_bios_measurements
would be (DIR/tpm-event-log.bin); then QEMU is killed (so it cannot shut the TPM down) and
the SHA-256 PCRs are read from the still running swtpm through its control channel
(DIR/pcrs-sha256.txt, "N hex" lines).

Prints one line of JSON: {"status": "poweroff"|"captured"|"timeout"|"error", "seconds": ...,
"unlock_seconds": ... or null, "edited": true/false}. Exit status 0 on power-off or capture,
1 otherwise.
"""
import argparse
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time

OVMF_CODE = '/usr/share/OVMF/OVMF_CODE_4M.ms.fd'
AAVMF_CODE = '/usr/share/AAVMF/AAVMF_CODE.fd'

ap = argparse.ArgumentParser()
ap.add_argument('--arch', choices=['x86_64', 'aarch64'], default='x86_64')
ap.add_argument('--disk', required=True, help='QEMU -drive file=...,format=... (booted with snapshot=on)')
ap.add_argument('--vars', required=True, help='the VARS file QEMU boots with (written by the firmware)')
ap.add_argument('--tpm-dir', required=True, help='a new directory for the swtpm state')
ap.add_argument('--serial', required=True)
ap.add_argument('--port', type=int, help='verifier port on 127.0.0.1 (guest: 10.0.2.100:PORT)')
ap.add_argument('--fw-cfg', action='append', default=[], help='NAME=FILE, becomes opt/fde/NAME')
ap.add_argument('--timeout', type=float, default=180)
ap.add_argument('--memory', default='1024')
ap.add_argument('--edit-initrd', help='append this text to the initrd line in grub\'s editor')
ap.add_argument('--edit-down', type=int, default=0, help='Ctrl-N presses to reach the initrd line')
ap.add_argument('--nic-rom', default='', help='option ROM of the NIC (default none)')
ap.add_argument('--unlock-marker', default='fde-agent: unlocked')
ap.add_argument('--capture', help='directory for the TPM log and PCRs read from outside the guest')
ap.add_argument('--capture-marker', default='e2e-init: waiting for the host')
a = ap.parse_args()

shutil.rmtree(a.tpm_dir, ignore_errors=True)
os.makedirs(a.tpm_dir)
sock = os.path.join(a.tpm_dir, 'swtpm.sock')
# Only the SHA-1 and SHA-256 banks active: a smaller log, and still a second bank for the
# TMM's conversion to drop.
subprocess.run(['swtpm_setup', '--tpm2', '--tpmstate', a.tpm_dir, '--pcr-banks', 'sha1,sha256'],
               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
# With --capture the TPM outlives QEMU (no --terminate), so its PCRs can be read afterwards.
swtpm = subprocess.Popen(['swtpm', 'socket', '--tpm2', '--tpmstate', 'dir=' + a.tpm_dir,
                          '--ctrl', 'type=unixio,path=' + sock] + ([] if a.capture else ['--terminate']) +
                         ['--log', 'file=%s/swtpm.log,level=1' % a.tpm_dir],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
for _ in range(200):
    if os.path.exists(sock):
        break
    time.sleep(0.05)
else:
    swtpm.kill()
    print(json.dumps({'status': 'error', 'error': 'swtpm socket did not appear'}))
    sys.exit(1)

common = ['-m', a.memory, '-smp', '1', '-nodefaults', '-display', 'none', '-serial', 'stdio', '-no-reboot',
          '-chardev', 'socket,id=chrtpm,path=' + sock, '-tpmdev', 'emulator,id=tpm0,chardev=chrtpm']
qmp_sock = os.path.join(a.tpm_dir, 'qmp.sock')
if a.arch == 'x86_64':
    net = 'user,id=n0,restrict=on'
    if a.port:
        net += ',guestfwd=tcp:10.0.2.100:%d-cmd:socat -lf /dev/null - TCP:127.0.0.1:%d' % (a.port, a.port)
    cmd = ['qemu-system-x86_64', '-machine', 'q35,smm=on', '-global', 'driver=cfi.pflash01,property=secure,value=on',
           '-drive', 'if=pflash,format=raw,unit=0,readonly=on,file=' + OVMF_CODE,
           '-drive', 'if=pflash,format=raw,unit=1,file=' + a.vars,
           '-device', 'tpm-tis,tpmdev=tpm0',
           '-drive', a.disk + ',if=virtio,snapshot=on',
           # No option ROM: OVMF would load and measure iPXE as a driver.
           '-netdev', net, '-device', 'virtio-net-pci,netdev=n0,romfile=' + a.nic_rom] + common
else:
    # pauth-impdef: QEMU's cheaper pointer-authentication algorithm; the architected one
    # makes the kernel about three times slower under TCG.
    cmd = ['qemu-system-aarch64', '-machine', 'virt', '-cpu', 'max,pauth-impdef=on',
           '-drive', 'if=pflash,format=raw,unit=0,readonly=on,file=' + AAVMF_CODE,
           '-drive', 'if=pflash,format=raw,unit=1,file=' + a.vars,
           '-device', 'tpm-tis-device,tpmdev=tpm0',
           '-drive', a.disk + ',if=virtio,snapshot=on'] + common
if a.capture:
    cmd += ['-qmp', 'unix:%s,server=on,wait=off' % qmp_sock]
else:
    cmd += ['-monitor', 'none']
for entry in a.fw_cfg:
    name, path = entry.split('=', 1)
    cmd += ['-fw_cfg', 'name=opt/fde/%s,file=%s' % (name, path)]

t0 = time.monotonic()
q = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
state = {'buf': b'', 'last': time.monotonic(), 'unlock': None}
lock = threading.Lock()
serial = open(a.serial, 'wb')
marker = a.unlock_marker.encode()


def reader():
    fd = q.stdout.fileno()
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        serial.write(chunk)
        serial.flush()
        with lock:
            state['buf'] += chunk
            state['last'] = time.monotonic()
            if state['unlock'] is None and marker in state['buf'][-len(chunk) - len(marker):]:
                state['unlock'] = time.monotonic() - t0


th = threading.Thread(target=reader, daemon=True)
th.start()
deadline = t0 + a.timeout


def wait_for(rx, since=0):
    while time.monotonic() < deadline and q.poll() is None:
        with lock:
            if re.search(rx, state['buf'][since:]):
                return True
        time.sleep(0.05)
    return False


def wait_quiet(quiet):
    while time.monotonic() < deadline and q.poll() is None:
        with lock:
            if time.monotonic() - state['last'] >= quiet:
                return
        time.sleep(0.05)


def key(b, quiet=0.3):
    q.stdin.write(b)
    q.stdin.flush()
    time.sleep(0.05)
    wait_quiet(quiet)


edited = False
if a.edit_initrd:
    if wait_for(rb'automatically in'):
        wait_quiet(0.5)
        mark = len(state['buf'])
        key(b'e')
        if wait_for(rb'Minimum Emacs-like screen editing', mark):
            wait_quiet(1.0)
            for _ in range(a.edit_down):
                key(b'\x0e')
            key(b'\x05')
            for ch in a.edit_initrd.encode():
                key(bytes([ch]), 0.2)
            wait_quiet(0.5)
            key(b'\x18', 0.5)  # Ctrl-X: boot the edited entry
            edited = True

def qmp_pmemsave(address, size, path):
    """Guest physical memory [address, address+size) into path, over QMP."""
    with socket.socket(socket.AF_UNIX) as c:
        c.connect(qmp_sock)
        f = c.makefile('rwb')

        def call(command, **arguments):
            f.write(json.dumps({'execute': command, 'arguments': arguments}).encode() + b'\n')
            f.flush()
            while True:
                reply = json.loads(f.readline())
                if 'return' in reply:
                    return reply['return']
                if 'error' in reply:
                    raise RuntimeError('QMP %s: %s' % (command, reply['error']))

        json.loads(f.readline())  # the greeting
        call('qmp_capabilities')
        call('pmemsave', val=address, size=size, filename=path)
    with open(path, 'rb') as dump:
        data = dump.read()
    os.unlink(path)
    if len(data) != size:
        raise RuntimeError('pmemsave gave %d of %d bytes' % (len(data), size))
    return data


DIGEST_SIZES = {0x4: 20, 0xB: 32, 0xC: 48, 0xD: 64, 0x12: 32}


def records_end(buf, off, count, sizes):
    """The offset after `count` TCG_PCR_EVENT2 records starting at off."""
    for _ in range(count):
        n = struct.unpack_from('<I', buf, off + 8)[0]
        o = off + 12
        for _ in range(n):
            o += 2 + sizes[struct.unpack_from('<H', buf, o)[0]]
        off = o + 4 + struct.unpack_from('<I', buf, o)[0]
    return off


def capture_log(text):
    """The kernel's view of the firmware log (drivers/char/tpm/eventlog/efi.c): the
    LINUX_EFI_TPM_EVENT_LOG table's log, then the final-events records logged after the EFI
    stub fetched it."""
    found = {k: int(v, 16) for k, v in re.findall(r'(TPMEventLog|TPMFinalLog)=0x([0-9a-fA-F]+)', text)}
    if 'TPMEventLog' not in found or 'TPMFinalLog' not in found:
        raise RuntimeError('the kernel printed no TPMEventLog=/TPMFinalLog= address')
    scratch = os.path.join(a.capture, 'pmem.tmp')
    size, preboot, version = struct.unpack('<IIB', qmp_pmemsave(found['TPMEventLog'], 9, scratch))
    if version != 2 or not 0 < size <= 1 << 20:
        raise RuntimeError('TPMEventLog: version %d, size %d' % (version, size))
    log = qmp_pmemsave(found['TPMEventLog'] + 9, size, scratch)
    spec = 32 + struct.unpack_from('<I', log, 28)[0]
    count = struct.unpack_from('<I', log, 32 + 24)[0]
    sizes = dict(struct.unpack_from('<HH', log, 32 + 28 + 4 * i) for i in range(count))
    assert spec <= size
    final = qmp_pmemsave(found['TPMFinalLog'], 64 * 1024, scratch)
    _, nr_events = struct.unpack_from('<QQ', final)
    end = records_end(final, 16, nr_events, sizes)
    return log + final[16 + preboot:end]


def read_pcrs():
    """PCR 0..23 (SHA-256 bank) from the swtpm, over a data channel of our own handed to it
    through its control channel (CMD_SET_DATAFD), with TPM2_PCR_Read."""
    lines = []
    with socket.socket(socket.AF_UNIX) as ctrl:
        ctrl.connect(sock)
        mine, theirs = socket.socketpair()
        socket.send_fds(ctrl, [struct.pack('>I', 16)], [theirs.fileno()])  # CMD_SET_DATAFD
        theirs.close()
        if ctrl.recv(4) != bytes(4):
            raise RuntimeError('swtpm refused CMD_SET_DATAFD')
        with mine:
            for pcr in range(24):
                select = bytearray(3)
                select[pcr // 8] |= 1 << (pcr % 8)
                body = struct.pack('>IHB', 1, 0x000B, 3) + bytes(select)
                mine.sendall(struct.pack('>HII', 0x8001, 10 + len(body), 0x17E) + body)
                reply = mine.recv(4096)
                _, _, rc = struct.unpack_from('>HII', reply)
                # header, update counter, the selection echoed (1 x sha256, 3 bytes), digest count
                at = 10 + 4 + 4 + 2 + 1 + 3
                if rc != 0 or struct.unpack_from('>I', reply, at)[0] != 1:
                    raise RuntimeError('TPM2_PCR_Read(%d): rc 0x%x' % (pcr, rc))
                n = struct.unpack_from('>H', reply, at + 4)[0]
                lines.append('%d %s\n' % (pcr, reply[at + 6:at + 6 + n].hex()))
    return ''.join(lines)


status = 'poweroff'
captured_error = None
if a.capture:
    os.makedirs(a.capture, exist_ok=True)
    if wait_for(re.escape(a.capture_marker).encode()):
        try:
            with lock:
                text = state['buf'].decode('latin-1')
            with open(os.path.join(a.capture, 'tpm-event-log.bin'), 'wb') as out:
                out.write(capture_log(text))
            q.kill()  # before QEMU could send the TPM CMD_SHUTDOWN
            q.wait()
            with open(os.path.join(a.capture, 'pcrs-sha256.txt'), 'w') as out:
                out.write(read_pcrs())
            status = 'captured'
        except (OSError, RuntimeError, struct.error, ValueError) as e:
            captured_error = str(e)
            status = 'error'
            q.kill()
        swtpm.terminate()
while q.poll() is None:
    if time.monotonic() > deadline:
        status = 'timeout'
        q.kill()
        break
    time.sleep(0.2)
q.wait()
th.join(timeout=5)
if a.capture and swtpm.poll() is None:
    swtpm.terminate()  # without --terminate it would outlive QEMU (no capture, or a timeout)
seconds = time.monotonic() - t0
if swtpm.poll() is None:
    try:
        swtpm.wait(timeout=5)
    except subprocess.TimeoutExpired:
        swtpm.kill()
        swtpm.wait()
serial.close()
result = {'status': status, 'seconds': round(seconds, 1),
          'unlock_seconds': None if state['unlock'] is None else round(state['unlock'], 1),
          'edited': edited, 'qemu_exit': q.returncode}
if captured_error:
    result['error'] = captured_error
print(json.dumps(result))
sys.exit(0 if status in ('poweroff', 'captured') else 1)
