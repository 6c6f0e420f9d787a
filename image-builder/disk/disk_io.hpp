// The builder's view of a disk image, whatever the file format: a reader of the bytes the
// guest sees (with the map of the ranges that hold data, so that holes and unallocated
// clusters are never read), and a writer of such bytes. RawFile implements both for raw
// images; Qcow2Reader and Qcow2Writer (qcow2_image.hpp) do so for qcow2 files.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "common/util/bytes.hpp"

namespace fde::image {

struct DiskRange {
  std::uint64_t offset = 0;
  std::uint64_t length = 0;
};

class DiskReader {
 public:
  virtual ~DiskReader() = default;
  // The virtual size: what the guest sees.
  virtual Result<std::uint64_t> size() const = 0;
  // Reads exactly out.size() bytes; ranges without data read as zeros.
  virtual Result<void> read_at(std::uint64_t offset, std::span<std::uint8_t> out) const = 0;
  // The ranges within [offset, offset + length) that may hold non-zero bytes, in order and
  // merged; everything else reads as zero.
  virtual Result<std::vector<DiskRange>> data_ranges(std::uint64_t offset, std::uint64_t length) const = 0;
};

class DiskWriter {
 public:
  virtual ~DiskWriter() = default;
  virtual Result<void> write_at(std::uint64_t offset, ByteView data) = 0;
};

// Copies the data ranges of [offset, offset + length) of `from` to the same offsets of `to`,
// leaving out 4 KiB blocks that are all zero (`to` must read zeros there already: a new,
// sparse file or unallocated qcow2 clusters). `on_progress` gets the bytes of the range as
// they are passed, holes included, so that it adds up to `length`.
Result<void> copy_disk_range(const DiskReader& from, DiskWriter& to, std::uint64_t offset, std::uint64_t length,
                             const std::function<Result<void>(std::uint64_t)>& on_progress);

}  // namespace fde::image
