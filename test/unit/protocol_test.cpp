// Protocol v1 wire message tests: round trips, every hostile input, the challenge binding.
#include <catch2/catch.hpp>

#include <string>
#include <utility>
#include <vector>

#include <openssl/evp.h>

#include "common/crypto/hpke.hpp"
#include "common/protocol/messages.hpp"

using namespace fde;
using namespace fde::protocol;

namespace {

Bytes pattern(std::size_t size, std::uint8_t seed) {
  Bytes out(size);
  for (std::size_t i = 0; i < size; ++i) out[i] = static_cast<std::uint8_t>(seed + i * 7);
  return out;
}

std::string quoted(std::string_view text) { return "\"" + std::string(text) + "\""; }
std::string b64(std::size_t size, std::uint8_t seed = 1) { return quoted(base64_encode(pattern(size, seed))); }

using Fields = std::vector<std::pair<std::string, std::string>>;  // name, raw JSON value

std::string object_json(const Fields& fields) {
  std::string out = "{";
  for (const auto& [name, value] : fields) {
    if (out.size() > 1) out += ",";
    out += quoted(name) + ":" + value;
  }
  return out + "}";
}

Fields valid_attest_fields() {
  return {{"image_id", quoted("debian-12.cvm:v1")},
          {"nonce", b64(nonce_size, 1)},
          {"ephemeral_public", b64(32, 2)},
          {"token", b64(1500, 3)},
          {"device_cert", b64(900, 4)},
          {"event_log", b64(4000, 5)},
          {"ccel_table", b64(56, 6)}};
}

Fields with(Fields fields, const std::string& name, const std::string& value) {
  for (auto& [n, v] : fields) {
    if (n == name) {
      v = value;
      return fields;
    }
  }
  fields.emplace_back(name, value);
  return fields;
}

Fields without(Fields fields, const std::string& name) {
  std::erase_if(fields, [&](const auto& field) { return field.first == name; });
  return fields;
}

template <class T>
void require_error(const Result<T>& result, Errc code, std::string_view mention) {
  REQUIRE_FALSE(result.has_value());
  INFO(result.error().describe());
  CHECK(result.error().code == code);
  CHECK(result.error().message.find(mention) != std::string::npos);
}

AttestRequest sample_attest_request() {
  AttestRequest request;
  request.image_id = "debian-12.cvm:v1";
  request.nonce = pattern(nonce_size, 10);
  request.ephemeral_public = pattern(32, 20);
  request.token = pattern(8192, 30);
  request.device_cert = pattern(4096, 40);
  request.event_log = pattern(70000, 50);
  request.ccel_table = pattern(56, 60);
  return request;
}

}  // namespace

TEST_CASE("image ids of 1..128 characters of A-Z a-z 0-9 . _ : - are accepted") {
  CHECK(validate_image_id("a").has_value());
  CHECK(validate_image_id("Debian_12.3:cvm-01").has_value());
  CHECK(validate_image_id(std::string(max_image_id_size, 'x')).has_value());
}

TEST_CASE("empty, overlong, path-like and non-ASCII image ids are refused") {
  CHECK(validate_image_id("").error().code == Errc::malformed);
  CHECK(validate_image_id(std::string(max_image_id_size + 1, 'x')).error().code == Errc::too_large);
  for (const std::string& bad : std::vector<std::string>{"a/b", "a b", "a\\b", ".", "..", "caf\xc3\xa9",
                                                         std::string("a\0b", 3), "a\nb", "x;y", "a%2f"}) {
    INFO(bad);
    CHECK(validate_image_id(bad).error().code == Errc::malformed);
  }
  // Dots are fine inside a longer id.
  CHECK(validate_image_id("...").has_value());
}

TEST_CASE("a challenge request round-trips and serialises compactly") {
  ChallengeRequest request{"img-1"};
  std::string json = serialize(request);
  CHECK(json == R"({"image_id":"img-1"})");
  auto parsed = parse_challenge_request(json);
  REQUIRE(parsed.has_value());
  CHECK(parsed->image_id == "img-1");
  // Insignificant whitespace is JSON; it is not garbage.
  CHECK(parse_challenge_request(" {\n \"image_id\" : \"img-1\" }\n").has_value());
}

