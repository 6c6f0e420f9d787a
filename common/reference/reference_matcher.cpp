// Reference-value matching: RIM, RPV, replay and per-set boot-chain checks (d.3, d.4, g.8).
#include "common/reference/reference_matcher.hpp"

#include <algorithm>

#include "common/eventlog/firmware_events.hpp"

namespace fde::reference {

namespace {

struct Outcome {
  std::string name;
  std::string expected;
  std::string found;
  bool passed = false;
};
using Outcomes = std::vector<Outcome>;

bool contains(const std::vector<Bytes>& list, const Bytes& item) {
  return std::find(list.begin(), list.end(), item) != list.end();
}

bool all_zero(const Bytes& b) {
  return std::all_of(b.begin(), b.end(), [](std::uint8_t v) { return v == 0; });
}

std::string join_hex(const std::vector<Bytes>& list) {
  if (list.empty()) return "(none)";
  std::string out;
  for (const auto& b : list) out += (out.empty() ? "" : ", ") + hex_encode(b);
  return out;
}

// "digest (path)" for each file event, in log order.
std::string describe_files(const std::vector<eventlog::MeasuredString>& events) {
  std::string out;
  for (const auto& e : events)
    out += (out.empty() ? "" : ", ") + hex_encode(e.digest) + " (" + e.text + ")";
  return out;
}

std::string quoted(std::string_view text) { return "\"" + std::string(text) + "\""; }

// Section d.4: every application must be accepted (not "any", as in the sample), and there
// must be at least one, so an absent grub measurement cannot pass.
Outcome check_efi_applications(const GrubBootValues& g, const eventlog::FirmwareEvents& fw) {
  Outcome o{"reference.grub", "every EFI boot application in {" + join_hex(g.efi_applications) + "}",
            "", false};
  if (fw.boot_applications.empty()) {
    o.found = "no EV_EFI_BOOT_SERVICES_APPLICATION event";
    return o;
  }
  o.found = join_hex(fw.boot_applications);
  o.passed = std::all_of(fw.boot_applications.begin(), fw.boot_applications.end(),
                         [&](const Bytes& d) { return contains(g.efi_applications, d); });
  return o;
}

Outcome check_grub_cfgs(const GrubBootValues& g, const eventlog::FirmwareEvents& fw) {
  Outcome o{"reference.grub_cfg", "every grub.cfg event in {" + join_hex(g.grub_cfgs) + "}", "",
            false};
  if (fw.grub_cfgs.empty()) {
    o.found = "no grub.cfg event";
    return o;
  }
  o.found = describe_files(fw.grub_cfgs);
  o.passed = std::all_of(fw.grub_cfgs.begin(), fw.grub_cfgs.end(),
                         [&](const auto& e) { return contains(g.grub_cfgs, e.digest); });
  return o;
}

// Kernel and initramfs: every such event must carry the set's digest, so a second image
// loaded after the expected one (an edited menu entry) fails too.
Outcome check_files(std::string name, std::string_view what, const Bytes& expected,
                    const std::vector<eventlog::MeasuredString>& events) {
  Outcome o{std::move(name), std::string(what) + " " + hex_encode(expected), "", false};
  if (events.empty()) {
    o.found = "no " + std::string(what) + " event";
    return o;
  }
  o.found = describe_files(events);
  o.passed = std::all_of(events.begin(), events.end(),
                         [&](const auto& e) { return e.digest == expected; });
  return o;
}

Outcome check_initramfs(const GrubBootValues& g, const eventlog::FirmwareEvents& fw) {
  if (g.initramfs) return check_files("reference.initramfs", "initramfs", *g.initramfs, fw.initramfses);
  // The set was built for a kernel without an initramfs: one appearing means something was
  // added to the boot chain.
  Outcome o{"reference.initramfs", "no initramfs event", "", fw.initramfses.empty()};
  o.found = fw.initramfses.empty() ? "none" : describe_files(fw.initramfses);
  return o;
}

// The event text is not covered by replay, only the digest is; so the text is trusted only
// when the digest is its measurement.
Outcome check_kernel_cmdline(const ReferenceSet& set, const eventlog::FirmwareEvents& fw,
                             crypto::HashAlg alg) {
  const GrubBootValues& g = set.grub;
  if (!g.kernel_cmdline) {
    // validate_reference_values() requires one of the two; a set built in code without
    // validation must not slip through with an unpinned command line.
    if (!set.rems[2])
      return {"reference.kernel_cmdline", "a pinned kernel command line",
              "the set pins neither kernel_cmdline nor rems[2]", false};
    return {"reference.kernel_cmdline", "covered by the pinned rems[2]", "not compared separately",
            true};
  }
  Outcome o{"reference.kernel_cmdline", "exactly one kernel_cmdline event " + quoted(*g.kernel_cmdline),
            "", false};
  if (fw.kernel_cmdlines.empty()) {
    o.found = "no kernel_cmdline event";
    return o;
  }
  if (fw.kernel_cmdlines.size() > 1) {
    o.found = std::to_string(fw.kernel_cmdlines.size()) + " kernel_cmdline events";
    return o;
  }
  const auto& event = fw.kernel_cmdlines.front();
  o.found = quoted(event.text);
  if (!eventlog::string_digest_matches(alg, eventlog::kernel_cmdline_prefix, event.text,
                                       event.digest)) {
    o.found += " (its digest " + hex_encode(event.digest) + " is not the digest of that text)";
    return o;
  }
  o.passed = event.text == *g.kernel_cmdline;
  return o;
}

Outcome check_grub_commands(const std::vector<std::string>& expected,
                            const eventlog::FirmwareEvents& fw, crypto::HashAlg alg) {
  Outcome o{"reference.grub_commands",
            std::to_string(expected.size()) + " grub commands as pinned", "", false};
  const auto& found = fw.grub_commands;
  if (found.size() != expected.size()) {
    o.found = std::to_string(found.size()) + " grub commands";
    return o;
  }
  for (std::size_t i = 0; i < found.size(); ++i) {
    if (!eventlog::string_digest_matches(alg, eventlog::grub_command_prefix, found[i].text,
                                         found[i].digest)) {
      o.found = "command " + std::to_string(i) + " " + quoted(found[i].text) +
                ": digest is not the digest of that text";
      return o;
    }
    if (found[i].text != expected[i]) {
      o.expected = "command " + std::to_string(i) + " " + quoted(expected[i]);
      o.found = quoted(found[i].text);
      return o;
    }
  }
  o.found = std::to_string(found.size()) + " grub commands, all equal";
  o.passed = true;
  return o;
}

// Pinned golden REMs (a full replay of the reference boot), compared with the token's.
std::optional<Outcome> check_pinned_rems(const ReferenceSet& set, const TokenMeasurements& token) {
  std::string expected, found;
  bool any = false, passed = true;
  for (std::size_t i = 0; i < rem_count; ++i) {
    if (!set.rems[i]) continue;
    any = true;
    const std::string label = "REM[" + std::to_string(i) + "]=";
    expected += (expected.empty() ? "" : ", ") + label + hex_encode(*set.rems[i]);
    found += (found.empty() ? "" : ", ") + label + hex_encode(token.rems[i]);
    passed = passed && *set.rems[i] == token.rems[i];
  }
  if (!any) return std::nullopt;
  return Outcome{"reference.rems", expected, found, passed};
}

// Section d.3: firmware never extends MR 4, so with grub boot REM[3] is zero unless the set
// says what extends it.
std::optional<Outcome> check_rem3(const ReferenceSet& set, const TokenMeasurements& token) {
  if (set.rems[3]) return std::nullopt;  // compared by reference.rems
  return Outcome{"reference.rem3", "REM[3] all zero", hex_encode(token.rems[3]),
                 all_zero(token.rems[3])};
}

Outcomes evaluate_grub_set(const ReferenceSet& set, const eventlog::FirmwareEvents& fw,
                           const TokenMeasurements& token) {
  const GrubBootValues& g = set.grub;
  Outcomes out;
  out.push_back(check_efi_applications(g, fw));
  out.push_back(check_grub_cfgs(g, fw));
  out.push_back(check_files("reference.kernel", "kernel", g.kernel, fw.kernels));
  out.push_back(check_initramfs(g, fw));
  out.push_back(check_kernel_cmdline(set, fw, token.hash_alg));
  if (g.grub_commands) out.push_back(check_grub_commands(*g.grub_commands, fw, token.hash_alg));
  if (auto o = check_pinned_rems(set, token)) out.push_back(std::move(*o));
  if (auto o = check_rem3(set, token)) out.push_back(std::move(*o));
  return out;
}

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

  auto fw = eventlog::extract_firmware_events(log, token.hash_alg);
  if (!fw) {
    verdict.add_fail("eventlog.firmware_events", "grub boot events", fw.error().describe());
    verdict.add_fail("reference.set", set_expected, "not evaluated");
    return;
  }

  std::optional<std::size_t> best;
  Outcomes best_outcomes;
  for (std::size_t i = 0; i < reference.sets.size(); ++i) {
    const ReferenceSet& set = reference.sets[i];
    if (set.boot != BootMode::grub) continue;
    Outcomes outcomes = evaluate_grub_set(set, *fw, token);
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
