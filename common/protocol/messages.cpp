// Protocol v1 wire messages: strict RapidJSON parsing and compact serialisation.
#include "common/protocol/messages.hpp"

#include <algorithm>
#include <initializer_list>
#include <set>

#include <rapidjson/document.h>
#include <rapidjson/error/en.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include "common/crypto/hash.hpp"

namespace fde::protocol {

namespace {

using Value = rapidjson::Value;
using JsonWriter = rapidjson::Writer<rapidjson::StringBuffer>;

// Every parse error reads "<message>: <field>: <what>", so the operator's log says which
// message and which field a hostile or buggy peer got wrong.
tl::unexpected<Error> fail_field(std::string_view message, std::string_view field, const std::string& what,
                                 Errc code = Errc::malformed) {
  return fail(code, std::string(message) + ": " + std::string(field) + ": " + what);
}

const char* type_name(const Value& v) {
  if (v.IsNull()) return "null";
  if (v.IsBool()) return "a boolean";
  if (v.IsNumber()) return "a number";
  if (v.IsString()) return "a string";
  if (v.IsArray()) return "an array";
  return "an object";
}

std::string_view view(const Value& v) { return {v.GetString(), v.GetStringLength()}; }

// The body limit is checked before RapidJSON sees a byte, so an oversized body costs no
// parsing. Iterative parsing keeps deep nesting off the stack; UTF-8 is validated; the
// default flags refuse comments, NaN and anything after the root value.
Result<rapidjson::Document> parse_object(std::string_view body, std::size_t max_body, std::string_view message) {
  if (body.size() > max_body)
    return fail(Errc::too_large, std::string(message) + ": body of " + std::to_string(body.size()) +
                                     " bytes exceeds the limit of " + std::to_string(max_body));
  // RapidJSON skips a UTF-8 byte order mark; RFC 8259 forbids sending one, so refuse it
  // rather than accept what other parsers may not.
  if (body.starts_with("\xEF\xBB\xBF"))
    return fail(Errc::malformed, std::string(message) + ": body starts with a byte order mark");
  rapidjson::Document doc;
  doc.Parse<rapidjson::kParseValidateEncodingFlag | rapidjson::kParseIterativeFlag>(body.data(), body.size());
  if (doc.HasParseError())
    return fail(Errc::malformed, std::string(message) + ": invalid JSON at offset " +
                                     std::to_string(doc.GetErrorOffset()) + ": " +
                                     rapidjson::GetParseError_En(doc.GetParseError()));
  if (!doc.IsObject())
    return fail(Errc::malformed, std::string(message) + ": expected a JSON object, found " + type_name(doc));
  return doc;
}

// RapidJSON's DOM keeps duplicate names and FindMember returns the first; refusing them
// outright removes any first-wins/last-wins disagreement between us and another parser.
Result<void> check_members(const Value& object, std::string_view message,
                           std::initializer_list<std::string_view> allowed) {
  std::set<std::string_view> seen;
  for (auto it = object.MemberBegin(); it != object.MemberEnd(); ++it) {
    std::string_view name = view(it->name);
    if (std::find(allowed.begin(), allowed.end(), name) == allowed.end())
      return fail_field(message, name, "unknown field");
    if (!seen.insert(name).second) return fail_field(message, name, "duplicate field");
  }
  return {};
}

const Value* find_member(const Value& object, std::string_view name) {
  auto it = object.FindMember(Value(rapidjson::StringRef(name.data(), static_cast<rapidjson::SizeType>(name.size()))));
  return it == object.MemberEnd() ? nullptr : &it->value;
}

Result<std::string_view> string_member(const Value& object, std::string_view message, std::string_view field) {
  const Value* v = find_member(object, field);
  if (v == nullptr) return fail_field(message, field, "missing required field");
  if (!v->IsString()) return fail_field(message, field, std::string("expected a string, found ") + type_name(*v));
  return view(*v);
}

Result<std::string> image_id_member(const Value& object, std::string_view message) {
  auto text = string_member(object, message, "image_id");
  if (!text) return tl::unexpected(text.error());
  if (auto valid = validate_image_id(*text); !valid) return fail_field(message, "image_id", valid.error().message, valid.error().code);
  return std::string(*text);
}

std::size_t base64_length(std::size_t decoded) { return 4 * ((decoded + 2) / 3); }

// Decodes a base64 field whose decoded size must lie in [min_size, max_size]. The encoded
// length is checked first so that no oversized field is ever decoded.
Result<Bytes> decode_field(const Value& v, std::string_view message, std::string_view field, std::size_t min_size,
                           std::size_t max_size) {
  if (!v.IsString())
    return fail_field(message, field, std::string("expected a base64 string, found ") + type_name(v));
  std::string_view text = view(v);
  auto size_text = [&] {
    return min_size == max_size ? "exactly " + std::to_string(min_size) + " bytes"
                                : std::to_string(min_size) + ".." + std::to_string(max_size) + " bytes";
  };
  if (text.size() > base64_length(max_size))
    return fail_field(message, field, "longer than " + std::to_string(max_size) + " bytes", Errc::too_large);
  auto bytes = base64_decode(text);
  if (!bytes) return fail_field(message, field, bytes.error().message);
  if (bytes->size() > max_size)
    return fail_field(message, field, "expected " + size_text() + ", found " + std::to_string(bytes->size()),
                      Errc::too_large);
  if (bytes->size() < min_size)
    return fail_field(message, field, "expected " + size_text() + ", found " + std::to_string(bytes->size()));
  return std::move(*bytes);
}

Result<Bytes> required_bytes(const Value& object, std::string_view message, std::string_view field,
                             std::size_t min_size, std::size_t max_size) {
  const Value* v = find_member(object, field);
  if (v == nullptr) return fail_field(message, field, "missing required field");
  return decode_field(*v, message, field, min_size, max_size);
}

// Optional means absent; an explicit null is a type error like any other.
Result<std::optional<Bytes>> optional_bytes(const Value& object, std::string_view message, std::string_view field,
                                            std::size_t max_size) {
  const Value* v = find_member(object, field);
  if (v == nullptr) return std::optional<Bytes>{};
  auto bytes = decode_field(*v, message, field, 0, max_size);
  if (!bytes) return tl::unexpected(bytes.error());
  return std::optional<Bytes>(std::move(*bytes));
}

bool is_digit(char c) { return c >= '0' && c <= '9'; }

// "YYYY-MM-DDTHH:MM:SSZ" exactly, the only form format_rfc3339 produces.
bool is_rfc3339_utc_seconds(std::string_view text) {
  static constexpr std::string_view shape = "dddd-dd-ddTdd:dd:ddZ";
  if (text.size() != shape.size()) return false;
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] == 'd' ? !is_digit(text[i]) : text[i] != shape[i]) return false;
  }
  auto number = [&](std::size_t at) { return (text[at] - '0') * 10 + (text[at + 1] - '0'); };
  int month = number(5), day = number(8), hour = number(11), minute = number(14), second = number(17);
  // Leap seconds (60) are legal RFC 3339; a day is checked against 31 only, which is enough
  // to refuse garbage without a calendar.
  return month >= 1 && month <= 12 && day >= 1 && day <= 31 && hour <= 23 && minute <= 59 && second <= 60;
}

