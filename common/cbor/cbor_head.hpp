// Reading one CBOR head (major type + argument, RFC 8949 section 3) without libcbor.
//
// Not a CBOR parser: the verifier decodes with libcbor (cbor.hpp). This exists for two
// narrow jobs that libcbor cannot do here: peeling COSE's one-byte tag 18, which libcbor
// 0.8 refuses, and the agent's framing check of a token fresh from the TSI device, in a
// static binary for which Debian ships no static libcbor.
#pragma once

#include <cstdint>

#include "common/util/bytes.hpp"

namespace fde::cbor {

namespace major {
constexpr std::uint8_t unsigned_integer = 0;
constexpr std::uint8_t negative_integer = 1;
constexpr std::uint8_t byte_string = 2;
constexpr std::uint8_t text_string = 3;
constexpr std::uint8_t array = 4;
constexpr std::uint8_t map = 5;
constexpr std::uint8_t tag = 6;
constexpr std::uint8_t simple = 7;
}  // namespace major

struct Head {
  std::uint8_t major_type = 0;
  std::uint64_t argument = 0;  // the value, length, count or tag number
  std::size_t size = 0;        // bytes the head occupies (1, 2, 3, 5 or 9)
};

// Reads the head at the start of `input`. Indefinite lengths and reserved values (additional
// information 28..31) are errors, as is a head cut short.
Result<Head> read_head(ByteView input);

}  // namespace fde::cbor
