// Unit tests for the virtCCA / Arm CCA token parser: real tokens and hostile variants.
#include "common/token/token.hpp"

#include <algorithm>
#include <catch2/catch.hpp>
#include <string>
#include <utility>
#include <vector>

#include "common/cbor/cbor.hpp"
#include "common/crypto/hash.hpp"
#include "common/token/token_framing.hpp"
#include "common/token/token_verifier.hpp"
#include "common/util/file.hpp"

using namespace fde;
using namespace fde::token;
using fde::cbor::Writer;

namespace {

const std::string data_dir = FDE_EXTERNAL_TESTDATA;

Bytes load(const std::string& relative) {
  auto bytes = read_file(data_dir + "/" + relative, 65536);
  REQUIRE(bytes.has_value());
  return *bytes;
}

Token parse_file(const std::string& relative) {
  auto parsed = parse_token(load(relative));
  if (!parsed) FAIL(relative << ": " << parsed.error().describe());
  return *parsed;
}

bool mentions(const Error& error, std::string_view text) { return error.message.find(text) != std::string::npos; }

// ---- builders for hostile variants (realistic encodings via fde::cbor::Writer) ----

Bytes enc_bytes(ByteView value) { return Writer().bytes(value).take(); }
Bytes enc_bytes(std::size_t size, std::uint8_t fill) { return enc_bytes(Bytes(size, fill)); }
Bytes enc_text(std::string_view value) { return Writer().text(value).take(); }
Bytes enc_int(std::int64_t value) { return Writer().integer(value).take(); }

// An ordered list of (integer key, encoded value); tests edit it, then encode it as a map.
using Claims = std::vector<std::pair<std::int64_t, Bytes>>;

Bytes encode_map(const Claims& claims) {
  Writer w;
  w.map(claims.size());
  for (const auto& [key, value] : claims) w.integer(key).raw(value);
  return w.take();
}

void set_claim(Claims& claims, std::int64_t key, Bytes value) {
  for (auto& entry : claims)
    if (entry.first == key) {
      entry.second = std::move(value);
      return;
    }
  claims.emplace_back(key, std::move(value));
}

void erase_claim(Claims& claims, std::int64_t key) {
  claims.erase(std::remove_if(claims.begin(), claims.end(), [&](const auto& e) { return e.first == key; }),
               claims.end());
}

Bytes encode_rems(std::size_t count, std::size_t size) {
  Writer w;
  w.array(count);
  for (std::size_t i = 0; i < count; ++i) w.bytes(Bytes(size, static_cast<std::uint8_t>(i)));
  return w.take();
}

// A well-formed virtCCA "new firmware" CVM claim set: P-521 RAK, sha-256 measurements.
Claims cvm_claims() {
  Bytes rak(133, 0x5a);
  rak[0] = 0x04;
  return {
      {cvm_claim::challenge, enc_bytes(64, 0xc1)},
      {cvm_claim::personalization_value, enc_bytes(64, 0x00)},
      {cvm_claim::hash_algo_id, enc_text("sha-256")},
      {cvm_claim::public_key, enc_bytes(rak)},
      {cvm_claim::initial_measurement, enc_bytes(32, 0x11)},
      {cvm_claim::extensible_measurements, encode_rems(4, 32)},
      {cvm_claim::public_key_hash_algo_id, enc_text("sha-256")},
  };
}

Bytes sw_component(std::string_view type) {
  Writer w;
  w.map(4).integer(1).text(type).integer(2).bytes(Bytes(32, 0x21)).integer(5).bytes(Bytes(32, 0x22));
  w.integer(6).text("sha-256");
  return w.take();
}

Bytes sw_components(std::size_t count) {
  Writer w;
  w.array(count);
  for (std::size_t i = 0; i < count; ++i) w.raw(sw_component("BL" + std::to_string(i)));
  return w.take();
}

Claims platform_claims() {
  Bytes instance(33, 0x07);
  instance[0] = 0x01;
  return {
      {platform_claim::profile, enc_text("http://arm.com/CCA-SSD/1.0.0")},
      {platform_claim::challenge, enc_bytes(32, 0x33)},
      {platform_claim::implementation_id, enc_bytes(32, 0x44)},
      {platform_claim::instance_id, enc_bytes(instance)},
      {platform_claim::config, enc_bytes(4, 0xcf)},
      {platform_claim::lifecycle, enc_int(0x3003)},
      {platform_claim::sw_components, sw_components(2)},
      {platform_claim::hash_algo_id, enc_text("sha-256")},
  };
}

const Bytes es512_header = {0xa1, 0x01, 0x38, 0x23};  // {1: -36}

// A tagged COSE_Sign1 around `payload` (the signature is a placeholder: these tests parse only).
Bytes sign1(ByteView payload) {
  return Writer().tag(18).array(4).bytes(es512_header).map(0).bytes(payload).bytes(Bytes(132, 0x99)).take();
}

// virtCCA CVM token: the claims map inside a bstr inside the COSE payload (b.1).
Bytes cvm_cose(const Claims& claims, bool double_wrap = true) {
  Bytes map = encode_map(claims);
  return sign1(double_wrap ? enc_bytes(map) : map);
}

Bytes platform_cose(const Claims& claims) { return sign1(encode_map(claims)); }

// Tag 399 around a map of the given entries, each a bstr.
Bytes cca_token(const std::vector<std::pair<std::int64_t, Bytes>>& entries) {
  Writer w;
  w.tag(tag_cca_token).map(entries.size());
  for (const auto& [key, value] : entries) w.integer(key).bytes(value);
  return w.take();
}

Bytes full_token(const Claims& cvm = cvm_claims(), const Claims& platform = platform_claims()) {
  return cca_token({{key_platform_token, platform_cose(platform)}, {key_cvm_token, cvm_cose(cvm)}});
}

Error parse_error(const Bytes& encoded) {
  auto parsed = parse_token(encoded);
  REQUIRE_FALSE(parsed.has_value());
  return parsed.error();
}

}  // namespace

