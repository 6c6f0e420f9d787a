// An ext2/3/4 filesystem inside a disk image, opened in user space with libext2fs at a byte
// offset (no mount, no loop device): read-only through a DiskReader (a raw or qcow2 image),
// or read-write in a raw image file. The map of the blocks the root filesystem relies on,
// and reading and appending to files on the boot filesystem.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/util/bytes.hpp"
#include "image-builder/disk/disk_io.hpp"

namespace fde::image {

// Cheap probe: the ext superblock magic 0xEF53 at byte 1024+56 of the partition.
Result<bool> has_ext_magic(const DiskReader& disk, std::uint64_t offset);

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

  // A raw image file; `writable` opens read-write, and changes reach the image on close() only.
  static Result<ExtFilesystem> open(const std::string& image_path, std::uint64_t offset, bool writable);
  // Read-only through `disk`, which the filesystem keeps.
  static Result<ExtFilesystem> open(std::shared_ptr<const DiskReader> disk, std::uint64_t offset);

  std::string uuid() const;   // "0f3c...-..." as blkid prints it
  std::string label() const;
  std::uint32_t block_size() const;
  std::uint64_t size_bytes() const;  // blocks_count * block_size
  bool needs_recovery() const;       // journal not replayed: refuse to encrypt as-is

  // Byte ranges of the blocks whose content the filesystem relies on, merged and rounded out
  // to `granularity`: the blocks in use (block bitmap), except those it never reads before
  // writing them:
  // - the journal's blocks after its superblock, when the journal is clean (nothing to
  //   replay; jbd2 and e2fsck read only the journal superblock then);
  // - with group descriptor checksums (uninit_bg / metadata_csum), the inode-table blocks of
  //   a group not flagged INODE_ZEROED that hold only inodes past its high-water mark
  //   (bg_itable_unused, or all of them with INODE_UNINIT): the kernel and e2fsck do not read
  //   those inodes, and the kernel zeroes such blocks itself (lazy init) after mounting.
  Result<std::vector<ByteExtent>> live_extents(std::uint64_t granularity) const;

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
