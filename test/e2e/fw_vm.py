#!/usr/bin/env python3
"""One QEMU boot with real firmware for the firmware e2e test (firmware_boot_test.sh).

OVMF (Secure Boot build, SMM, secure pflash) with a private copy of a VARS file, a fresh
swtpm (TPM 2.0) that OVMF and grub measure into, the disk, QEMU user networking with
restrict=on and one guestfwd to the verifier on 127.0.0.1, and fw_cfg entries opt/fde/* for
the agent's simulated TMM. The serial console goes to --serial. Hard timeout: QEMU and swtpm
are killed. Optionally drives grub's menu editor on the serial console to append a file to
the `initrd` line (grub's default console terminal, one key at a time, waiting for each
redraw).

Prints one line of JSON: {"status": "poweroff"|"timeout"|"error", "seconds": ...,
"unlock_seconds": ... or null, "edited": true/false}. Exit status 0 on power-off, 1 otherwise.
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time

OVMF_CODE = '/usr/share/OVMF/OVMF_CODE_4M.ms.fd'

ap = argparse.ArgumentParser()
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
a = ap.parse_args()

shutil.rmtree(a.tpm_dir, ignore_errors=True)
os.makedirs(a.tpm_dir)
sock = os.path.join(a.tpm_dir, 'swtpm.sock')
# Only the SHA-1 and SHA-256 banks active: a smaller log, and still a second bank for the
# TMM's conversion to drop.
subprocess.run(['swtpm_setup', '--tpm2', '--tpmstate', a.tpm_dir, '--pcr-banks', 'sha1,sha256'],
               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
swtpm = subprocess.Popen(['swtpm', 'socket', '--tpm2', '--tpmstate', 'dir=' + a.tpm_dir,
                          '--ctrl', 'type=unixio,path=' + sock, '--terminate',
                          '--log', 'file=%s/swtpm.log,level=1' % a.tpm_dir],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
for _ in range(200):
    if os.path.exists(sock):
        break
    time.sleep(0.05)
else:
    swtpm.kill()
    print(json.dumps({'status': 'error', 'error': 'swtpm socket did not appear'}))
    sys.exit(1)

net = 'user,id=n0,restrict=on'
if a.port:
    net += ',guestfwd=tcp:10.0.2.100:%d-cmd:socat -lf /dev/null - TCP:127.0.0.1:%d' % (a.port, a.port)
cmd = ['qemu-system-x86_64', '-machine', 'q35,smm=on', '-global', 'driver=cfi.pflash01,property=secure,value=on',
       '-m', a.memory, '-smp', '1', '-nodefaults', '-display', 'none', '-serial', 'stdio', '-no-reboot',
       '-monitor', 'none',
       '-drive', 'if=pflash,format=raw,unit=0,readonly=on,file=' + OVMF_CODE,
       '-drive', 'if=pflash,format=raw,unit=1,file=' + a.vars,
       '-chardev', 'socket,id=chrtpm,path=' + sock, '-tpmdev', 'emulator,id=tpm0,chardev=chrtpm',
       '-device', 'tpm-tis,tpmdev=tpm0',
       '-drive', a.disk + ',if=virtio,snapshot=on',
       # No option ROM: OVMF would load and measure iPXE as a driver.
       '-netdev', net, '-device', 'virtio-net-pci,netdev=n0,romfile=' + a.nic_rom]
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

status = 'poweroff'
while q.poll() is None:
    if time.monotonic() > deadline:
        status = 'timeout'
        q.kill()
        break
    time.sleep(0.2)
q.wait()
th.join(timeout=5)
seconds = time.monotonic() - t0
if swtpm.poll() is None:
    try:
        swtpm.wait(timeout=5)
    except subprocess.TimeoutExpired:
        swtpm.kill()
        swtpm.wait()
serial.close()
print(json.dumps({'status': status, 'seconds': round(seconds, 1),
                  'unlock_seconds': None if state['unlock'] is None else round(state['unlock'], 1),
                  'edited': edited, 'qemu_exit': q.returncode}))
sys.exit(0 if status == 'poweroff' else 1)
