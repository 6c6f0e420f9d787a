#!/bin/sh
# Runs fde-agent once and does what its exit status asks (docs/fde-agent.md):
#   0 unlocked; 4 fall back to the normal LUKS passphrase prompt (failure policy
#   "passphrase"); anything else (3: policy "poweroff", 2: configuration error, 1: internal
#   error) powers the VM off, so a failure never continues the boot without the volume.
# Used by fde-agent.service (systemd initramfs) and fde-agent-settled.sh (script initramfs).

# Fixed paths, deliberately not taken from the environment: unknown key=value kernel
# arguments end up in init's environment, and this script must not run what they name.
state=/run/fde-agent
agent=/usr/sbin/fde-agent
config=/etc/fde/agent.conf
systemd_run_dir=/run/systemd/system
cryptroot_ask=/sbin/cryptroot-ask
sysrq_trigger=/proc/sysrq-trigger
systemd_cryptsetup_tools="/usr/lib/systemd/systemd-cryptsetup /lib/systemd/systemd-cryptsetup /usr/bin/systemd-cryptsetup"

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

passphrase_prompt() {
    # The device and the mapper name as the agent resolves them from its configuration
    # (a /dev path and a name of [A-Za-z0-9._-]: splitting on the space is intended).
    # shellcheck disable=SC2046
    set -- $("$agent" --config "$config" --resolve-volume)
    if [ $# -ne 2 ]; then
        echo "fde-agent: cannot find the LUKS volume for the passphrase prompt" >&2
        power_off
    fi
    echo "fde-agent: asking for the LUKS passphrase of $1" >&2
    if [ -d "$systemd_run_dir" ]; then
        for tool in $systemd_cryptsetup_tools; do
            [ -x "$tool" ] && exec "$tool" attach "$2" "$1" none
        done
    elif [ -x "$cryptroot_ask" ]; then
        "$cryptroot_ask" "$1" "$2"
        return
    fi
    cryptsetup open "$1" "$2" </dev/console >/dev/console 2>&1
}

[ -e "$state/done" ] && exit 0
mkdir -p "$state"
"$agent" --config "$config"
status=$?
case "$status" in
    0) : > "$state/done" ;;
    4) if passphrase_prompt; then : > "$state/done"; else power_off; fi ;;
    *) power_off ;;
esac
exit 0