// ---- real tokens ----

TEST_CASE("the real secGear virtCCA token parses as a legacy double-wrapped CVM token") {
  Token token = parse_file("virtcca-secgear/virtcca.cbor");
  CHECK_FALSE(token.is_full());
  CHECK_FALSE(token.platform.has_value());
  CHECK(token.raw.size() == 1431);
  CHECK(token.cvm_wrapping == CvmPayloadWrapping::double_wrapped);
  CHECK(token.cvm_envelope.alg == crypto::SigAlg::ps256);
  CHECK(token.cvm_envelope.payload.size() == 895);

  const CvmClaims& cvm = token.cvm;
  CHECK(cvm.challenge.size() == 64);
  CHECK(hex_encode(ByteView(cvm.challenge).first(8)) == "783c7f3e50bfffff");
  CHECK(as_text(ByteView(cvm.challenge).last(8)) == "random c");
  CHECK(cvm.personalization_value == Bytes(64, 0));
  CHECK(cvm.hash_algo_id == "sha-256");
  CHECK(cvm.public_key_hash_algo_id == "sha-256");
  CHECK(cvm.public_key.size() == 550);
  CHECK(cvm.public_key.front() == 0x30);  // DER SEQUENCE: the legacy RSA SPKI
  CHECK(hex_encode(cvm.initial_measurement) == "7309ec52e2870938ffa6930793d61e55ab982a756111410829d6073f66c71708");
  for (const Bytes& rem : cvm.extensible_measurements) CHECK(rem == Bytes(32, 0));
}

TEST_CASE("the secGear hex dump reads as the same bytes as the binary token") {
  auto from_hex = read_binary_or_hex_file(data_dir + "/virtcca-secgear/virtcca.cbor.hex", max_token_size);
  REQUIRE(from_hex.has_value());
  CHECK(*from_hex == load("virtcca-secgear/virtcca.cbor"));
  CHECK(parse_token(*from_hex).has_value());
}

