#!/bin/bash
# dracut module "fde-agent" (install as /usr/lib/dracut/modules.d/90fde-agent/): puts
# fde-agent, its configuration and pinned CA, cryptsetup and dm-crypt into the initramfs and
# runs the unlock after the network is up and before the root filesystem is mounted, in both
# systemd-based and script-based initramfs images (docs/fde-agent.md).
#
# Build-host inputs (override with environment variables when running dracut):
#   FDE_AGENT_BINARY  the static agent          (default /usr/sbin/fde-agent)
#   FDE_AGENT_CONFIG  the agent's configuration (default /etc/fde/agent.conf)
# The CA file (and, for simulated-platform builds, sim_dir) named in the configuration are
# copied to the same paths inside the initramfs.

fde_agent_binary() { echo "${FDE_AGENT_BINARY:-/usr/sbin/fde-agent}"; }
fde_agent_config() { echo "${FDE_AGENT_CONFIG:-/etc/fde/agent.conf}"; }

# The value of a "key = value" line of the configuration (the last one wins, as the file
# may not repeat single-valued keys anyway).
fde_config_value() {
    sed -n "s/^[[:space:]]*$1[[:space:]]*=[[:space:]]*//p" "$(fde_agent_config)" | sed 's/[[:space:]]*$//' | tail -n 1
}

check() {
    # Included only on request (add_dracutmodules+=" fde-agent "), and only when the agent
    # and its configuration exist on this host: an initramfs without them could not unlock.
    [[ -x "$(fde_agent_binary)" ]] || { derror "fde-agent: $(fde_agent_binary) is missing"; return 1; }
    [[ -f "$(fde_agent_config)" ]] || { derror "fde-agent: $(fde_agent_config) is missing"; return 1; }
    require_binaries cryptsetup || return 1
    return 255
}

depends() {
    # crypt brings cryptsetup and dm-crypt; network brings the interfaces up (network-legacy,
    # network-manager or systemd-networkd, whichever this dracut is configured with).
    echo crypt dm network
    return 0
}

installkernel() {
    hostonly='' instmods dm_crypt
    # The simulated platform reads its inputs from QEMU fw_cfg.
    if [[ "$(fde_config_value platform)" == sim ]]; then
        hostonly='' instmods qemu_fw_cfg
    fi
}

install() {
    local config ca sim_dir
    config="$(fde_agent_config)"
    inst_simple "$(fde_agent_binary)" /usr/sbin/fde-agent
    inst_simple "$config" /etc/fde/agent.conf
    ca="$(fde_config_value ca_file)"
    if [[ -z "$ca" || ! -f "$ca" ]]; then
        derror "fde-agent: ca_file '$ca' named in $config does not exist"
        return 1
    fi
    inst_simple "$ca" "$ca"
    sim_dir="$(fde_config_value sim_dir)"
    if [[ -n "$sim_dir" && -d "$sim_dir" ]]; then
        local f
        for f in "$sim_dir"/*; do [[ -f "$f" ]] && inst_simple "$f" "$f"; done
    fi

    inst_multiple cryptsetup mkdir sleep
    inst_multiple -o poweroff systemctl
    # cryptsetup loads libgcc_s at run time for Argon2 keyslots (the recovery passphrase);
    # dracut's crypt module does not add it (design.md section 6).
    inst_libdir_file "libgcc_s.so*"
    inst_script "$moddir/fde-unlock.sh" /usr/libexec/fde-agent/fde-unlock

    # Ask dracut to bring the network up even though root is a local disk.
    mkdir -p "${initdir}/etc/cmdline.d"
    echo "rd.neednet=1" > "${initdir}/etc/cmdline.d/90fde-agent.conf"

    if dracut_module_included "systemd"; then
        inst_multiple -o "$systemdutildir/systemd-cryptsetup"
        inst_simple "$moddir/fde-agent.service" "$systemdsystemunitdir/fde-agent.service"
        mkdir -p "${initdir}${systemdsystemunitdir}/initrd.target.wants"
        ln_r "$systemdsystemunitdir/fde-agent.service" "$systemdsystemunitdir/initrd.target.wants/fde-agent.service"
    else
        # Script-based initramfs: dracut's main loop runs settled hooks once udev is idle
        # (after the network jobs of that round). 40 sorts before any cryptroot-ask job.
        inst_hook initqueue/settled 40 "$moddir/fde-agent-settled.sh"
    fi
    return 0
}