TEST_CASE("a challenge request with an unknown, duplicate, missing or mistyped field is refused") {
  require_error(parse_challenge_request(R"({"image_id":"a","extra":1})"), Errc::malformed, "extra: unknown field");
  require_error(parse_challenge_request(R"({"image_id":"a","image_id":"b"})"), Errc::malformed,
                "image_id: duplicate field");
  require_error(parse_challenge_request(R"({})"), Errc::malformed, "image_id: missing required field");
  require_error(parse_challenge_request(R"({"image_id":7})"), Errc::malformed, "image_id: expected a string");
  require_error(parse_challenge_request(R"({"image_id":null})"), Errc::malformed, "image_id: expected a string");
  require_error(parse_challenge_request(R"({"image_id":["a"]})"), Errc::malformed, "image_id");
  require_error(parse_challenge_request(R"({"Image_id":"a"})"), Errc::malformed, "Image_id: unknown field");
}

TEST_CASE("a challenge request with an invalid image id names the field") {
  require_error(parse_challenge_request(R"({"image_id":""})"), Errc::malformed, "image_id");
  require_error(parse_challenge_request(R"({"image_id":"../etc"})"), Errc::malformed, "image_id");
  require_error(parse_challenge_request(R"({"image_id":"a\u0000b"})"), Errc::malformed, "image_id");
  require_error(parse_challenge_request(object_json({{"image_id", quoted(std::string(129, 'a'))}})),
                Errc::too_large, "image_id");
}

TEST_CASE("a body that is not exactly one JSON object is refused") {
  for (std::string body : {"", "[]", "\"image_id\"", "42", "null", "true", R"({"image_id":"a"} x)",
                           R"({"image_id":"a"}{})", R"({"image_id":"a",})", R"({"image_id":"a"/*c*/})",
                           R"({'image_id':'a'})", "{\"image_id\":\"a\xff\"}", "\xef\xbb\xbf{\"image_id\":\"a\"}"}) {
    INFO(body);
    auto parsed = parse_challenge_request(body);
    REQUIRE_FALSE(parsed.has_value());
    CHECK(parsed.error().code == Errc::malformed);
  }
  require_error(parse_challenge_request("[1]"), Errc::malformed, "expected a JSON object");
}

TEST_CASE("an oversized body is refused before parsing") {
  // Invalid JSON of the wrong size must report the size, which proves nothing was parsed.
  std::string body(max_challenge_body + 1, '{');
  require_error(parse_challenge_request(body), Errc::too_large, "exceeds the limit");
  std::string padded = R"({"image_id":"a")" + std::string(max_challenge_body, ' ') + "}";
  require_error(parse_challenge_request(padded), Errc::too_large, "exceeds the limit");
  require_error(parse_attest_request(std::string(max_attest_body + 1, ' ')), Errc::too_large, "exceeds the limit");
  require_error(parse_challenge_response(std::string(max_challenge_response_body + 1, ' ')), Errc::too_large,
                "exceeds the limit");
  require_error(parse_attest_response(std::string(max_attest_response_body + 1, ' ')), Errc::too_large,
                "exceeds the limit");
  require_error(parse_error_response(std::string(max_error_body + 1, ' ')), Errc::too_large, "exceeds the limit");
}

TEST_CASE("deeply nested JSON is refused without exhausting the stack") {
  std::string body = R"({"image_id":)" + std::string(400, '[') + std::string(400, ']') + "}";
  require_error(parse_challenge_request(body), Errc::malformed, "image_id");
}

TEST_CASE("a challenge response round-trips") {
  ChallengeResponse response{pattern(nonce_size, 3), "2026-11-29T01:02:03Z"};
  auto json = serialize(response);
  CHECK(json == R"({"nonce":")" + base64_encode(response.nonce) + R"(","expires_at":"2026-11-29T01:02:03Z"})");
  auto parsed = parse_challenge_response(json);
  REQUIRE(parsed.has_value());
  CHECK(parsed->nonce == response.nonce);
  CHECK(parsed->expires_at == response.expires_at);
}

