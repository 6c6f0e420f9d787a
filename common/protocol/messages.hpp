// Protocol v1 wire messages (docs/protocol.md), shared by fde-agent and fde-verifierd:
// strict JSON parsing (unknown or duplicate fields refused, sizes checked before decoding),
// canonical serialisation, the challenge binding and the HPKE info string.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "common/util/bytes.hpp"
#include "common/util/error.hpp"

namespace fde::protocol {

// Size limits (docs/protocol.md, "Limits and timeouts"). Bodies are refused before JSON parsing above these.
constexpr std::size_t max_image_id_size = 128;       // [A-Za-z0-9._:-]+
constexpr std::size_t max_token_size = 8192;         // docs/virtcca-platform.md a.1
constexpr std::size_t max_device_cert_size = 4096;   // MAX_DEV_CERT_SIZE, a.1
constexpr std::size_t max_event_log_size = 1024 * 1024;
constexpr std::size_t max_ccel_table_size = 1024;
constexpr std::size_t max_challenge_body = 1024;
// base64 of all binary fields plus JSON framing.
constexpr std::size_t max_attest_body = 4 * (max_token_size + max_device_cert_size + max_event_log_size +
                                              max_ccel_table_size + 1024) / 3 + 4096;
constexpr std::size_t nonce_size = 64;               // see verifier-daemon/nonce
constexpr std::size_t ephemeral_public_size = 32;    // X25519
constexpr std::size_t max_disk_key_size = 64;
constexpr std::size_t hpke_enc_size = 32;            // X25519 encapsulated key
constexpr std::size_t hpke_tag_size = 16;            // AES-256-GCM tag after the sealed key
// Response limits: the 200 bodies are small and fixed in shape; an error carries a short text.
constexpr std::size_t max_challenge_response_body = 1024;
constexpr std::size_t max_attest_response_body = 1024;
constexpr std::size_t max_error_message_size = 1024;
constexpr std::size_t max_error_body = 8192;         // room for JSON escapes in the message

constexpr std::string_view binding_label = "virtcca-fde/v1";
constexpr std::string_view hpke_info_label = "virtcca-fde/v1 key";

// Image ids name images in URLs, logs and file names: 1..128 of [A-Za-z0-9._:-], and
// neither "." nor "..".
Result<void> validate_image_id(std::string_view image_id);

struct ChallengeRequest {
  std::string image_id;
};
struct ChallengeResponse {
  Bytes nonce;
  std::string expires_at;  // RFC 3339 UTC, "2026-11-29T01:02:03Z"
};
struct AttestRequest {
  std::string image_id;
  Bytes nonce;
  Bytes ephemeral_public;
  Bytes token;
  Bytes device_cert;
  std::optional<Bytes> event_log;
  std::optional<Bytes> ccel_table;
};
struct AttestResponse {
  Bytes enc;         // HPKE encapsulated key, 32 bytes
  Bytes sealed_key;  // HPKE ciphertext of the disk key
};

// Stable error codes the guest sees (docs/protocol.md, "Errors"). The operator sees the detail.
enum class ErrorCode { attestation_failed, unknown_image, expired_nonce, bad_request, unavailable };
std::string_view error_code_name(ErrorCode code);
std::optional<ErrorCode> error_code_from_name(std::string_view name);
struct ErrorResponse {
  ErrorCode error = ErrorCode::bad_request;
  std::string message;
};

Result<ChallengeRequest> parse_challenge_request(std::string_view body);
Result<ChallengeResponse> parse_challenge_response(std::string_view body);
Result<AttestRequest> parse_attest_request(std::string_view body);
Result<AttestResponse> parse_attest_response(std::string_view body);
Result<ErrorResponse> parse_error_response(std::string_view body);

std::string serialize(const ChallengeRequest& message);
std::string serialize(const ChallengeResponse& message);
std::string serialize(const AttestRequest& message);
std::string serialize(const AttestResponse& message);
std::string serialize(const ErrorResponse& message);

// challenge = SHA-512("virtcca-fde/v1" || nonce || ephemeral_public), exactly 64 bytes.
Bytes challenge_binding(ByteView nonce, ByteView ephemeral_public);
// info = "virtcca-fde/v1 key" || 0x00 || image_id || 0x00 || nonce (HPKE info, docs/protocol.md "HPKE").
Bytes hpke_info(std::string_view image_id, ByteView nonce);

}  // namespace fde::protocol
