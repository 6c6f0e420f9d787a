// libFuzzer target: the builder's qcow2 reader (Qcow2Reader), which maps the guest's bytes
// through the host's L1/L2 tables and inflates compressed clusters. The input is a whole
// qcow2 file; the target opens it, lists the data ranges of the first 64 MiB of the virtual
// disk and reads them (at most 1 MiB in all, so a huge claimed size costs nothing).
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "image-builder/disk/qcow2_image.hpp"
#include "test/fuzz/fuzz_support.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  fde::fuzz::MemFile file(data, size);
  auto raw = fde::image::RawFile::open(file.path(), fde::image::RawFile::Mode::read_only);
  if (!raw) __builtin_trap();
  auto reader = fde::image::Qcow2Reader::open(std::move(*raw), "fuzz.qcow2");
  if (!reader) return 0;
  auto virtual_size = (*reader)->size();
  if (!virtual_size) __builtin_trap();
  const std::uint64_t window = std::min<std::uint64_t>(*virtual_size, 64u << 20);
  auto ranges = (*reader)->data_ranges(0, window);
  if (!ranges) return 0;
  std::uint64_t budget = 1u << 20;
  std::uint64_t last_end = 0;
  std::vector<std::uint8_t> buffer;
  for (const auto& range : *ranges) {
    // In order, merged, inside the window.
    if (range.offset < last_end || range.length == 0 || range.offset + range.length > window) __builtin_trap();
    last_end = range.offset + range.length;
    const std::uint64_t n = std::min(range.length, budget);
    if (n == 0) break;
    buffer.resize(static_cast<std::size_t>(n));
    (void)(*reader)->read_at(range.offset, buffer);
    budget -= n;
  }
  // A read across the end of the disk must be refused, not served.
  std::uint8_t tail[16];
  if (*virtual_size < UINT64_MAX - 16 && (*reader)->read_at(*virtual_size, tail)) __builtin_trap();
  return 0;
}
