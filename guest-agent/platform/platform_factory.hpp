// Picks the platform provider the configuration names: tsi always, sim only in builds with
// FDE_WITH_SIM (production agents cannot be talked into simulating, docs/fde-agent.md "Platforms").
#pragma once

#include <memory>

#include "guest-agent/config/agent_config.hpp"
#include "guest-agent/platform/platform.hpp"

namespace fde::agent {

bool sim_platform_available();

// tsi: /dev/tsi and the sysfs CCEL files. sim: config.sim_dir, or QEMU fw_cfg opt/fde/*.
// Errc::not_found / Errc::unsupported mean this machine cannot attest at all.
Result<std::unique_ptr<Platform>> create_platform(const AgentConfig& config);

}  // namespace fde::agent
