// Platform selection.
#include "guest-agent/platform/platform_factory.hpp"

#include <sys/stat.h>

#include "guest-agent/platform/tsi_platform.hpp"
#ifdef FDE_AGENT_WITH_SIM
#include "guest-agent/platform/sim_platform.hpp"
#endif

namespace fde::agent {

bool sim_platform_available() {
#ifdef FDE_AGENT_WITH_SIM
  return true;
#else
  return false;
#endif
}

Result<std::unique_ptr<Platform>> create_platform(const AgentConfig& config) {
  if (config.platform == PlatformKind::tsi) {
    auto device = open_tsi_device();
    if (!device) return tl::unexpected(device.error());
    auto platform = TsiPlatform::create(std::move(*device), CcelSource{});
    if (!platform) return tl::unexpected(platform.error());
    return std::unique_ptr<Platform>(std::move(*platform));
  }
#ifdef FDE_AGENT_WITH_SIM
  std::unique_ptr<SimPlatform> platform;
  if (!config.sim_dir.empty()) {
    auto loaded = SimPlatform::load(config.sim_dir, directory_inputs(config.sim_dir),
                                    directory_tpm_paths(config.sim_dir));
    if (!loaded) return fail_with_context("simulated platform", loaded.error());
    platform = std::move(*loaded);
  } else {
    struct stat st {};
    if (::stat(fw_cfg_directory, &st) != 0)
      return fail(Errc::not_found, std::string("simulated platform: no sim_dir set and no QEMU fw_cfg entries under ") +
                                       fw_cfg_directory);
    auto loaded = SimPlatform::load("fw_cfg opt/fde", fw_cfg_inputs());
    if (!loaded) return fail_with_context("simulated platform", loaded.error());
    platform = std::move(*loaded);
  }
  return std::unique_ptr<Platform>(std::move(platform));
#else
  return fail(Errc::unsupported, "this fde-agent was built without the simulated platform (FDE_WITH_SIM=OFF)");
#endif
}

}  // namespace fde::agent
