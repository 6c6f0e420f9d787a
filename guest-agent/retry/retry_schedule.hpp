// When to try which verifier: the verifiers in order, one round after another, with a
// bounded exponential backoff between rounds, each attempt bounded by its own deadline and
// all of them by the overall deadline (docs/fde-agent.md, "Failure policy and exit status"). Pure arithmetic on time
// points, so the unit tests can walk a whole boot without sleeping.
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <optional>

namespace fde::agent {

using SteadyClock = std::chrono::steady_clock;
using TimePoint = SteadyClock::time_point;
using Milliseconds = std::chrono::milliseconds;

struct RetrySettings {
  Milliseconds attempt_timeout{30'000};
  Milliseconds overall_timeout{300'000};
  Milliseconds backoff_initial{1'000};
  Milliseconds backoff_max{30'000};
  // Keep going after the overall deadline (failure policy "wait"): rounds then continue at
  // backoff_max and attempts are bounded by attempt_timeout alone.
  bool forever = false;
  // Up to this fraction of each backoff is randomised away, so a fleet that rebooted together
  // does not retry in lockstep. 0 = exact delays (tests).
  double jitter = 0.2;
};

struct PlannedAttempt {
  std::size_t number = 0;    // 1, 2, ...
  std::size_t round = 0;     // 1, 2, ... (one round = every verifier once)
  std::size_t verifier = 0;  // index into the configured list
  TimePoint start;           // not before this
  TimePoint deadline;        // the attempt must end by this
  Milliseconds delay{0};     // start - the time next() was asked
};

class RetrySchedule {
 public:
  // `random_fraction` returns values in [0, 1) for the jitter; defaults to a PRNG.
  RetrySchedule(RetrySettings settings, std::size_t verifier_count, TimePoint start,
                std::function<double()> random_fraction = {});

  // The attempt to make after the previous one ended at `now` (the first call plans attempt
  // 1 at `now`). nullopt: the overall deadline leaves no time to start another attempt.
  std::optional<PlannedAttempt> next(TimePoint now);

  // The backoff before round `round` (2, 3, ...): initial * 2^(round-2), at most backoff_max,
  // before jitter. Round 1 starts at once.
  Milliseconds backoff_before_round(std::size_t round) const;

  TimePoint overall_deadline() const { return overall_deadline_; }
  bool past_overall_deadline(TimePoint now) const { return !settings_.forever && now >= overall_deadline_; }

 private:
  RetrySettings settings_;
  std::size_t verifier_count_;
  TimePoint overall_deadline_;
  std::function<double()> random_fraction_;
  std::size_t attempts_ = 0;
};

}  // namespace fde::agent
