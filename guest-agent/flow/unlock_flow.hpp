// The agent's boot flow (docs/fde-agent.md, "What one boot looks like"), readable top to bottom: wait for
// the LUKS device, wait for a route to a verifier, try the verifiers on the retry schedule
// with one status line per attempt, unlock with the released key, or give up and report the
// failure policy the caller must apply.
#pragma once

#include <functional>
#include <memory>

#include "guest-agent/client/attestation_client.hpp"
#include "guest-agent/config/agent_config.hpp"
#include "guest-agent/flow/boot_services.hpp"
#include "guest-agent/unlock/volume_unlocker.hpp"

namespace fde::agent {

enum class FlowResult {
  unlocked,             // the volume is open
  already_unlocked,     // it was open before we started (a re-run of the hook), and checked
  give_up_poweroff,     // failure policy poweroff (or "wait" on a machine that cannot attest)
  give_up_passphrase,   // failure policy passphrase: the caller runs the normal prompt
  // Whatever the failure policy: a mapping is open that is not (or could not be shown to be)
  // the configured volume, and it cannot be closed or was there before the agent started.
  // No passphrase prompt may follow: systemd-cryptsetup would find it active and use it.
  fatal_poweroff,
};

struct FlowServices {
  Clock& clock;
  StatusReporter& status;
  NetworkProbe& network;
  DeviceLocator& device;
  // One protocol attempt; the real one is AttestationClient::attempt.
  std::function<AttemptResult(const VerifierUrl&, TimePoint deadline)> attempt;
  // Builds the unlocker once the device node is known.
  std::function<std::unique_ptr<VolumeUnlocker>(const std::string& device)> make_unlocker;
  // Jitter source for the retry schedule (tests pass a constant).
  std::function<double()> random_fraction;
};

FlowResult run_unlock_flow(const AgentConfig& config, FlowServices& services);

}  // namespace fde::agent
