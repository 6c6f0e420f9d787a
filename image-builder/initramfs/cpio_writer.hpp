// An uncompressed "newc" cpio archive (the format the kernel's initramfs unpacker reads).
// Appended to an existing initramfs, the kernel unpacks it after the original one, so our
// files are added without rebuilding the initramfs (Documentation/driver-api/early-userspace).
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "common/util/bytes.hpp"

namespace fde::image {

// Whether adding a file or symlink also emits entries for its parent directories.
enum class Parents {
  add,             // missing parents get a 0755 directory entry first
  assume_present,  // none: the base initramfs has them (maybe as symlinks, which lookup follows)
};

// Whether the kernel's unpacker, given a directory entry for `path`, could destroy a symlink
// that usr-merged initramfs images have there (/lib, /bin, /sbin, ..., see cpio_writer.cpp).
bool is_usr_merge_symlink(const std::string& path);

class CpioWriter {
 public:
  // Each call checks the path (absolute or relative, no "." or ".." components, not
  // added before as another type) and refuses, adding nothing, a directory entry, explicit or
  // as a parent, for a path where is_usr_merge_symlink() holds. Adding an existing
  // directory again is a no-op.
  Result<void> add_directory(const std::string& path, std::uint32_t mode = 0755);
  Result<void> add_file(const std::string& path, ByteView content, std::uint32_t mode, Parents parents = Parents::add);
  Result<void> add_symlink(const std::string& path, const std::string& target, Parents parents = Parents::add);
  // Adds the trailer and returns the archive, padded to a multiple of 512 bytes.
  Bytes finish();

  // Every entry's path ("/etc/fde"), in archive order.
  const std::vector<std::string>& paths() const { return paths_; }

 private:
  // The checked name of a new non-directory entry and the parent directories to emit first.
  struct Placement {
    std::string name;
    std::vector<std::string> parents;
  };
  Result<Placement> place(const std::string& path, Parents parents) const;
  void add_entry(const std::string& name, std::uint32_t mode, ByteView content);
  Bytes archive_;
  std::vector<std::string> paths_;
  std::map<std::string, std::uint32_t> modes_;  // by name without the leading "/"
  std::uint32_t next_inode_ = 1;
};

struct CpioEntry {
  std::string path;
  std::uint32_t mode = 0;
  std::uint64_t size = 0;
  std::uint64_t data_offset = 0;  // of the content (a symlink's target) in the parsed data
};

// Lists the entries of the last uncompressed newc archive in `data` that parses to its
// trailer (bounded parser; found by its magic at a 4-byte boundary, so compressed archives
// before it are skipped). Used by inspect to show what we appended.
std::vector<CpioEntry> list_appended_cpio(ByteView data);

// Where that archive lies in `data` and what it holds; nullopt when there is none.
struct AppendedCpio {
  std::uint64_t offset = 0;  // of its first header (a 4-byte boundary)
  std::uint64_t end = 0;     // just after its trailer entry
  std::vector<CpioEntry> entries;
};
std::optional<AppendedCpio> find_appended_cpio(ByteView data);

// `data` up to the archive found there, then the archive written again by CpioWriter with
// the same entries in the same order, modes and targets, but the contents of the files named
// in `replacements` ("/etc/fde/agent.conf") exchanged. Each replaced path must be a regular
// file of the archive; anything but zero padding after the archive's trailer is refused
// (it would be dropped). An archive CpioWriter wrote comes back byte for byte when nothing
// is replaced.
Result<Bytes> rewrite_appended_cpio(ByteView data, const AppendedCpio& archive,
                                    const std::map<std::string, Bytes>& replacements);

// The content of an entry listed from `data` (a file's bytes, a symlink's target).
inline ByteView cpio_entry_content(ByteView data, const CpioEntry& entry) {
  return data.subspan(static_cast<std::size_t>(entry.data_offset), static_cast<std::size_t>(entry.size));
}

}  // namespace fde::image
