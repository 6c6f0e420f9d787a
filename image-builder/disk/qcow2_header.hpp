// The few fields of a qcow2 header that decide whether reading the image reads other files:
// a backing file and an external data file. The input image comes from the host, so
// fde-image reads these fields itself (no qemu-img, no file-name interpretation) and refuses
// an image that names either, before any conversion (docs/fde-image.md, "Input files").
#pragma once

#include <cstdint>
#include <string>

#include "common/util/bytes.hpp"
#include "image-builder/disk/raw_file.hpp"

namespace fde::image {

struct Qcow2Header {
  std::uint32_t version = 0;       // 2 or 3
  std::uint32_t cluster_bits = 0;  // 9 .. 21
  std::uint64_t virtual_size = 0;
  std::uint32_t crypt_method = 0;  // 0: none, 1: AES, 2: LUKS
  std::uint64_t incompatible_features = 0;
  std::uint32_t l1_size = 0;          // L1 table entries
  std::uint64_t l1_table_offset = 0;  // in the file
  std::uint8_t compression_type = 0;  // 0: deflate, 1: zstd (version 3 headers of 105+ bytes)
  bool has_backing_file = false;
  std::string backing_file;  // as the header spells it; empty if it cannot be read
  bool has_data_file = false;  // the "external data file" feature bit, or a data file name
  std::string data_file;       // the name in the header extension, if any
};

// Reads the fixed header, the backing file name and the header extensions from `head`, the
// start of the file (the first cluster, or the whole file when it is shorter). Bounds,
// version, cluster size and header length are checked; anything off is Errc::malformed.
Result<Qcow2Header> parse_qcow2_header(ByteView head);

// Reads as much of `file` as parse_qcow2_header needs (at most 2 MiB) and parses it.
Result<Qcow2Header> read_qcow2_header(const RawFile& file);

// Refuses, naming `image` and what the header names, an image whose data would be read from
// anywhere but itself (backing file, external data file), an encrypted one, and one with
// incompatible features this check does not know.
Result<void> check_self_contained(const Qcow2Header& header, const std::string& image);

}  // namespace fde::image
