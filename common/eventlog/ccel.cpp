// Parsing and building of the ACPI CCEL table that locates the CC event log (section d.1).
#include "common/eventlog/ccel.hpp"

namespace fde::eventlog {

namespace {

// Section d.1: byte offsets inside the 56-byte table (36-byte ACPI header, then CCEL fields).
constexpr std::size_t offset_length = 4;
constexpr std::size_t offset_revision = 8;
constexpr std::size_t offset_checksum = 9;
constexpr std::size_t offset_oem_id = 10;
constexpr std::size_t oem_id_size = 6;
constexpr std::size_t offset_cc_type = 36;
constexpr std::size_t offset_cc_subtype = 37;
constexpr std::size_t offset_laml = 40;
constexpr std::size_t offset_lasa = 48;

constexpr std::string_view ccel_signature = "CCEL";

std::uint8_t byte_sum(ByteView bytes) {
  unsigned sum = 0;
  for (auto b : bytes) sum += b;
  return static_cast<std::uint8_t>(sum & 0xFFu);
}

}  // namespace

Result<CcelTable> parse_ccel_table(ByteView table) {
  if (table.size() < ccel_table_size)
    return fail(Errc::malformed, "CCEL table: " + std::to_string(table.size()) +
                                     " bytes, shorter than " + std::to_string(ccel_table_size));
  // The declared length cannot exceed the buffer (checked below), and the buffer comes from a
  // sysfs file of a few dozen bytes; refuse anything absurd before summing it.
  if (table.size() > 4096) return fail(Errc::too_large, "CCEL table: larger than 4096 bytes");
  if (as_text(table.first(4)) != ccel_signature)
    return fail(Errc::malformed, "CCEL table: signature is not \"CCEL\"");
  CcelTable out;
  out.length = load_le32(table.data() + offset_length);
  if (out.length < ccel_table_size || out.length != table.size())
    return fail(Errc::malformed, "CCEL table: declared length " + std::to_string(out.length) +
                                     " does not match the " + std::to_string(table.size()) +
                                     "-byte table");
  // ACPI: all bytes of the table, checksum included, sum to zero modulo 256.
  if (byte_sum(table) != 0) return fail(Errc::malformed, "CCEL table: bad checksum");
  out.revision = table[offset_revision];
  std::string_view oem = as_text(table.subspan(offset_oem_id, oem_id_size));
  while (!oem.empty() && oem.back() == '\0') oem.remove_suffix(1);
  out.oem_id = std::string(oem);
  out.cc_type = table[offset_cc_type];
  out.cc_subtype = table[offset_cc_subtype];
  out.log_area_length = load_le64(table.data() + offset_laml);
  out.log_area_address = load_le64(table.data() + offset_lasa);
  return out;
}

Bytes build_ccel_table(const CcelTable& table) {
  // Always the 56-byte layout of section d.1; table.length is not used (it is derived).
  Bytes out;
  out.reserve(ccel_table_size);
  out.insert(out.end(), ccel_signature.begin(), ccel_signature.end());
  append_le32(out, static_cast<std::uint32_t>(ccel_table_size));
  out.push_back(table.revision);
  out.push_back(0);  // checksum, filled in below
  for (std::size_t i = 0; i < oem_id_size; ++i)
    out.push_back(i < table.oem_id.size() ? static_cast<std::uint8_t>(table.oem_id[i]) : 0);
  out.resize(offset_cc_type, 0);  // OEM table id, OEM revision, creator id and revision: zero
  out.push_back(table.cc_type);
  out.push_back(table.cc_subtype);
  append_le16(out, 0);  // reserved
  append_le64(out, table.log_area_length);
  append_le64(out, table.log_area_address);
  out[offset_checksum] = static_cast<std::uint8_t>(0x100u - byte_sum(out));
  return out;
}

}  // namespace fde::eventlog
