#!/bin/sh
# dracut pre-pivot hook (script and systemd initramfs): the filesystem mounted as the new
# root must be the dm-crypt mapping that fde-agent opened and checked. Anything else, such as
# a host-supplied disk carrying the root's filesystem UUID, powers the VM off before control
# passes to it. Sourced by dracut: no "exit" here.
/usr/libexec/fde-agent/fde-unlock --verify-root "${NEWROOT:-/sysroot}"
