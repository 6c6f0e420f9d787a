// Unit tests for the strict CBOR decoder and the deterministic writer.
#include <catch2/catch.hpp>

#include "common/cbor/cbor.hpp"

using namespace fde;
using namespace fde::cbor;

namespace {
const DecodeLimits limits{};

Result<ItemPtr> decode_hex(std::string_view hex) { return decode(*hex_decode(hex), limits); }
}  // namespace

TEST_CASE("the writer uses the shortest head for every length boundary") {
  CHECK(hex_encode(Writer().uint(23).data()) == "17");
  CHECK(hex_encode(Writer().uint(24).data()) == "1818");
  CHECK(hex_encode(Writer().uint(255).data()) == "18ff");
  CHECK(hex_encode(Writer().uint(256).data()) == "190100");
  CHECK(hex_encode(Writer().uint(65536).data()) == "1a00010000");
  CHECK(hex_encode(Writer().uint(1ull << 32).data()) == "1b0000000100000000");
  CHECK(hex_encode(Writer().integer(-37).data()) == "3824");
  CHECK(hex_encode(Writer().integer(-1).data()) == "20");
  CHECK(hex_encode(Writer().tag(399).data()) == "d9018f");
  CHECK(hex_encode(Writer().uint(44241).data()) == "19acd1");
  CHECK(hex_encode(Writer().map(1).uint(1).integer(-37).data()) == "a1013824");
  CHECK(hex_encode(Writer().text("ab").data()) == "626162");
}

TEST_CASE("decoding accepts what the writer produces and typed access works") {
  Writer w;
  w.tag(24).array(3).bytes(Bytes{1, 2}).text("sha-256").map(2).uint(10).integer(-36).integer(-7).bytes(Bytes{});
  auto item = decode(w.data(), limits);
  REQUIRE(item.has_value());
  auto tag = get_tag(item->get(), "outer");
  REQUIRE(tag.has_value());
  CHECK(tag->first == 24);
  auto array = get_array(tag->second, "array");
  REQUIRE(array.has_value());
  REQUIRE(array->size() == 3);
  CHECK(get_bytes((*array)[0], "b")->size() == 2);
  CHECK(*get_text((*array)[1], "t") == "sha-256");
  auto map = get_int_map((*array)[2], "m");
  REQUIRE(map.has_value());
  CHECK(*get_int(find(*map, 10), "v") == -36);
  CHECK(get_bytes(find(*map, -7), "v")->empty());
  CHECK(find(*map, 11) == nullptr);
}

TEST_CASE("typed access names the field and both types on a mismatch") {
  auto item = decode_hex("6161");  // text "a"
  REQUIRE(item.has_value());
  auto bytes = get_bytes(item->get(), "CVM claim 10 (challenge)");
  REQUIRE_FALSE(bytes.has_value());
  CHECK(bytes.error().message == "CVM claim 10 (challenge): expected byte string, found text string");
}

TEST_CASE("trailing bytes, truncation and empty input are refused") {
  CHECK(decode_hex("0000").error().code == Errc::malformed);
  CHECK_FALSE(decode_hex("5820aabb").has_value());
  CHECK_FALSE(decode(Bytes{}, limits).has_value());
  CHECK_FALSE(decode_hex("82").has_value());
}

TEST_CASE("indefinite lengths, floats and undefined are refused") {
  CHECK_FALSE(decode_hex("9f01ff").has_value());
  CHECK_FALSE(decode_hex("5f4101ff").has_value());
  CHECK_FALSE(decode_hex("bf0101ff").has_value());
  CHECK_FALSE(decode_hex("f93c00").has_value());
  CHECK_FALSE(decode_hex("fb3ff0000000000000").has_value());
  CHECK_FALSE(decode_hex("f7").has_value());
  CHECK(decode_hex("f5").has_value());  // true is fine
}

TEST_CASE("a declared length larger than the input is refused before allocation") {
  // An array that claims 2^32 elements in a handful of bytes.
  auto huge_array = decode_hex("9b000000010000000001");
  REQUIRE_FALSE(huge_array.has_value());
  CHECK(huge_array.error().message.find("exceeds the input") != std::string::npos);
  CHECK_FALSE(decode_hex("bb00000001000000000101").has_value());
  CHECK_FALSE(decode_hex("5bffffffffffffffff00").has_value());
}

TEST_CASE("inputs over the size limit are refused before decoding") {
  Bytes big(8193, 0);
  CHECK(decode(big, limits).error().code == Errc::too_large);
}

TEST_CASE("excessive nesting and too many items are refused") {
  Bytes deep(40, 0x81);
  deep.push_back(0x00);
  CHECK_FALSE(decode(deep, limits).has_value());
  Writer w;
  w.array(5000);
  for (int i = 0; i < 5000; ++i) w.uint(0);
  CHECK(decode(w.data(), limits).error().code == Errc::too_large);
}

TEST_CASE("duplicate map keys and non-integer-or-text keys are refused") {
  CHECK(decode_hex("a201000100").error().message.find("duplicate") != std::string::npos);
  CHECK_FALSE(decode_hex("a2616101616101").has_value());
  CHECK_FALSE(decode_hex("a1410100").has_value());  // byte-string key
  CHECK(decode_hex("a2616101616201").has_value());
}

TEST_CASE("integer maps refuse text keys and out-of-range integers are refused") {
  auto item = decode_hex("a1616101");
  REQUIRE(item.has_value());
  CHECK_FALSE(get_int_map(item->get(), "claims").has_value());
  auto big = decode_hex("1bffffffffffffffff");
  REQUIRE(big.has_value());
  CHECK_FALSE(get_int(big->get(), "n").has_value());
}

TEST_CASE("a leading COSE_Sign1 tag 18 is read even though libcbor 0.8 refuses tags 6-20") {
  auto plain = decode_hex("d2820102");
  CHECK_FALSE(plain.has_value());  // documents the libcbor limitation we work around
  auto tagged = decode_tagged(*hex_decode("d2820102"), limits);
  REQUIRE(tagged.has_value());
  CHECK(tagged->tag == 18);
  CHECK(get_array(tagged->item.get(), "a")->size() == 2);
  auto long_tag = decode_tagged(*hex_decode("d9018fa0"), limits);
  REQUIRE(long_tag.has_value());
  CHECK(long_tag->tag == 399);
  CHECK_FALSE(decode_tagged(*hex_decode("8102"), limits).has_value());
  CHECK_FALSE(decode_tagged(*hex_decode("d901"), limits).has_value());
  CHECK_FALSE(decode_tagged(*hex_decode("d2"), limits).has_value());
  CHECK_FALSE(decode_tagged(*hex_decode("d28201020a"), limits).has_value());
}