TEST_CASE("a challenge response with a wrong-size nonce or a malformed time is refused") {
  auto body = [](const std::string& nonce, const std::string& expires) {
    return object_json({{"nonce", nonce}, {"expires_at", expires}});
  };
  std::string good_time = quoted("2026-11-29T01:02:03Z");
  CHECK(parse_challenge_response(body(b64(nonce_size), good_time)).has_value());
  require_error(parse_challenge_response(body(b64(nonce_size - 1), good_time)), Errc::malformed, "nonce");
  require_error(parse_challenge_response(body(b64(nonce_size + 1), good_time)), Errc::too_large, "nonce");
  for (std::string bad : {"2026-11-29 01:02:03Z", "2026-11-29T01:02:03", "2026-11-29T01:02:03+00:00",
                          "2026-13-29T01:02:03Z", "2026-11-29T24:02:03Z", "2026-11-29T01:02:03.5Z", "",
                          "2026-1-29T01:02:03Z"}) {
    INFO(bad);
    require_error(parse_challenge_response(body(b64(nonce_size), quoted(bad))), Errc::malformed, "expires_at");
  }
  require_error(parse_challenge_response(body(b64(nonce_size), "1796000000")), Errc::malformed, "expires_at");
  require_error(parse_challenge_response(object_json({{"nonce", b64(nonce_size)}})), Errc::malformed,
                "expires_at: missing");
  require_error(parse_challenge_response(object_json({{"nonce", b64(nonce_size)}, {"expires_at", good_time},
                                                      {"nonce", b64(nonce_size)}})),
                Errc::malformed, "nonce: duplicate field");
}

TEST_CASE("an attest request round-trips with and without the optional fields") {
  AttestRequest request = sample_attest_request();
  auto parsed = parse_attest_request(serialize(request));
  REQUIRE(parsed.has_value());
  CHECK(parsed->image_id == request.image_id);
  CHECK(parsed->nonce == request.nonce);
  CHECK(parsed->ephemeral_public == request.ephemeral_public);
  CHECK(parsed->token == request.token);
  CHECK(parsed->device_cert == request.device_cert);
  CHECK(parsed->event_log == request.event_log);
  CHECK(parsed->ccel_table == request.ccel_table);

  request.event_log.reset();
  request.ccel_table.reset();
  std::string json = serialize(request);
  CHECK(json.find("event_log") == std::string::npos);
  CHECK(json.find("ccel_table") == std::string::npos);
  parsed = parse_attest_request(json);
  REQUIRE(parsed.has_value());
  CHECK_FALSE(parsed->event_log.has_value());
  CHECK_FALSE(parsed->ccel_table.has_value());
}

TEST_CASE("an attest request at every maximum size fits the body limit") {
  AttestRequest request = sample_attest_request();
  request.image_id = std::string(max_image_id_size, 'i');
  request.event_log = pattern(max_event_log_size, 1);
  request.ccel_table = pattern(max_ccel_table_size, 2);
  std::string json = serialize(request);
  CHECK(json.size() <= max_attest_body);
  auto parsed = parse_attest_request(json);
  REQUIRE(parsed.has_value());
  CHECK(parsed->event_log->size() == max_event_log_size);
}

TEST_CASE("an attest request with an unknown or duplicate field is refused") {
  require_error(parse_attest_request(object_json(with(valid_attest_fields(), "platform", quoted("sim")))),
                Errc::malformed, "platform: unknown field");
  Fields duplicate = valid_attest_fields();
  duplicate.emplace_back("token", b64(10));
  require_error(parse_attest_request(object_json(duplicate)), Errc::malformed, "token: duplicate field");
  Fields duplicate_optional = valid_attest_fields();
  duplicate_optional.emplace_back("event_log", b64(10));
  require_error(parse_attest_request(object_json(duplicate_optional)), Errc::malformed, "event_log: duplicate field");
}

TEST_CASE("an attest request missing a required field is refused, naming it") {
  for (std::string field : {"image_id", "nonce", "ephemeral_public", "token", "device_cert"}) {
    INFO(field);
    require_error(parse_attest_request(object_json(without(valid_attest_fields(), field))), Errc::malformed,
                  field + ": missing required field");
  }
  CHECK(parse_attest_request(object_json(without(without(valid_attest_fields(), "event_log"), "ccel_table")))
            .has_value());
}

