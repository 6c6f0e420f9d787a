// Strict CBOR decoding on top of libcbor (the deterministic writer is in cbor_writer.hpp,
// included here for existing users).
//
// Decoding is two-pass: a streaming pre-scan (libcbor's cbor_stream_decode) checks every
// declared length against the bytes that remain, rejects indefinite lengths, floats and
// excessive nesting, and only then does cbor_load build the item tree. So a hostile
// 10-byte input that declares a 2^32-element array is refused before any allocation.
#pragma once

#include <cstdint>
#include <memory>
#include <string_view>
#include <utility>
#include <vector>

#include <cbor.h>

#include "common/cbor/cbor_writer.hpp"
#include "common/util/bytes.hpp"
#include "common/util/error.hpp"

namespace fde::cbor {

struct ItemDeleter {
  void operator()(cbor_item_t* item) const;
};
using ItemPtr = std::unique_ptr<cbor_item_t, ItemDeleter>;

struct DecodeLimits {
  std::size_t max_input_size = 8192;
  std::size_t max_depth = 16;
  std::size_t max_items = 4096;  // total data items, counted during the pre-scan
};

// Exactly one data item that uses every input byte; definite lengths only; map keys
// must be integers or text strings and unique within their map; no floats, no undefined.
Result<ItemPtr> decode(ByteView input, const DecodeLimits& limits);

// A tagged item: the tag number and the item it wraps.
struct Tagged {
  std::uint64_t tag = 0;
  ItemPtr item;
};

// Reads one leading tag head, then decodes the tagged item strictly with decode().
// Needed because libcbor 0.8 (Debian 12) rejects the one-byte tag heads 0xC6..0xD4 (tags
// 6-20) as "unassigned", and COSE_Sign1's tag 18 is one of them (libcbor issue #307, fixed
// upstream in 0.11). Every COSE_Sign1 we handle sits alone inside a bstr, so peeling its
// tag here is enough; a tag 6-20 nested deeper is still refused by decode().
Result<Tagged> decode_tagged(ByteView input, const DecodeLimits& limits);

// Typed access. `what` names the field for the error message ("CVM claim 44237 (RAK)").
Result<ByteView> get_bytes(const cbor_item_t* item, std::string_view what);
Result<std::string_view> get_text(const cbor_item_t* item, std::string_view what);
Result<std::int64_t> get_int(const cbor_item_t* item, std::string_view what);
// The tag number and the tagged item.
Result<std::pair<std::uint64_t, const cbor_item_t*>> get_tag(const cbor_item_t* item, std::string_view what);
Result<std::vector<const cbor_item_t*>> get_array(const cbor_item_t* item, std::string_view what);

// A map whose keys are all integers (COSE headers, token claims). Any other key is an error.
using IntMap = std::vector<std::pair<std::int64_t, const cbor_item_t*>>;
Result<IntMap> get_int_map(const cbor_item_t* item, std::string_view what);
const cbor_item_t* find(const IntMap& map, std::int64_t key);

// "byte string", "map", ... for error messages.
std::string_view type_name(const cbor_item_t* item);

}  // namespace fde::cbor
