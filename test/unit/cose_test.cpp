// Unit tests for COSE_Sign1 parsing, the Sig_structure and signature verification.
#include <catch2/catch.hpp>
#include <string>

#include "common/cbor/cbor.hpp"
#include "common/cose/cose_sign1.hpp"
#include "common/crypto/hash.hpp"
#include "common/token/token.hpp"
#include "common/util/file.hpp"

using namespace fde;
using fde::cbor::Writer;

namespace {

const std::string data_dir = FDE_EXTERNAL_TESTDATA;

Bytes load(const std::string& relative) {
  auto bytes = read_file(data_dir + "/" + relative, 65536);
  REQUIRE(bytes.has_value());
  return *bytes;
}

// The serialized COSE_Sign1 held in one entry of a tag-399 token.
Bytes token_entry(const Bytes& token, std::int64_t key) {
  auto root = cbor::decode_tagged(token, cbor::DecodeLimits{});
  REQUIRE(root.has_value());
  auto map = cbor::get_int_map(root->item.get(), "token");
  REQUIRE(map.has_value());
  auto bytes = cbor::get_bytes(cbor::find(*map, key), "entry");
  REQUIRE(bytes.has_value());
  return to_bytes(*bytes);
}

Bytes secgear_cvm_cose() { return token_entry(load("virtcca-secgear/virtcca.cbor"), token::key_cvm_token); }

crypto::PublicKey secgear_rak() {
  auto parsed = token::parse_token(load("virtcca-secgear/virtcca.cbor"));
  REQUIRE(parsed.has_value());
  auto key = crypto::PublicKey::from_spki_der(parsed->cvm.public_key);
  REQUIRE(key.has_value());
  return *key;
}

Bytes encode_header(std::initializer_list<std::pair<std::int64_t, std::int64_t>> entries) {
  Writer w;
  w.map(entries.size());
  for (const auto& [label, value] : entries) w.integer(label).integer(value);
  return w.take();
}

const Bytes empty_map = {0xa0};

// A tagged COSE_Sign1 with the given parts; `unprotected` is an encoded map.
Bytes build_sign1(ByteView protected_map, ByteView payload, ByteView signature, ByteView unprotected = empty_map) {
  Writer w;
  w.tag(cose::tag_cose_sign1).array(4).bytes(protected_map).raw(unprotected).bytes(payload).bytes(signature);
  return w.take();
}

const crypto::PrivateKey& p521_key() {
  static crypto::PrivateKey key = *crypto::PrivateKey::generate(crypto::KeyType::ec_p521);
  return key;
}

// base64url without padding (JWK) -> bytes.
Bytes from_base64url(std::string text) {
  for (char& c : text) {
    if (c == '-') c = '+';
    if (c == '_') c = '/';
  }
  while (text.size() % 4 != 0) text += '=';
  auto bytes = base64_decode(text);
  REQUIRE(bytes.has_value());
  return *bytes;
}

const Bytes ps256_header = {0xa1, 0x01, 0x38, 0x24};  // {1: -37}

}  // namespace

TEST_CASE("the real secGear CVM COSE_Sign1 parses with PS256 and keeps the payload as received") {
  auto message = cose::parse_sign1(secgear_cvm_cose());
  REQUIRE(message.has_value());
  CHECK(message->protected_header == ps256_header);
  CHECK(message->alg == crypto::SigAlg::ps256);
  CHECK(message->payload.size() == 895);
  // b.1: the payload still holds the inner bstr head (59 03 7c) of the double wrap.
  CHECK(hex_encode(ByteView(message->payload).first(3)) == "59037c");
  CHECK(message->signature.size() == 512);
}

TEST_CASE("the Sig_structure is the RFC 9052 deterministic Signature1 array") {
  const Bytes protected_map = {0xa1, 0x01, 0x26};
  const Bytes payload = {0x01, 0x02};
  CHECK(hex_encode(cose::sig_structure(protected_map, payload)) ==
        "846a5369676e61747572653143a101264042"
        "0102");
  // Longer fields get minimal multi-byte heads (payload of 300 bytes -> 59 01 2c).
  const Bytes long_payload(300, 0x55);
  auto tbs = cose::sig_structure(protected_map, long_payload);
  CHECK(hex_encode(ByteView(tbs).subspan(17, 3)) == "59012c");
  CHECK(tbs.size() == 20 + 300);
}

