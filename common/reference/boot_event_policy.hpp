// The grub-boot allow-list: every event the token's REM[0..2] cover must be explained by the
// reference set (docs/reference-values.md, "The allow-list").
#pragma once

#include <optional>
#include <vector>

#include "common/eventlog/event_log.hpp"
#include "common/reference/reference_matcher.hpp"
#include "common/reference/reference_values.hpp"
#include "common/token/verdict.hpp"

namespace fde::reference {

// Limits on the part of a log that the grammar below judges, so a hostile log cannot make the
// verdict text grow without bound.
constexpr std::size_t max_prelude_commands = 64;
constexpr std::size_t max_reported_events = 8;

// Judges one grub-boot set against a log that already replays to the token's REM[0..2].
// Returns the checks, in this order: "reference.grub", "reference.grub_cfg",
// "reference.kernel", "reference.initramfs", "reference.kernel_cmdline",
// "reference.grub_commands", "reference.events", then "reference.rem0" (when the document
// pins REM[0]), "reference.rems" (when the set pins REMs) and "reference.rem3" (unless REM[3]
// is pinned). The set matches when every one passes.
//
// "reference.events" is the allow-list: each event replay extends into REM[0..2] must be one
// of these, or the check fails and names it (index, REM, type, digest, text):
// - REM[0] (firmware configuration): EFI variable and handoff-table events, platform
//   configuration flags, the configuration firmware volume, a zero separator, a known EFI
//   action;
// - REM[1]: a zero separator, a known EFI action, one GPT event whose digest is that of its
//   data, an EFI application whose Authenticode digest is the set's `grub` or `kernel_efi`,
//   an EFI driver or option ROM listed in the document's `firmware_drivers`;
// - REM[2]: grub commands (judged by "reference.grub_commands"), the one kernel command line,
//   files whose digest is the set's grub.cfg, kernel or initramfs (whatever the path says),
//   shim's MokList/MokListX/MokListTrusted, and the Linux EFI stub's load-options and initrd
//   tags when they carry the set's command line and initramfs.
// A REM the set pins (`rems`) explains its events by the golden value instead.
// "reference.rems" when the set pins any REM (each pinned REM equals the token's), else nullopt.
std::optional<Check> check_pinned_rems(const ReferenceSet& set, const TokenMeasurements& token);

std::vector<Check> evaluate_grub_set(const eventlog::EventLog& log, const TokenMeasurements& token,
                                     const ReferenceValues& document, const ReferenceSet& set);

}  // namespace fde::reference
