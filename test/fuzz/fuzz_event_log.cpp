// libFuzzer target: CCEL table, TCG2 event log parser, replay and firmware extraction.
#include <cstddef>
#include <cstdint>

#include "common/eventlog/ccel.hpp"
#include "common/eventlog/event_log.hpp"
#include "common/eventlog/firmware_events.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  fde::ByteView input(data, size);
  (void)fde::eventlog::parse_ccel_table(input);
  auto log = fde::eventlog::parse_event_log(input);
  if (!log) return 0;
  for (auto alg : {fde::crypto::HashAlg::sha256, fde::crypto::HashAlg::sha384, fde::crypto::HashAlg::sha512}) {
    (void)fde::eventlog::replay(*log, alg);
    (void)fde::eventlog::extract_firmware_events(*log, alg);
  }
  return 0;
}
