#!/bin/sh
# dracut initqueue/finished hook: the initramfs is not done until fde-agent has unlocked the
# root. Without it, dracut's main loop stops as soon as some device carrying the root's
# filesystem UUID exists (a disk the host attached, say), before the settled hook runs the
# agent. Sourced by dracut: its status is the answer, no "exit" here.
[ -e /run/fde-agent/done ]
