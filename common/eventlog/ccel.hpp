// The ACPI CCEL table (docs/virtcca-platform.md d.1).
#pragma once

#include <cstdint>
#include <string>

#include "common/util/bytes.hpp"

namespace fde::eventlog {

constexpr std::size_t ccel_table_size = 56;

struct CcelTable {
  std::uint32_t length = 0;
  std::uint8_t revision = 0;
  std::string oem_id;
  std::uint8_t cc_type = 0;
  std::uint8_t cc_subtype = 0;
  std::uint64_t log_area_length = 0;   // LAML
  std::uint64_t log_area_address = 0;  // LASA
};

// Signature "CCEL", declared length >= 56 and equal to the buffer size, valid checksum.
Result<CcelTable> parse_ccel_table(ByteView table);
// Builds a table (for the simulator); the checksum is filled in.
Bytes build_ccel_table(const CcelTable& table);

}  // namespace fde::eventlog