TEST_CASE("the real secGear PS256 signature verifies with the RAK embedded in the token") {
  auto message = cose::parse_sign1(secgear_cvm_cose());
  REQUIRE(message.has_value());
  CHECK(cose::verify_sign1(*message, secgear_rak()).has_value());
}

TEST_CASE("one flipped byte in the protected header, payload or signature breaks the signature") {
  auto original = cose::parse_sign1(secgear_cvm_cose());
  REQUIRE(original.has_value());
  const auto rak = secgear_rak();

  SECTION("protected header: alg -37 becomes -38 (PS384), still an RSA alg") {
    Bytes protected_map = original->protected_header;
    protected_map[3] ^= 0x01;
    auto message = cose::parse_sign1(build_sign1(protected_map, original->payload, original->signature));
    REQUIRE(message.has_value());
    CHECK(message->alg == crypto::SigAlg::ps384);
    auto verified = cose::verify_sign1(*message, rak);
    REQUIRE_FALSE(verified.has_value());
    CHECK(verified.error().code == Errc::verification_failed);
  }
  SECTION("payload: one bit of the challenge") {
    Bytes payload = original->payload;
    payload[10] ^= 0x01;
    auto message = cose::parse_sign1(build_sign1(original->protected_header, payload, original->signature));
    REQUIRE(message.has_value());
    CHECK(cose::verify_sign1(*message, rak).error().code == Errc::verification_failed);
  }
  SECTION("signature: first, middle and last byte") {
    for (std::size_t index : {std::size_t{0}, std::size_t{255}, std::size_t{511}}) {
      Bytes signature = original->signature;
      signature[index] ^= 0x80;
      auto message = cose::parse_sign1(build_sign1(original->protected_header, original->payload, signature));
      REQUIRE(message.has_value());
      CHECK_FALSE(cose::verify_sign1(*message, rak).has_value());
    }
  }
}

TEST_CASE("the Arm CCA platform COSE_Sign1 verifies ES384 with the published CPAK") {
  auto cpak_pem = load("armcca-veraison-ccatoken/cca_platform.pub");
  auto cpak = crypto::PublicKey::from_pem(as_text(cpak_pem));
  REQUIRE(cpak.has_value());
  CHECK(cpak->type() == crypto::KeyType::ec_p384);
  auto message =
      cose::parse_sign1(token_entry(load("armcca-rust-ccatoken/cca-token-01.cbor"), token::key_platform_token));
  REQUIRE(message.has_value());
  CHECK(message->alg == crypto::SigAlg::es384);
  CHECK(message->signature.size() == 96);
  CHECK(cose::verify_sign1(*message, *cpak).has_value());
  SECTION("and not with another P-384 key") {
    auto other = crypto::PrivateKey::generate(crypto::KeyType::ec_p384);
    REQUIRE(other.has_value());
    CHECK(cose::verify_sign1(*message, other->public_key()).error().code == Errc::verification_failed);
  }
}

TEST_CASE("the cca-token-02 platform COSE_Sign1 verifies ES256 with the P-256 trust anchor JWK") {
  // ta-02-ok.json: x and y of the P-256 key, base64url.
  Bytes point = {0x04};
  auto x = from_base64url("MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4");
  auto y = from_base64url("4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM");
  point.insert(point.end(), x.begin(), x.end());
  point.insert(point.end(), y.begin(), y.end());
  auto key = crypto::PublicKey::from_ec_point(crypto::KeyType::ec_p256, point);
  REQUIRE(key.has_value());
  auto message =
      cose::parse_sign1(token_entry(load("armcca-rust-ccatoken/cca-token-02.cbor"), token::key_platform_token));
  REQUIRE(message.has_value());
  CHECK(message->alg == crypto::SigAlg::es256);
  CHECK(cose::verify_sign1(*message, *key).has_value());
}

TEST_CASE("ES512 COSE_Sign1 signatures verify in raw r||s and in DER form") {
  const Bytes protected_map = encode_header({{cose::header_alg, -36}});
  const Bytes payload = {0xa1, 0x0a, 0x41, 0x00};
  const Bytes tbs = cose::sig_structure(protected_map, payload);
  for (auto encoding : {crypto::EcdsaEncoding::raw, crypto::EcdsaEncoding::der}) {
    auto signature = crypto::sign(p521_key(), crypto::SigAlg::es512, tbs, encoding);
    REQUIRE(signature.has_value());
    auto message = cose::parse_sign1(build_sign1(protected_map, payload, *signature));
    REQUIRE(message.has_value());
    CHECK(message->alg == crypto::SigAlg::es512);
    CHECK(cose::verify_sign1(*message, p521_key().public_key()).has_value());
  }
}