TEST_CASE("the Arm CCA reference token cca-token-01 parses as a full single-wrapped token") {
  Token token = parse_file("armcca-rust-ccatoken/cca-token-01.cbor");
  REQUIRE(token.is_full());
  REQUIRE(token.platform.has_value());
  CHECK(token.cvm_wrapping == CvmPayloadWrapping::single);
  CHECK(token.cvm_envelope.alg == crypto::SigAlg::es384);
  CHECK(token.platform_envelope->alg == crypto::SigAlg::es384);
  CHECK(token.cvm.public_key.size() == 97);
  CHECK(token.cvm.challenge == Bytes(64, 0xab));

  const PlatformClaims& platform = *token.platform;
  CHECK(platform.profile == "http://arm.com/CCA-SSD/1.0.0");
  CHECK(hex_encode(platform.challenge) == "b5973cb68baa9fc55558786b7ec67f69e40df5ba5aa921cd0c27f40587a011ea");
  CHECK(platform.implementation_id.size() == 32);
  CHECK(platform.instance_id.size() == 33);
  CHECK(platform.config.size() == 33);
  CHECK(platform.lifecycle == 0x3003);
  CHECK(platform.hash_algo_id == "sha-256");
  CHECK(platform.verification_service == "whatever.com");
  REQUIRE(platform.sw_components.size() == 4);
  CHECK(platform.sw_components[0].type == "BL");
  CHECK(platform.sw_components[0].version == "3.4.2");
  CHECK(platform.sw_components[0].hash_algo_id == "sha-256");
  CHECK(platform.sw_components[0].measurement.size() == 32);
  CHECK(platform.sw_components[0].signer_id.size() == 32);
  CHECK_FALSE(platform.sw_components[1].hash_algo_id.has_value());
}

TEST_CASE("the other public Arm CCA tokens parse, including the draft-ffm realm profile claim") {
  Token token02 = parse_file("armcca-rust-ccatoken/cca-token-02.cbor");
  CHECK(token02.cvm.public_key_hash_algo_id == "sha-512");
  CHECK(token02.cvm.initial_measurement.size() == 64);
  REQUIRE(token02.platform.has_value());
  REQUIRE(token02.platform->sw_components.size() == 1);
  CHECK_FALSE(token02.platform->sw_components[0].type.has_value());  // only measurement + signer id
  CHECK(token02.platform->challenge.size() == 64);

  Token bug33 = parse_file("armcca-rust-ccatoken/bug-33-repro.cbor");
  CHECK(bug33.platform->sw_components.size() == 16);

  Token trustee = parse_file("armcca-trustee/cca-example-token.cbor");
  CHECK(trustee.raw.size() == 2234);
  CHECK(trustee.platform->sw_components.size() == 13);
  CHECK(trustee.platform->sw_components[0].type == "RSE_BL1_2");
  CHECK(trustee.cvm.initial_measurement.size() == 64);

  // draft-ffm: the realm carries profile 265 (accepted, ignored) and a COSE_Key RAK.
  Token ffm = parse_file("armcca-rust-ccatoken/cca-token-draft-ffm-00.cbor");
  CHECK(ffm.cvm.public_key.size() == 107);
  CHECK(ffm.platform->profile == "tag:arm.com,2023:cca_platform#1.0.0");

  CHECK(parse_file("armcca-veraison-ccatoken/cca_token.cbor").raw ==
        parse_file("armcca-rust-ccatoken/cca-token-01.cbor").raw);
}

TEST_CASE("tag-907 token collections and bare COSE_Sign1 tokens are refused with a clear reason") {
  for (const char* name : {"cca_token.cbor", "cca_example_token.cbor", "cca_example_token_legacy.cbor"}) {
    INFO(name);
    Error error = parse_error(load(std::string("armcca-tfm-iat-verifier/") + name));
    CHECK(error.code == Errc::unsupported);
    CHECK(mentions(error, "tag 907"));
  }
  for (const char* name :
       {"cca_platform_token.cbor", "cca_example_platform_token.cbor", "cca_example_platform_token_legacy.cbor"}) {
    INFO(name);
    Error error = parse_error(load(std::string("armcca-tfm-iat-verifier/") + name));
    CHECK(error.code == Errc::unsupported);
    CHECK(mentions(error, "bare COSE_Sign1"));
  }
}

// ---- hostile inputs ----

TEST_CASE("every truncation of a real token is refused without a crash") {
  for (const char* name : {"virtcca-secgear/virtcca.cbor", "armcca-rust-ccatoken/cca-token-01.cbor"}) {
    const Bytes token = load(name);
    std::size_t refused = 0;
    for (std::size_t length = 0; length < token.size(); ++length)
      if (!parse_token(ByteView(token).first(length))) ++refused;
    CHECK(refused == token.size());
  }
}

