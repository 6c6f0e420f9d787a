// The deterministic CBOR writer (RFC 8949 preferred serialisation, definite lengths).
#include "common/cbor/cbor_writer.hpp"

namespace fde::cbor {

void Writer::head(std::uint8_t major_type, std::uint64_t value) {
  // RFC 8949 section 4.2.1 preferred serialisation: the shortest head that holds the value.
  auto mt = static_cast<std::uint8_t>(major_type << 5);
  if (value < 24) {
    out_.push_back(static_cast<std::uint8_t>(mt | value));
  } else if (value <= 0xff) {
    out_.push_back(mt | 24);
    out_.push_back(static_cast<std::uint8_t>(value));
  } else if (value <= 0xffff) {
    out_.push_back(mt | 25);
    for (int shift = 8; shift >= 0; shift -= 8) out_.push_back(static_cast<std::uint8_t>(value >> shift));
  } else if (value <= 0xffffffff) {
    out_.push_back(mt | 26);
    for (int shift = 24; shift >= 0; shift -= 8) out_.push_back(static_cast<std::uint8_t>(value >> shift));
  } else {
    out_.push_back(mt | 27);
    for (int shift = 56; shift >= 0; shift -= 8) out_.push_back(static_cast<std::uint8_t>(value >> shift));
  }
}

Writer& Writer::uint(std::uint64_t value) {
  head(0, value);
  return *this;
}
Writer& Writer::integer(std::int64_t value) {
  if (value >= 0)
    head(0, static_cast<std::uint64_t>(value));
  else
    head(1, static_cast<std::uint64_t>(-(value + 1)));
  return *this;
}
Writer& Writer::bytes(ByteView value) {
  head(2, value.size());
  out_.insert(out_.end(), value.begin(), value.end());
  return *this;
}
Writer& Writer::text(std::string_view value) {
  head(3, value.size());
  auto b = as_bytes(value);
  out_.insert(out_.end(), b.begin(), b.end());
  return *this;
}
Writer& Writer::array(std::size_t count) {
  head(4, count);
  return *this;
}
Writer& Writer::map(std::size_t count) {
  head(5, count);
  return *this;
}
Writer& Writer::tag(std::uint64_t number) {
  head(6, number);
  return *this;
}
Writer& Writer::raw(ByteView encoded_item) {
  out_.insert(out_.end(), encoded_item.begin(), encoded_item.end());
  return *this;
}

}  // namespace fde::cbor