TEST_CASE("an alg that does not fit the key is refused before verifying") {
  auto original = cose::parse_sign1(secgear_cvm_cose());
  REQUIRE(original.has_value());
  SECTION("ES512 header with the RSA RAK") {
    auto message = cose::parse_sign1(
        build_sign1(encode_header({{cose::header_alg, -36}}), original->payload, original->signature));
    REQUIRE(message.has_value());
    auto verified = cose::verify_sign1(*message, secgear_rak());
    REQUIRE_FALSE(verified.has_value());
    CHECK(verified.error().message.find("ES512") != std::string::npos);
  }
  SECTION("PS256 header with a P-521 key") {
    CHECK_FALSE(cose::verify_sign1(*original, p521_key().public_key()).has_value());
  }
}

TEST_CASE("the protected header must carry an allow-listed integer alg") {
  const Bytes payload = {0x40};
  const Bytes signature(64, 0x11);
  SECTION("unknown alg (EdDSA -8) is unsupported") {
    auto message = cose::parse_sign1(build_sign1(encode_header({{cose::header_alg, -8}}), payload, signature));
    REQUIRE_FALSE(message.has_value());
    CHECK(message.error().code == Errc::unsupported);
    CHECK(message.error().message.find("-8") != std::string::npos);
  }
  SECTION("alg absent") {
    auto message = cose::parse_sign1(build_sign1(encode_header({{4, 1}}), payload, signature));
    REQUIRE_FALSE(message.has_value());
    CHECK(message.error().message.find("alg (label 1) is absent") != std::string::npos);
  }
  SECTION("empty protected header") {
    auto message = cose::parse_sign1(build_sign1(Bytes{}, payload, signature));
    REQUIRE_FALSE(message.has_value());
    CHECK(message.error().message.find("alg (label 1) is required") != std::string::npos);
  }
  SECTION("alg as text") {
    Writer header;
    header.map(1).integer(1).text("ES512");
    auto message = cose::parse_sign1(build_sign1(header.data(), payload, signature));
    REQUIRE_FALSE(message.has_value());
    CHECK(message.error().message.find("expected integer, found text string") != std::string::npos);
  }
  SECTION("alg only in the unprotected header") {
    auto message = cose::parse_sign1(
        build_sign1(encode_header({{4, 1}}), payload, signature, encode_header({{cose::header_alg, -37}})));
    CHECK_FALSE(message.has_value());
  }
  SECTION("alg in both buckets") {
    auto message =
        cose::parse_sign1(build_sign1(ps256_header, payload, signature, encode_header({{cose::header_alg, -37}})));
    CHECK_FALSE(message.has_value());
  }
  SECTION("protected header that is not a map") {
    Writer header;
    header.array(2).integer(1).integer(-37);
    CHECK_FALSE(cose::parse_sign1(build_sign1(header.data(), payload, signature)).has_value());
  }
  SECTION("protected header with trailing bytes") {
    Bytes header = ps256_header;
    header.push_back(0x00);
    CHECK_FALSE(cose::parse_sign1(build_sign1(header, payload, signature)).has_value());
  }
}

TEST_CASE("a crit header is refused in either bucket") {
  const Bytes payload = {0x40};
  const Bytes signature(64, 0x11);
  Writer crit_protected;
  crit_protected.map(2).integer(cose::header_alg).integer(-37).integer(cose::header_crit).array(1).integer(4);
  auto in_protected = cose::parse_sign1(build_sign1(crit_protected.data(), payload, signature));
  REQUIRE_FALSE(in_protected.has_value());
  CHECK(in_protected.error().code == Errc::unsupported);
  CHECK(in_protected.error().message.find("crit") != std::string::npos);

  Writer crit_unprotected;
  crit_unprotected.map(1).integer(cose::header_crit).array(1).integer(4);
  auto in_unprotected = cose::parse_sign1(build_sign1(ps256_header, payload, signature, crit_unprotected.data()));
  REQUIRE_FALSE(in_unprotected.has_value());
  CHECK(in_unprotected.error().message.find("crit") != std::string::npos);
}

