// Stateless nonces (docs/protocol.md, `POST /v1/challenge`): each nonce carries its expiry and a MAC under a
// secret shared by all verifier replicas, so any replica can check it without a session store.
//
// Layout (64 bytes): version (1) = 0x01 || expires_at (8, big-endian Unix seconds) ||
// random (23) || HMAC-SHA256(secret, "virtcca-fde/v1 nonce" || version || expires_at ||
// random || image_id) (32). The image id is bound in, so a nonce issued for one image is
// useless for another.
#pragma once

#include <chrono>
#include <string_view>
#include <vector>

#include "common/util/bytes.hpp"
#include "common/util/secret_bytes.hpp"

namespace fde::verifier {

using Clock = std::chrono::system_clock;

enum class NonceStatus { valid, malformed, forged, expired };
std::string_view nonce_status_name(NonceStatus status);

class NonceService {
 public:
  static constexpr std::size_t min_secret_size = 32;
  // The first secret issues nonces; all of them verify (rotation: prepend the new secret,
  // drop the old one after one nonce lifetime). Every secret must be >= 32 bytes.
  static Result<NonceService> create(std::vector<SecretBytes> secrets, std::chrono::seconds lifetime);

  struct Issued {
    Bytes nonce;
    Clock::time_point expires_at;
  };
  Issued issue(std::string_view image_id, Clock::time_point now) const;
  NonceStatus check(ByteView nonce, std::string_view image_id, Clock::time_point now) const;
  // The expiry a well-formed nonce carries. It means something only for a nonce check()
  // found valid (or expired): the expiry field of a forged nonce is the sender's choice.
  static Clock::time_point expires_at(ByteView nonce);
  std::chrono::seconds lifetime() const { return lifetime_; }

 private:
  NonceService() = default;
  std::vector<SecretBytes> secrets_;
  std::chrono::seconds lifetime_{60};
};

// RFC 3339 UTC with seconds precision: "2026-11-29T01:02:03Z".
std::string format_rfc3339(Clock::time_point time);

}  // namespace fde::verifier
