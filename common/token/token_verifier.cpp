// Turns a parsed token plus device identity and policy into a Verdict (docs/virtcca-platform.md
// b.6-b.8 and g). Every check is recorded; a check whose input an earlier check rejected is
// recorded as failed with "not checked: <reason>", never skipped and never passed.
#include "common/token/token_verifier.hpp"

#include <string>
#include <vector>

#include "common/crypto/hash.hpp"

namespace fde::token {
namespace {

// b.2 / b.6: RAK claim sizes of the two virtCCA key types, and Arm CCA RMM 1.0's P-384 point.
constexpr std::size_t rak_rsa_spki_size = 550;
constexpr std::size_t rak_p521_point_size = 133;
constexpr std::size_t rak_p384_point_size = 97;
// b.3: implementation id is 32 bytes, instance id a 33-byte UEID, whose first byte is the
// UEID type (0x01 = RAND). Neither upstream verifier (virtCCA_sdk, secGear) checks the type,
// and no real full virtCCA token is public to show it, so the type is reported, not judged.
constexpr std::size_t implementation_id_size = 32;
constexpr std::size_t instance_id_size = 33;
constexpr std::uint8_t ueid_type_rand = 0x01;

std::string not_checked(std::string_view reason) { return "not checked: " + std::string(reason); }

std::string byte_count(std::size_t n) { return std::to_string(n) + " B"; }

std::string quoted(std::string_view text) { return "\"" + std::string(text) + "\""; }

std::string join(const std::vector<std::string>& parts, std::string_view separator) {
  std::string out;
  for (std::size_t i = 0; i < parts.size(); ++i) {
    if (i != 0) out += separator;
    out += parts[i];
  }
  return out;
}

// "RSA-4096 (SPKI sha-256 0a1b...)": enough to tell two keys apart in an audit record.
std::string key_identity(const crypto::PublicKey& key) {
  return key.description() + " (SPKI sha-256 " + hex_encode(crypto::sha256(key.spki_der())) + ")";
}

std::string hex_or_empty(ByteView bytes) { return bytes.empty() ? std::string("(empty)") : hex_encode(bytes); }

// b.2: the CVM hash algo is SHA-256 or SHA-512 (cvm config 0/1, c.1); the RAK hash algo may
// also be SHA-384 (secGear accepts it).
bool is_allowed_cvm_hash(crypto::HashAlg alg) {
  return alg == crypto::HashAlg::sha256 || alg == crypto::HashAlg::sha512;
}

void check_token_kind(const Token& token, Verdict& verdict) {
  std::string found = token.is_full() ? "full token: platform (44234) + CVM (44241)" : "legacy token: CVM (44241) only";
  found += token.cvm_wrapping == CvmPayloadWrapping::double_wrapped ? ", CVM payload double-wrapped (virtCCA)"
                                                                    : ", CVM payload single-wrapped (Arm CCA)";
  // The parser already refused anything else; this check records what kind was seen so the
  // audit trail says which rules (b.8 full or legacy) were applied.
  verdict.add_pass("token.kind", "tag 399 collection holding a CVM token and, for full tokens, a platform token",
                   found);
}

void check_cvm_claim_sizes(const Token& token, Verdict& verdict) {
  const CvmClaims& cvm = token.cvm;
  const auto hash = crypto::hash_alg_from_name(cvm.hash_algo_id);
  std::vector<std::string> problems;
  if (cvm.challenge.size() != challenge_size) problems.push_back("challenge");
  if (cvm.personalization_value.size() != rpv_size) problems.push_back("RPV");
  // b.6: a P-521 point or an RSA-4096 SPKI in either token kind, as both upstream verifiers
  // accept (virtCCA_sdk token_parse.c CCA_CVM_PUB_KEY {133, 550}; secGear cvm_sizes): the
  // SDK describes firmware moving from RSA to ECC RAKs with mixed combinations on the way.
  // Whether the key decodes and suits the COSE alg is judged by cvm.rak and cvm.signature.
  const std::string rak_rule = "RAK 133 B (P-521 point) or 550 B (RSA-4096 SPKI)";
  if (cvm.public_key.size() != rak_p521_point_size && cvm.public_key.size() != rak_rsa_spki_size)
    problems.push_back("RAK");

  std::string measurement_rule;
  if (hash) {
    const std::size_t digest = crypto::digest_size(*hash);
    measurement_rule = byte_count(digest) + " (" + std::string(crypto::hash_alg_name(*hash)) + ")";
    if (cvm.initial_measurement.size() != digest) problems.push_back("RIM");
    for (std::size_t i = 0; i < rem_count; ++i)
      if (cvm.extensible_measurements[i].size() != digest) problems.push_back("REM[" + std::to_string(i) + "]");
  } else {
    // b.2 / g.3: RIM and REM sizes follow the hash algo, so an unknown algo leaves them unjudgeable.
    measurement_rule = "the digest size of the CVM hash algo";
    problems.push_back("RIM and REMs (unknown hash algo id " + quoted(cvm.hash_algo_id) + ")");
  }

  const std::string expected = "challenge 64 B, RPV 64 B, " + rak_rule + ", RIM and REMs " + measurement_rule;
  std::string found = "challenge " + byte_count(cvm.challenge.size()) + ", RPV " +
                      byte_count(cvm.personalization_value.size()) + ", RAK " + byte_count(cvm.public_key.size()) +
                      ", RIM " + byte_count(cvm.initial_measurement.size()) + ", REMs ";
  for (std::size_t i = 0; i < rem_count; ++i) {
    if (i != 0) found += "/";
    found += std::to_string(cvm.extensible_measurements[i].size());
  }
  found += " B";
  if (!problems.empty()) found += "; wrong: " + join(problems, ", ");
  verdict.add("cvm.claim_sizes", expected, found, problems.empty());
}

// Returns the RAK hash algo when it is usable for the binding.
std::optional<crypto::HashAlg> check_cvm_hash_algo(const CvmClaims& cvm, Verdict& verdict) {
  const auto hash = crypto::hash_alg_from_name(cvm.hash_algo_id);
  const auto rak_hash = crypto::hash_alg_from_name(cvm.public_key_hash_algo_id);
  const bool hash_ok = hash && is_allowed_cvm_hash(*hash);
  const bool rak_hash_ok = rak_hash.has_value();
  std::string found = "hash algo id " + quoted(cvm.hash_algo_id) + (hash_ok ? "" : " (not allowed)") +
                      ", RAK hash algo id " + quoted(cvm.public_key_hash_algo_id) +
                      (rak_hash_ok ? "" : " (not allowed)");
  verdict.add("cvm.hash_algo",
              "hash algo id (44236) sha-256 or sha-512; RAK hash algo id (44240) sha-256, sha-384 or sha-512", found,
              hash_ok && rak_hash_ok);
  return rak_hash;
}

std::optional<crypto::PublicKey> check_cvm_rak(const CvmClaims& cvm, Verdict& verdict) {
  // The 97-byte P-384 point of Arm CCA decodes too (so Arm tokens can be checked end to
  // end), but cvm.claim_sizes still holds such a token to the virtCCA sizes.
  const std::string expected =
      "RAK (44237) decodes as an RSA DER SPKI (550 B), an EC P-521 point (133 B) or an Arm CCA P-384 point (97 B)";
  auto key = rak_public_key(cvm);
  if (!key) {
    verdict.add_fail("cvm.rak", expected, key.error().message);
    return std::nullopt;
  }
  verdict.add_pass("cvm.rak", expected, key_identity(*key) + " from " + byte_count(cvm.public_key.size()));
  return *key;
}

bool check_cvm_signature(const Token& token, const std::optional<crypto::PublicKey>& rak, Verdict& verdict) {
  const std::string expected =
      std::string(crypto::sig_alg_name(token.cvm_envelope.alg)) + " signature over the CVM token by the RAK";
  if (!rak) {
    verdict.add_fail("cvm.signature", expected, not_checked("the RAK could not be decoded (cvm.rak)"));
    return false;
  }
  auto verified = cose::verify_sign1(token.cvm_envelope, *rak);
  verdict.add("cvm.signature", expected, verified ? "valid" : verified.error().message, verified.has_value());
  return verified.has_value();
}

// What a validated device certificate chain vouches for.
struct ValidatedDevice {
  crypto::PublicKey key;
  crypto::Certificate issuer;  // the CA certificate that signed the device certificate
};

// Returns the device key only when the chain validated (b.7): an unvalidated certificate's
// key must not vouch for anything later.
std::optional<ValidatedDevice> check_device_chain(const DeviceEvidence& device, const TokenPolicy& policy,
                                                  Verdict& verdict) {
  const std::string expected =
      "device certificate chains to one of " + std::to_string(policy.trusted_roots.size()) + " pinned root(s)" +
      (policy.intermediates.empty() ? std::string()
                                    : " via " + std::to_string(policy.intermediates.size()) + " intermediate(s)");
  if (!device.device_certificate) {
    verdict.add_fail("device.chain", expected, "no device certificate was provided");
    return std::nullopt;
  }
  const crypto::Certificate& cert = *device.device_certificate;
  const std::string who = "\"" + cert.subject() + "\" issued by \"" + cert.issuer() + "\"";
  if (policy.trusted_roots.empty()) {
    verdict.add_fail("device.chain", expected, who + ": no trusted roots configured");
    return std::nullopt;
  }
  crypto::ChainOptions options;
  options.at_time = policy.at_time;
  auto chain = policy.chain_validator != nullptr
                   ? policy.chain_validator->validate(cert, policy.intermediates,
                                                      policy.at_time.value_or(std::time(nullptr)))
                   : crypto::verify_chain(cert, policy.intermediates, policy.trusted_roots, options);
  if (!chain) {
    verdict.add_fail("device.chain", expected, who + ": " + chain.error().message);
    return std::nullopt;
  }
  verdict.add_pass("device.chain", expected, who + ": valid, key " + cert.public_key().description());
  // A self-signed device certificate pinned as a root is its own issuer.
  const crypto::Certificate& issuer = chain->size() > 1 ? (*chain)[1] : chain->front();
  return ValidatedDevice{cert.public_key(), issuer};
}

// Huawei's roots issue for many product lines; pinning the issuing CA narrows trust to the
// one that issues virtCCA device certificates.
void check_device_issuer(const std::vector<Bytes>& pins, const std::optional<ValidatedDevice>& device,
                         Verdict& verdict) {
  std::vector<std::string> pinned;
  for (const Bytes& pin : pins) pinned.push_back(hex_encode(pin));
  const std::string expected =
      "device certificate issued by a CA whose certificate has SHA-256 " + join(pinned, " or ");
  if (!device) {
    verdict.add_fail("device.issuer", expected, not_checked("the device certificate did not validate (device.chain)"));
    return;
  }
  const Bytes fingerprint = device->issuer.sha256_fingerprint();
  bool pinned_match = false;
  for (const Bytes& pin : pins) pinned_match = pinned_match || pin == fingerprint;
  verdict.add("device.issuer", expected,
              "issuer \"" + device->issuer.subject() + "\" with SHA-256 " + hex_encode(fingerprint), pinned_match);
}

bool check_platform_signature(const Token& token, const std::optional<crypto::PublicKey>& device_key,
                              Verdict& verdict) {
  const std::string expected = std::string(crypto::sig_alg_name(token.platform_envelope->alg)) +
                               " signature over the platform token by the device key";
  if (!device_key) {
    verdict.add_fail("platform.signature", expected,
                     not_checked("the device certificate did not validate (device.chain)"));
    return false;
  }
  auto verified = cose::verify_sign1(*token.platform_envelope, *device_key);
  verdict.add("platform.signature", expected,
              verified ? "valid (" + device_key->description() + ")" : verified.error().message, verified.has_value());
  return verified.has_value();
}

// b.6: platform challenge == HASH_{44240}(RAK claim bytes as encoded), lengths included
// (the sample compared only digest_len bytes).
void check_rak_binding(const Token& token, bool platform_authentic, const std::optional<crypto::HashAlg>& rak_hash,
                       Verdict& verdict) {
  const std::string name = "platform.rak_binding";
  if (!platform_authentic) {
    verdict.add_fail(name, "platform challenge = hash of the RAK claim",
                     not_checked("the platform token signature was not verified (platform.signature)"));
    return;
  }
  if (!rak_hash) {
    verdict.add_fail(name, "platform challenge = hash of the RAK claim",
                     not_checked("unknown RAK hash algo id " + quoted(token.cvm.public_key_hash_algo_id)));
    return;
  }
  const Bytes expected_digest = crypto::digest(*rak_hash, token.cvm.public_key);
  const Bytes& challenge = token.platform->challenge;
  const bool bound = equal_constant_time(expected_digest, challenge);
  verdict.add(name,
              "platform challenge = " + std::string(crypto::hash_alg_name(*rak_hash)) + "(RAK claim, " +
                  byte_count(token.cvm.public_key.size()) + ") = " + hex_encode(expected_digest),
              "platform challenge " + hex_or_empty(challenge) + " (" + byte_count(challenge.size()) + ")", bound);
}

// Upstream writes platform algo names both ways ("sha-256", "sha256"); neither verifier holds
// them to one spelling, so any spelling of sha-256/384/512 is accepted here.
std::optional<crypto::HashAlg> platform_hash_alg(std::string_view name) {
  return crypto::hash_alg_from_lenient_name(name);
}

void check_platform_claims(const PlatformClaims& platform, bool platform_authentic, Verdict& verdict) {
  const std::string expected =
      "platform hash algo id sha-256, sha-384 or sha-512 (hyphen and case free); implementation id 32 B; instance "
      "id 33 B; at least one sw component, each measurement sized to its hash algo";
  if (!platform_authentic) {
    verdict.add_fail("platform.claims", expected,
                     not_checked("the platform token signature was not verified (platform.signature)"));
    return;
  }
  std::vector<std::string> problems;
  const auto platform_hash = platform_hash_alg(platform.hash_algo_id);
  if (!platform_hash) problems.push_back("unknown platform hash algo id " + quoted(platform.hash_algo_id));
  if (platform.implementation_id.size() != implementation_id_size)
    problems.push_back("implementation id is " + byte_count(platform.implementation_id.size()));
  if (platform.instance_id.size() != instance_id_size)
    problems.push_back("instance id is " + byte_count(platform.instance_id.size()));
  std::string note;
  if (!platform.instance_id.empty() && platform.instance_id.front() != ueid_type_rand)
    note = "; note: instance id UEID type " + hex_encode(ByteView(platform.instance_id).first(1)) +
           " is not RAND (01), reported only (no upstream verifier checks it)";
  if (platform.sw_components.empty()) problems.push_back("no sw components");
  for (std::size_t i = 0; i < platform.sw_components.size(); ++i) {
    const SwComponent& component = platform.sw_components[i];
    const std::string label =
        "sw component " + std::to_string(i) + (component.type ? " (" + quoted(*component.type) + ")" : std::string());
    // A component without its own hash algo is measured with the platform's (b.3).
    const std::string& algo_name = component.hash_algo_id ? *component.hash_algo_id : platform.hash_algo_id;
    const auto algo = platform_hash_alg(algo_name);
    if (!algo) {
      problems.push_back(label + ": unknown hash algo id " + quoted(algo_name));
    } else if (component.measurement.size() != crypto::digest_size(*algo)) {
      problems.push_back(label + ": measurement is " + byte_count(component.measurement.size()) + ", " +
                         std::string(crypto::hash_alg_name(*algo)) + " needs " +
                         byte_count(crypto::digest_size(*algo)));
    }
  }
  // PSA lifecycle states are conventionally written in hex (0x3000 = secured).
  const std::string lifecycle = lifecycle_value_text(platform.lifecycle);
  std::string found = "hash algo " + quoted(platform.hash_algo_id) + ", implementation id " +
                      byte_count(platform.implementation_id.size()) + ", instance id " +
                      byte_count(platform.instance_id.size()) + ", " + std::to_string(platform.sw_components.size()) +
                      " sw components, lifecycle " + lifecycle;
  if (!problems.empty()) found += "; wrong: " + join(problems, "; ");
  verdict.add("platform.claims", expected, found + note, problems.empty());
}

// Claim 2395: a platform in a debug or provisioning state can be inspected or altered by
// whoever holds it, so only the states the policy names are accepted (default: secured).
void check_platform_lifecycle(const PlatformClaims& platform, bool platform_authentic,
                              const std::vector<LifecycleState>& allowed, Verdict& verdict) {
  std::vector<std::string> names;
  for (LifecycleState state : allowed) names.push_back(std::string(lifecycle_state_name(state)));
  const std::string expected = "security lifecycle (2395) " +
                               (names.empty() ? std::string("in no state (the policy allows none)")
                                              : "in state " + join(names, " or ")) +
                               " (secured = 0x3000-0x30ff)";
  if (!platform_authentic) {
    verdict.add_fail("platform.lifecycle", expected,
                     not_checked("the platform token signature was not verified (platform.signature)"));
    return;
  }
  const auto state = lifecycle_state_of(platform.lifecycle);
  const std::string value = lifecycle_value_text(platform.lifecycle);
  if (!state) {
    verdict.add_fail("platform.lifecycle", expected, value + ", which is not a defined lifecycle state");
    return;
  }
  bool ok = false;
  for (LifecycleState a : allowed) ok = ok || a == *state;
  verdict.add("platform.lifecycle", expected, value + " (" + std::string(lifecycle_state_name(*state)) + ")", ok);
}

bool sw_component_matches(const SwComponent& component, const RequiredSwComponent& required) {
  if (required.type && component.type != required.type) return false;
  return component.measurement == required.measurement;
}

// Downgrade protection: the platform must run at least the firmware the policy names.
void check_platform_sw_components(const PlatformClaims& platform, bool platform_authentic,
                                  const std::vector<RequiredSwComponent>& required, Verdict& verdict) {
  std::vector<std::string> wanted;
  for (const auto& entry : required) wanted.push_back(describe_required_sw_component(entry));
  const std::string expected = "sw components (2399) include " + join(wanted, ", ");
  if (!platform_authentic) {
    verdict.add_fail("platform.sw_components", expected,
                     not_checked("the platform token signature was not verified (platform.signature)"));
    return;
  }
  std::vector<std::string> missing;
  for (const auto& entry : required) {
    bool present = false;
    for (const auto& component : platform.sw_components) present = present || sw_component_matches(component, entry);
    if (!present) missing.push_back(describe_required_sw_component(entry));
  }
  std::vector<std::string> seen;
  for (const auto& component : platform.sw_components)
    seen.push_back((component.type ? quoted(*component.type) : std::string("(no type)")) + " " +
                   hex_or_empty(component.measurement));
  std::string found = "sw components: " + (seen.empty() ? std::string("none") : join(seen, ", "));
  if (!missing.empty()) found += "; missing: " + join(missing, ", ");
  verdict.add("platform.sw_components", expected, found, missing.empty());
}

void check_legacy_policy(const TokenPolicy& policy, Verdict& verdict) {
  // b.8: a legacy token's only hardware link is RAK == device key; the policy must opt in.
  verdict.add("legacy.policy", "policy allows legacy CVM-only tokens",
              policy.allow_legacy ? "allowed by policy" : "legacy CVM-only tokens are not allowed by policy",
              policy.allow_legacy);
}

void check_legacy_rak_is_device_key(const DeviceEvidence& device, const std::optional<crypto::PublicKey>& rak,
                                    const std::optional<crypto::PublicKey>& device_key, Verdict& verdict) {
  const std::string name = "legacy.rak_is_device_key";
  if (!device_key) {
    const std::string why = device.device_certificate ? "the device certificate did not validate (device.chain)"
                                                      : "no device certificate was provided";
    verdict.add_fail(name, "RAK equal to the device certificate key", not_checked(why));
    return;
  }
  const std::string expected = "RAK equal to the device certificate key " + key_identity(*device_key);
  if (!rak) {
    verdict.add_fail(name, expected, not_checked("the RAK could not be decoded (cvm.rak)"));
    return;
  }
  // b.8: without this, a legacy token self-signed with any key would be accepted.
  const bool same = rak->equals(*device_key);
  verdict.add(name, expected, "RAK " + key_identity(*rak), same);
}

void check_cvm_challenge(const CvmClaims& cvm, const Bytes& expected_challenge, bool cvm_authentic, Verdict& verdict) {
  const std::string name = "cvm.challenge";
  const std::string expected = "challenge " + hex_or_empty(expected_challenge);
  if (expected_challenge.size() != challenge_size) {
    verdict.add_fail(name, "a 64-byte challenge in the policy",
                     "policy challenge has " + byte_count(expected_challenge.size()));
    return;
  }
  if (!cvm_authentic) {
    verdict.add_fail(name, expected, not_checked("the CVM token signature was not verified (cvm.signature)"));
    return;
  }
  // g.7: all 64 bytes, in constant time (the nonce is a secret until it has been used).
  const bool match = equal_constant_time(expected_challenge, cvm.challenge);
  verdict.add(
      name, expected,
      "challenge " + hex_or_empty(cvm.challenge) +
          (cvm.challenge.size() == challenge_size ? std::string() : " (" + byte_count(cvm.challenge.size()) + ")"),
      match);
}

}  // namespace

Result<crypto::PublicKey> rak_public_key(const CvmClaims& cvm) {
  const Bytes& rak = cvm.public_key;
  const std::string size = std::to_string(rak.size()) + "-byte";
  switch (rak.size()) {
    case rak_rsa_spki_size: {
      // Legacy firmware: DER SubjectPublicKeyInfo of RSA-4096 (b.6).
      auto key = crypto::PublicKey::from_spki_der(rak);
      if (!key) return fail_with_context("RAK (550-byte SPKI)", key.error());
      if (key->type() != crypto::KeyType::rsa)
        return fail(Errc::unsupported, "RAK: 550-byte SPKI holds " + key->description() + ", expected RSA");
      return key;
    }
    case rak_p521_point_size:
    case rak_p384_point_size: {
      // New firmware: raw uncompressed P-521 point; Arm CCA RMM 1.0 tokens use P-384 (b.6).
      if (rak.front() != 0x04)
        return fail(Errc::malformed, "RAK: " + size + " claim is not an uncompressed EC point (first byte " +
                                         hex_encode(ByteView(rak).first(1)) + ", expected 04)");
      const auto curve = rak.size() == rak_p521_point_size ? crypto::KeyType::ec_p521 : crypto::KeyType::ec_p384;
      auto key = crypto::PublicKey::from_ec_point(curve, rak);
      if (!key) return fail_with_context("RAK (" + size + " EC point)", key.error());
      return key;
    }
    default: break;
  }
  // A CBOR map head (major type 5) is the draft-ffm COSE_Key encoding (b.6); name it.
  if (!rak.empty() && (rak.front() & 0xe0) == 0xa0)
    return fail(Errc::unsupported, "RAK: " + size +
                                       " claim looks like a COSE_Key map (Arm draft-ffm profile), which is not "
                                       "supported; expected a 550-byte RSA SPKI or a 133-byte P-521 point");
  return fail(Errc::unsupported, "RAK: unsupported encoding of " + std::to_string(rak.size()) +
                                     " bytes; expected a 550-byte RSA SPKI or a 133-byte P-521 point");
}

Verdict verify_token(const Token& token, const DeviceEvidence& device, const TokenPolicy& policy) {
  Verdict verdict;
  // Order follows g: token shape, CVM claims and key, device chain, platform token and
  // binding (or the legacy rules), then freshness.
  check_token_kind(token, verdict);
  const bool full = token.is_full();
  if (!full) check_legacy_policy(policy, verdict);

  check_cvm_claim_sizes(token, verdict);
  const auto rak_hash = check_cvm_hash_algo(token.cvm, verdict);
  const auto rak = check_cvm_rak(token.cvm, verdict);
  const bool cvm_authentic = check_cvm_signature(token, rak, verdict);

  const auto validated = check_device_chain(device, policy, verdict);
  const PlatformPolicy& platform_policy = policy.platform;
  if (!platform_policy.device_issuer_sha256.empty())
    check_device_issuer(platform_policy.device_issuer_sha256, validated, verdict);
  const std::optional<crypto::PublicKey> device_key =
      validated ? std::optional<crypto::PublicKey>(validated->key) : std::nullopt;
  if (full) {
    const bool platform_authentic = check_platform_signature(token, device_key, verdict);
    if (token.platform) {
      check_rak_binding(token, platform_authentic, rak_hash, verdict);
      check_platform_claims(*token.platform, platform_authentic, verdict);
      check_platform_lifecycle(*token.platform, platform_authentic, platform_policy.allowed_lifecycle_states, verdict);
      if (!platform_policy.required_sw_components.empty())
        check_platform_sw_components(*token.platform, platform_authentic, platform_policy.required_sw_components,
                                     verdict);
    } else {
      // Only a hand-built Token can get here (parse_token always fills both).
      verdict.add_fail("platform.rak_binding", "platform challenge = hash of the RAK claim",
                       not_checked("the platform claims are missing"));
      verdict.add_fail("platform.claims", "platform claims present", "missing");
      verdict.add_fail("platform.lifecycle", "platform claims present", "missing");
    }
  } else {
    check_legacy_rak_is_device_key(device, rak, device_key, verdict);
    // A legacy token carries no platform claims. Its lifecycle is left unjudged (allowing
    // legacy tokens is an explicit opt-in to less evidence), but a firmware minimum the
    // operator asked for cannot be shown without them, and old firmware is what it guards against.
    if (!platform_policy.required_sw_components.empty())
      verdict.add_fail("platform.sw_components", "sw components (2399) from a platform token",
                       "a legacy token has no platform token, so its firmware cannot be shown");
  }

  if (policy.expected_challenge) check_cvm_challenge(token.cvm, *policy.expected_challenge, cvm_authentic, verdict);
  return verdict;
}

}  // namespace fde::token