void write_key(JsonWriter& w, std::string_view key) {
  w.Key(key.data(), static_cast<rapidjson::SizeType>(key.size()));
}
void write_string(JsonWriter& w, std::string_view key, std::string_view text) {
  write_key(w, key);
  w.String(text.data(), static_cast<rapidjson::SizeType>(text.size()));
}
void write_base64(JsonWriter& w, std::string_view key, ByteView bytes) { write_string(w, key, base64_encode(bytes)); }

template <class Fill>
std::string write_object(Fill fill) {
  rapidjson::StringBuffer buffer;
  JsonWriter w(buffer);
  w.StartObject();
  fill(w);
  w.EndObject();
  return std::string(buffer.GetString(), buffer.GetSize());
}

constexpr std::string_view challenge_request_name = "challenge request";
constexpr std::string_view challenge_response_name = "challenge response";
constexpr std::string_view attest_request_name = "attest request";
constexpr std::string_view attest_response_name = "attest response";
constexpr std::string_view error_response_name = "error response";

}  // namespace

Result<void> validate_image_id(std::string_view image_id) {
  if (image_id.empty()) return fail(Errc::malformed, "image id is empty");
  if (image_id.size() > max_image_id_size)
    return fail(Errc::too_large, "image id is longer than " + std::to_string(max_image_id_size) + " characters");
  for (char c : image_id) {
    bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || is_digit(c) || c == '.' || c == '_' ||
              c == ':' || c == '-';
    if (!ok) return fail(Errc::malformed, "image id may contain only A-Z a-z 0-9 . _ : -");
  }
  // Ids become file names (bundles, exports); "." and ".." would name directories instead.
  if (image_id == "." || image_id == "..") return fail(Errc::malformed, "image id must not be . or ..");
  return {};
}

