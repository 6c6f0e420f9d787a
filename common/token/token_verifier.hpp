// Verifies a parsed token against device identity and policy; returns a Verdict
// (docs/virtcca-platform.md b.6-b.8 and g; docs/fde-verifierd.md "The checks", the token checks).
#pragma once

#include <ctime>
#include <optional>
#include <span>
#include <vector>

#include "common/crypto/certificate.hpp"
#include "common/token/platform_policy.hpp"
#include "common/token/token.hpp"
#include "common/token/verdict.hpp"

namespace fde::token {

// How the device certificate's chain is validated at a given time. The default validates
// against TokenPolicy::trusted_roots each time; the daemon supplies one that keeps its root
// store and remembers validated chains (verifier-daemon/policy/device_certificates).
class ChainValidator {
 public:
  virtual ~ChainValidator() = default;
  // The validated path, leaf first and trust anchor last, or why it does not validate.
  virtual Result<std::vector<crypto::Certificate>> validate(const crypto::Certificate& leaf,
                                                            std::span<const crypto::Certificate> intermediates,
                                                            std::time_t at) const = 0;
};

struct TokenPolicy {
  std::vector<crypto::Certificate> trusted_roots;   // pinned roots (Huawei or simulator CA)
  std::vector<crypto::Certificate> intermediates;   // untrusted helpers for path building
  bool allow_legacy = false;                        // CVM-only tokens (RAK must equal device key)
  std::optional<Bytes> expected_challenge;          // the 64-byte challenge the CVM token must carry
  std::optional<std::time_t> at_time;               // certificate validity time; nullopt = now
  PlatformPolicy platform;                          // lifecycle, firmware minimum, issuer pins
  const ChainValidator* chain_validator = nullptr;  // nullptr: crypto::verify_chain against trusted_roots
};

struct DeviceEvidence {
  // The device (AIK/CPAK) certificate from TMM_GET_DEVICE_CERT; may be absent, in which
  // case every check that needs it fails.
  std::optional<crypto::Certificate> device_certificate;
};

// Runs every applicable check and records each as a Check; never stops at the first
// failure (so an operator sees the whole picture) but never lets a later check pass
// on data an earlier check rejected. Check names are stable:
//   token.kind, cvm.claim_sizes, cvm.hash_algo, cvm.rak, cvm.signature,
//   device.chain, device.issuer (only with issuer pins), platform.signature,
//   platform.rak_binding, platform.claims, platform.lifecycle (full tokens),
//   platform.sw_components (only with required sw components), legacy.policy,
//   legacy.rak_is_device_key, cvm.challenge
Verdict verify_token(const Token& token, const DeviceEvidence& device, const TokenPolicy& policy);

// The RAK as a key: DER SPKI (RSA legacy) or raw P-521 point; errors name the size seen.
Result<crypto::PublicKey> rak_public_key(const CvmClaims& cvm);

}  // namespace fde::token
