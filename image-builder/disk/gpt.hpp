// GUID partition table: a bounds-checked reader (both CRCs verified) and a writer that
// lays out the primary and backup tables for a disk of a given size (UEFI 2.10, 5.3). Also
// the classic MBR (msdos) table with primary partitions only, read into the same structure.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "image-builder/disk/raw_file.hpp"

namespace fde::image {

// 512-byte logical sectors: what qcow2 CVM images use; 4Kn disk images are refused.
constexpr std::uint64_t gpt_sector_size = 512;

using Guid = std::array<std::uint8_t, 16>;

// "0FC63DAF-8483-4772-8E79-3D69D8477DE4" <-> on-disk mixed-endian bytes.
std::string guid_to_string(const Guid& guid);
Result<Guid> guid_from_string(std::string_view text);

namespace gpt_type {
extern const Guid linux_filesystem;  // 0FC63DAF-8483-4772-8E79-3D69D8477DE4
extern const Guid root_x86_64;       // 4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709
extern const Guid root_aarch64;      // B921B045-1DF0-41C3-AF44-4C6F280D3FAE
extern const Guid efi_system;        // C12A7328-F81F-11D2-BA4B-00A0C93EC93B
extern const Guid linux_luks;        // CA7D7CCB-63ED-4C53-861C-1742536059CC
}  // namespace gpt_type

struct GptPartition {
  std::uint32_t index = 0;  // entry number, 1-based (as /dev/vdaN)
  Guid type{};
  Guid unique{};
  std::uint64_t first_lba = 0;
  std::uint64_t last_lba = 0;  // inclusive
  std::uint64_t attributes = 0;
  std::array<std::uint8_t, 72> raw_name{};  // UTF-16LE, kept byte-exact
  std::string name;                          // ASCII rendering for messages
  std::uint8_t mbr_type = 0;                 // MBR tables: the partition's type byte

  std::uint64_t offset() const { return first_lba * gpt_sector_size; }
  std::uint64_t size() const { return (last_lba - first_lba + 1) * gpt_sector_size; }
};

struct GptTable {
  Guid disk_guid{};
  std::uint32_t entry_count = 0;  // slots in the entry array (usually 128)
  std::uint32_t entry_size = 0;   // bytes per slot (usually 128)
  std::uint64_t first_usable_lba = 0;
  std::uint64_t last_usable_lba = 0;
  std::vector<GptPartition> partitions;  // used slots only, in slot order
  // An MBR table: partitions 1..4 (primary), types mapped to GPT type GUIDs (0xEF: EFI
  // System, anything else: Linux filesystem); disk_guid and the entry fields are unused.
  bool mbr = false;

  const GptPartition* find(std::uint32_t index) const;
};

// Reads the primary table (falling back to the backup if the primary is damaged) of a raw
// disk image. Errors say which check failed ("GPT header CRC mismatch", ...).
Result<GptTable> read_gpt(const DiskReader& disk);

// The disk's partition table: GPT when the MBR is protective (type 0xEE), else an MBR with
// primary partitions. Extended partitions are refused (Errc::unsupported).
Result<GptTable> read_partition_table(const DiskReader& disk);

// MBR tables: rewrites the four primary entries' start and size from `table` in the MBR the
// disk already holds (boot code, signature and types kept).
Result<void> write_mbr(RawFile& disk, const GptTable& table);

// Writes protective MBR, primary and backup headers and entry arrays for a disk of
// `disk_size` bytes; the usable range is recomputed from disk_size.
Result<void> write_gpt(RawFile& disk, std::uint64_t disk_size, const GptTable& table);

// Sectors of the entry array (32 for the usual 128 x 128 bytes).
std::uint64_t gpt_entry_array_sectors(const GptTable& table);

std::uint32_t crc32(ByteView data);

}  // namespace fde::image
