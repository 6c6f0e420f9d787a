// The simulated TMM's view of a TPM-measured boot: edk2 (OVMF) and grub measure into a TPM
// (swtpm under QEMU), and virtCCA's firmware would have measured the same events into its
// realm measurement registers through the CC measurement protocol. This converts the TPM's
// event log into the CCEL log virtCCA would have written, after checking that the TPM log
// is what was measured (its replay equals the TPM's PCRs).
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <optional>
#include <string>

#include "common/eventlog/event_log.hpp"
#include "common/util/bytes.hpp"

namespace fde::sim {

// edk2's CC measurement protocol mapping (MapPcrToMrIndex): PCR0 -> MR0 (the RIM, never a
// REM), PCR1 and 7 -> MR1 = REM[0], PCR2..6 -> MR2 = REM[1], PCR8..15 -> MR3 = REM[2].
// Every other PCR (16..23) is not CC-measured: nullopt.
std::optional<std::uint32_t> cc_mr_index_for_pcr(std::uint32_t pcr);

inline constexpr std::uint32_t tpm_pcr_count = 24;

// The SHA-256 PCR values read from the TPM, by PCR index (a subset of 0..23).
using PcrValues = std::map<std::uint32_t, Bytes>;

struct TmmMeasurements {
  Bytes ccel_log;                // Spec ID event (SHA-256 only), then the converted records
  std::array<Bytes, 4> rems;     // REM[0..3] = the replay of ccel_log (REM[3] stays zero)
  std::size_t events_kept = 0;   // records of the TPM log carried into ccel_log
  std::size_t events_dropped = 0;  // records of PCRs that are not CC-measured, or EV_NO_ACTION
};

// Replays the TPM log's SHA-256 bank per PCR (from zeros; PCR0 from the locality given by a
// "StartupLocality" EV_NO_ACTION event, as TPM 2.0 does) and compares every PCR the log
// extends with `pcrs`: a missing or different value is an error, so a log that is not what
// the TPM measured is refused. PCRs the log never extends are not compared: after
// ExitBootServices the operating system may extend them (IMA extends PCR 10).
// Then writes every extending record of a CC-measured PCR, in log order, with its MR index
// in place of the PCR index and only its SHA-256 digest, after a SHA-256 Spec ID event.
// EV_NO_ACTION records (Spec ID, StartupLocality) are TPM bookkeeping and are dropped.
Result<TmmMeasurements> convert_tpm_log(ByteView tpm_log, const PcrValues& pcrs);

// Parses /sys/class/tpm/tpm0/pcr-sha256/<n> contents: 64 hex digits (either case) and an
// optional newline.
Result<Bytes> parse_pcr_text(ByteView text);

}  // namespace fde::sim