TEST_CASE("no single flipped bit in the real token yields a verifying CVM token") {
  const Bytes original = load("virtcca-secgear/virtcca.cbor");
  std::size_t parsed_but_rejected = 0;
  for (std::size_t index = 0; index < original.size(); ++index) {
    Bytes token = original;
    token[index] ^= 0x01;
    auto parsed = parse_token(token);
    if (!parsed) continue;
    // The attacker controls the embedded RAK too, so verify with whatever key the token holds.
    auto rak = rak_public_key(parsed->cvm);
    bool verified = rak && cose::verify_sign1(parsed->cvm_envelope, *rak).has_value();
    INFO("flipped byte " << index);
    CHECK_FALSE(verified);
    ++parsed_but_rejected;
  }
  // Most flips land in the payload or signature and parse fine; the signature catches them.
  CHECK(parsed_but_rejected > 1000);
}

TEST_CASE("a token over 8192 bytes is refused before decoding") {
  Bytes big(max_token_size + 1, 0x00);
  Error error = parse_error(big);
  CHECK(error.code == Errc::too_large);
  CHECK(mentions(error, "8193"));
  // The same holds for an otherwise well-formed token padded out in a claim.
  Claims claims = cvm_claims();
  set_claim(claims, 44999, enc_bytes(8200, 0));
  CHECK(parse_error(full_token(claims)).code == Errc::too_large);
}

TEST_CASE("the synthetic builders produce a token the parser accepts") {
  auto parsed = parse_token(full_token());
  REQUIRE(parsed.has_value());
  CHECK(parsed->is_full());
  CHECK(parsed->cvm_wrapping == CvmPayloadWrapping::double_wrapped);
  CHECK(parsed->platform->sw_components.size() == 2);
  auto single = parse_token(cca_token({{key_cvm_token, cvm_cose(cvm_claims(), false)}}));
  REQUIRE(single.has_value());
  CHECK(single->cvm_wrapping == CvmPayloadWrapping::single);
}

TEST_CASE("the outer envelope must be tag 399 around a map of one or two known entries") {
  const Bytes cvm = cvm_cose(cvm_claims());
  const Bytes platform = platform_cose(platform_claims());

  SECTION("wrong outer tag") {
    Bytes token = cca_token({{key_cvm_token, cvm}});
    token[2] = 0x90;  // d9 01 8f -> d9 01 90 (tag 400)
    Error error = parse_error(token);
    CHECK(mentions(error, "expected tag 399"));
    CHECK(mentions(error, "found tag 400"));
  }
  SECTION("no tag at all") {
    Bytes token = cca_token({{key_cvm_token, cvm}});
    Error error = parse_error(Bytes(token.begin() + 3, token.end()));
    CHECK(error.message == "token: expected tag 399 (CCA token), found map");
  }
  SECTION("tag 399 around an array") {
    Bytes token = Writer().tag(399).array(1).bytes(cvm).take();
    CHECK(mentions(parse_error(token), "expected a map under tag 399, found array"));
  }
  SECTION("an empty map") { CHECK(mentions(parse_error(cca_token({})), "0 entries")); }
  SECTION("a map with 3 entries") {
    Error error = parse_error(cca_token({{key_platform_token, platform}, {key_cvm_token, cvm}, {44242, cvm}}));
    CHECK(mentions(error, "3 entries"));
  }
  SECTION("duplicate keys") {
    Error error = parse_error(cca_token({{key_cvm_token, cvm}, {key_cvm_token, cvm}}));
    CHECK(mentions(error, "duplicate"));
  }
  SECTION("an unknown key") {
    Error error = parse_error(cca_token({{key_platform_token, platform}, {44242, cvm}}));
    CHECK(mentions(error, "unknown collection key 44242"));
  }
  SECTION("a text key") {
    Bytes token = Writer().tag(399).map(1).text("cvm").bytes(cvm).take();
    CHECK(mentions(parse_error(token), "map key must be an integer"));
  }
  SECTION("a platform token alone") {
    CHECK(mentions(parse_error(cca_token({{key_platform_token, platform}})), "CVM token (key 44241) missing"));
  }
  SECTION("an entry that is not a byte string") {
    Bytes token = Writer().tag(399).map(1).integer(key_cvm_token).array(0).take();
    CHECK(parse_error(token).message == "token entry 44241 (CVM token): expected byte string, found array");
    // A COSE_Sign1 inlined without its bstr wrapper is refused too (here by the decoder,
    // which refuses nested one-byte tag heads).
    CHECK_FALSE(parse_token(Writer().tag(399).map(1).integer(key_cvm_token).raw(cvm).take()).has_value());
  }
  SECTION("trailing bytes after the token") {
    Bytes token = cca_token({{key_cvm_token, cvm}});
    token.push_back(0x00);
    CHECK(mentions(parse_error(token), "trailing"));
  }
  SECTION("either order of the two entries is accepted") {
    CHECK(parse_token(cca_token({{key_cvm_token, cvm}, {key_platform_token, platform}})).has_value());
  }
}