TEST_CASE("an attest request field of the wrong type is refused, naming it") {
  for (std::string field : {"image_id", "nonce", "ephemeral_public", "token", "device_cert", "event_log",
                            "ccel_table"}) {
    for (std::string value : {"1", "null", "true", "[]", "{}", "[\"AAAA\"]"}) {
      INFO(field << " = " << value);
      require_error(parse_attest_request(object_json(with(valid_attest_fields(), field, value))), Errc::malformed,
                    field + ": expected a");
    }
  }
}

TEST_CASE("an attest request field that is not standard padded base64 is refused") {
  for (std::string field : {"nonce", "ephemeral_public", "token", "device_cert", "event_log", "ccel_table"}) {
    for (std::string value : {"AAA", "AA=A", "A===", "AB-_", "AAAA AAAA", "AAAA\\n", "QUJD\\u0000"}) {
      INFO(field << " = " << value);
      require_error(parse_attest_request(object_json(with(valid_attest_fields(), field, quoted(value)))),
                    Errc::malformed, field + ": base64");
    }
  }
}

TEST_CASE("an attest request field of the wrong decoded size is refused, naming it") {
  struct Case {
    std::string field;
    std::size_t size;
    Errc code;
  };
  for (const Case& c : {Case{"nonce", nonce_size - 1, Errc::malformed}, Case{"nonce", nonce_size + 1, Errc::too_large},
                        Case{"nonce", 0, Errc::malformed}, Case{"ephemeral_public", 31, Errc::malformed},
                        Case{"ephemeral_public", 33, Errc::too_large}, Case{"token", 0, Errc::malformed},
                        Case{"token", max_token_size + 1, Errc::too_large}, Case{"device_cert", 0, Errc::malformed},
                        Case{"device_cert", max_device_cert_size + 1, Errc::too_large},
                        Case{"event_log", max_event_log_size + 1, Errc::too_large},
                        Case{"ccel_table", max_ccel_table_size + 1, Errc::too_large}}) {
    INFO(c.field << " of " << c.size << " bytes");
    require_error(parse_attest_request(object_json(with(valid_attest_fields(), c.field, b64(c.size)))), c.code,
                  c.field + ":");
  }
  // The limits themselves are accepted; an empty optional log is the agent's business.
  for (const Case& c : {Case{"token", max_token_size, Errc::malformed}, Case{"token", 1, Errc::malformed},
                        Case{"device_cert", max_device_cert_size, Errc::malformed},
                        Case{"ccel_table", max_ccel_table_size, Errc::malformed}, Case{"event_log", 0, Errc::malformed},
                        Case{"ccel_table", 0, Errc::malformed}}) {
    INFO(c.field << " of " << c.size << " bytes");
    CHECK(parse_attest_request(object_json(with(valid_attest_fields(), c.field, b64(c.size)))).has_value());
  }
}

TEST_CASE("an attest request field far over its limit is refused without being decoded") {
  // Valid-looking base64 longer than the field may ever be is refused on its encoded length.
  std::string huge = quoted(std::string(4 * (max_token_size / 3 + 10), 'A'));
  require_error(parse_attest_request(object_json(with(valid_attest_fields(), "token", huge))), Errc::too_large,
                "token: longer than 8192 bytes");
}

TEST_CASE("an attest request with an invalid image id is refused") {
  require_error(parse_attest_request(object_json(with(valid_attest_fields(), "image_id", quoted("a/b")))),
                Errc::malformed, "image_id");
  require_error(parse_attest_request(object_json(with(valid_attest_fields(), "image_id", quoted("")))),
                Errc::malformed, "image_id");
}

