// Mirrors guest-agent/dracut/module-setup.sh's install() with the embedded files.
#include "image-builder/initramfs/agent_runtime_files.hpp"

#include "image-builder/initramfs/dracut_files.hpp"  // generated from guest-agent/dracut/

namespace fde::image {

Result<void> add_agent_runtime_files(CpioWriter& cpio) {
  if (auto ok = cpio.add_file(unlock_script_path, dracut_files::fde_unlock_sh(), 0755); !ok) return ok;
  // dracut's inst_hook path for initqueue/settled, priority 40: the script initramfs sources
  // initqueue/settled/*.sh in sorted order once udev is idle. No parent entries: /lib is a
  // symlink to usr/lib in usr-merged images (cpio_writer.cpp), and dracut-ng makes the hooks
  // directory a symlink to /var/lib/dracut/hooks; every dracut image has the directory.
  if (auto ok = cpio.add_file(settled_hook_path, dracut_files::fde_agent_settled_sh(), 0755, Parents::assume_present);
      !ok)
    return ok;
  if (auto ok = cpio.add_file(finished_hook_path, dracut_files::fde_agent_finished_sh(), 0755, Parents::assume_present);
      !ok)
    return ok;
  if (auto ok = cpio.add_file(verify_root_hook_path, dracut_files::fde_verify_root_sh(), 0755, Parents::assume_present);
      !ok)
    return ok;
  if (auto ok = cpio.add_file(agent_unit_path, dracut_files::fde_agent_service(), 0644); !ok) return ok;
  // As module-setup.sh's ln_r makes it: relative, so it resolves inside the initramfs.
  if (auto ok = cpio.add_symlink(agent_unit_wants_path, "../fde-agent.service"); !ok) return ok;
  // dracut brings the network up for a local root only when asked to; no shell, ever.
  return cpio.add_file(cmdline_conf_path, dracut_files::fde_agent_cmdline_conf(), 0644);
}

}  // namespace fde::image