std::string_view error_code_name(ErrorCode code) {
  switch (code) {
    case ErrorCode::attestation_failed: return "attestation_failed";
    case ErrorCode::unknown_image: return "unknown_image";
    case ErrorCode::expired_nonce: return "expired_nonce";
    case ErrorCode::bad_request: return "bad_request";
    case ErrorCode::unavailable: return "unavailable";
  }
  return "bad_request";
}

std::optional<ErrorCode> error_code_from_name(std::string_view name) {
  for (auto code : {ErrorCode::attestation_failed, ErrorCode::unknown_image, ErrorCode::expired_nonce,
                    ErrorCode::bad_request, ErrorCode::unavailable}) {
    if (error_code_name(code) == name) return code;
  }
  return std::nullopt;
}

Result<ChallengeRequest> parse_challenge_request(std::string_view body) {
  constexpr auto name = challenge_request_name;
  auto doc = parse_object(body, max_challenge_body, name);
  if (!doc) return tl::unexpected(doc.error());
  if (auto ok = check_members(*doc, name, {"image_id"}); !ok) return tl::unexpected(ok.error());
  auto image_id = image_id_member(*doc, name);
  if (!image_id) return tl::unexpected(image_id.error());
  return ChallengeRequest{std::move(*image_id)};
}

Result<ChallengeResponse> parse_challenge_response(std::string_view body) {
  constexpr auto name = challenge_response_name;
  auto doc = parse_object(body, max_challenge_response_body, name);
  if (!doc) return tl::unexpected(doc.error());
  if (auto ok = check_members(*doc, name, {"nonce", "expires_at"}); !ok) return tl::unexpected(ok.error());
  auto nonce = required_bytes(*doc, name, "nonce", nonce_size, nonce_size);
  if (!nonce) return tl::unexpected(nonce.error());
  auto expires_at = string_member(*doc, name, "expires_at");
  if (!expires_at) return tl::unexpected(expires_at.error());
  if (!is_rfc3339_utc_seconds(*expires_at))
    return fail_field(name, "expires_at", "expected RFC 3339 UTC time like 2026-11-29T01:02:03Z");
  return ChallengeResponse{std::move(*nonce), std::string(*expires_at)};
}

Result<AttestRequest> parse_attest_request(std::string_view body) {
  constexpr auto name = attest_request_name;
  auto doc = parse_object(body, max_attest_body, name);
  if (!doc) return tl::unexpected(doc.error());
  if (auto ok = check_members(*doc, name, {"image_id", "nonce", "ephemeral_public", "token", "device_cert",
                                           "event_log", "ccel_table"});
      !ok)
    return tl::unexpected(ok.error());
  AttestRequest out;
  auto image_id = image_id_member(*doc, name);
  if (!image_id) return tl::unexpected(image_id.error());
  out.image_id = std::move(*image_id);

  struct Required {
    std::string_view field;
    Bytes* target;
    std::size_t min_size;
    std::size_t max_size;
  };
  for (const Required& r : {Required{"nonce", &out.nonce, nonce_size, nonce_size},
                            Required{"ephemeral_public", &out.ephemeral_public, ephemeral_public_size,
                                     ephemeral_public_size},
                            Required{"token", &out.token, 1, max_token_size},
                            Required{"device_cert", &out.device_cert, 1, max_device_cert_size}}) {
    auto bytes = required_bytes(*doc, name, r.field, r.min_size, r.max_size);
    if (!bytes) return tl::unexpected(bytes.error());
    *r.target = std::move(*bytes);
  }
  auto event_log = optional_bytes(*doc, name, "event_log", max_event_log_size);
  if (!event_log) return tl::unexpected(event_log.error());
  out.event_log = std::move(*event_log);
  auto ccel_table = optional_bytes(*doc, name, "ccel_table", max_ccel_table_size);
  if (!ccel_table) return tl::unexpected(ccel_table.error());
  out.ccel_table = std::move(*ccel_table);
  return out;
}

