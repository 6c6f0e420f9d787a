// The PE/COFF Authenticode image digest of an EFI application: what UEFI firmware extends
// into the CC event log as EV_EFI_BOOT_SERVICES_APPLICATION (docs/virtcca-platform.md d.3,
// d.4), and so the `grub` reference value (docs/reference-values.md).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/util/bytes.hpp"

namespace fde::image {

// EFI applications are a few MiB; a larger file is refused rather than hashed.
constexpr std::uint64_t max_pe_file_size = 64ull << 20;

// COFF machine types of the EFI applications we expect (PE format spec, "Machine Types").
namespace pe_machine {
constexpr std::uint16_t i386 = 0x014c;
constexpr std::uint16_t x86_64 = 0x8664;
constexpr std::uint16_t aarch64 = 0xaa64;
}  // namespace pe_machine

struct PeByteRange {
  std::uint64_t offset = 0;
  std::uint64_t length = 0;
};

struct PeImageLayout {
  std::uint16_t machine = 0;
  bool pe32_plus = false;              // optional header magic 0x20b (else 0x10b, PE32)
  std::uint16_t section_count = 0;
  std::uint64_t size_of_headers = 0;
  std::uint64_t certificate_offset = 0;  // attribute certificate table (file offset), 0 if none
  std::uint64_t certificate_size = 0;
  // The file's bytes that the Authenticode digest covers, in hashing order.
  std::vector<PeByteRange> hashed;
};

// Parses the headers of a PE/COFF file and lays out what Authenticode hashes ("Windows
// Authenticode Portable Executable Signature Format", "Calculating the PE Image Hash"), the
// way EDK2's measured boot does. Every offset and size is checked against the file; a
// malformed or hostile file is refused with Errc::malformed (or too_large) naming the check.
Result<PeImageLayout> parse_pe_image(ByteView file);

// SHA-256 Authenticode digest (32 bytes) of a PE/COFF file.
Result<Bytes> authenticode_sha256(ByteView file);

std::string pe_machine_name(std::uint16_t machine);  // "x86_64", "aarch64", else "0x1234"

}  // namespace fde::image
