#!/bin/bash
# dracut module "fde-agent" (install as /usr/lib/dracut/modules.d/90fde-agent/): puts
# fde-agent, its configuration and pinned CA, cryptsetup and dm-crypt into the initramfs and
# runs the unlock after the network is up and before the root filesystem is mounted, in both
# systemd-based and script-based initramfs images (docs/fde-agent.md).
#
# Two ways to use it:
#  - With the agent configured on the build host: the agent, its configuration and the CA
#    file (and, for simulated-platform builds, sim_dir) named in it are copied in.
#  - Without them (the usual case for an image that fde-image will encrypt): the module
#    installs only what the unlock needs at run time (cryptsetup, dm-crypt, the network,
#    qemu_fw_cfg, the hooks); `fde-image build` appends the agent, its configuration, the CA
#    and the same hook files to the initramfs once the image id and verifiers are known.
#
# Build-host inputs (override with environment variables when running dracut):
#   FDE_AGENT_BINARY  the static agent          (default /usr/sbin/fde-agent)
#   FDE_AGENT_CONFIG  the agent's configuration (default /etc/fde/agent.conf)

fde_agent_binary() { echo "${FDE_AGENT_BINARY:-/usr/sbin/fde-agent}"; }
fde_agent_config() { echo "${FDE_AGENT_CONFIG:-/etc/fde/agent.conf}"; }

# The value of a "key = value" line of the configuration (the last one wins, as the file
# may not repeat single-valued keys anyway).
fde_config_value() {
    sed -n "s/^[[:space:]]*$1[[:space:]]*=[[:space:]]*//p" "$(fde_agent_config)" | sed 's/[[:space:]]*$//' | tail -n 1
}

# Whether the agent is configured on this host (binary and configuration both present).
fde_agent_configured() { [[ -x "$(fde_agent_binary)" && -f "$(fde_agent_config)" ]]; }

check() {
    # Included only on request (add_dracutmodules+=" fde-agent ").
    require_binaries cryptsetup || return 1
    if [[ -e "$(fde_agent_binary)" || -e "$(fde_agent_config)" ]] && ! fde_agent_configured; then
        # Half a configuration is a mistake, not the fde-image case.
        derror "fde-agent: need both $(fde_agent_binary) and $(fde_agent_config), or neither"
        return 1
    fi
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
    # The simulated platform reads its inputs from QEMU fw_cfg. Without a configuration on
    # this host the platform is chosen later (by fde-image), so the module is always added;
    # it loads only where QEMU's fw_cfg device exists.
    if ! fde_agent_configured || [[ "$(fde_config_value platform)" == sim ]]; then
        hostonly='' instmods qemu_fw_cfg
    fi
}

# The agent, its configuration, the CA and sim_dir, when configured on this host.
install_configured_agent() {
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
    return 0
}

install() {
    if fde_agent_configured; then
        install_configured_agent || return 1
    else
        dinfo "fde-agent: no agent configured on this host; fde-image adds it to the initramfs"
    fi

    inst_multiple cryptsetup mkdir sleep
    inst_multiple -o poweroff systemctl
    # cryptsetup loads libgcc_s at run time for Argon2 keyslots (the recovery passphrase);
    # dracut's crypt module does not add it (docs/fde-agent.md, "The dracut module").
    inst_libdir_file "libgcc_s.so*"
    inst_script "$moddir/fde-unlock.sh" /usr/libexec/fde-agent/fde-unlock

    # Ask dracut to bring the network up even though root is a local disk, and never to
    # offer a shell: after the unlock, a shell on the host-controlled console would hold the
    # open volume (fde-agent-cmdline.conf).
    inst_simple "$moddir/fde-agent-cmdline.conf" /etc/cmdline.d/90fde-agent.conf
    # In both kinds of initramfs: the new root must be the agent's dm-crypt mapping.
    inst_hook pre-pivot 10 "$moddir/fde-verify-root.sh"

    if dracut_module_included "systemd"; then
        # The passphrase prompt (failure policy "passphrase") asks through systemd's password
        # agents; dracut's crypt module installs the console agent.
        inst_multiple -o systemd-ask-password
        inst_simple "$moddir/fde-agent.service" "$systemdsystemunitdir/fde-agent.service"
        mkdir -p "${initdir}${systemdsystemunitdir}/initrd.target.wants"
        ln_r "$systemdsystemunitdir/fde-agent.service" "$systemdsystemunitdir/initrd.target.wants/fde-agent.service"
    else
        # Script-based initramfs: dracut's main loop runs settled hooks once udev is idle
        # (after the network jobs of that round). 40 sorts before any cryptroot-ask job.
        inst_hook initqueue/settled 40 "$moddir/fde-agent-settled.sh"
        # ... and the main loop is not finished before the agent is.
        inst_hook initqueue/finished 40 "$moddir/fde-agent-finished.sh"
    fi
    return 0
}
