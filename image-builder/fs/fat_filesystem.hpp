// A read-only FAT12/16/32 reader for the EFI System Partition inside a disk image: lists
// directories and reads files (long names included), without root, mount or mtools. Every
// field of the boot sector, FAT and directories is checked; a damaged or hostile filesystem
// is refused with Errc::malformed, never read out of bounds or followed in a cluster loop.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/util/bytes.hpp"
#include "image-builder/disk/raw_file.hpp"

namespace fde::image {

struct FatDirEntry {
  std::string name;        // the long name if there is a valid one, else the 8.3 name
  std::string short_name;  // "BOOTX64.EFI"
  bool is_directory = false;
  std::uint32_t first_cluster = 0;
  std::uint64_t size = 0;
};

class FatFilesystem {
 public:
  // The filesystem of at most `size` bytes at byte `offset` of a raw image (a partition).
  static Result<FatFilesystem> open(const std::string& image_path, std::uint64_t offset, std::uint64_t size);
  // The same through `disk` (raw or qcow2), which the filesystem keeps.
  static Result<FatFilesystem> open(std::shared_ptr<const DiskReader> disk, std::uint64_t offset, std::uint64_t size);

  int fat_bits() const { return fat_bits_; }  // 12, 16 or 32
  // The volume serial number as grub names the filesystem (`search --fs-uuid`): "1a2b-3c4d".
  // Empty when the boot sector has no extended BPB (signature 0x29), which carries it.
  std::string uuid() const;

  // Paths are "/"-separated from the root ("/", "/EFI/BOOT"); names match case-insensitively
  // (ASCII), against the long or the short name, as the firmware's FAT driver does.
  Result<std::vector<FatDirEntry>> list_directory(std::string_view path) const;
  // Refuses a file larger than max_size (Errc::too_large) before reading it.
  Result<Bytes> read_file(std::string_view path, std::uint64_t max_size) const;

 private:
  FatFilesystem() = default;
  Result<FatDirEntry> lookup(std::string_view path) const;
  Result<std::vector<FatDirEntry>> read_directory(const FatDirEntry& dir) const;
  Result<std::uint32_t> next_cluster(std::uint32_t cluster) const;  // 0: end of chain
  Result<Bytes> read_chain(std::uint32_t first, std::uint64_t length, bool exact) const;

  std::shared_ptr<const DiskReader> disk_;
  std::uint64_t offset_ = 0;
  int fat_bits_ = 0;
  std::uint32_t bytes_per_sector_ = 0;
  std::uint32_t cluster_bytes_ = 0;
  std::uint32_t cluster_count_ = 0;     // data clusters, numbered 2 .. cluster_count_+1
  std::uint64_t root_dir_offset_ = 0;   // FAT12/16: fixed root directory region
  std::uint32_t root_dir_entries_ = 0;
  std::uint32_t root_cluster_ = 0;      // FAT32: first cluster of the root directory
  std::uint64_t data_offset_ = 0;       // byte offset of cluster 2, from the partition start
  bool has_serial_ = false;
  std::uint32_t serial_ = 0;
  Bytes fat_;                           // the first FAT, read once
};

}  // namespace fde::image
