// Template part of raw_file.hpp (sparse range copy).
#pragma once

#include <algorithm>
#include <vector>

namespace fde::image {

template <class Progress>
Result<void> copy_range_sparse(const RawFile& from, RawFile& to, std::uint64_t offset,
                               std::uint64_t length, Progress&& on_progress) {
  constexpr std::uint64_t chunk = 1024 * 1024;
  std::vector<std::uint8_t> buffer(chunk);
  const std::uint64_t end = offset + length;
  std::uint64_t position = offset;
  while (position < end) {
    auto data = from.next_data(position);
    if (!data) return tl::unexpected(data.error());
    if (*data >= end) break;
    auto hole = from.next_hole(*data);
    if (!hole) return tl::unexpected(hole.error());
    const std::uint64_t stop = std::min(*hole, end);
    for (std::uint64_t at = *data; at < stop; at += chunk) {
      const std::size_t n = static_cast<std::size_t>(std::min(chunk, stop - at));
      std::span<std::uint8_t> part(buffer.data(), n);
      if (auto ok = from.read_at(at, part); !ok) return ok;
      if (auto ok = to.write_sparse_at(at, part); !ok) return ok;
      if (auto ok = on_progress(static_cast<std::uint64_t>(n)); !ok) return ok;
    }
    position = stop;
  }
  return {};
}

}  // namespace fde::image
