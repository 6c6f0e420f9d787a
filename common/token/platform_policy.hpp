// What an operator requires of the platform a CVM runs on, beyond a valid token: security
// lifecycle states, firmware (sw component) measurements that must be present, and the CA
// that must have issued the device certificate. The daemon's [attestation] section and
// `fde-admin verify-token` options fill it; token_verifier.cpp judges it.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/util/bytes.hpp"

namespace fde::token {

// Platform claim 2395 (security lifecycle). Arm CCA keeps the PSA encoding: the upper byte
// is the state, the lower byte is IMPLEMENTATION DEFINED, so "secured" is 0x3000-0x30ff.
enum class LifecycleState {
  unknown,                // 0x0000-0x00ff
  assembly_and_test,      // 0x1000-0x10ff
  rot_provisioning,       // 0x2000-0x20ff (PSA/CCA platform RoT provisioning)
  secured,                // 0x3000-0x30ff
  non_rot_debug,          // 0x4000-0x40ff (debug of software outside the platform RoT)
  recoverable_rot_debug,  // 0x5000-0x50ff (the platform RoT itself is debuggable)
  decommissioned,         // 0x6000-0x60ff
};

// The state a claim value encodes, or nullopt for a value outside every defined range.
std::optional<LifecycleState> lifecycle_state_of(std::int64_t claim);
std::string_view lifecycle_state_name(LifecycleState state);
// "secured", "non_rot_debug", ...; errors list the names.
Result<LifecycleState> lifecycle_state_from_name(std::string_view name);
// "0x3000" for values in range, the decimal value otherwise.
std::string lifecycle_value_text(std::int64_t claim);

// A firmware measurement the platform token must carry (downgrade protection): a sw component
// with exactly this measurement and, when `type` is set, this type (claim 2399 key 1).
struct RequiredSwComponent {
  std::optional<std::string> type;
  Bytes measurement;
};
// "[TYPE:]HEX", e.g. "TMM:9f86d0...", or just the hex for a measurement of any type.
Result<RequiredSwComponent> parse_required_sw_component(std::string_view text);
std::string describe_required_sw_component(const RequiredSwComponent& required);

// A SHA-256 fingerprint (64 hex digits; ':' separators as openssl prints them are allowed).
Result<Bytes> parse_sha256_fingerprint(std::string_view text);

struct PlatformPolicy {
  // States a full token's platform may report. Default: secured only, so a CVM on a
  // platform in a debug or provisioning state is denied.
  std::vector<LifecycleState> allowed_lifecycle_states{LifecycleState::secured};
  // Every entry must be matched by one of the platform's sw components; empty = no minimum.
  std::vector<RequiredSwComponent> required_sw_components;
  // SHA-256 of the DER of the CA certificate that directly issued the device certificate;
  // when non-empty, the validated chain's issuer must be one of these.
  std::vector<Bytes> device_issuer_sha256;
};

}  // namespace fde::token