TEST_CASE("an attest response round-trips and its sizes are checked") {
  AttestResponse response{pattern(hpke_enc_size, 1), pattern(32 + hpke_tag_size, 2)};
  auto json = serialize(response);
  CHECK(json == R"({"enc":")" + base64_encode(response.enc) + R"(","sealed_key":")" +
                    base64_encode(response.sealed_key) + R"("})");
  auto parsed = parse_attest_response(json);
  REQUIRE(parsed.has_value());
  CHECK(parsed->enc == response.enc);
  CHECK(parsed->sealed_key == response.sealed_key);

  auto body = [](std::size_t enc, std::size_t sealed) {
    return object_json({{"enc", b64(enc)}, {"sealed_key", b64(sealed)}});
  };
  CHECK(parse_attest_response(body(32, 1 + 16)).has_value());
  CHECK(parse_attest_response(body(32, 64 + 16)).has_value());
  require_error(parse_attest_response(body(31, 48)), Errc::malformed, "enc:");
  require_error(parse_attest_response(body(33, 48)), Errc::too_large, "enc:");
  require_error(parse_attest_response(body(32, 16)), Errc::malformed, "sealed_key:");
  require_error(parse_attest_response(body(32, 0)), Errc::malformed, "sealed_key:");
  require_error(parse_attest_response(body(32, 64 + 16 + 1)), Errc::too_large, "sealed_key:");
  require_error(parse_attest_response(object_json({{"enc", b64(32)}})), Errc::malformed, "sealed_key: missing");
  require_error(parse_attest_response(object_json({{"enc", b64(32)}, {"sealed_key", b64(48)}, {"key", b64(32)}})),
                Errc::malformed, "key: unknown field");
  require_error(parse_attest_response(object_json({{"enc", b64(32)}, {"sealed_key", "48"}})), Errc::malformed,
                "sealed_key: expected a");
  require_error(parse_attest_response(object_json({{"enc", quoted("not base64!")}, {"sealed_key", b64(48)}})),
                Errc::malformed, "enc: base64");
}

TEST_CASE("an error response round-trips for every code") {
  for (auto code : {ErrorCode::attestation_failed, ErrorCode::unknown_image, ErrorCode::expired_nonce,
                    ErrorCode::bad_request, ErrorCode::unavailable}) {
    ErrorResponse response{code, "try again \"later\"\n"};
    auto parsed = parse_error_response(serialize(response));
    REQUIRE(parsed.has_value());
    CHECK(parsed->error == code);
    CHECK(parsed->message == response.message);
    CHECK(error_code_from_name(error_code_name(code)) == code);
  }
  CHECK(serialize(ErrorResponse{ErrorCode::expired_nonce, "x"}) == R"({"error":"expired_nonce","message":"x"})");
}

TEST_CASE("an error response with an unknown code, a missing message or extra fields is refused") {
  CHECK_FALSE(error_code_from_name("Attestation_Failed").has_value());
  require_error(parse_error_response(R"({"error":"teapot","message":"x"})"), Errc::malformed, "error: unknown error code");
  require_error(parse_error_response(R"({"error":"bad_request"})"), Errc::malformed, "message: missing");
  require_error(parse_error_response(R"({"error":1,"message":"x"})"), Errc::malformed, "error: expected a string");
  require_error(parse_error_response(R"({"error":"bad_request","message":"x","detail":"y"})"), Errc::malformed,
                "detail: unknown field");
  require_error(parse_error_response(R"({"error":"bad_request","message":"x","error":"unavailable"})"),
                Errc::malformed, "error: duplicate field");
  require_error(parse_error_response(object_json({{"error", quoted("bad_request")},
                                                  {"message", quoted(std::string(max_error_message_size + 1, 'm'))}})),
                Errc::too_large, "message");
}

