// TCG2 crypto-agile event log parsing and REM replay (docs/virtcca-platform.md d.2, d.3).
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/crypto/hash.hpp"
#include "common/util/bytes.hpp"

namespace fde::eventlog {

constexpr std::size_t max_event_log_size = 1024 * 1024;  // docs/protocol.md, "Limits and timeouts"
// A real firmware + grub log has a few hundred records; the cap bounds the memory a hostile
// log of tiny records can make us allocate (1 MiB of 19-byte records would be 55k events).
constexpr std::size_t max_event_count = 16384;
// Spec ID event: more algorithms than this, or digests longer than this, are refused.
constexpr std::size_t max_spec_id_algorithms = 16;
constexpr std::size_t max_digest_size = 64;
// Section d.3: MR 1..4 are REM[0..3]; MR 0 is the RIM.
constexpr std::uint32_t rem_count = 4;

// TCG algorithm ids.
constexpr std::uint16_t tpm_alg_sha1 = 0x0004;
constexpr std::uint16_t tpm_alg_sha256 = 0x000B;
constexpr std::uint16_t tpm_alg_sha384 = 0x000C;
constexpr std::uint16_t tpm_alg_sha512 = 0x000D;
constexpr std::uint16_t tpm_alg_sm3_256 = 0x0012;

// TCG event types used here.
constexpr std::uint32_t ev_no_action = 0x00000003;
constexpr std::uint32_t ev_separator = 0x00000004;
constexpr std::uint32_t ev_ipl = 0x0000000D;
constexpr std::uint32_t ev_efi_boot_services_application = 0x80000003;

struct AlgorithmSize {
  std::uint16_t algorithm_id = 0;
  std::uint16_t digest_size = 0;
};

struct Event {
  std::uint32_t mr_index = 0;
  std::uint32_t event_type = 0;
  std::vector<std::pair<std::uint16_t, Bytes>> digests;  // (algorithm id, digest)
  Bytes data;
  // The digest for one algorithm, if the record carries it.
  const Bytes* digest_for(std::uint16_t algorithm_id) const;
};

struct EventLog {
  std::vector<AlgorithmSize> algorithms;  // from the Spec ID event
  std::vector<Event> events;              // every record after the Spec ID event
  // True when the log carries digests of `algorithm_id` (listed in the Spec ID event).
  bool has_algorithm(std::uint16_t algorithm_id) const;
};

// Bounded parser: size <= max_event_log_size; digest sizes come from the Spec ID event;
// stops at an all-0xFF record header or the end of the buffer; any record that runs past
// the end, an unknown algorithm id, or a digest count that differs from the Spec ID's is an
// error. EV_NO_ACTION records after the first are kept but never extended.
// A tail that is entirely zero bytes also ends the log (td-shim fills the area with zeros
// rather than 0xFF); a zero header followed by anything else is still an error.
Result<EventLog> parse_event_log(ByteView log);

// Replays MR 1..4 into REM[0..3] with `alg` (REM_new = H(REM_old || digest), starting from
// zeros). MR 0 and EV_NO_ACTION records are never extended. Fails if an extended record
// lacks a digest for `alg`.
Result<std::array<Bytes, 4>> replay(const EventLog& log, crypto::HashAlg alg);

std::uint16_t tpm_alg_id(crypto::HashAlg alg);

// True for records that replay folds into a REM: MR 1..4 and not EV_NO_ACTION (d.3).
// Everything else is unauthenticated by the token and must never be trusted as evidence.
bool is_extended(const Event& event);

}  // namespace fde::eventlog
