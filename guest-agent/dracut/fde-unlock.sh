#!/bin/sh
# Runs fde-agent once and does what its exit status asks (docs/fde-agent.md):
#   0 unlocked; 4 fall back to a LUKS passphrase prompt (failure policy "passphrase");
#   anything else (3: policy "poweroff", 2: configuration error, 1: internal
#   error) powers the VM off, so a failure never continues the boot without the volume.
# Used by fde-agent.service (systemd initramfs) and fde-agent-settled.sh (script initramfs;
# in a systemd initramfs dracut's initqueue may run that hook too: only one instance runs,
# the other waits for its result).
#
# fde-unlock --verify-root DIR: powers the VM off unless the filesystem mounted at DIR is
# the volume's dm-crypt mapping and the kernel's table of that mapping holds the enrolled
# volume key (fde-agent --check-mapping), whichever path opened it (fde-verify-root.sh, a
# pre-pivot hook).

# Fixed paths, deliberately not taken from the environment: unknown key=value kernel
# arguments end up in init's environment, and this script must not run what they name.
state=/run/fde-agent
agent=/usr/sbin/fde-agent
config=/etc/fde/agent.conf
systemd_run_dir=/run/systemd/system
sysrq_trigger=/proc/sysrq-trigger
console=/dev/console
mountinfo=/proc/self/mountinfo
sys_block=/sys/class/block
ask_password_tools="/usr/bin/systemd-ask-password /bin/systemd-ask-password"
# At most this many passphrases are tried before the VM powers off.
passphrase_tries=3

power_off() {
    echo "fde-agent: powering off" >&2
    if [ -d "$systemd_run_dir" ]; then
        systemctl --no-block poweroff && exit 1
    else
        poweroff -f
    fi
    # Last resort when no poweroff tool works: the kernel's own power-off.
    echo o > "$sysrq_trigger"
    while :; do sleep 60; done
}

# At once, without the orderly shutdown power_off asks systemd for: used when the wrong root
# is mounted, so that nothing can switch to it while a shutdown job runs.
power_off_now() {
    echo "fde-agent: powering off" >&2
    poweroff -f
    echo o > "$sysrq_trigger"
    while :; do sleep 60; done
}

# Sets volume_device and volume_name as the agent resolves them from its configuration (a
# /dev path and a name of [A-Za-z0-9._-]: splitting on the space is intended).
resolve_volume() {
    # shellcheck disable=SC2046
    set -- $("$agent" --config "$config" --resolve-volume)
    [ $# -eq 2 ] || return 1
    volume_device=$1 volume_name=$2
}

# The passphrase prompt of failure policy "passphrase". cryptsetup opens the volume with
# --disable-keyring, so that the volume key is in the kernel's table, where the pre-pivot
# check compares it with volume_key_check (a key left in the kernel keyring cannot be read
# back, and the check refuses it). Under systemd the passphrase is asked for through
# systemd-ask-password (its console agent shows the prompt) and piped to cryptsetup, which
# reads it up to the newline; without systemd cryptsetup asks on the console itself.
passphrase_prompt() {
    if ! resolve_volume; then
        echo "fde-agent: cannot find the LUKS volume for the passphrase prompt" >&2
        power_off
    fi
    set -- "$volume_device" "$volume_name"
    echo "fde-agent: asking for the LUKS passphrase of $1" >&2
    ask=
    if [ -d "$systemd_run_dir" ]; then
        for tool in $ask_password_tools; do
            [ -x "$tool" ] && ask=$tool && break
        done
    fi
    try=0
    while [ "$try" -lt "$passphrase_tries" ]; do
        try=$((try + 1))
        if [ -n "$ask" ]; then
            "$ask" --timeout=0 "Passphrase for $1:" |
                cryptsetup open --type luks2 --disable-keyring --disable-external-tokens "$1" "$2" && return 0
        else
            cryptsetup open --type luks2 --disable-keyring --disable-external-tokens --tries 1 "$1" "$2" \
                <>"$console" >&0 2>&0 && return 0
        fi
    done
    return 1
}

# verify_root DIR: the device mounted at DIR (the last mount there) must be the dm device
# named after the volume, a dm-crypt one, and the agent must find the enrolled volume key in
# its table.
verify_root() {
    root=$1 devno=
    if ! resolve_volume; then
        echo "fde-agent: cannot resolve the LUKS volume to check the root filesystem" >&2
        power_off_now
    fi
    name=$volume_name
    while read -r _id _parent number _source mountpoint _rest; do
        [ "$mountpoint" = "$root" ] && devno=$number
    done < "$mountinfo"
    for dm in "$sys_block"/dm-*; do
        [ -e "$dm/dm/name" ] || continue
        if [ "$(cat "$dm/dm/name")" = "$name" ] && [ "$(cat "$dm/dev")" = "$devno" ]; then
            case "$(cat "$dm/dm/uuid")" in
                CRYPT-LUKS2-*)
                    if ! "$agent" --config "$config" --check-mapping; then
                        echo "fde-agent: the root filesystem at $root is not the enrolled volume" >&2
                        power_off_now
                    fi
                    echo "fde-agent: the root filesystem at $root is the unlocked volume $name" >&2
                    return 0
                    ;;
            esac
        fi
    done
    echo "fde-agent: the root filesystem at $root (device ${devno:-none}) is not the unlocked volume $name" >&2
    power_off_now
}

if [ "${1:-}" = --verify-root ]; then
    verify_root "${2:?}"
    exit 0
fi

[ -e "$state/done" ] && exit 0
mkdir -p "$state"
if ! mkdir "$state/running" 2>/dev/null; then
    # Another instance is unlocking; it powers the VM off if it fails.
    while [ ! -e "$state/done" ]; do sleep 1; done
    exit 0
fi
"$agent" --config "$config"
status=$?
case "$status" in
    0) : > "$state/done" ;;
    4) if passphrase_prompt; then : > "$state/done"; else power_off; fi ;;
    *) power_off ;;
esac
exit 0
