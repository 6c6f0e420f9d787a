// The fde-agent's dracut runtime files (guest-agent/dracut/, embedded at build time), at the
// paths where guest-agent/dracut/module-setup.sh installs them, for the appended archive.
#pragma once

#include "image-builder/initramfs/cpio_writer.hpp"

namespace fde::image {

// Paths of what add_agent_runtime_files() adds (docs/fde-image.md, "Initramfs").
inline constexpr const char* unlock_script_path = "/usr/libexec/fde-agent/fde-unlock";
inline constexpr const char* settled_hook_path = "/lib/dracut/hooks/initqueue/settled/40-fde-agent-settled.sh";
inline constexpr const char* finished_hook_path = "/lib/dracut/hooks/initqueue/finished/40-fde-agent-finished.sh";
inline constexpr const char* verify_root_hook_path = "/lib/dracut/hooks/pre-pivot/10-fde-verify-root.sh";
inline constexpr const char* agent_unit_path = "/usr/lib/systemd/system/fde-agent.service";
inline constexpr const char* agent_unit_wants_path = "/usr/lib/systemd/system/initrd.target.wants/fde-agent.service";
inline constexpr const char* cmdline_conf_path = "/etc/cmdline.d/90fde-agent.conf";

// The unlock script, the hooks of a script-based initramfs (settled: run the agent;
// finished: not done before it; pre-pivot, in both kinds: the root must be its mapping), the
// unit of a systemd-based one (each kind ignores the other's files) and the kernel arguments
// of fde-agent-cmdline.conf (network, no shell), so that an initramfs built by dracut with
// the crypt, dm and network modules runs the agent without our module.
Result<void> add_agent_runtime_files(CpioWriter& cpio);

}  // namespace fde::image
