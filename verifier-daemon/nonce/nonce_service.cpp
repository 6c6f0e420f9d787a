// Stateless nonces: issue and check the MAC'd, self-expiring 64-byte layout of the header.
#include "verifier-daemon/nonce/nonce_service.hpp"

#include <time.h>

#include <algorithm>
#include <array>
#include <cstdlib>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "common/crypto/mac.hpp"
#include "common/crypto/random.hpp"
#include "common/protocol/messages.hpp"

namespace fde::verifier {

namespace {

constexpr std::string_view mac_label = "virtcca-fde/v1 nonce";
constexpr std::uint8_t nonce_version = 0x01;
constexpr std::size_t version_size = 1;
constexpr std::size_t expiry_size = 8;
constexpr std::size_t random_size = 23;
constexpr std::size_t mac_size = 32;
constexpr std::size_t mac_offset = version_size + expiry_size + random_size;
static_assert(mac_offset + mac_size == protocol::nonce_size, "the nonce layout must fill the protocol's nonce");

using Mac = std::array<std::uint8_t, mac_size>;

// HMAC-SHA256(secret, label || version || expires_at || random || image_id). `head` is the
// nonce's first mac_offset bytes (version, expiry, random).
Mac compute_mac(const SecretBytes& secret, ByteView head, std::string_view image_id) {
  Bytes input;
  input.reserve(mac_label.size() + head.size() + image_id.size());
  input.insert(input.end(), mac_label.begin(), mac_label.end());
  input.insert(input.end(), head.begin(), head.end());
  input.insert(input.end(), image_id.begin(), image_id.end());
  Mac mac{};
  // HMAC fails only on allocation failure; a wrong MAC must never be compared against.
  auto computed = crypto::hmac_sha256(secret.view(), input);
  if (!computed || computed->size() != mac_size) std::abort();
  std::copy(computed->begin(), computed->end(), mac.begin());
  return mac;
}

// The big-endian expiry after the version byte; `nonce` has the full size.
std::uint64_t expiry_field(ByteView nonce) {
  std::uint64_t expires = 0;
  for (std::size_t i = 0; i < expiry_size; ++i) expires = (expires << 8) | nonce[version_size + i];
  return expires;
}

std::int64_t seconds_since_epoch(Clock::time_point time) {
  return std::chrono::floor<std::chrono::seconds>(time.time_since_epoch()).count();
}

}  // namespace

std::string_view nonce_status_name(NonceStatus status) {
  switch (status) {
    case NonceStatus::valid: return "valid";
    case NonceStatus::malformed: return "malformed";
    case NonceStatus::forged: return "forged";
    case NonceStatus::expired: return "expired";
  }
  return "malformed";
}

Result<NonceService> NonceService::create(std::vector<SecretBytes> secrets, std::chrono::seconds lifetime) {
  if (secrets.empty()) return fail(Errc::invalid_argument, "nonce service: no secret configured");
  for (std::size_t i = 0; i < secrets.size(); ++i) {
    // A short secret would make the MAC guessable offline from one observed nonce.
    if (secrets[i].size() < min_secret_size)
      return fail(Errc::invalid_argument, "nonce service: secret " + std::to_string(i + 1) + " has " +
                                              std::to_string(secrets[i].size()) + " bytes, at least " +
                                              std::to_string(min_secret_size) + " are needed");
  }
  if (lifetime <= std::chrono::seconds(0))
    return fail(Errc::invalid_argument, "nonce service: the nonce lifetime must be positive");
  NonceService service;
  service.secrets_ = std::move(secrets);
  service.lifetime_ = lifetime;
  return service;
}

NonceService::Issued NonceService::issue(std::string_view image_id, Clock::time_point now) const {
  // Whole seconds: the wire carries seconds, so the expiry we report is the one we check.
  std::int64_t expires = seconds_since_epoch(now) + lifetime_.count();
  if (expires < 0) expires = 0;
  Bytes nonce(protocol::nonce_size);
  nonce[0] = nonce_version;
  for (std::size_t i = 0; i < expiry_size; ++i)
    nonce[version_size + i] = static_cast<std::uint8_t>(static_cast<std::uint64_t>(expires) >> (8 * (expiry_size - 1 - i)));
  Bytes random = crypto::random_bytes(random_size);
  std::copy(random.begin(), random.end(), nonce.begin() + version_size + expiry_size);
  Mac mac = compute_mac(secrets_.front(), ByteView(nonce).first(mac_offset), image_id);
  std::copy(mac.begin(), mac.end(), nonce.begin() + mac_offset);
  return Issued{std::move(nonce), Clock::time_point(std::chrono::seconds(expires))};
}

NonceStatus NonceService::check(ByteView nonce, std::string_view image_id, Clock::time_point now) const {
  if (nonce.size() != protocol::nonce_size || nonce[0] != nonce_version) return NonceStatus::malformed;
  ByteView head = nonce.first(mac_offset);
  ByteView presented = nonce.subspan(mac_offset);
  bool authentic = false;
  for (const auto& secret : secrets_) {
    Mac expected = compute_mac(secret, head, image_id);
    authentic = equal_constant_time(expected, presented) || authentic;
  }
  // The MAC is checked before the expiry so that "expired" is only ever said about nonces we
  // issued: the expiry field of a forged nonce means nothing.
  if (!authentic) return NonceStatus::forged;
  const std::uint64_t expires = expiry_field(nonce);
  std::int64_t current = seconds_since_epoch(now);
  if (current < 0 || static_cast<std::uint64_t>(current) >= expires) return NonceStatus::expired;
  return NonceStatus::valid;
}

Clock::time_point NonceService::expires_at(ByteView nonce) {
  if (nonce.size() != protocol::nonce_size) return Clock::time_point{};
  const std::uint64_t expires = expiry_field(nonce);
  // issue() never writes more than the clock can hold; clamp a hand-made value.
  const auto max_seconds = static_cast<std::uint64_t>(
      std::chrono::duration_cast<std::chrono::seconds>(Clock::time_point::max().time_since_epoch()).count());
  return Clock::time_point(std::chrono::seconds(static_cast<std::int64_t>(std::min(expires, max_seconds))));
}

std::string format_rfc3339(Clock::time_point time) {
  std::time_t seconds = static_cast<std::time_t>(seconds_since_epoch(time));
  struct tm utc {};
  if (::gmtime_r(&seconds, &utc) == nullptr) return "1970-01-01T00:00:00Z";
  char buffer[64];
  std::size_t n = std::strftime(buffer, sizeof buffer, "%Y-%m-%dT%H:%M:%SZ", &utc);
  return std::string(buffer, n);
}

}  // namespace fde::verifier
