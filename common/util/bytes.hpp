// Byte buffers, views and hex/base64 conversion used across the project.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/util/error.hpp"

namespace fde {

using Bytes = std::vector<std::uint8_t>;
using ByteView = std::span<const std::uint8_t>;

inline ByteView as_bytes(std::string_view text) {
  return {reinterpret_cast<const std::uint8_t*>(text.data()), text.size()};
}
inline std::string_view as_text(ByteView bytes) {
  return {reinterpret_cast<const char*>(bytes.data()), bytes.size()};
}
inline Bytes to_bytes(ByteView view) { return Bytes(view.begin(), view.end()); }

// Lowercase hex, no separators.
std::string hex_encode(ByteView bytes);
// Accepts upper or lower case; surrounding ASCII whitespace is ignored, inner whitespace
// (line breaks in hex dumps) is skipped. Odd length or a non-hex character is an error.
Result<Bytes> hex_decode(std::string_view text);

std::string base64_encode(ByteView bytes);
// Standard alphabet with padding; rejects anything else.
Result<Bytes> base64_decode(std::string_view text);

// Constant-time equality (lengths are compared first; length is not secret).
bool equal_constant_time(ByteView a, ByteView b);

// Little-endian readers used by the binary parsers; callers check bounds first.
inline std::uint16_t load_le16(const std::uint8_t* p) {
  return static_cast<std::uint16_t>(p[0] | (p[1] << 8));
}
inline std::uint32_t load_le32(const std::uint8_t* p) {
  return static_cast<std::uint32_t>(p[0]) | (static_cast<std::uint32_t>(p[1]) << 8) |
         (static_cast<std::uint32_t>(p[2]) << 16) | (static_cast<std::uint32_t>(p[3]) << 24);
}
inline std::uint64_t load_le64(const std::uint8_t* p) {
  return static_cast<std::uint64_t>(load_le32(p)) | (static_cast<std::uint64_t>(load_le32(p + 4)) << 32);
}
// Big-endian readers (qcow2's header); callers check bounds first.
inline std::uint32_t load_be32(const std::uint8_t* p) {
  return (static_cast<std::uint32_t>(p[0]) << 24) | (static_cast<std::uint32_t>(p[1]) << 16) |
         (static_cast<std::uint32_t>(p[2]) << 8) | static_cast<std::uint32_t>(p[3]);
}
inline std::uint64_t load_be64(const std::uint8_t* p) {
  return (static_cast<std::uint64_t>(load_be32(p)) << 32) | load_be32(p + 4);
}
void append_le16(Bytes& out, std::uint16_t value);
void append_le32(Bytes& out, std::uint32_t value);
void append_le64(Bytes& out, std::uint64_t value);

}  // namespace fde
