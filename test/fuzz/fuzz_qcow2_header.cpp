// libFuzzer target: the builder's qcow2 header reader (the input image is the host's; this
// decides whether the image names a backing or external data file before qemu-img runs).
#include <cstddef>
#include <cstdint>

#include "image-builder/disk/qcow2_header.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  auto header = fde::image::parse_qcow2_header(fde::ByteView(data, size));
  if (!header) return 0;
  if (header->cluster_bits < 9 || header->cluster_bits > 21) __builtin_trap();
  (void)fde::image::check_self_contained(*header, "fuzz.qcow2");
  return 0;
}
