// One attempt of protocol v1 against one verifier (docs/protocol.md, "The exchange" up to the
// opened key): challenge, a token bound to a fresh X25519 key, attest, HPKE open. The result
// says whether trying again could help, so the boot flow can decide what to do next.
#pragma once

#include <optional>
#include <string>

#include "common/util/secret_bytes.hpp"
#include "guest-agent/client/transport.hpp"
#include "guest-agent/platform/platform.hpp"

namespace fde::agent {

// The disk key is 32..64 bytes (the enrollment bundle's limits); anything else is refused.
inline constexpr std::size_t min_disk_key_size = 32;
inline constexpr std::size_t max_disk_key_size = 64;

enum class AttemptStatus {
  released,   // the key is in `key`
  retry,      // transient: the network, the verifier's availability, an expired nonce
  denied,     // the verifier refused this VM or image; asking again will not change that
  fatal,      // this machine cannot attest (no TSI device, unsupported kernel ABI)
};
std::string_view attempt_status_name(AttemptStatus status);

struct AttemptResult {
  AttemptStatus status = AttemptStatus::retry;
  std::string step;     // "challenge", "token", "attest", "open", ...
  std::string message;  // what happened, without any key material
  SecretBytes key;      // only when released
};

class AttestationClient {
 public:
  AttestationClient(Platform& platform, Transport& transport, std::string image_id)
      : platform_(platform), transport_(transport), image_id_(std::move(image_id)) {}

  AttemptResult attempt(const VerifierUrl& verifier, TimePoint deadline);

 private:
  Platform& platform_;
  Transport& transport_;
  std::string image_id_;
  // The device certificate and the event log do not change during a boot: read them once.
  std::optional<Bytes> device_certificate_;
  std::optional<std::optional<BootEventLog>> event_log_;
};

}  // namespace fde::agent
