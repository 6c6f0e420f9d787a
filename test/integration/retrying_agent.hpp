// An honest agent for the load and reliability tests: full attempts (challenge, token,
// attest, HPKE open) with the real protocol client and simulated tokens, on fde-agent's own
// RetrySchedule. Transport errors and 5xx are retried, as fde-agent retries them; any other
// answer ends it (a wrong key or a denial is not transient).
#pragma once

#include <algorithm>
#include <chrono>
#include <map>
#include <string>
#include <thread>

#include "guest-agent/retry/retry_schedule.hpp"
#include "test/integration/daemon_support.hpp"

namespace fde::itest {

inline double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

template <class Condition>
bool wait_until(Condition condition, std::chrono::milliseconds limit) {
  const auto until = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < until) {
    if (condition()) return true;
    std::this_thread::sleep_for(20ms);
  }
  return condition();
}

struct HonestOutcome {
  bool released = false;
  int attempts = 0;
  double seconds = 0;
  std::string last_error;
  // Answers by status (0: no answer: connection refused or reset, TLS failure).
  std::map<unsigned, int> statuses;
};

inline agent::RetrySettings load_test_retry_settings() {
  agent::RetrySettings settings;
  settings.attempt_timeout = 15s;
  settings.overall_timeout = 25s;
  settings.backoff_initial = 250ms;
  settings.backoff_max = 2s;
  return settings;
}

inline HonestOutcome honest_agent(const Daemon& daemon, const std::string& image_id, const SecretBytes& key,
                                  const agent::RetrySettings& settings = load_test_retry_settings()) {
  HonestOutcome outcome;
  const auto start = std::chrono::steady_clock::now();
  agent::RetrySchedule schedule(settings, 1, start);
  while (auto attempt = schedule.next(std::chrono::steady_clock::now())) {
    std::this_thread::sleep_until(attempt->start);
    ++outcome.attempts;
    try {
      auto exchange = attest(daemon, {image_id});
      const unsigned status =
          exchange.challenge.status != 200 ? exchange.challenge.status : exchange.attest ? exchange.attest->status : 0;
      ++outcome.statuses[status];
      if (status == 200 && exchange.key &&
          std::equal(exchange.key->view().begin(), exchange.key->view().end(), key.view().begin(), key.view().end())) {
        outcome.released = true;
        break;
      }
      outcome.last_error = "answered " + std::to_string(status) + " " +
                           (exchange.attest ? exchange.attest->body : exchange.challenge.body);
      if (status == 200 || (status >= 400 && status < 500)) break;
    } catch (const std::exception& error) {
      ++outcome.statuses[0];
      outcome.last_error = error.what();
    }
  }
  outcome.seconds = seconds_since(start);
  return outcome;
}

}  // namespace fde::itest
