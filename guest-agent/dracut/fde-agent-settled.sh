#!/bin/sh
# dracut initqueue/settled hook (script-based initramfs): runs the unlock once, in the
# foreground of dracut's main loop, so the loop's own timeout cannot cut it short and no
# passphrase prompt runs before it. Sourced by dracut: no "exit" here.
if [ ! -e /run/fde-agent/done ]; then
    /usr/libexec/fde-agent/fde-unlock
fi