TEST_CASE("the COSE_Sign1 envelope must be tag 18 around exactly four well-typed elements") {
  const Bytes payload = {0x40};
  const Bytes signature(64, 0x11);
  SECTION("untagged array") {
    Writer w;
    w.array(4).bytes(ps256_header).map(0).bytes(payload).bytes(signature);
    auto message = cose::parse_sign1(w.data());
    REQUIRE_FALSE(message.has_value());
    CHECK(message.error().message.find("expected tag 18, found array") != std::string::npos);
  }
  SECTION("wrong tag (COSE_Mac0, 17)") {
    Writer w;
    w.tag(17).array(4).bytes(ps256_header).map(0).bytes(payload).bytes(signature);
    auto message = cose::parse_sign1(w.data());
    REQUIRE_FALSE(message.has_value());
    CHECK(message.error().message.find("found tag 17") != std::string::npos);
  }
  SECTION("three or five elements") {
    Writer three;
    three.tag(18).array(3).bytes(ps256_header).map(0).bytes(payload);
    CHECK(cose::parse_sign1(three.data()).error().message.find("found 3") != std::string::npos);
    Writer five;
    five.tag(18).array(5).bytes(ps256_header).map(0).bytes(payload).bytes(signature).bytes(signature);
    CHECK(cose::parse_sign1(five.data()).error().message.find("found 5") != std::string::npos);
  }
  SECTION("detached payload (nil)") {
    Writer w;
    w.tag(18).array(4).bytes(ps256_header).map(0).raw(Bytes{0xf6}).bytes(signature);
    auto message = cose::parse_sign1(w.data());
    REQUIRE_FALSE(message.has_value());
    CHECK(message.error().code == Errc::unsupported);
    CHECK(message.error().message.find("detached") != std::string::npos);
  }
  SECTION("payload as text") {
    Writer w;
    w.tag(18).array(4).bytes(ps256_header).map(0).text("claims").bytes(signature);
    CHECK(cose::parse_sign1(w.data()).error().message == "COSE_Sign1 payload: expected byte string, found text string");
  }
  SECTION("unprotected header not a map") {
    Writer w;
    w.tag(18).array(4).bytes(ps256_header).bytes(Bytes{}).bytes(payload).bytes(signature);
    CHECK_FALSE(cose::parse_sign1(w.data()).has_value());
  }
  SECTION("protected header as a bare map instead of a bstr") {
    Writer w;
    w.tag(18).array(4).raw(ps256_header).map(0).bytes(payload).bytes(signature);
    CHECK_FALSE(cose::parse_sign1(w.data()).has_value());
  }
  SECTION("empty signature") {
    CHECK_FALSE(cose::parse_sign1(build_sign1(ps256_header, payload, Bytes{})).has_value());
  }
  SECTION("trailing bytes after the envelope") {
    Bytes encoded = build_sign1(ps256_header, payload, signature);
    encoded.push_back(0x00);
    CHECK_FALSE(cose::parse_sign1(encoded).has_value());
  }
  SECTION("empty input") { CHECK_FALSE(cose::parse_sign1(ByteView{}).has_value()); }
}

TEST_CASE("an already-decoded tagged item parses like its encoding") {
  // libcbor 0.8 loads tag 18 only in its two-byte head form (d8 12), so that is what an
  // already-decoded item holds.
  const Bytes payload = {0x41, 0x07};
  const Bytes signature(96, 0x22);
  Writer w;
  w.raw(Bytes{0xd8, 0x12})
      .array(4)
      .bytes(encode_header({{cose::header_alg, -35}}))
      .map(0)
      .bytes(payload)
      .bytes(signature);
  auto item = cbor::decode(w.data(), cbor::DecodeLimits{});
  REQUIRE(item.has_value());
  auto from_item = cose::parse_sign1(item->get());
  REQUIRE(from_item.has_value());
  CHECK(from_item->alg == crypto::SigAlg::es384);
  CHECK(from_item->payload == payload);
  auto from_bytes = cose::parse_sign1(w.data());
  REQUIRE(from_bytes.has_value());
  CHECK(from_bytes->signature == from_item->signature);
  CHECK_FALSE(cose::parse_sign1(static_cast<const cbor_item_t*>(nullptr)).has_value());
}
