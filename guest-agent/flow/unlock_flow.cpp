// The boot flow: device, network, attempts, unlock, or the failure policy.
#include "guest-agent/flow/unlock_flow.hpp"

#include <algorithm>

#include "common/crypto/key_check.hpp"

namespace fde::agent {

namespace {

constexpr Milliseconds device_poll_interval{250};
constexpr Milliseconds network_poll_interval{500};
// While waiting for the device or the network, a reminder line this often.
constexpr Milliseconds waiting_report_interval{10'000};

// Said when a mapping that is not the verified volume stays open.
constexpr const char* unverified_consequence =
    "the VM will power off whatever the failure policy (no passphrase prompt may see this mapping)";

std::string seconds_until(TimePoint from, TimePoint to) {
  return format_duration(std::max(Milliseconds(0), std::chrono::duration_cast<Milliseconds>(to - from)));
}

std::string policy_consequence(FailurePolicy policy) {
  switch (policy) {
    case FailurePolicy::poweroff: return "failure policy 'poweroff': the VM will power off";
    case FailurePolicy::passphrase: return "failure policy 'passphrase': falling back to the LUKS passphrase prompt";
    case FailurePolicy::wait: return "failure policy 'wait': trying again";
  }
  return "";
}

// Waits for the device node; nullopt when the deadline passes (never with policy "wait").
std::optional<std::string> wait_for_device(const AgentConfig& config, FlowServices& services, TimePoint deadline) {
  const bool forever = config.failure_policy == FailurePolicy::wait;
  TimePoint next_report = services.clock.now();
  bool announced = false;
  for (;;) {
    auto device = services.device.locate();
    if (device) {
      if (announced) services.status.line("LUKS volume UUID=" + config.luks_uuid + " appeared as " + *device);
      return *device;
    }
    TimePoint now = services.clock.now();
    if (!forever && now >= deadline) {
      services.status.line("LUKS volume UUID=" + config.luks_uuid + " did not appear within " +
                           format_duration(config.device_timeout) + " (" + device.error().message + "); " +
                           policy_consequence(config.failure_policy));
      return std::nullopt;
    }
    if (now >= next_report) {
      services.status.line("waiting for LUKS volume UUID=" + config.luks_uuid +
                           (forever ? std::string(" (failure policy 'wait': no deadline)")
                                    : " (up to " + seconds_until(now, deadline) + " more)"));
      next_report = now + waiting_report_interval;
      announced = true;
    }
    services.clock.sleep_until(now + device_poll_interval);
  }
}

// Waits until some verifier is routable. Not fatal when the deadline passes: the attempts
// then report the network errors themselves and the overall deadline still applies.
void wait_for_network(const AgentConfig& config, FlowServices& services) {
  auto routable = [&] {
    return std::any_of(config.verifiers.begin(), config.verifiers.end(),
                       [&](const VerifierUrl& verifier) { return services.network.has_route(verifier); });
  };
  if (routable()) return;
  TimePoint start = services.clock.now();
  TimePoint deadline = start + config.network_timeout;
  services.status.line("waiting for the network: no route to any verifier yet (up to " +
                       format_duration(config.network_timeout) + ")");
  TimePoint next_report = start + waiting_report_interval;
  for (;;) {
    TimePoint now = services.clock.now();
    if (now >= deadline) {
      services.status.line("still no route to any verifier after " + format_duration(config.network_timeout) +
                           "; trying the verifiers anyway");
      return;
    }
    if (now >= next_report) {
      services.status.line("still waiting for the network (" + seconds_until(now, deadline) + " left)");
      next_report = now + waiting_report_interval;
    }
    services.clock.sleep_until(std::min(deadline, now + network_poll_interval));
    if (routable()) {
      services.status.line("network is up after " + seconds_until(start, services.clock.now()));
      return;
    }
  }
}

FlowResult give_up(FailurePolicy policy) {
  return policy == FailurePolicy::passphrase ? FlowResult::give_up_passphrase : FlowResult::give_up_poweroff;
}

}  // namespace

FlowResult run_unlock_flow(const AgentConfig& config, FlowServices& services) {
  const TimePoint start = services.clock.now();
  const bool forever = config.failure_policy == FailurePolicy::wait;
  const std::string mapper = config.mapper_name();

  if (services.device.already_unlocked()) {
    // Opened before the agent ran: by an earlier run of the hook, or by something else on a
    // volume the host may have made. Accepted only as what this agent would have opened.
    auto mapping = services.device.existing_mapping();
    auto checked = mapping.and_then(
        [&](const CryptMapping& found) {
          return check_luks2_mapping(found, config.luks_uuid, config.luks_cipher, config.volume_key_check);
        });
    if (!checked) {
      services.status.line("/dev/mapper/" + mapper + " already exists, but " + checked.error().message + "; " +
                           unverified_consequence);
      return FlowResult::fatal_poweroff;
    }
    services.status.line("/dev/mapper/" + mapper + " already exists and is LUKS2 volume " + config.luks_uuid +
                         " with cipher " + mapping->cipher +
                         " and the enrolled volume key: the volume is unlocked; nothing to do");
    return FlowResult::already_unlocked;
  }
  auto device = wait_for_device(config, services, start + config.device_timeout);
  if (!device) return give_up(config.failure_policy);
  auto unlocker = services.make_unlocker(*device);
  wait_for_network(config, services);

  RetrySettings settings;
  settings.attempt_timeout = config.attempt_timeout;
  settings.overall_timeout = config.overall_timeout;
  settings.backoff_initial = config.backoff_initial;
  settings.backoff_max = config.backoff_max;
  settings.forever = forever;
  // The overall deadline counts from the agent's start, device and network waits included.
  RetrySchedule schedule(settings, config.verifiers.size(), start, services.random_fraction);

  auto planned = schedule.next(services.clock.now());
  std::string last_failure = "no attempt could start before the deadline";
  while (planned) {
    if (planned->start > services.clock.now()) services.clock.sleep_until(planned->start);
    const VerifierUrl& verifier = config.verifiers[planned->verifier];
    const std::string tried = "attempt " + std::to_string(planned->number) + " " + verifier.text + ": ";
    AttemptResult result = services.attempt(verifier, planned->deadline);

    if (result.status == AttemptStatus::released &&
        !crypto::key_matches_check(crypto::KeyCheckKind::released_key, result.key.view(), config.released_key_check)) {
      // Not the key fde-image enrolled for this image: a verifier that is not ours (one
      // mis-issued TLS certificate) could seal a key of its choosing that opens a volume it
      // made. It never reaches cryptsetup.
      result.key.wipe();
      result.status = AttemptStatus::denied;
      result.step = "key check";
      result.message = "the released key does not match released_key_check in the measured configuration (not the "
                       "key enrolled for this image); it was discarded";
      if (!forever) {
        services.status.line(tried + "refused: " + result.message + "; " + policy_consequence(config.failure_policy));
        return give_up(config.failure_policy);
      }
    }
    if (result.status == AttemptStatus::released) {
      services.status.line(tried + "key released; unlocking with " + unlocker->describe());
      auto unlocked = unlocker->unlock(result.key);
      result.key.wipe();
      if (unlocked) {
        services.status.line(unlocker->done() + "; continuing the boot");
        return FlowResult::unlocked;
      }
      last_failure = "unlock failed: " + unlocked.error().message;
      if (unlocker->unverified_mapping_open()) {
        services.status.line(tried + last_failure + "; " + unverified_consequence);
        return FlowResult::fatal_poweroff;
      }
      if (!forever) {
        services.status.line(tried + last_failure + "; " + policy_consequence(config.failure_policy));
        return give_up(config.failure_policy);
      }
      result.status = AttemptStatus::denied;
      result.message = last_failure;
    } else {
      last_failure = result.step + ": " + result.message;
    }

    const bool final_answer = result.status == AttemptStatus::denied || result.status == AttemptStatus::fatal;
    if (result.status == AttemptStatus::fatal || (final_answer && !forever)) {
      // A denial is the verifier's answer for this boot's measurements, shared by every
      // replica: asking again cannot change it, so the policy applies now. A machine that
      // cannot attest at all cannot be helped by waiting either.
      services.status.line(tried + (result.status == AttemptStatus::fatal ? "cannot attest: " : "refused: ") +
                           last_failure + "; " +
                           (result.status == AttemptStatus::fatal && forever
                                ? std::string("failure policy 'wait' cannot help; the VM will power off")
                                : policy_consequence(config.failure_policy)));
      return give_up(config.failure_policy);
    }
    planned = schedule.next(services.clock.now());
    std::string next;
    if (!planned) {
      next = "giving up: overall deadline of " + format_duration(config.overall_timeout) + " reached; " +
             policy_consequence(config.failure_policy);
    } else {
      const std::string& next_url = config.verifiers[planned->verifier].text;
      next = "next: " + next_url +
             (planned->delay.count() > 0 ? " in " + format_duration(planned->delay) : std::string(" now"));
      if (forever)
        next += " (failure policy 'wait': no deadline)";
      else
        next += " (gives up in " + seconds_until(services.clock.now(), schedule.overall_deadline()) + ")";
    }
    services.status.line(tried + (final_answer ? "refused: " : "failed: ") + last_failure + "; " + next);
  }
  return give_up(config.failure_policy);
}

}  // namespace fde::agent
