// Matches a token's measurements and CCEL event log against reference values (docs/fde-verifierd.md, "The checks"; docs/reference-values.md).
#pragma once

#include <array>
#include <optional>
#include <string>

#include "common/crypto/hash.hpp"
#include "common/eventlog/event_log.hpp"
#include "common/reference/reference_values.hpp"
#include "common/token/verdict.hpp"
#include "common/util/bytes.hpp"

namespace fde::reference {

// The token claims the matcher needs, as plain bytes (no dependency on the token code).
struct TokenMeasurements {
  crypto::HashAlg hash_alg = crypto::HashAlg::sha256;  // CVM hash algorithm, claim 44236
  Bytes rim;                                           // claim 44238
  std::array<Bytes, rem_count> rems;                   // claim 44239, REM[0..3]
  std::optional<Bytes> rpv;                            // claim 44235; checked if the document lists RPVs
};

struct MatchOutcome {
  bool passed = false;                   // every check this call added passed
  std::optional<std::size_t> set_index;  // into ReferenceValues::sets, when a set matched
  std::string set_name;                  // empty when none matched
};

// Adds checks named "reference.hash_alg", "reference.rim", "reference.rpv" (only when the
// document lists RPVs), then:
// - with an event log (grub boot): "eventlog.replay" (MR 1..4 replayed with the token's
//   hash algorithm must equal REM[0..2]), then, against each grub-boot set in turn,
//   "reference.grub", "reference.grub_cfg", "reference.kernel", "reference.initramfs",
//   "reference.kernel_cmdline", "reference.grub_commands" (if pinned), "reference.rems"
//   (if pinned) and "reference.rem3" (REM[3] zero unless pinned). The first set that passes
//   all of them matches; otherwise the checks of the closest set are reported.
// - without one (direct boot): the RIM must be one of a direct-boot set's RIMs, and that
//   set's pinned REMs must match.
// Finally "reference.set" names the matched set. Missing expected events fail.
MatchOutcome match_reference_values(const TokenMeasurements& token,
                                    const eventlog::EventLog* event_log,
                                    const ReferenceValues& reference, Verdict& verdict);

}  // namespace fde::reference
