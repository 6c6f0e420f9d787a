// PE/COFF header parsing and the Authenticode image digest, bounds-checked throughout.
#include "image-builder/pe/authenticode.hpp"

#include <algorithm>
#include <cstdio>

#include "common/crypto/hash.hpp"

namespace fde::image {
namespace {

// Layout constants from the Microsoft PE format specification.
constexpr std::uint64_t dos_header_size = 64;
constexpr std::uint64_t e_lfanew_field = 0x3c;  // file offset of the PE signature
constexpr std::uint64_t coff_header_size = 20;
constexpr std::uint64_t coff_section_count_field = 2;
constexpr std::uint64_t coff_optional_size_field = 16;
constexpr std::uint64_t section_header_size = 40;
constexpr std::uint64_t section_raw_size_field = 16;
constexpr std::uint64_t section_raw_pointer_field = 20;
constexpr std::uint16_t magic_pe32 = 0x10b;
constexpr std::uint16_t magic_pe32_plus = 0x20b;
// Offsets inside the optional header; SizeOfHeaders and CheckSum sit at the same place in
// PE32 and PE32+, the data directories do not (PE32+ has 64-bit stack/heap sizes).
constexpr std::uint64_t optional_size_of_headers_field = 60;
constexpr std::uint64_t optional_checksum_field = 64;
constexpr std::uint64_t pe32_directory_count_field = 92;
constexpr std::uint64_t pe32_directories = 96;
constexpr std::uint64_t pe32_plus_directory_count_field = 108;
constexpr std::uint64_t pe32_plus_directories = 112;
constexpr std::uint64_t directory_entry_size = 8;
constexpr std::uint32_t certificate_directory = 4;  // IMAGE_DIRECTORY_ENTRY_SECURITY
constexpr std::uint32_t max_directories = 16;       // the spec defines 16; EDK2 refuses more
// The Windows loader's limit; EFI applications have a handful. Anything more is hostile.
constexpr std::uint16_t max_sections = 96;

tl::unexpected<Error> malformed(const std::string& what) { return fail(Errc::malformed, "PE image: " + what); }

std::string hex_offset(std::uint64_t value) {
  char text[24];
  std::snprintf(text, sizeof text, "0x%llx", static_cast<unsigned long long>(value));
  return text;
}

struct SectionData {
  std::uint64_t offset = 0;
  std::uint64_t size = 0;
};

}  // namespace

std::string pe_machine_name(std::uint16_t machine) {
  switch (machine) {
    case pe_machine::x86_64: return "x86_64";
    case pe_machine::aarch64: return "aarch64";
    case pe_machine::i386: return "i386";
  }
  char text[8];
  std::snprintf(text, sizeof text, "0x%04x", machine);
  return text;
}

Result<PeImageLayout> parse_pe_image(ByteView file) {
  // All arithmetic below is on 64-bit values built from 32-bit fields of a file of at most
  // 64 MiB, so no sum can wrap; each range is compared with the file size before use.
  const std::uint64_t file_size = file.size();
  if (file_size > max_pe_file_size)
    return fail(Errc::too_large, "PE image: " + std::to_string(file_size) + " bytes, more than the " +
                                     std::to_string(max_pe_file_size >> 20) + " MiB accepted");
  if (file_size < dos_header_size) return malformed("shorter than a DOS header");
  if (file[0] != 'M' || file[1] != 'Z') return malformed("no MZ signature");
  const std::uint64_t pe_offset = load_le32(&file[e_lfanew_field]);
  const std::uint64_t coff = pe_offset + 4;
  if (coff + coff_header_size > file_size)
    return malformed("e_lfanew " + hex_offset(pe_offset) + " points past the end of the file");
  if (file[pe_offset] != 'P' || file[pe_offset + 1] != 'E' || file[pe_offset + 2] != 0 || file[pe_offset + 3] != 0)
    return malformed("no PE signature at e_lfanew " + hex_offset(pe_offset));

  PeImageLayout layout;
  layout.machine = load_le16(&file[coff]);
  layout.section_count = load_le16(&file[coff + coff_section_count_field]);
  const std::uint64_t optional_size = load_le16(&file[coff + coff_optional_size_field]);
  const std::uint64_t optional = coff + coff_header_size;
  if (optional + optional_size > file_size) return malformed("optional header runs past the end of the file");
  if (optional_size < 2) return malformed("no optional header (an object file, not an image)");
  const std::uint16_t magic = load_le16(&file[optional]);
  if (magic != magic_pe32 && magic != magic_pe32_plus)
    return malformed("unknown optional header magic " + hex_offset(magic));
  layout.pe32_plus = magic == magic_pe32_plus;
  const std::uint64_t directories = layout.pe32_plus ? pe32_plus_directories : pe32_directories;
  if (optional_size < directories) return malformed("optional header too short for its fixed fields");
  const std::uint32_t directory_count =
      load_le32(&file[optional + (layout.pe32_plus ? pe32_plus_directory_count_field : pe32_directory_count_field)]);
  if (directory_count > max_directories)
    return malformed(std::to_string(directory_count) + " data directories (at most 16)");
  if (directories + directory_count * directory_entry_size > optional_size)
    return malformed("data directories run past the optional header");
  layout.size_of_headers = load_le32(&file[optional + optional_size_of_headers_field]);
  if (layout.size_of_headers > file_size)
    return malformed("SizeOfHeaders " + hex_offset(layout.size_of_headers) + " is past the end of the file");

  if (layout.section_count > max_sections)
    return malformed(std::to_string(layout.section_count) + " sections (at most 96)");
  const std::uint64_t section_table = optional + optional_size;
  const std::uint64_t section_table_end = section_table + layout.section_count * section_header_size;
  // The headers the digest covers must hold the section table, or its entries (which decide
  // what else is hashed) would not be covered themselves. EDK2's loader checks the same.
  if (section_table_end > layout.size_of_headers)
    return malformed("the section table ends at " + hex_offset(section_table_end) + ", past SizeOfHeaders " +
                     hex_offset(layout.size_of_headers));

  // 1. The headers, without the CheckSum field and the certificate table's directory entry
  //    (both change when the file is signed).
  const std::uint64_t checksum = optional + optional_checksum_field;
  layout.hashed.push_back({0, checksum});
  if (directory_count > certificate_directory) {
    const std::uint64_t entry = optional + directories + certificate_directory * directory_entry_size;
    layout.hashed.push_back({checksum + 4, entry - (checksum + 4)});
    layout.hashed.push_back({entry + directory_entry_size, layout.size_of_headers - (entry + directory_entry_size)});
    const std::uint64_t cert_offset = load_le32(&file[entry]);
    const std::uint64_t cert_size = load_le32(&file[entry + 4]);
    if (cert_size != 0) {
      layout.certificate_offset = cert_offset;
      layout.certificate_size = cert_size;
    }
  } else {
    layout.hashed.push_back({checksum + 4, layout.size_of_headers - (checksum + 4)});
  }

  // 2. Each section's raw data, in file order (a stable sort, as EDK2's insertion sort).
  std::vector<SectionData> sections;
  for (std::uint64_t i = 0; i < layout.section_count; ++i) {
    const std::uint8_t* header = &file[section_table + i * section_header_size];
    const SectionData data{load_le32(header + section_raw_pointer_field), load_le32(header + section_raw_size_field)};
    if (data.size == 0) continue;
    if (data.offset + data.size > file_size)
      return malformed("section " + std::to_string(i + 1) + "'s raw data (" + hex_offset(data.offset) + ", " +
                       hex_offset(data.size) + " bytes) runs past the end of the file");
    if (data.offset < layout.size_of_headers)
      return malformed("section " + std::to_string(i + 1) + "'s raw data overlaps the headers");
    sections.push_back(data);
  }
  std::stable_sort(sections.begin(), sections.end(),
                   [](const SectionData& a, const SectionData& b) { return a.offset < b.offset; });
  std::uint64_t hashed_bytes = layout.size_of_headers;  // SUM_OF_BYTES_HASHED in the spec
  std::uint64_t data_end = layout.size_of_headers;
  for (const auto& section : sections) {
    // Overlapping sections would be hashed twice; no linker emits them, so refuse them.
    if (section.offset < data_end) return malformed("sections' raw data overlap");
    layout.hashed.push_back({section.offset, section.size});
    hashed_bytes += section.size;
    data_end = section.offset + section.size;
  }

  // 3. What follows, up to the attribute certificate table. The spec and EDK2 assume the
  //    table is the file's tail and hash [SUM_OF_BYTES_HASHED, size - table size); a table
  //    elsewhere would make that range ambiguous, so it is refused.
  std::uint64_t tail_end = file_size;
  if (layout.certificate_size != 0) {
    if (layout.certificate_offset + layout.certificate_size != file_size)
      return malformed("the attribute certificate table (" + hex_offset(layout.certificate_offset) + ", " +
                       hex_offset(layout.certificate_size) + " bytes) is not the end of the file");
    if (layout.certificate_offset < data_end)
      return malformed("the attribute certificate table overlaps the headers or a section");
    tail_end = layout.certificate_offset;
  }
  if (hashed_bytes > tail_end) return malformed("headers and sections are larger than the file");
  if (hashed_bytes < tail_end) layout.hashed.push_back({hashed_bytes, tail_end - hashed_bytes});
  return layout;
}

Result<Bytes> authenticode_sha256(ByteView file) {
  auto layout = parse_pe_image(file);
  if (!layout) return tl::unexpected(layout.error());
  std::uint64_t total = 0;
  for (const auto& range : layout->hashed) total += range.length;
  // One contiguous copy (bounded by twice the 64 MiB cap) keeps the crypto API a single call.
  Bytes message;
  message.reserve(static_cast<std::size_t>(total));
  for (const auto& range : layout->hashed) {
    const auto begin = file.begin() + static_cast<std::ptrdiff_t>(range.offset);
    message.insert(message.end(), begin, begin + static_cast<std::ptrdiff_t>(range.length));
  }
  return crypto::sha256(message);
}

}  // namespace fde::image