TEST_CASE("platform and CVM tokens under each other's key are refused with a hint") {
  SECTION("virtCCA: a double-wrapped CVM payload under the platform key") {
    Bytes token =
        cca_token({{key_platform_token, cvm_cose(cvm_claims())}, {key_cvm_token, platform_cose(platform_claims())}});
    Error error = parse_error(token);
    CHECK(error.code == Errc::malformed);
    CHECK(mentions(error, "swapped"));
  }
  SECTION("the real Arm token with its two entries exchanged") {
    const Bytes original = load("armcca-rust-ccatoken/cca-token-01.cbor");
    auto root = cbor::decode_tagged(original, cbor::DecodeLimits{});
    REQUIRE(root.has_value());
    auto map = cbor::get_int_map(root->item.get(), "token");
    REQUIRE(map.has_value());
    Bytes platform = to_bytes(*cbor::get_bytes(cbor::find(*map, key_platform_token), "p"));
    Bytes cvm = to_bytes(*cbor::get_bytes(cbor::find(*map, key_cvm_token), "c"));
    Error error = parse_error(cca_token({{key_platform_token, cvm}, {key_cvm_token, platform}}));
    CHECK(mentions(error, "CVM token (key 44241)"));
    CHECK(mentions(error, "unknown claim key 2396"));
    CHECK(mentions(error, "swapped"));
  }
}

