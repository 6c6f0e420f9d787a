// Reference-value matching: RIM, RPV, replay and per-set boot-chain checks (d.3, d.4, g.8).
#include "common/reference/reference_matcher.hpp"

#include <algorithm>

#include "common/reference/boot_event_policy.hpp"
#include "common/reference/digest_lists.hpp"

namespace fde::reference {

namespace {

using Outcome = Check;
using Outcomes = std::vector<Check>;

std::string quoted(std::string_view text) { return "\"" + std::string(text) + "\""; }

std::size_t count_passed(const Outcomes& outcomes) {
  return static_cast<std::size_t>(
      std::count_if(outcomes.begin(), outcomes.end(), [](const Outcome& o) { return o.passed; }));
}

void record(Verdict& verdict, const Outcome& o) {
  verdict.add(o.name, o.expected, o.found, o.passed);
}

void match_grub_boot(const TokenMeasurements& token, const eventlog::EventLog& log,
                     const ReferenceValues& reference, Verdict& verdict, MatchOutcome& outcome) {
  const std::string set_expected = "one grub-boot set matching every expected event";
  // Replay first: until the log folds into the token's REMs, its events are just claims.
  auto replayed = eventlog::replay(log, token.hash_alg);
  if (!replayed) {
    verdict.add_fail("eventlog.replay", "event log replays to REM[0..2]",
                     replayed.error().describe());
    verdict.add_fail("reference.set", set_expected, "not evaluated: the event log cannot be replayed");
    return;
  }
  std::string mismatch;
  for (std::size_t i = 0; i < 3; ++i)
    if ((*replayed)[i] != token.rems[i])
      mismatch += (mismatch.empty() ? "" : "; ") + std::string("REM[") + std::to_string(i) +
                  "] replays to " + hex_encode((*replayed)[i]) + ", token has " +
                  hex_encode(token.rems[i]);
  if (!mismatch.empty()) {
    verdict.add_fail("eventlog.replay", "event log replays to REM[0..2]", mismatch);
    verdict.add_fail("reference.set", set_expected,
                     "not evaluated: the event log does not match the token's REMs");
    return;
  }
  verdict.add_pass("eventlog.replay", "event log replays to REM[0..2]",
                   std::to_string(log.events.size()) + " events, REM[0..2] equal");

  std::optional<std::size_t> best;
  Outcomes best_outcomes;
  for (std::size_t i = 0; i < reference.sets.size(); ++i) {
    const ReferenceSet& set = reference.sets[i];
    if (set.boot != BootMode::grub) continue;
    Outcomes outcomes = evaluate_grub_set(log, token, reference, set);
    const bool all = count_passed(outcomes) == outcomes.size();
    // Kernel and initramfs must come from the same set (d.4): sets are judged whole, never
    // mixed component by component.
    if (all || !best || count_passed(outcomes) > count_passed(best_outcomes)) {
      best = i;
      best_outcomes = std::move(outcomes);
    }
    if (all) break;
  }
  if (!best) {
    verdict.add_fail("reference.set", set_expected, "no grub-boot set in the reference values");
    return;
  }
  for (const Outcome& o : best_outcomes) record(verdict, o);
  const std::string& name = reference.sets[*best].name;
  if (count_passed(best_outcomes) == best_outcomes.size()) {
    verdict.add_pass("reference.set", set_expected, quoted(name));
    outcome.set_index = best;
    outcome.set_name = name;
  } else {
    const auto failed = std::find_if(best_outcomes.begin(), best_outcomes.end(),
                                     [](const Outcome& o) { return !o.passed; });
    verdict.add_fail("reference.set", set_expected,
                     "no set matched; closest is " + quoted(name) + ", which fails " + failed->name);
  }
}

void match_direct_boot(const TokenMeasurements& token, const ReferenceValues& reference,
                       Verdict& verdict, MatchOutcome& outcome) {
  std::optional<std::size_t> found;
  std::vector<Bytes> accepted;
  for (std::size_t i = 0; i < reference.sets.size(); ++i) {
    const ReferenceSet& set = reference.sets[i];
    if (set.boot != BootMode::direct) continue;
    accepted.insert(accepted.end(), set.rims.begin(), set.rims.end());
    if (!found && contains(set.rims, token.rim)) found = i;
  }
  const std::string expected = accepted.empty()
                                   ? "a direct-boot set (no event log was given)"
                                   : "one of the direct-boot RIMs {" + join_hex(accepted) + "}";
  if (!found) {
    verdict.add_fail("reference.rim", expected, hex_encode(token.rim));
    verdict.add_fail("reference.set", "one direct-boot set whose RIM matches",
                     accepted.empty() ? "no direct-boot set in the reference values"
                                      : "no direct-boot set lists this RIM");
    return;
  }
  verdict.add_pass("reference.rim", expected, hex_encode(token.rim));
  const ReferenceSet& set = reference.sets[*found];
  bool passed = true;
  if (auto o = check_pinned_rems(set, token)) {
    record(verdict, *o);
    passed = o->passed;
  }
  if (passed) {
    verdict.add_pass("reference.set", "one direct-boot set whose RIM matches", quoted(set.name));
    outcome.set_index = found;
    outcome.set_name = set.name;
  } else {
    verdict.add_fail("reference.set", "one direct-boot set whose RIM matches",
                     quoted(set.name) + " fails reference.rems");
  }
}

}  // namespace

MatchOutcome match_reference_values(const TokenMeasurements& token,
                                    const eventlog::EventLog* event_log,
                                    const ReferenceValues& reference, Verdict& verdict) {
  MatchOutcome outcome;
  const std::size_t first_check = verdict.checks().size();

  const std::string alg_name(crypto::hash_alg_name(reference.hash_alg));
  const std::string token_alg(crypto::hash_alg_name(token.hash_alg));
  verdict.add("reference.hash_alg", alg_name, token_alg, reference.hash_alg == token.hash_alg);

  if (!reference.allowed_rpvs.empty()) {
    const bool ok = token.rpv && contains(reference.allowed_rpvs, *token.rpv);
    verdict.add("reference.rpv", "one of {" + join_hex(reference.allowed_rpvs) + "}",
                token.rpv ? hex_encode(*token.rpv) : "(no RPV)", ok);
  }

  if (event_log != nullptr) {
    // Grub boot: the RIM covers firmware + DTB + vCPUs only (c.2); the boot chain is in the log.
    verdict.add("reference.rim", "one of the firmware RIMs {" + join_hex(reference.firmware_rims) + "}",
                hex_encode(token.rim), contains(reference.firmware_rims, token.rim));
    match_grub_boot(token, *event_log, reference, verdict, outcome);
  } else {
    match_direct_boot(token, reference, verdict, outcome);
  }

  const auto& checks = verdict.checks();
  outcome.passed = std::all_of(checks.begin() + static_cast<std::ptrdiff_t>(first_check),
                               checks.end(), [](const Check& c) { return c.passed; });
  return outcome;
}

}  // namespace fde::reference
