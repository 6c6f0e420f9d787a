// A deterministic CBOR writer (no libcbor: the static agent and the simulator link it).
#pragma once

#include <cstdint>
#include <string_view>
#include <utility>

#include "common/util/bytes.hpp"

namespace fde::cbor {

// Writes deterministic CBOR: minimal-length heads, definite lengths, items in call order.
// Used to build the COSE Sig_structure and, in the simulator, whole tokens.
class Writer {
 public:
  Writer& uint(std::uint64_t value);
  Writer& integer(std::int64_t value);
  Writer& bytes(ByteView value);
  Writer& text(std::string_view value);
  Writer& array(std::size_t count);  // followed by `count` items
  Writer& map(std::size_t count);    // followed by `count` key/value pairs
  Writer& tag(std::uint64_t number);  // followed by one item
  Writer& raw(ByteView encoded_item);  // an already-encoded item, inserted verbatim
  const Bytes& data() const { return out_; }
  Bytes take() { return std::move(out_); }

 private:
  void head(std::uint8_t major_type, std::uint64_t value);
  Bytes out_;
};

}  // namespace fde::cbor