Result<AttestResponse> parse_attest_response(std::string_view body) {
  constexpr auto name = attest_response_name;
  auto doc = parse_object(body, max_attest_response_body, name);
  if (!doc) return tl::unexpected(doc.error());
  if (auto ok = check_members(*doc, name, {"enc", "sealed_key"}); !ok) return tl::unexpected(ok.error());
  auto enc = required_bytes(*doc, name, "enc", hpke_enc_size, hpke_enc_size);
  if (!enc) return tl::unexpected(enc.error());
  // HPKE ciphertext = disk key || 16-byte AEAD tag; an empty disk key is never sealed.
  auto sealed_key = required_bytes(*doc, name, "sealed_key", hpke_tag_size + 1, max_disk_key_size + hpke_tag_size);
  if (!sealed_key) return tl::unexpected(sealed_key.error());
  return AttestResponse{std::move(*enc), std::move(*sealed_key)};
}

Result<ErrorResponse> parse_error_response(std::string_view body) {
  constexpr auto name = error_response_name;
  auto doc = parse_object(body, max_error_body, name);
  if (!doc) return tl::unexpected(doc.error());
  if (auto ok = check_members(*doc, name, {"error", "message"}); !ok) return tl::unexpected(ok.error());
  auto code_text = string_member(*doc, name, "error");
  if (!code_text) return tl::unexpected(code_text.error());
  auto code = error_code_from_name(*code_text);
  if (!code) return fail_field(name, "error", "unknown error code");
  auto message = string_member(*doc, name, "message");
  if (!message) return tl::unexpected(message.error());
  if (message->size() > max_error_message_size)
    return fail_field(name, "message", "longer than " + std::to_string(max_error_message_size) + " bytes",
                      Errc::too_large);
  return ErrorResponse{*code, std::string(*message)};
}

std::string serialize(const ChallengeRequest& message) {
  return write_object([&](JsonWriter& w) { write_string(w, "image_id", message.image_id); });
}

std::string serialize(const ChallengeResponse& message) {
  return write_object([&](JsonWriter& w) {
    write_base64(w, "nonce", message.nonce);
    write_string(w, "expires_at", message.expires_at);
  });
}

std::string serialize(const AttestRequest& message) {
  return write_object([&](JsonWriter& w) {
    write_string(w, "image_id", message.image_id);
    write_base64(w, "nonce", message.nonce);
    write_base64(w, "ephemeral_public", message.ephemeral_public);
    write_base64(w, "token", message.token);
    write_base64(w, "device_cert", message.device_cert);
    if (message.event_log) write_base64(w, "event_log", *message.event_log);
    if (message.ccel_table) write_base64(w, "ccel_table", *message.ccel_table);
  });
}

std::string serialize(const AttestResponse& message) {
  return write_object([&](JsonWriter& w) {
    write_base64(w, "enc", message.enc);
    write_base64(w, "sealed_key", message.sealed_key);
  });
}

std::string serialize(const ErrorResponse& message) {
  return write_object([&](JsonWriter& w) {
    write_string(w, "error", error_code_name(message.error));
    write_string(w, "message", message.message);
  });
}

Bytes challenge_binding(ByteView nonce, ByteView ephemeral_public) {
  return crypto::digest_parts(crypto::HashAlg::sha512, {as_bytes(binding_label), nonce, ephemeral_public});
}

Bytes hpke_info(std::string_view image_id, ByteView nonce) {
  Bytes out;
  out.reserve(hpke_info_label.size() + 1 + image_id.size() + 1 + nonce.size());
  out.insert(out.end(), hpke_info_label.begin(), hpke_info_label.end());
  out.push_back(0x00);
  out.insert(out.end(), image_id.begin(), image_id.end());
  out.push_back(0x00);
  out.insert(out.end(), nonce.begin(), nonce.end());
  return out;
}

}  // namespace fde::protocol