TEST_CASE("the challenge binding is SHA-512 over label, nonce and ephemeral key (known answer)") {
  Bytes nonce(64);
  for (std::size_t i = 0; i < nonce.size(); ++i) nonce[i] = static_cast<std::uint8_t>(i);
  Bytes ephemeral(32);
  for (std::size_t i = 0; i < ephemeral.size(); ++i) ephemeral[i] = static_cast<std::uint8_t>(0xa0 + i);

  // Independently: OpenSSL's one-shot digest over the concatenation.
  std::string concatenation = "virtcca-fde/v1";
  concatenation.append(nonce.begin(), nonce.end());
  concatenation.append(ephemeral.begin(), ephemeral.end());
  Bytes expected(EVP_MAX_MD_SIZE);
  unsigned int length = 0;
  REQUIRE(EVP_Digest(concatenation.data(), concatenation.size(), expected.data(), &length, EVP_sha512(), nullptr) == 1);
  expected.resize(length);

  Bytes binding = challenge_binding(nonce, ephemeral);
  REQUIRE(binding.size() == 64);
  CHECK(binding == expected);
  // And a fixed value (Python: hashlib.sha512(b"virtcca-fde/v1" + bytes(range(64)) +
  // bytes(range(0xa0, 0xc0))).hexdigest()), so a change to the label is caught too.
  CHECK(hex_encode(binding) ==
        "1498335d084027a479117754926bf2155ba7812764898370c8ad596e15f69c30"
        "c10e13c3783eab5b0dee5179da82fe2312797e0eee30b4e63006bf9ee2fdcacb");
  CHECK(hex_encode(challenge_binding(Bytes(64), Bytes(32))) ==
        "a0b8fc0e9e62721a8ef83175fd654ba0effc24d04d0ea13fc7ae90c3772d5503"
        "0210a3be8eecb2ba355bf06e4b7de596bbb4aed9169680bf1b7a32c06d77a33a");
  // The binding depends on both inputs.
  Bytes other = ephemeral;
  other[31] ^= 1;
  CHECK(challenge_binding(nonce, other) != binding);
}

TEST_CASE("the HPKE info is label, NUL, image id, NUL, nonce") {
  Bytes nonce{0x01, 0x00, 0xff};
  Bytes info = hpke_info("img:1", nonce);
  std::string expected("virtcca-fde/v1 key\0img:1\0", 25);
  expected.append(nonce.begin(), nonce.end());
  CHECK(info == Bytes(expected.begin(), expected.end()));
}

// docs/protocol.md's worked example. The expected bytes were computed by a second,
// independent implementation (scripts/protocol-example.py: Python `cryptography` and its own
// RFC 9180 key schedule), so this checks our agent and verifier against someone else's code.
TEST_CASE("the protocol document's worked example: binding, info, sealed key and its opening") {
  const std::string image_id = "web-01";
  Bytes nonce(64);
  for (std::size_t i = 0; i < nonce.size(); ++i) nonce[i] = static_cast<std::uint8_t>(i);
  auto agent = crypto::hpke::X25519KeyPair::from_private(Bytes(32, 0x11));
  auto verifier_ephemeral = crypto::hpke::X25519KeyPair::from_private(Bytes(32, 0x22));
  REQUIRE(agent.has_value());
  REQUIRE(verifier_ephemeral.has_value());
  Bytes disk_key(64);
  for (std::size_t i = 0; i < disk_key.size(); ++i) disk_key[i] = static_cast<std::uint8_t>(0x40 + i);

  CHECK(hex_encode(agent->public_key()) == "7b4e909bbe7ffe44c465a220037d608ee35897d31ef972f07f74892cb0f73f13");
  CHECK(hex_encode(challenge_binding(nonce, agent->public_key())) ==
        "2c5317a4e3ebaaee7fc36065a51389363e0b5e1b444d429cf268e8368945416c"
        "b66259531cf10d7d8c10996d2cc3d81da61c9a65fb60f3e338df85bccaacbf19");
  Bytes info = hpke_info(image_id, nonce);
  CHECK(hex_encode(info) ==
        "766972746363612d6664652f7631206b6579007765622d303100"
        "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
        "202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f");

  auto sealed = crypto::hpke::seal_with_ephemeral(*verifier_ephemeral, agent->public_key(), info, {}, disk_key);
  REQUIRE(sealed.has_value());
  CHECK(hex_encode(sealed->enc) == "0faa684ed28867b97f4a6a2dee5df8ce974e76b7018e3f22a1c4cf2678570f20");
  CHECK(hex_encode(sealed->ciphertext) ==
        "108007ed18c4bddf9bdc599095ec010cb72fe61a800d2348a69bd74bf5d16295"
        "13fd2b81fc32877f9091477e5ecd9c9d1b2ce3ea910e8d2c5d7c7fce12d032ec"
        "bb3adc05fe864ac919dc2c7a99e72dff");

  auto opened = crypto::hpke::open(*agent, sealed->enc, info, {}, sealed->ciphertext);
  REQUIRE(opened.has_value());
  CHECK(Bytes(opened->view().begin(), opened->view().end()) == disk_key);
}
