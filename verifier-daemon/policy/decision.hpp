// The policy step (docs/fde-verifierd.md, "The checks"): runs every check on an attestation request and is
// the only code that can produce VerifiedEvidence, which releasing a key requires.
#pragma once

#include <optional>
#include <string>

#include "common/protocol/messages.hpp"
#include "common/token/token_verifier.hpp"
#include "common/token/verdict.hpp"
#include "common/util/secret_bytes.hpp"
#include "verifier-daemon/nonce/nonce_service.hpp"
#include "verifier-daemon/policy/device_certificates.hpp"
#include "verifier-daemon/store/store.hpp"

namespace fde::verifier {

class Decider;

// Proof that one attestation request passed every check. Only Decider can construct it,
// so a path that skipped a check cannot call release_key (style.md: "let the compiler
// guard the release").
class VerifiedEvidence {
 public:
  const std::string& image_id() const { return image_id_; }
  const Bytes& nonce() const { return nonce_; }
  const Bytes& ephemeral_public() const { return ephemeral_public_; }

 private:
  friend class Decider;
  VerifiedEvidence(std::string image_id, Bytes nonce, Bytes ephemeral_public)
      : image_id_(std::move(image_id)), nonce_(std::move(nonce)), ephemeral_public_(std::move(ephemeral_public)) {}
  std::string image_id_;
  Bytes nonce_;
  Bytes ephemeral_public_;
};

struct Decision {
  Verdict verdict;                          // every check, for logs, audit and explain
  std::optional<VerifiedEvidence> evidence;  // set only when verdict.passed()
  protocol::ErrorCode guest_error = protocol::ErrorCode::attestation_failed;  // coarse reason for the guest
  std::string measurements_json;            // RIM/REMs/RPV/matched set for the audit record
};

struct DeciderConfig {
  std::vector<crypto::Certificate> trusted_roots;
  std::vector<crypto::Certificate> intermediates;
  bool allow_legacy = false;
  token::PlatformPolicy platform;  // lifecycle states, firmware minimum, device issuer pins
};

class Decider {
 public:
  Decider(DeciderConfig config, const NonceService& nonces)
      : config_(std::move(config)), nonces_(nonces), device_certificates_(config_.trusted_roots) {}
  // Checks, in the order of docs/fde-verifierd.md "The checks": nonce (authentic, unexpired, for this image);
  // image known; token parse and verify (device cert chained to the roots); challenge ==
  // SHA-512(label || nonce || ephemeral_public); reference values (RIM, RPV, event log);
  // image status active. `image` is nullopt for an unknown image.
  Decision decide(const protocol::AttestRequest& request, const std::optional<ImageRecord>& image,
                  Clock::time_point now) const;

 private:
  DeciderConfig config_;
  const NonceService& nonces_;
  // Built with this configuration's roots; a reload builds a new Decider and so a new cache.
  mutable DeviceCertificates device_certificates_;

 public:
  const DeviceCertificates& device_certificates() const { return device_certificates_; }
};

// The reloadable part of the verifier, swapped as one on SIGHUP: the nonce secrets and the
// decider's roots and options. The decider refers to the nonce service held beside it.
class VerificationPolicy {
 public:
  VerificationPolicy(NonceService nonces, DeciderConfig config)
      : nonces_(std::move(nonces)), decider_(std::move(config), nonces_) {}
  VerificationPolicy(const VerificationPolicy&) = delete;
  VerificationPolicy& operator=(const VerificationPolicy&) = delete;

  const NonceService& nonces() const { return nonces_; }
  const Decider& decider() const { return decider_; }

 private:
  NonceService nonces_;
  Decider decider_;
};

// Seals the disk key to the evidence's ephemeral key with HPKE (info binds image id and nonce).
Result<protocol::AttestResponse> release_key(const VerifiedEvidence& evidence, const SecretBytes& disk_key);

}  // namespace fde::verifier
