// The retry arithmetic of the agent.
#include "guest-agent/retry/retry_schedule.hpp"

#include <algorithm>
#include <random>

namespace fde::agent {

RetrySchedule::RetrySchedule(RetrySettings settings, std::size_t verifier_count, TimePoint start,
                             std::function<double()> random_fraction)
    : settings_(settings),
      verifier_count_(std::max<std::size_t>(verifier_count, 1)),
      overall_deadline_(start + settings.overall_timeout),
      random_fraction_(std::move(random_fraction)) {
  if (!random_fraction_) {
    // Jitter only spreads load; it needs no cryptographic randomness.
    random_fraction_ = [engine = std::minstd_rand(std::random_device{}())]() mutable {
      return std::uniform_real_distribution<double>(0.0, 1.0)(engine);
    };
  }
}

Milliseconds RetrySchedule::backoff_before_round(std::size_t round) const {
  if (round <= 1) return Milliseconds(0);
  Milliseconds delay = settings_.backoff_initial;
  for (std::size_t i = 2; i < round && delay < settings_.backoff_max; ++i) delay *= 2;
  return std::min(delay, settings_.backoff_max);
}

std::optional<PlannedAttempt> RetrySchedule::next(TimePoint now) {
  PlannedAttempt attempt;
  attempt.number = attempts_ + 1;
  attempt.round = attempts_ / verifier_count_ + 1;
  attempt.verifier = attempts_ % verifier_count_;
  // Within a round the next verifier is tried at once; a new round waits for the backoff.
  if (attempt.verifier == 0 && attempt.round > 1) {
    Milliseconds delay = backoff_before_round(attempt.round);
    if (settings_.jitter > 0) {
      double cut = settings_.jitter * std::clamp(random_fraction_(), 0.0, 1.0);
      delay -= Milliseconds(static_cast<Milliseconds::rep>(static_cast<double>(delay.count()) * cut));
    }
    attempt.delay = delay;
  }
  attempt.start = now + attempt.delay;
  if (!settings_.forever && attempt.start >= overall_deadline_) return std::nullopt;
  attempt.deadline = attempt.start + settings_.attempt_timeout;
  if (!settings_.forever) attempt.deadline = std::min(attempt.deadline, overall_deadline_);
  ++attempts_;
  return attempt;
}

}  // namespace fde::agent
