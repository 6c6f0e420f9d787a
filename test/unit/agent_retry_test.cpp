// The agent's retry schedule: verifiers in order, bounded exponential backoff between
// rounds, per-attempt and overall deadlines.
#include <catch2/catch.hpp>

#include "guest-agent/retry/retry_schedule.hpp"

using namespace fde::agent;
using namespace std::chrono_literals;

namespace {
RetrySettings exact(Milliseconds attempt, Milliseconds overall, Milliseconds initial, Milliseconds max) {
  RetrySettings settings;
  settings.attempt_timeout = attempt;
  settings.overall_timeout = overall;
  settings.backoff_initial = initial;
  settings.backoff_max = max;
  settings.jitter = 0;
  return settings;
}
const TimePoint t0 = TimePoint() + 1000h;
}  // namespace

TEST_CASE("every verifier is tried once per round, in order, without waiting inside a round") {
  RetrySchedule schedule(exact(10s, 300s, 1s, 30s), 3, t0);
  auto first = schedule.next(t0);
  REQUIRE(first);
  CHECK(first->number == 1);
  CHECK(first->verifier == 0);
  CHECK(first->round == 1);
  CHECK(first->start == t0);
  CHECK(first->deadline == t0 + 10s);
  auto second = schedule.next(t0 + 2s);
  CHECK(second->verifier == 1);
  CHECK(second->start == t0 + 2s);
  CHECK(second->delay == 0ms);
  auto third = schedule.next(t0 + 3s);
  CHECK(third->verifier == 2);
  auto fourth = schedule.next(t0 + 4s);
  CHECK(fourth->verifier == 0);
  CHECK(fourth->round == 2);
  CHECK(fourth->delay == 1s);
  CHECK(fourth->start == t0 + 5s);
}

TEST_CASE("the backoff doubles from round to round and stops growing at its maximum") {
  RetrySchedule schedule(exact(10s, 1h, 1s, 10s), 1, t0);
  CHECK(schedule.backoff_before_round(1) == 0ms);
  CHECK(schedule.backoff_before_round(2) == 1s);
  CHECK(schedule.backoff_before_round(3) == 2s);
  CHECK(schedule.backoff_before_round(4) == 4s);
  CHECK(schedule.backoff_before_round(5) == 8s);
  CHECK(schedule.backoff_before_round(6) == 10s);
  CHECK(schedule.backoff_before_round(60) == 10s);
  TimePoint now = t0;
  std::vector<Milliseconds> delays;
  for (int i = 0; i < 7; ++i) {
    auto attempt = schedule.next(now);
    REQUIRE(attempt);
    delays.push_back(attempt->delay);
    now = attempt->start + 100ms;  // each attempt fails quickly
  }
  CHECK(delays == std::vector<Milliseconds>{0ms, 1s, 2s, 4s, 8s, 10s, 10s});
}

TEST_CASE("an attempt never runs past the overall deadline") {
  RetrySchedule schedule(exact(20s, 30s, 1s, 30s), 1, t0);
  auto first = schedule.next(t0);
  CHECK(first->deadline == t0 + 20s);
  auto second = schedule.next(t0 + 20s);
  REQUIRE(second);
  CHECK(second->start == t0 + 21s);
  CHECK(second->deadline == t0 + 30s);
}

TEST_CASE("no attempt starts once the overall deadline has passed or the backoff would cross it") {
  RetrySchedule schedule(exact(5s, 10s, 4s, 30s), 1, t0);
  REQUIRE(schedule.next(t0));
  auto second = schedule.next(t0 + 5s);  // backoff 4s: starts at 9s, before the deadline
  REQUIRE(second);
  CHECK(second->start == t0 + 9s);
  CHECK_FALSE(schedule.next(t0 + 10s));  // backoff 8s: would start at 18s
  CHECK(schedule.past_overall_deadline(t0 + 10s));
}

TEST_CASE("with failure policy wait the schedule goes on after the overall deadline at the capped backoff") {
  RetrySettings settings = exact(5s, 10s, 1s, 4s);
  settings.forever = true;
  RetrySchedule schedule(settings, 2, t0);
  TimePoint now = t0;
  std::optional<PlannedAttempt> attempt;
  for (int i = 0; i < 40; ++i) {
    attempt = schedule.next(now);
    REQUIRE(attempt);
    now = attempt->deadline;  // each attempt times out
  }
  CHECK(attempt->number == 40);
  CHECK(attempt->start > t0 + 60s);
  CHECK(attempt->deadline - attempt->start == 5s);
  CHECK_FALSE(schedule.past_overall_deadline(now));
}

TEST_CASE("jitter shortens a backoff by at most its configured fraction") {
  RetrySettings settings = exact(1s, 1h, 10s, 10s);
  settings.jitter = 0.2;
  RetrySchedule schedule(settings, 1, t0, [] { return 0.999; });
  schedule.next(t0);
  auto second = schedule.next(t0);
  CHECK(second->delay <= 10s);
  CHECK(second->delay > 8s - 1ms);
  RetrySchedule none(settings, 1, t0, [] { return 0.0; });
  none.next(t0);
  CHECK(none.next(t0)->delay == 10s);
}
