// The virtCCA attestation token model and its parser (docs/virtcca-platform.md b).
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/cose/cose_sign1.hpp"
#include "common/token/token_limits.hpp"
#include "common/util/bytes.hpp"

namespace fde::token {

// Sections a.1 and b.2: fixed claim sizes and the REM count.
constexpr std::size_t challenge_size = 64;
constexpr std::size_t rpv_size = 64;
constexpr std::size_t rem_count = 4;

// Parser bounds (defence in depth below the 8192-byte token limit). Exact profile sizes are
// judged by the verifier; these only keep hostile inputs from ever reaching crypto code.
constexpr std::size_t max_claim_bytes = 1024;     // any byte-string claim
constexpr std::size_t max_text_claim_size = 256;  // any text claim (algo names, profile, URL)
constexpr std::size_t max_sw_components = 32;     // platform claim 2399 entries

// Section b.2: CVM (realm) claims.
namespace cvm_claim {
constexpr std::int64_t challenge = 10;
constexpr std::int64_t personalization_value = 44235;
constexpr std::int64_t hash_algo_id = 44236;
constexpr std::int64_t public_key = 44237;  // the RAK
constexpr std::int64_t initial_measurement = 44238;  // RIM
constexpr std::int64_t extensible_measurements = 44239;  // REM[0..3]
constexpr std::int64_t public_key_hash_algo_id = 44240;
constexpr std::int64_t profile = 265;  // Arm draft-ffm realm profile; accepted, ignored
}  // namespace cvm_claim

// Section b.3: platform claims.
namespace platform_claim {
constexpr std::int64_t profile = 265;
constexpr std::int64_t challenge = 10;
constexpr std::int64_t implementation_id = 2396;
constexpr std::int64_t instance_id = 256;
constexpr std::int64_t config = 2401;
constexpr std::int64_t lifecycle = 2395;
constexpr std::int64_t sw_components = 2399;
constexpr std::int64_t verification_service = 2400;
constexpr std::int64_t hash_algo_id = 2402;
}  // namespace platform_claim

namespace sw_component_key {
constexpr std::int64_t type = 1;
constexpr std::int64_t measurement = 2;
constexpr std::int64_t version = 4;
constexpr std::int64_t signer_id = 5;
constexpr std::int64_t hash_algo_id = 6;
}  // namespace sw_component_key

struct CvmClaims {
  Bytes challenge;
  Bytes personalization_value;  // RPV
  std::string hash_algo_id;     // "sha-256" / "sha-512"
  Bytes public_key;             // RAK claim bytes exactly as encoded
  Bytes initial_measurement;    // RIM
  std::array<Bytes, rem_count> extensible_measurements;  // REM[0..3]
  std::string public_key_hash_algo_id;
};

struct SwComponent {
  std::optional<std::string> type;
  Bytes measurement;
  std::optional<std::string> version;
  Bytes signer_id;
  std::optional<std::string> hash_algo_id;
};

struct PlatformClaims {
  std::optional<std::string> profile;
  Bytes challenge;
  Bytes implementation_id;
  Bytes instance_id;
  Bytes config;
  std::int64_t lifecycle = 0;
  std::vector<SwComponent> sw_components;
  std::optional<std::string> verification_service;
  std::string hash_algo_id;
};

enum class CvmPayloadWrapping { single, double_wrapped };

struct Token {
  Bytes raw;  // the whole token as received
  std::optional<cose::Sign1> platform_envelope;
  std::optional<PlatformClaims> platform;
  cose::Sign1 cvm_envelope;
  CvmClaims cvm;
  CvmPayloadWrapping cvm_wrapping = CvmPayloadWrapping::double_wrapped;

  // Full = platform + CVM token (newer TMM); legacy = CVM token only.
  bool is_full() const { return platform_envelope.has_value(); }
};

// Structural parse (docs/virtcca-platform.md g steps 1-3 as far as encoding goes):
// size <= 8192, tag 399, map of 1-2 entries with keys only 44234/44241 (any order, no
// duplicates), each a bstr holding a COSE_Sign1; claim maps with every mandatory claim
// of the right CBOR type, no unknown integer keys (profile 265 allowed), exactly 4 REMs,
// text claims with trailing NULs trimmed. The CVM payload is unwrapped once if it holds a
// bstr (virtCCA) and used directly if it holds a map (Arm CCA). Exact claim sizes and
// algorithm names are *not* judged here: the verifier reports them as checks.
Result<Token> parse_token(ByteView encoded);

}  // namespace fde::token
