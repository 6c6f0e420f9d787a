// RawFile: a file descriptor with bounded positional reads and writes, used for raw disk
// images and for the files holding qcow2 images (qcow2_image.hpp).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <span>
#include <string>

#include "common/util/bytes.hpp"
#include "image-builder/disk/disk_io.hpp"

namespace fde::image {

class RawFile final : public DiskReader, public DiskWriter {
 public:
  enum class Mode { read_only, read_write, create_new };

  RawFile() = default;
  ~RawFile() override;
  RawFile(const RawFile&) = delete;
  RawFile& operator=(const RawFile&) = delete;
  RawFile(RawFile&& other) noexcept;
  RawFile& operator=(RawFile&& other) noexcept;

  // create_new is create(path, 0600).
  static Result<RawFile> open(const std::string& path, Mode mode);
  // A new file (O_CREAT|O_EXCL|O_NOFOLLOW: an existing name, a planted symlink included, is
  // an error) with exactly `permissions`.
  static Result<RawFile> create(const std::string& path, mode_t permissions);

  const std::string& path() const { return path_; }
  int fd() const { return fd_; }
  // "/proc/self/fd/N": a name for this open file that no rename or symlink can redirect,
  // for libraries that open by name and for a child that inherits the descriptor.
  std::string fd_path() const;
  Result<std::uint64_t> size() const override;
  Result<void> resize(std::uint64_t size);
  Result<void> read_at(std::uint64_t offset, std::span<std::uint8_t> out) const override;
  Result<void> write_at(std::uint64_t offset, ByteView data) override;
  // SEEK_DATA / SEEK_HOLE.
  Result<std::vector<DiskRange>> data_ranges(std::uint64_t offset, std::uint64_t length) const override;
  // Writes only the 4 KiB blocks of `data` that are not all zero: the file must be new
  // (holes read as zero), so skipping zero blocks keeps the output sparse.
  Result<void> write_sparse_at(std::uint64_t offset, ByteView data);
  // Next data region at or after `offset` (SEEK_DATA); returns size() at the end.
  Result<std::uint64_t> next_data(std::uint64_t offset) const;
  Result<std::uint64_t> next_hole(std::uint64_t offset) const;
  Result<void> sync();
  // After every `bytes` written, starts the kernel's writeback of the file's dirty pages
  // without waiting (sync_file_range), so that a final sync() finds little left to write and
  // the disk works while the writer computes. 0 (the default): never.
  void write_back_every(std::uint64_t bytes) { writeback_every_ = bytes; }
  // From now on, writes whose offset, length and buffer are multiples of direct_alignment go
  // straight to the disk (O_DIRECT, a second descriptor): no copy into the page cache and
  // nothing left for the final sync() but metadata. Other writes stay buffered; the kernel
  // keeps the two coherent. False (and nothing changes) where the filesystem refuses O_DIRECT.
  static constexpr std::size_t direct_alignment = 4096;
  bool write_aligned_directly();
  void close();

 private:
  int fd_ = -1;
  int direct_fd_ = -1;
  std::string path_;
  std::uint64_t writeback_every_ = 0;
  std::uint64_t not_written_back_ = 0;
};

bool is_all_zero(ByteView data);

}  // namespace fde::image
