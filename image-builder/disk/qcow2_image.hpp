// qcow2 images read and written by fde-image itself, without qemu-img: Qcow2Reader maps the
// guest's bytes through the L1/L2 tables of a self-contained image (no backing file, no
// external data file, not encrypted: check_self_contained) and reads only allocated clusters;
// Qcow2Writer writes a new version 3 image from scratch, allocating a cluster only for data
// that is not all zero, and its tables and reference counts once, at the end.
//
// The reader owns the file it was given and never opens another, whatever the image says;
// the writer writes through a RawFile the caller created and keeps open.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "image-builder/disk/disk_io.hpp"
#include "image-builder/disk/qcow2_header.hpp"
#include "image-builder/disk/raw_file.hpp"

namespace fde::image {

// Not for concurrent use: it caches the last L2 table it read.
class Qcow2Reader final : public DiskReader {
 public:
  // Parses and checks the header (check_self_contained; a "corrupt" image, extended L2
  // entries and zstd compression are refused too), then loads the L1 table, whose entries
  // and every L2 entry later used must point inside the file.
  static Result<std::unique_ptr<Qcow2Reader>> open(RawFile file, const std::string& name);
  const RawFile& file() const { return file_; }

  Result<std::uint64_t> size() const override { return virtual_size_; }
  Result<void> read_at(std::uint64_t offset, std::span<std::uint8_t> out) const override;
  Result<std::vector<DiskRange>> data_ranges(std::uint64_t offset, std::uint64_t length) const override;

 private:
  enum class Kind { unallocated, zero, data, compressed };
  struct Mapping {
    Kind kind = Kind::unallocated;
    std::uint64_t host = 0;       // data: cluster offset in the file; compressed: byte offset
    std::uint64_t host_size = 0;  // compressed: bytes to read
  };
  Qcow2Reader() = default;
  Result<Mapping> map_cluster(std::uint64_t cluster) const;
  Result<void> read_host(std::uint64_t offset, std::span<std::uint8_t> out) const;
  Result<void> read_compressed(const Mapping& mapping, std::span<std::uint8_t> cluster) const;
  tl::unexpected<Error> bad(const std::string& what) const;

  RawFile file_;
  std::string name_;
  std::uint64_t file_size_ = 0;
  std::uint32_t cluster_bits_ = 16;
  std::uint64_t cluster_size_ = 0;
  std::uint64_t l2_entries_ = 0;
  std::uint64_t virtual_size_ = 0;
  std::vector<std::uint64_t> l1_;  // L2 table offsets (0: none)
  mutable std::uint64_t cached_l2_offset_ = 0;
  mutable Bytes cached_l2_;
};

// Writes a qcow2 (version 3, 64 KiB clusters, 16-bit reference counts) into a new, empty
// file. Until finish() the file is not a valid image.
class Qcow2Writer final : public DiskWriter {
 public:
  static Result<std::unique_ptr<Qcow2Writer>> create(RawFile& file, std::uint64_t virtual_size);

  // Any byte range. Clusters not yet allocated are allocated only when their part of `data`
  // is not all zero; allocated ones are written in place.
  Result<void> write_at(std::uint64_t offset, ByteView data) override;
  // L2 tables, L1 table, reference counts, then the header.
  Result<void> finish();
  // Bytes of data clusters allocated so far.
  std::uint64_t data_bytes() const { return data_clusters_ * cluster_size_; }

 private:
  explicit Qcow2Writer(RawFile& file) : file_(file) {}
  RawFile& file_;
  std::uint64_t virtual_size_ = 0;
  std::uint32_t cluster_bits_ = 16;
  std::uint64_t cluster_size_ = 0;
  std::uint64_t l2_entries_ = 0;
  std::vector<std::vector<std::uint64_t>> l2_;  // per L1 index; empty: no table
  std::uint64_t next_host_ = 0;
  std::uint64_t data_clusters_ = 0;
  bool finished_ = false;
};

}  // namespace fde::image