TEST_CASE("CVM claims must all be present with the right CBOR types") {
  Claims claims = cvm_claims();
  SECTION("the RAK as text names the claim and both types") {
    set_claim(claims, cvm_claim::public_key, enc_text("not a key"));
    Error error = parse_error(full_token(claims));
    CHECK(error.code == Errc::malformed);
    CHECK(mentions(error, "CVM claim 44237 (RAK): expected byte string, found text string"));
  }
  SECTION("the hash algo id as bytes") {
    set_claim(claims, cvm_claim::hash_algo_id, enc_bytes(as_bytes("sha-256")));
    CHECK(mentions(parse_error(full_token(claims)), "CVM claim 44236 (hash algo id): expected text string"));
  }
  SECTION("the challenge as an integer") {
    set_claim(claims, cvm_claim::challenge, enc_int(7));
    CHECK(mentions(parse_error(full_token(claims)), "CVM claim 10 (challenge): expected byte string"));
  }
  SECTION("each mandatory claim missing in turn") {
    for (std::int64_t key :
         {cvm_claim::challenge, cvm_claim::personalization_value, cvm_claim::hash_algo_id, cvm_claim::public_key,
          cvm_claim::initial_measurement, cvm_claim::extensible_measurements, cvm_claim::public_key_hash_algo_id}) {
      Claims reduced = cvm_claims();
      erase_claim(reduced, key);
      Error error = parse_error(full_token(reduced));
      INFO(error.message);
      CHECK(mentions(error, "CVM claim " + std::to_string(key)));
      CHECK(mentions(error, "missing"));
    }
  }
  SECTION("an unknown integer claim") {
    set_claim(claims, 44242, enc_bytes(1, 0));
    CHECK(mentions(parse_error(full_token(claims)), "unknown claim key 44242"));
  }
  SECTION("a text claim key") {
    // Built by hand: the 7 valid claims plus one text key.
    Writer w;
    w.map(claims.size() + 1);
    for (const auto& [key, value] : claims) w.integer(key).raw(value);
    w.text("nonce").bytes(Bytes(4, 0));
    Bytes token = cca_token({{key_cvm_token, sign1(enc_bytes(w.data()))}});
    CHECK(mentions(parse_error(token), "map key must be an integer, found text string"));
  }
  SECTION("the profile claim 265 is accepted but must be text") {
    set_claim(claims, cvm_claim::profile, enc_text("tag:arm.com,2023:realm#1.0.0"));
    CHECK(parse_token(full_token(claims)).has_value());
    set_claim(claims, cvm_claim::profile, enc_int(1));
    CHECK(mentions(parse_error(full_token(claims)), "CVM claim 265 (profile)"));
  }
  SECTION("REMs with 3 or 5 entries") {
    set_claim(claims, cvm_claim::extensible_measurements, encode_rems(3, 32));
    CHECK(mentions(parse_error(full_token(claims)), "exactly 4 entries, found 3"));
    set_claim(claims, cvm_claim::extensible_measurements, encode_rems(5, 32));
    CHECK(mentions(parse_error(full_token(claims)), "exactly 4 entries, found 5"));
  }
  SECTION("a REM that is not a byte string") {
    set_claim(claims, cvm_claim::extensible_measurements,
              Writer().array(4).bytes(Bytes(32, 0)).bytes(Bytes(32, 0)).text("x").bytes(Bytes(32, 0)).take());
    CHECK(mentions(parse_error(full_token(claims)), "REM[2]: expected byte string"));
  }
  SECTION("a byte-string claim over the parser bound") {
    set_claim(claims, cvm_claim::public_key, enc_bytes(max_claim_bytes + 1, 0x04));
    Error error = parse_error(full_token(claims));
    CHECK(error.code == Errc::too_large);
    CHECK(mentions(error, "CVM claim 44237 (RAK)"));
  }
  SECTION("a payload that is neither a map nor a wrapped map") {
    CHECK(mentions(parse_error(cca_token({{key_cvm_token, sign1(enc_int(5))}})),
                   "expected a claims map or a byte string wrapping one, found unsigned integer"));
    CHECK(mentions(parse_error(cca_token({{key_cvm_token, sign1(enc_bytes(enc_bytes(encode_map(claims))))}})),
                   "inner payload: expected a claims map, found byte string"));
  }
}

TEST_CASE("trailing NULs are trimmed from text claims") {
  Claims claims = cvm_claims();
  set_claim(claims, cvm_claim::hash_algo_id, enc_text(std::string_view("sha-256\0\0", 9)));
  auto parsed = parse_token(full_token(claims));
  REQUIRE(parsed.has_value());
  CHECK(parsed->cvm.hash_algo_id == "sha-256");
}

