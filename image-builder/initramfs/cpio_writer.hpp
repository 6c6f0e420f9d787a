// An uncompressed "newc" cpio archive (the format the kernel's initramfs unpacker reads).
// Appended to an existing initramfs, the kernel unpacks it after the original one, so our
// files are added without rebuilding the initramfs (Documentation/driver-api/early-userspace).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/util/bytes.hpp"

namespace fde::image {

class CpioWriter {
 public:
  // Parent directories are added automatically (mode 0755) before their first entry.
  void add_directory(const std::string& path, std::uint32_t mode = 0755);
  void add_file(const std::string& path, ByteView content, std::uint32_t mode);
  void add_symlink(const std::string& path, const std::string& target);
  // Adds the trailer and returns the archive, padded to a multiple of 512 bytes.
  Bytes finish();

  const std::vector<std::string>& paths() const { return paths_; }

 private:
  void add_parents(const std::string& path);
  void add_entry(const std::string& path, std::uint32_t mode, ByteView content);
  Bytes archive_;
  std::vector<std::string> paths_;
  std::uint32_t next_inode_ = 1;
};

struct CpioEntry {
  std::string path;
  std::uint32_t mode = 0;
  std::uint64_t size = 0;
};

// Lists the newc archives found in `data` (bounded parser; gzip/xz/zstd members are
// skipped over only when they are the last thing before an uncompressed archive we can
// find by its magic at a 4-byte boundary). Used by inspect to show what we appended.
std::vector<CpioEntry> list_appended_cpio(ByteView data);

}  // namespace fde::image
