// An ext2/3/4 filesystem inside a raw disk image, opened in user space with libext2fs at a
// byte offset (no mount, no loop device): the used-block map of the root filesystem, and
// reading and appending to files on the boot filesystem.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/util/bytes.hpp"

namespace fde::image {

// Cheap probe: the ext superblock magic 0xEF53 at byte 1024+56 of the partition.
Result<bool> has_ext_magic(const std::string& image_path, std::uint64_t offset);

struct ByteExtent {
  std::uint64_t offset = 0;  // from the start of the filesystem
  std::uint64_t length = 0;
};

struct ExtDirEntry {
  std::string name;
  bool is_directory = false;
  bool is_regular = false;
};

class ExtFilesystem {
 public:
  ~ExtFilesystem();
  ExtFilesystem(ExtFilesystem&&) noexcept;
  ExtFilesystem& operator=(ExtFilesystem&&) noexcept;

  // `writable` opens read-write; changes reach the image on close() only.
  static Result<ExtFilesystem> open(const std::string& image_path, std::uint64_t offset, bool writable);

  std::string uuid() const;   // "0f3c...-..." as blkid prints it
  std::string label() const;
  std::uint32_t block_size() const;
  std::uint64_t size_bytes() const;  // blocks_count * block_size
  bool needs_recovery() const;       // journal not replayed: refuse to encrypt as-is

  // Byte ranges of blocks in use (block bitmap), merged and rounded out to `granularity`.
  Result<std::vector<ByteExtent>> used_extents(std::uint64_t granularity) const;

  Result<std::vector<ExtDirEntry>> list_directory(const std::string& path) const;
  Result<bool> exists(const std::string& path) const;
  Result<Bytes> read_file(const std::string& path, std::uint64_t max_size) const;
  Result<void> append_to_file(const std::string& path, ByteView data);
  // Replaces the content of an existing regular file (its inode, owner and mode are kept).
  Result<void> replace_file(const std::string& path, ByteView data);
  Result<void> close();  // flushes a writable filesystem

 private:
  struct State;
  explicit ExtFilesystem(std::unique_ptr<State> state);
  Result<std::uint32_t> lookup(const std::string& path) const;
  std::unique_ptr<State> state_;
};

}  // namespace fde::image