TEST_CASE("platform claims are checked for presence, type and bounds") {
  Claims claims = platform_claims();
  SECTION("verification service and profile are optional") {
    erase_claim(claims, platform_claim::profile);
    auto parsed = parse_token(full_token(cvm_claims(), claims));
    REQUIRE(parsed.has_value());
    CHECK_FALSE(parsed->platform->profile.has_value());
    CHECK_FALSE(parsed->platform->verification_service.has_value());
  }
  SECTION("each mandatory claim missing in turn") {
    for (std::int64_t key : {platform_claim::challenge, platform_claim::implementation_id, platform_claim::instance_id,
                             platform_claim::config, platform_claim::lifecycle, platform_claim::sw_components,
                             platform_claim::hash_algo_id}) {
      Claims reduced = platform_claims();
      erase_claim(reduced, key);
      Error error = parse_error(full_token(cvm_claims(), reduced));
      INFO(error.message);
      CHECK(mentions(error, "platform claim " + std::to_string(key)));
    }
  }
  SECTION("the lifecycle as text") {
    set_claim(claims, platform_claim::lifecycle, enc_text("secured"));
    CHECK(mentions(parse_error(full_token(cvm_claims(), claims)),
                   "platform claim 2395 (security lifecycle): expected integer, found text string"));
  }
  SECTION("an unknown platform claim") {
    set_claim(claims, 2398, enc_text("psa certification"));
    CHECK(mentions(parse_error(full_token(cvm_claims(), claims)), "unknown claim key 2398"));
  }
  SECTION("more sw components than the bound") {
    set_claim(claims, platform_claim::sw_components, sw_components(max_sw_components + 1));
    CHECK(parse_error(full_token(cvm_claims(), claims)).code == Errc::too_large);
  }
  SECTION("a sw component without a measurement or signer id") {
    set_claim(claims, platform_claim::sw_components, Writer().array(1).map(1).integer(5).bytes(Bytes(32, 0)).take());
    CHECK(mentions(parse_error(full_token(cvm_claims(), claims)), "measurement (key 2): missing"));
    set_claim(claims, platform_claim::sw_components, Writer().array(1).map(1).integer(2).bytes(Bytes(32, 0)).take());
    CHECK(mentions(parse_error(full_token(cvm_claims(), claims)), "signer id (key 5): missing"));
  }
  SECTION("a sw component that is not a map, or has a mistyped version") {
    set_claim(claims, platform_claim::sw_components, Writer().array(1).bytes(Bytes(32, 0)).take());
    CHECK(mentions(parse_error(full_token(cvm_claims(), claims)), "entry 0: expected map"));
    set_claim(claims, platform_claim::sw_components,
              Writer()
                  .array(1)
                  .map(3)
                  .integer(2)
                  .bytes(Bytes(32, 0))
                  .integer(5)
                  .bytes(Bytes(32, 0))
                  .integer(4)
                  .integer(1)
                  .take());
    CHECK(mentions(parse_error(full_token(cvm_claims(), claims)), "key 4 (version): expected text string"));
  }
  SECTION("a platform payload that wraps its map (single wrapping only)") {
    Bytes token = cca_token(
        {{key_platform_token, sign1(enc_bytes(encode_map(claims)))}, {key_cvm_token, cvm_cose(cvm_claims())}});
    CHECK(mentions(parse_error(token), "platform token payload: expected a claims map, found byte string"));
  }
}

TEST_CASE("COSE errors inside a token name the entry they come from") {
  Bytes bad_alg = Writer()
                      .tag(18)
                      .array(4)
                      .bytes(Bytes{0xa1, 0x01, 0x27})
                      .map(0)
                      .bytes(enc_bytes(encode_map(cvm_claims())))
                      .bytes(Bytes(64, 1))
                      .take();
  Error error = parse_error(cca_token({{key_cvm_token, bad_alg}}));
  CHECK(error.code == Errc::unsupported);
  CHECK(mentions(error, "CVM token (key 44241): COSE_Sign1 protected header: alg -8 is not allowed"));
}

// --- The agent's framing check (token_framing.hpp): complete tokens only, no libcbor. ---

TEST_CASE("the framing check accepts the real token and refuses every truncation of it") {
  auto bytes = fde::read_file(std::string(FDE_EXTERNAL_TESTDATA) + "/virtcca-secgear/virtcca.cbor", 8192);
  REQUIRE(bytes.has_value());
  CHECK(fde::token::check_token_framing(*bytes).has_value());
  for (std::size_t n = 0; n < bytes->size(); ++n)
    CHECK_FALSE(fde::token::check_token_framing(fde::ByteView(*bytes).first(n)).has_value());
  auto padded = *bytes;
  padded.push_back(0);
  CHECK_FALSE(fde::token::check_token_framing(padded).has_value());
}

TEST_CASE("the framing check accepts full Arm tokens and refuses other shapes") {
  const std::string dir = std::string(FDE_EXTERNAL_TESTDATA);
  auto full = fde::read_file(dir + "/armcca-rust-ccatoken/cca-token-01.cbor", 8192);
  REQUIRE(full.has_value());
  CHECK(fde::token::check_token_framing(*full).has_value());
  auto collection907 = fde::read_file(dir + "/armcca-tfm-iat-verifier/cca_token.cbor", 8192);
  CHECK_FALSE(fde::token::check_token_framing(*collection907).has_value());
  auto bare = fde::read_file(dir + "/armcca-tfm-iat-verifier/cca_platform_token.cbor", 8192);
  CHECK_FALSE(fde::token::check_token_framing(*bare).has_value());
  CHECK_FALSE(fde::token::check_token_framing(fde::Bytes(8193, 0xd9)).has_value());
  // A collection holding only a platform token has no CVM token.
  auto only_platform = *fde::hex_decode("d9018fa119acca4400000000");
  CHECK_FALSE(fde::token::check_token_framing(only_platform).has_value());
}
