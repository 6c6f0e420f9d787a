// Unit tests for token verification: verdict checks on real and synthetic tokens.
#include "common/token/token_verifier.hpp"

#include <catch2/catch.hpp>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "common/cbor/cbor.hpp"
#include "common/crypto/hash.hpp"
#include "common/util/file.hpp"

using namespace fde;
using namespace fde::token;
using fde::cbor::Writer;

namespace {

const std::string data_dir = FDE_EXTERNAL_TESTDATA;
constexpr std::time_t june_2025 = 1748736000;  // inside the secGear AIK's validity

Bytes load(const std::string& relative) {
  auto bytes = read_file(data_dir + "/" + relative, 65536);
  REQUIRE(bytes.has_value());
  return *bytes;
}

crypto::Certificate load_cert(const std::string& relative) {
  auto cert = crypto::Certificate::from_pem_or_der(load(relative));
  REQUIRE(cert.has_value());
  return *cert;
}

Token parse_file(const std::string& relative) {
  auto parsed = parse_token(load(relative));
  if (!parsed) FAIL(relative << ": " << parsed.error().describe());
  return *parsed;
}

const Check* find_check(const Verdict& verdict, std::string_view name) {
  for (const auto& check : verdict.checks())
    if (check.name == name) return &check;
  return nullptr;
}

const Check& check_of(const Verdict& verdict, std::string_view name) {
  const Check* check = find_check(verdict, name);
  if (check == nullptr) FAIL("no check named " << name << " in: " << verdict.summary());
  return *check;
}

bool passed(const Verdict& verdict, std::string_view name) { return check_of(verdict, name).passed; }

bool not_checked(const Verdict& verdict, std::string_view name) {
  const Check& check = check_of(verdict, name);
  return !check.passed && check.found.rfind("not checked: ", 0) == 0;
}

std::vector<std::string> names(const Verdict& verdict) {
  std::vector<std::string> out;
  for (const auto& check : verdict.checks()) out.push_back(check.name);
  return out;
}

std::string describe(const Verdict& verdict) {
  std::string out;
  for (const auto& c : verdict.checks())
    out += (c.passed ? "  pass " : "  FAIL ") + c.name + ": expected " + c.expected + ", found " + c.found + "\n";
  return out;
}

// ---- a small CA and keys for synthetic tokens ----

struct Pki {
  crypto::PrivateKey ca_key;
  crypto::Certificate ca;
  crypto::PrivateKey device_key;
  crypto::Certificate device;
};

crypto::Certificate issue_leaf(const Pki& pki, const crypto::PublicKey& key, long serial) {
  auto cert = crypto::issue_certificate({.common_name = "device " + std::to_string(serial), .serial = serial}, key,
                                        pki.ca_key, &pki.ca);
  REQUIRE(cert.has_value());
  return *cert;
}

Pki make_pki(crypto::KeyType device_type) {
  auto ca_key = crypto::PrivateKey::generate(crypto::KeyType::ec_p384);
  REQUIRE(ca_key.has_value());
  auto ca = crypto::issue_certificate({.common_name = "test equipment root", .is_ca = true}, ca_key->public_key(),
                                      *ca_key, nullptr);
  REQUIRE(ca.has_value());
  auto device_key = crypto::PrivateKey::generate(device_type);
  REQUIRE(device_key.has_value());
  auto device =
      crypto::issue_certificate({.common_name = "1023A7989138T", .serial = 7}, device_key->public_key(), *ca_key, &*ca);
  REQUIRE(device.has_value());
  return Pki{*ca_key, *ca, *device_key, *device};
}

const Pki& p521_pki() {
  static Pki pki = make_pki(crypto::KeyType::ec_p521);
  return pki;
}

const crypto::PrivateKey& p521_rak() {
  static crypto::PrivateKey key = *crypto::PrivateKey::generate(crypto::KeyType::ec_p521);
  return key;
}

// Legacy firmware uses the device's RSA-4096 key as RAK (b.8); generated once, it is slow.
const Pki& rsa_pki() {
  static Pki pki = make_pki(crypto::KeyType::rsa);
  return pki;
}

Bytes challenge_bytes() { return Bytes(challenge_size, 0x5c); }

// Which key the CVM token's RAK is: the profile's usual one (P-521 for full tokens, the RSA
// device key for legacy ones), or the other kind (both upstream verifiers accept either).
enum class RakKind { usual, p521, rsa };

struct TokenSpec {
  bool legacy = false;
  RakKind rak = RakKind::usual;
  crypto::EcdsaEncoding encoding = crypto::EcdsaEncoding::raw;
  std::string rak_hash = "sha-256";
  Bytes challenge = challenge_bytes();
  bool wrong_platform_challenge = false;
  bool tamper_cvm_payload = false;
  const crypto::PrivateKey* platform_signer = nullptr;  // default: the device key
  // Platform claims.
  std::int64_t lifecycle = 0x3000;
  std::string platform_hash = "sha-256";
  std::optional<std::string> sw_hash = std::nullopt;  // sw component key 6, absent by default
  std::uint8_t ueid_type = 0x01;
  Bytes tmm_measurement = Bytes(32, 0x20);
};

// The RAK private key a spec asks for. A legacy P-521 RAK is the P-521 device key (the
// legacy rule RAK == device key); a full token's RSA RAK reuses the RSA device key.
const crypto::PrivateKey& rak_key(const TokenSpec& spec) {
  const bool rsa = spec.rak == RakKind::rsa || (spec.rak == RakKind::usual && spec.legacy);
  if (rsa) return rsa_pki().device_key;
  return spec.legacy ? p521_pki().device_key : p521_rak();
}

Bytes signed_sign1(const crypto::PrivateKey& key, crypto::SigAlg alg, ByteView payload, crypto::EcdsaEncoding encoding,
                   bool tamper = false) {
  Writer header;
  header.map(1).integer(cose::header_alg).integer(static_cast<std::int64_t>(alg));
  auto signature = crypto::sign(key, alg, cose::sig_structure(header.data(), payload), encoding);
  REQUIRE(signature.has_value());
  Bytes carried = to_bytes(payload);
  if (tamper) carried[carried.size() / 2] ^= 0x01;
  return Writer().tag(18).array(4).bytes(header.data()).map(0).bytes(carried).bytes(*signature).take();
}

// A virtCCA-shaped token signed with our own keys: double-wrapped CVM payload, ES512 with a
// P-521 RAK and platform token (full), or PS256 with the RSA device key as RAK (legacy).
Bytes make_token(const TokenSpec& spec) {
  const crypto::PrivateKey& rak = rak_key(spec);
  const bool rsa_rak = rak.type() == crypto::KeyType::rsa;
  const Bytes rak_claim = rsa_rak ? rak.public_key().spki_der() : rak.public_key().ec_point();
  Writer claims;
  claims.map(7);
  claims.integer(cvm_claim::challenge).bytes(spec.challenge);
  claims.integer(cvm_claim::personalization_value).bytes(Bytes(64, 0));
  claims.integer(cvm_claim::public_key).bytes(rak_claim);
  claims.integer(cvm_claim::hash_algo_id).text("sha-256");
  claims.integer(cvm_claim::public_key_hash_algo_id).text(spec.rak_hash);
  claims.integer(cvm_claim::initial_measurement).bytes(Bytes(32, 0x73));
  claims.integer(cvm_claim::extensible_measurements).array(4);
  for (int i = 0; i < 4; ++i) claims.bytes(Bytes(32, static_cast<std::uint8_t>(i)));
  const Bytes cvm_payload = Writer().bytes(claims.data()).take();
  const auto cvm_alg = rsa_rak ? crypto::SigAlg::ps256 : crypto::SigAlg::es512;
  const Bytes cvm = signed_sign1(rak, cvm_alg, cvm_payload, spec.encoding, spec.tamper_cvm_payload);
  if (spec.legacy) return Writer().tag(399).map(1).integer(key_cvm_token).bytes(cvm).take();

  const auto rak_hash = crypto::hash_alg_from_name(spec.rak_hash).value_or(crypto::HashAlg::sha256);
  Bytes platform_challenge = crypto::digest(rak_hash, rak_claim);
  if (spec.wrong_platform_challenge) platform_challenge[0] ^= 0xff;
  Bytes instance(33, 0x02);
  instance[0] = spec.ueid_type;
  Writer platform;
  platform.map(7);
  platform.integer(platform_claim::challenge).bytes(platform_challenge);
  platform.integer(platform_claim::implementation_id).bytes(Bytes(32, 0x10));
  platform.integer(platform_claim::instance_id).bytes(instance);
  platform.integer(platform_claim::config).bytes(Bytes{0x01});
  platform.integer(platform_claim::lifecycle).integer(spec.lifecycle);
  platform.integer(platform_claim::sw_components).array(1).map(spec.sw_hash ? 4 : 3);
  platform.integer(sw_component_key::type).text("TMM");
  platform.integer(sw_component_key::measurement).bytes(spec.tmm_measurement);
  platform.integer(sw_component_key::signer_id).bytes(Bytes(32, 0x21));
  if (spec.sw_hash) platform.integer(sw_component_key::hash_algo_id).text(*spec.sw_hash);
  platform.integer(platform_claim::hash_algo_id).text(spec.platform_hash);
  const crypto::PrivateKey& signer = spec.platform_signer ? *spec.platform_signer : p521_pki().device_key;
  const Bytes platform_cose = signed_sign1(signer, crypto::SigAlg::es512, platform.data(), spec.encoding);
  return Writer()
      .tag(399)
      .map(2)
      .integer(key_platform_token)
      .bytes(platform_cose)
      .integer(key_cvm_token)
      .bytes(cvm)
      .take();
}

Token parse(const Bytes& encoded) {
  auto parsed = parse_token(encoded);
  if (!parsed) FAIL(parsed.error().describe());
  return *parsed;
}

TokenPolicy policy_for(const Pki& pki) {
  TokenPolicy policy;
  policy.trusted_roots = {pki.ca};
  policy.expected_challenge = challenge_bytes();
  return policy;
}

DeviceEvidence evidence_for(const Pki& pki) { return DeviceEvidence{pki.device}; }

// Arm tokens: the CPAK (a raw P-384 key) is given a certificate from a test CA, so the
// whole full-token path runs on real Arm signatures.
struct ArmSetup {
  Pki pki;
  DeviceEvidence device;
  TokenPolicy policy;
};

ArmSetup arm_setup(const crypto::PublicKey& platform_key) {
  ArmSetup setup{make_pki(crypto::KeyType::ec_p256), {}, {}};
  setup.device.device_certificate = issue_leaf(setup.pki, platform_key, 11);
  setup.policy.trusted_roots = {setup.pki.ca};
  return setup;
}

crypto::PublicKey arm_cpak() {
  auto key = crypto::PublicKey::from_pem(as_text(load("armcca-veraison-ccatoken/cca_platform.pub")));
  REQUIRE(key.has_value());
  return *key;
}

const std::set<std::string> stable_names = {"token.kind",
                                            "cvm.claim_sizes",
                                            "cvm.hash_algo",
                                            "cvm.rak",
                                            "cvm.signature",
                                            "device.chain",
                                            "platform.signature",
                                            "platform.rak_binding",
                                            "platform.claims",
                                            "platform.lifecycle",
                                            "platform.sw_components",
                                            "device.issuer",
                                            "legacy.policy",
                                            "legacy.rak_is_device_key",
                                            "cvm.challenge"};

}  // namespace

// ---- the real secGear token (legacy) ----

TEST_CASE("the real secGear legacy token fails only because its RAK is not the device key") {
  const Token token = parse_file("virtcca-secgear/virtcca.cbor");
  DeviceEvidence device{load_cert("virtcca-secgear/virtcca_aik_cert.der")};
  TokenPolicy policy;
  policy.trusted_roots = {load_cert("huawei-pki/Huawei_Equipment_CA_root.pem")};
  policy.intermediates = {load_cert("huawei-pki/Huawei_IT_Product_CA.pem")};
  policy.at_time = june_2025;
  policy.allow_legacy = true;

  const Verdict verdict = verify_token(token, device, policy);
  INFO(describe(verdict));
  CHECK(names(verdict) == std::vector<std::string>{"token.kind", "legacy.policy", "cvm.claim_sizes", "cvm.hash_algo",
                                                   "cvm.rak", "cvm.signature", "device.chain",
                                                   "legacy.rak_is_device_key"});
  CHECK(passed(verdict, "legacy.policy"));
  CHECK(passed(verdict, "cvm.claim_sizes"));
  CHECK(passed(verdict, "cvm.hash_algo"));
  CHECK(passed(verdict, "cvm.rak"));
  CHECK(check_of(verdict, "cvm.rak").found.rfind("RSA-4096", 0) == 0);
  CHECK(passed(verdict, "cvm.signature"));
  CHECK(passed(verdict, "device.chain"));
  CHECK(check_of(verdict, "device.chain").found.find("1023A7989138T") != std::string::npos);
  CHECK_FALSE(verdict.passed());
  REQUIRE(verdict.first_failure() != nullptr);
  CHECK(verdict.first_failure()->name == "legacy.rak_is_device_key");
  // The two keys are told apart by their SPKI fingerprints.
  const Check& binding = check_of(verdict, "legacy.rak_is_device_key");
  CHECK(binding.expected.find("RSA-4096 (SPKI sha-256 ") != std::string::npos);
  CHECK(binding.found.find("RSA-4096 (SPKI sha-256 ") != std::string::npos);
  CHECK(binding.found.find(binding.expected.substr(binding.expected.find("SPKI"))) == std::string::npos);

  SECTION("without allow_legacy the policy check fails first, and the rest is still reported") {
    policy.allow_legacy = false;
    const Verdict strict = verify_token(token, device, policy);
    REQUIRE(strict.first_failure() != nullptr);
    CHECK(strict.first_failure()->name == "legacy.policy");
    CHECK(passed(strict, "cvm.signature"));
    CHECK(passed(strict, "device.chain"));
  }
  SECTION("with the expected challenge, the challenge check passes") {
    policy.expected_challenge = token.cvm.challenge;
    CHECK(passed(verify_token(token, device, policy), "cvm.challenge"));
  }
  SECTION("without the intermediate the chain fails and the RAK comparison is not checked") {
    policy.intermediates.clear();
    const Verdict broken = verify_token(token, device, policy);
    CHECK_FALSE(passed(broken, "device.chain"));
    CHECK(not_checked(broken, "legacy.rak_is_device_key"));
  }
  SECTION("without a device certificate the chain fails by name") {
    const Verdict none = verify_token(token, DeviceEvidence{}, policy);
    CHECK(check_of(none, "device.chain").found == "no device certificate was provided");
    CHECK(not_checked(none, "legacy.rak_is_device_key"));
  }
  SECTION("before the certificate's validity the chain fails") {
    policy.at_time = std::time_t{1577836800};  // 2020-01-01
    CHECK_FALSE(passed(verify_token(token, device, policy), "device.chain"));
  }
}

TEST_CASE("a legacy token whose RAK is the device key passes when policy allows legacy tokens") {
  const Token token = parse(make_token({.legacy = true}));
  CHECK(token.cvm.public_key.size() == 550);
  TokenPolicy policy = policy_for(rsa_pki());
  policy.allow_legacy = true;
  const Verdict verdict = verify_token(token, evidence_for(rsa_pki()), policy);
  INFO(describe(verdict));
  CHECK(verdict.passed());
  CHECK(passed(verdict, "legacy.rak_is_device_key"));
  CHECK(passed(verdict, "cvm.challenge"));

  SECTION("but not when policy refuses legacy tokens") {
    policy.allow_legacy = false;
    const Verdict strict = verify_token(token, evidence_for(rsa_pki()), policy);
    CHECK_FALSE(strict.passed());
    CHECK(strict.first_failure()->name == "legacy.policy");
  }
  SECTION("and not with a different device certificate for the same CA") {
    const DeviceEvidence other{issue_leaf(rsa_pki(), p521_pki().device_key.public_key(), 99)};
    const Verdict mismatch = verify_token(token, other, policy);
    CHECK(passed(mismatch, "device.chain"));
    CHECK_FALSE(passed(mismatch, "legacy.rak_is_device_key"));
  }
}

// ---- synthetic full tokens (virtCCA shape, our own keys) ----

TEST_CASE("a full token with a P-521 RAK and a valid platform token passes every check") {
  const Token token = parse(make_token({}));
  CHECK(token.cvm_wrapping == CvmPayloadWrapping::double_wrapped);
  const Verdict verdict = verify_token(token, evidence_for(p521_pki()), policy_for(p521_pki()));
  INFO(describe(verdict));
  CHECK(verdict.passed());
  CHECK(names(verdict) == std::vector<std::string>{"token.kind", "cvm.claim_sizes", "cvm.hash_algo", "cvm.rak",
                                                   "cvm.signature", "device.chain", "platform.signature",
                                                   "platform.rak_binding", "platform.claims",
                                                   "platform.lifecycle", "cvm.challenge"});
  CHECK(check_of(verdict, "cvm.rak").found.rfind("EC P-521", 0) == 0);
  CHECK(verdict.summary() == "all 11 checks passed");

  SECTION("and with DER-encoded ECDSA signatures (some TMM firmware, b.4)") {
    const Verdict der = verify_token(parse(make_token({.encoding = crypto::EcdsaEncoding::der})),
                                     evidence_for(p521_pki()), policy_for(p521_pki()));
    INFO(describe(der));
    CHECK(der.passed());
  }
  SECTION("and with the binding hashed with sha-512 when claim 44240 says so") {
    const Token sha512 = parse(make_token({.rak_hash = "sha-512"}));
    const Verdict v = verify_token(sha512, evidence_for(p521_pki()), policy_for(p521_pki()));
    INFO(describe(v));
    CHECK(v.passed());
    CHECK(check_of(v, "platform.rak_binding").expected.find("sha-512(RAK claim, 133 B)") != std::string::npos);
  }
  SECTION("the challenge check is skipped only when policy sets no challenge") {
    TokenPolicy no_challenge = policy_for(p521_pki());
    no_challenge.expected_challenge.reset();
    const Verdict v = verify_token(token, evidence_for(p521_pki()), no_challenge);
    CHECK(find_check(v, "cvm.challenge") == nullptr);
    CHECK(v.passed());
  }
}

TEST_CASE("a wrong or malformed expected challenge fails the challenge check") {
  const Token token = parse(make_token({}));
  TokenPolicy policy = policy_for(p521_pki());
  SECTION("another 64-byte challenge") {
    policy.expected_challenge = Bytes(64, 0x5d);
    const Verdict v = verify_token(token, evidence_for(p521_pki()), policy);
    CHECK_FALSE(v.passed());
    CHECK(v.first_failure()->name == "cvm.challenge");
    CHECK(check_of(v, "cvm.challenge").found == "challenge " + hex_encode(challenge_bytes()));
  }
  SECTION("a challenge that matches the first 32 bytes only") {
    policy.expected_challenge = Bytes(32, 0x5c);
    CHECK_FALSE(passed(verify_token(token, evidence_for(p521_pki()), policy), "cvm.challenge"));
  }
  SECTION("a token carrying a shorter challenge") {
    const Token short_challenge = parse(make_token({.challenge = Bytes(32, 0x5c)}));
    const Verdict v = verify_token(short_challenge, evidence_for(p521_pki()), policy);
    CHECK_FALSE(passed(v, "cvm.challenge"));
    CHECK_FALSE(passed(v, "cvm.claim_sizes"));
  }
}

TEST_CASE("a device certificate from another CA fails the chain, and nothing that depends on it passes") {
  const Token token = parse(make_token({}));
  const Pki& other = rsa_pki();  // a different CA
  const DeviceEvidence foreign{issue_leaf(other, p521_pki().device_key.public_key(), 42)};
  const Verdict v = verify_token(token, foreign, policy_for(p521_pki()));
  INFO(describe(v));
  CHECK_FALSE(passed(v, "device.chain"));
  CHECK(not_checked(v, "platform.signature"));
  CHECK(not_checked(v, "platform.rak_binding"));
  CHECK(not_checked(v, "platform.claims"));
  CHECK(passed(v, "cvm.signature"));  // independent of the device, still reported
  CHECK_FALSE(v.passed());
}

TEST_CASE("a platform token signed by a key other than the device key fails, with its dependents") {
  const crypto::PrivateKey& impostor = p521_rak();
  const Token token = parse(make_token({.platform_signer = &impostor}));
  const Verdict v = verify_token(token, evidence_for(p521_pki()), policy_for(p521_pki()));
  CHECK(passed(v, "device.chain"));
  CHECK_FALSE(passed(v, "platform.signature"));
  CHECK(not_checked(v, "platform.rak_binding"));
  CHECK(not_checked(v, "platform.claims"));
}

TEST_CASE("a platform challenge that is not the RAK hash fails the binding") {
  const Token token = parse(make_token({.wrong_platform_challenge = true}));
  const Verdict v = verify_token(token, evidence_for(p521_pki()), policy_for(p521_pki()));
  INFO(describe(v));
  CHECK(passed(v, "platform.signature"));
  const Check& binding = check_of(v, "platform.rak_binding");
  CHECK_FALSE(binding.passed);
  CHECK(binding.expected.find(hex_encode(crypto::sha256(token.cvm.public_key))) != std::string::npos);
  CHECK(binding.found.find(hex_encode(token.platform->challenge)) != std::string::npos);
  CHECK(v.first_failure()->name == "platform.rak_binding");
}

TEST_CASE("a tampered CVM payload fails the signature and leaves the challenge unchecked") {
  const Token token = parse(make_token({.tamper_cvm_payload = true}));
  const Verdict v = verify_token(token, evidence_for(p521_pki()), policy_for(p521_pki()));
  INFO(describe(v));
  CHECK_FALSE(passed(v, "cvm.signature"));
  CHECK(not_checked(v, "cvm.challenge"));
}

TEST_CASE("an unknown RAK hash algo fails the algo check and leaves the binding unchecked") {
  const Token token = parse(make_token({.rak_hash = "sha-1"}));
  const Verdict v = verify_token(token, evidence_for(p521_pki()), policy_for(p521_pki()));
  INFO(describe(v));
  CHECK_FALSE(passed(v, "cvm.hash_algo"));
  CHECK(check_of(v, "cvm.hash_algo").found.find("\"sha-1\" (not allowed)") != std::string::npos);
  CHECK(not_checked(v, "platform.rak_binding"));
}

TEST_CASE("claim sizes are judged against the virtCCA profile with expected and found sizes") {
  Token token = parse(make_token({}));
  token.cvm.initial_measurement = Bytes(64, 0);  // sha-512 size with a sha-256 algo
  token.cvm.extensible_measurements[3] = Bytes(48, 0);
  token.cvm.personalization_value = Bytes(32, 0);
  const Verdict v = verify_token(token, evidence_for(p521_pki()), policy_for(p521_pki()));
  const Check& sizes = check_of(v, "cvm.claim_sizes");
  CHECK_FALSE(sizes.passed);
  CHECK(sizes.expected.find("RIM and REMs 32 B (sha-256)") != std::string::npos);
  CHECK(sizes.found.find("RIM 64 B, REMs 32/32/32/48 B") != std::string::npos);
  CHECK(sizes.found.find("wrong: RPV, RIM, REM[3]") != std::string::npos);

  SECTION("an unknown CVM hash algo makes the measurement sizes unjudgeable") {
    token.cvm.hash_algo_id = "sha3-256";
    const Verdict unknown = verify_token(token, evidence_for(p521_pki()), policy_for(p521_pki()));
    CHECK_FALSE(passed(unknown, "cvm.claim_sizes"));
    CHECK_FALSE(passed(unknown, "cvm.hash_algo"));
  }
  SECTION("sha-384 is not a virtCCA CVM hash algo") {
    token.cvm.hash_algo_id = "sha-384";
    CHECK_FALSE(passed(verify_token(token, evidence_for(p521_pki()), policy_for(p521_pki())), "cvm.hash_algo"));
  }
}

TEST_CASE("platform claims with a wrong-sized instance id or measurement fail the claims check") {
  Token token = parse(make_token({}));
  token.platform->instance_id = Bytes(16, 0x01);
  token.platform->sw_components[0].measurement = Bytes(48, 0);
  // The platform envelope is untouched, so its signature still verifies: this exercises the
  // claim checks alone.
  const Verdict v = verify_token(token, evidence_for(p521_pki()), policy_for(p521_pki()));
  const Check& claims = check_of(v, "platform.claims");
  INFO(claims.found);
  CHECK_FALSE(claims.passed);
  CHECK(claims.found.find("instance id is 16 B") != std::string::npos);
  CHECK(claims.found.find("sw component 0 (\"TMM\"): measurement is 48 B, sha-256 needs 32 B") != std::string::npos);
}

// ---- real Arm CCA tokens ----

TEST_CASE("the Arm reference token verifies end to end except for the virtCCA RAK size") {
  const Token token = parse_file("armcca-rust-ccatoken/cca-token-01.cbor");
  ArmSetup arm = arm_setup(arm_cpak());
  const Verdict v = verify_token(token, arm.device, arm.policy);
  INFO(describe(v));
  CHECK(passed(v, "device.chain"));
  CHECK(passed(v, "platform.signature"));
  CHECK(passed(v, "platform.rak_binding"));
  CHECK(passed(v, "platform.claims"));
  CHECK(passed(v, "cvm.rak"));
  CHECK(check_of(v, "cvm.rak").found.rfind("EC P-384", 0) == 0);
  CHECK(passed(v, "cvm.signature"));
  // A 97-byte P-384 RAK is Arm CCA, not a virtCCA profile: the verdict must not pass.
  CHECK_FALSE(passed(v, "cvm.claim_sizes"));
  CHECK(check_of(v, "cvm.claim_sizes").found.find("RAK 97 B") != std::string::npos);
  CHECK_FALSE(v.passed());
  CHECK(v.first_failure()->name == "cvm.claim_sizes");
}

TEST_CASE("the Arm tokens bind the RAK with sha-256 and sha-512, and bug-33 does not bind") {
  SECTION("cca-token-02: sha-512 binding, platform signed ES256 with a P-256 key") {
    const Token token = parse_file("armcca-rust-ccatoken/cca-token-02.cbor");
    // ta-02-ok.json's P-256 key as an uncompressed point.
    Bytes point = *hex_decode(
        "0430a0424cd21c2944838a2d75c92b37e76ea20d9f00893a3b4eee8a3c0aafec3e"
        "e04b65e92456d9888b52b379bdfbd51ee869ef1f0fc65b6659695b6cce081723");
    auto key = crypto::PublicKey::from_ec_point(crypto::KeyType::ec_p256, point);
    REQUIRE(key.has_value());
    ArmSetup arm = arm_setup(*key);
    const Verdict v = verify_token(token, arm.device, arm.policy);
    INFO(describe(v));
    CHECK(passed(v, "platform.signature"));
    CHECK(passed(v, "platform.rak_binding"));
    CHECK(check_of(v, "platform.rak_binding").expected.rfind("platform challenge = sha-512(RAK claim, 97 B)", 0) == 0);
    CHECK(passed(v, "cvm.signature"));
  }
  SECTION("trustee's example token") {
    const Token token = parse_file("armcca-trustee/cca-example-token.cbor");
    ArmSetup arm = arm_setup(arm_cpak());
    const Verdict v = verify_token(token, arm.device, arm.policy);
    INFO(describe(v));
    CHECK(passed(v, "platform.signature"));
    CHECK(passed(v, "platform.rak_binding"));
    CHECK(passed(v, "platform.claims"));
    CHECK(passed(v, "cvm.signature"));
    // sha-512 CVM measurements with a 64-byte RIM are sized correctly.
    CHECK(check_of(v, "cvm.claim_sizes").found.find("RIM 64 B") != std::string::npos);
  }
  SECTION("bug-33-repro: both signatures verify but the binding fails") {
    const Token token = parse_file("armcca-rust-ccatoken/bug-33-repro.cbor");
    ArmSetup arm = arm_setup(arm_cpak());
    const Verdict v = verify_token(token, arm.device, arm.policy);
    INFO(describe(v));
    CHECK(passed(v, "platform.signature"));
    CHECK(passed(v, "cvm.signature"));
    CHECK_FALSE(passed(v, "platform.rak_binding"));
  }
}

TEST_CASE("the draft-ffm token's COSE_Key RAK is refused by name, so its signature is not checked") {
  const Token token = parse_file("armcca-rust-ccatoken/cca-token-draft-ffm-00.cbor");
  auto key = rak_public_key(token.cvm);
  REQUIRE_FALSE(key.has_value());
  CHECK(key.error().code == Errc::unsupported);
  CHECK(key.error().message.find("107-byte") != std::string::npos);
  CHECK(key.error().message.find("COSE_Key") != std::string::npos);
  ArmSetup arm = arm_setup(arm_cpak());
  const Verdict v = verify_token(token, arm.device, arm.policy);
  CHECK_FALSE(passed(v, "cvm.rak"));
  CHECK(not_checked(v, "cvm.signature"));
  CHECK(passed(v, "platform.signature"));
}

// ---- rak_public_key ----

TEST_CASE("the RAK decodes from a 550-byte RSA SPKI or a 133-byte P-521 point, and nothing else") {
  CvmClaims cvm;
  SECTION("the real legacy RSA-4096 SPKI") {
    cvm = parse_file("virtcca-secgear/virtcca.cbor").cvm;
    auto key = rak_public_key(cvm);
    REQUIRE(key.has_value());
    CHECK(key->description() == "RSA-4096");
  }
  SECTION("a P-521 point") {
    cvm.public_key = p521_rak().public_key().ec_point();
    REQUIRE(cvm.public_key.size() == 133);
    auto key = rak_public_key(cvm);
    REQUIRE(key.has_value());
    CHECK(key->type() == crypto::KeyType::ec_p521);
    CHECK(key->equals(p521_rak().public_key()));
  }
  SECTION("a 133-byte compressed-looking point") {
    cvm.public_key = p521_rak().public_key().ec_point();
    cvm.public_key[0] = 0x02;
    auto key = rak_public_key(cvm);
    REQUIRE_FALSE(key.has_value());
    CHECK(key.error().message.find("first byte 02") != std::string::npos);
  }
  SECTION("a 133-byte point that is not on the curve") {
    cvm.public_key = Bytes(133, 0x01);
    cvm.public_key[0] = 0x04;
    CHECK_FALSE(rak_public_key(cvm).has_value());
  }
  SECTION("a 550-byte claim that is not DER") {
    cvm.public_key = Bytes(550, 0x30);
    CHECK_FALSE(rak_public_key(cvm).has_value());
  }
  SECTION("any other size names the size") {
    for (std::size_t size : {std::size_t{0}, std::size_t{65}, std::size_t{100}, std::size_t{551}}) {
      cvm.public_key = Bytes(size, 0x04);
      auto key = rak_public_key(cvm);
      REQUIRE_FALSE(key.has_value());
      CHECK(key.error().message.find(std::to_string(size) + " bytes") != std::string::npos);
    }
  }
}

TEST_CASE("every check name in a verdict comes from the stable list") {
  std::vector<Verdict> verdicts;
  verdicts.push_back(verify_token(parse(make_token({})), evidence_for(p521_pki()), policy_for(p521_pki())));
  verdicts.push_back(verify_token(parse_file("virtcca-secgear/virtcca.cbor"), DeviceEvidence{}, TokenPolicy{}));
  for (const Verdict& v : verdicts) {
    CHECK_FALSE(v.checks().empty());
    for (const auto& check : v.checks()) {
      CHECK(stable_names.count(check.name) == 1);
      CHECK_FALSE(check.expected.empty());
      CHECK_FALSE(check.found.empty());
    }
  }
}

// ---- RAK kinds: either key in either token kind (virtCCA_sdk, secGear) ----

TEST_CASE("a full token with an RSA-4096 RAK passes, as both upstream verifiers accept") {
  const Token token = parse(make_token({.rak = RakKind::rsa}));
  REQUIRE(token.cvm.public_key.size() == 550);
  const Verdict v = verify_token(token, evidence_for(p521_pki()), policy_for(p521_pki()));
  INFO(describe(v));
  CHECK(passed(v, "cvm.claim_sizes"));
  CHECK(check_of(v, "cvm.rak").found.rfind("RSA-4096", 0) == 0);
  CHECK(passed(v, "cvm.signature"));
  CHECK(check_of(v, "platform.rak_binding").expected.find("sha-256(RAK claim, 550 B)") != std::string::npos);
  CHECK(v.passed());
}

TEST_CASE("a legacy token with a P-521 RAK passes when the RAK is the device key, and only then") {
  const Token token = parse(make_token({.legacy = true, .rak = RakKind::p521}));
  REQUIRE(token.cvm.public_key.size() == 133);
  TokenPolicy policy = policy_for(p521_pki());
  policy.allow_legacy = true;
  const Verdict v = verify_token(token, evidence_for(p521_pki()), policy);
  INFO(describe(v));
  CHECK(passed(v, "cvm.claim_sizes"));
  CHECK(passed(v, "legacy.rak_is_device_key"));
  CHECK(v.passed());

  SECTION("a device certificate for another key fails the legacy rule") {
    const DeviceEvidence other{issue_leaf(p521_pki(), p521_rak().public_key(), 77)};
    const Verdict mismatch = verify_token(token, other, policy);
    CHECK(passed(mismatch, "cvm.claim_sizes"));
    CHECK_FALSE(passed(mismatch, "legacy.rak_is_device_key"));
  }
}

TEST_CASE("a RAK that does not suit the CVM token's COSE alg fails the signature check") {
  // An RSA SPKI where the envelope says ES512: the size is allowed, the key decodes, but
  // the key cannot verify that alg.
  Token token = parse(make_token({}));
  token.cvm.public_key = rsa_pki().device_key.public_key().spki_der();
  const Verdict v = verify_token(token, evidence_for(p521_pki()), policy_for(p521_pki()));
  INFO(describe(v));
  CHECK(passed(v, "cvm.claim_sizes"));
  CHECK(passed(v, "cvm.rak"));
  CHECK_FALSE(passed(v, "cvm.signature"));
  CHECK_FALSE(v.passed());
}

// ---- platform algo spellings and the UEID type ----

TEST_CASE("platform and sw component hash algo ids may be spelled sha256, SHA-256 and the like") {
  for (const std::string platform_hash : {"sha-256", "sha256", "SHA256", "SHA-256"}) {
    for (const std::string sw_hash : {"sha256", "SHA-256", "sha-256", "SHA256"}) {
      const Token token = parse(make_token({.platform_hash = platform_hash, .sw_hash = sw_hash}));
      const Verdict v = verify_token(token, evidence_for(p521_pki()), policy_for(p521_pki()));
      INFO(platform_hash << " / " << sw_hash << "\n" << describe(v));
      CHECK(passed(v, "platform.claims"));
      CHECK(v.passed());
    }
  }
  SECTION("the measurement must still fit the algo however it is spelled") {
    const Token token = parse(make_token({.sw_hash = "SHA384"}));
    const Verdict claims_verdict = verify_token(token, evidence_for(p521_pki()), policy_for(p521_pki()));
    const Check& claims = check_of(claims_verdict, "platform.claims");
    CHECK_FALSE(claims.passed);
    CHECK(claims.found.find("measurement is 32 B, sha-384 needs 48 B") != std::string::npos);
  }
  SECTION("an algo that is none of them still fails") {
    const Token token = parse(make_token({.sw_hash = "sha3-256"}));
    const Verdict claims_verdict = verify_token(token, evidence_for(p521_pki()), policy_for(p521_pki()));
    const Check& claims = check_of(claims_verdict, "platform.claims");
    CHECK_FALSE(claims.passed);
    CHECK(claims.found.find("unknown hash algo id \"sha3-256\"") != std::string::npos);
  }
}

TEST_CASE("the CVM token's own hash algo ids keep the IANA spelling upstream requires") {
  Token token = parse(make_token({}));
  SECTION("claim 44236") { token.cvm.hash_algo_id = "sha256"; }
  SECTION("claim 44240") { token.cvm.public_key_hash_algo_id = "SHA-256"; }
  const Verdict v = verify_token(token, evidence_for(p521_pki()), policy_for(p521_pki()));
  CHECK_FALSE(passed(v, "cvm.hash_algo"));
}

TEST_CASE("an instance id whose UEID type is not RAND is reported in the claims check, not failed") {
  const Token token = parse(make_token({.ueid_type = 0x02}));
  const Verdict v = verify_token(token, evidence_for(p521_pki()), policy_for(p521_pki()));
  INFO(describe(v));
  const Check& claims = check_of(v, "platform.claims");
  CHECK(claims.passed);
  CHECK(claims.found.find("note: instance id UEID type 02 is not RAND (01)") != std::string::npos);
  CHECK(v.passed());
}

// ---- the platform policy ----

TEST_CASE("the platform lifecycle must be an allowed state, by default secured only") {
  TokenPolicy policy = policy_for(p521_pki());
  SECTION("secured, with an implementation-defined low byte") {
    const Verdict v = verify_token(parse(make_token({.lifecycle = 0x30a5})), evidence_for(p521_pki()), policy);
    CHECK(passed(v, "platform.lifecycle"));
    CHECK(check_of(v, "platform.lifecycle").found == "0x30a5 (secured)");
  }
  SECTION("a debug state is denied by default") {
    for (std::int64_t debug : {0x4000, 0x5001}) {
      const Verdict v = verify_token(parse(make_token({.lifecycle = debug})), evidence_for(p521_pki()), policy);
      INFO(describe(v));
      CHECK_FALSE(v.passed());
      CHECK(v.first_failure()->name == "platform.lifecycle");
      CHECK(check_of(v, "platform.lifecycle").expected.find("in state secured") != std::string::npos);
    }
  }
  SECTION("a state the policy names is allowed") {
    policy.platform.allowed_lifecycle_states = {LifecycleState::secured, LifecycleState::recoverable_rot_debug};
    const Verdict v = verify_token(parse(make_token({.lifecycle = 0x5000})), evidence_for(p521_pki()), policy);
    CHECK(passed(v, "platform.lifecycle"));
    CHECK(check_of(v, "platform.lifecycle").found == "0x5000 (recoverable_rot_debug)");
  }
  SECTION("values outside every defined range are denied") {
    const Verdict v = verify_token(parse(make_token({.lifecycle = 0x7000})), evidence_for(p521_pki()), policy);
    CHECK_FALSE(passed(v, "platform.lifecycle"));
    CHECK(check_of(v, "platform.lifecycle").found.find("not a defined lifecycle state") != std::string::npos);
  }
  SECTION("an unauthenticated platform token's lifecycle is not checked") {
    const Token token = parse(make_token({.platform_signer = &p521_rak()}));
    CHECK(not_checked(verify_token(token, evidence_for(p521_pki()), policy), "platform.lifecycle"));
  }
}

TEST_CASE("required sw component measurements must all be in the platform token") {
  TokenPolicy policy = policy_for(p521_pki());
  const Token token = parse(make_token({}));  // one "TMM" component measuring 20 20 ... 20
  SECTION("no requirement, no check") {
    CHECK(find_check(verify_token(token, evidence_for(p521_pki()), policy), "platform.sw_components") == nullptr);
  }
  SECTION("the measurement under its type passes") {
    policy.platform.required_sw_components = {{std::string("TMM"), Bytes(32, 0x20)}};
    const Verdict v = verify_token(token, evidence_for(p521_pki()), policy);
    INFO(describe(v));
    CHECK(passed(v, "platform.sw_components"));
    CHECK(v.passed());
  }
  SECTION("the measurement of any type passes") {
    policy.platform.required_sw_components = {{std::nullopt, Bytes(32, 0x20)}};
    CHECK(passed(verify_token(token, evidence_for(p521_pki()), policy), "platform.sw_components"));
  }
  SECTION("an older firmware measurement is denied, naming what is missing") {
    policy.platform.required_sw_components = {{std::string("TMM"), Bytes(32, 0x21)}};
    const Verdict v = verify_token(token, evidence_for(p521_pki()), policy);
    CHECK_FALSE(v.passed());
    CHECK(v.first_failure()->name == "platform.sw_components");
    CHECK(check_of(v, "platform.sw_components").found.find("missing: \"TMM\" " + hex_encode(Bytes(32, 0x21))) !=
          std::string::npos);
  }
  SECTION("the right measurement under another type is denied") {
    policy.platform.required_sw_components = {{std::string("BL31"), Bytes(32, 0x20)}};
    CHECK_FALSE(passed(verify_token(token, evidence_for(p521_pki()), policy), "platform.sw_components"));
  }
  SECTION("a legacy token cannot show its firmware") {
    policy = policy_for(rsa_pki());
    policy.allow_legacy = true;
    policy.platform.required_sw_components = {{std::string("TMM"), Bytes(32, 0x20)}};
    const Verdict v = verify_token(parse(make_token({.legacy = true})), evidence_for(rsa_pki()), policy);
    CHECK_FALSE(passed(v, "platform.sw_components"));
    CHECK_FALSE(v.passed());
  }
}

TEST_CASE("a pinned device certificate issuer must be the CA that issued the device certificate") {
  TokenPolicy policy = policy_for(p521_pki());
  const Token token = parse(make_token({}));
  SECTION("no pin, no check") {
    CHECK(find_check(verify_token(token, evidence_for(p521_pki()), policy), "device.issuer") == nullptr);
  }
  SECTION("the issuing CA's fingerprint passes") {
    policy.platform.device_issuer_sha256 = {rsa_pki().ca.sha256_fingerprint(), p521_pki().ca.sha256_fingerprint()};
    const Verdict v = verify_token(token, evidence_for(p521_pki()), policy);
    INFO(describe(v));
    CHECK(passed(v, "device.issuer"));
    CHECK(v.passed());
  }
  SECTION("another CA's fingerprint is denied") {
    policy.platform.device_issuer_sha256 = {rsa_pki().ca.sha256_fingerprint()};
    const Verdict v = verify_token(token, evidence_for(p521_pki()), policy);
    CHECK_FALSE(v.passed());
    CHECK(v.first_failure()->name == "device.issuer");
    CHECK(check_of(v, "device.issuer").found.find(hex_encode(p521_pki().ca.sha256_fingerprint())) !=
          std::string::npos);
  }
  SECTION("without a validated chain the issuer is not checked") {
    policy.platform.device_issuer_sha256 = {p521_pki().ca.sha256_fingerprint()};
    const DeviceEvidence foreign{issue_leaf(rsa_pki(), p521_pki().device_key.public_key(), 43)};
    CHECK(not_checked(verify_token(token, foreign, policy), "device.issuer"));
  }
}

TEST_CASE("the real secGear AIK is issued by Huawei IT Product CA, which can be pinned") {
  const Token token = parse_file("virtcca-secgear/virtcca.cbor");
  DeviceEvidence device{load_cert("virtcca-secgear/virtcca_aik_cert.der")};
  TokenPolicy policy;
  const crypto::Certificate root = load_cert("huawei-pki/Huawei_Equipment_CA_root.pem");
  const crypto::Certificate product_ca = load_cert("huawei-pki/Huawei_IT_Product_CA.pem");
  policy.trusted_roots = {root};
  policy.intermediates = {product_ca};
  policy.at_time = june_2025;
  policy.allow_legacy = true;
  policy.platform.device_issuer_sha256 = {product_ca.sha256_fingerprint()};
  CHECK(passed(verify_token(token, device, policy), "device.issuer"));
  // Pinning the root instead does not pin the issuer: the root issues for many product lines.
  policy.platform.device_issuer_sha256 = {root.sha256_fingerprint()};
  CHECK_FALSE(passed(verify_token(token, device, policy), "device.issuer"));
}

TEST_CASE("platform policy values parse from the operator's spelling and refuse anything else") {
  CHECK(lifecycle_state_of(0x3000) == LifecycleState::secured);
  CHECK(lifecycle_state_of(0x30ff) == LifecycleState::secured);
  CHECK(lifecycle_state_of(0x0000) == LifecycleState::unknown);
  CHECK(lifecycle_state_of(0x6001) == LifecycleState::decommissioned);
  CHECK_FALSE(lifecycle_state_of(0x3100).has_value());
  CHECK_FALSE(lifecycle_state_of(-1).has_value());
  CHECK_FALSE(lifecycle_state_of(0x13000).has_value());
  CHECK(lifecycle_state_from_name("non_rot_debug") == LifecycleState::non_rot_debug);
  auto bad = lifecycle_state_from_name("debug");
  REQUIRE_FALSE(bad.has_value());
  CHECK(bad.error().message.find("known: unknown, assembly_and_test") != std::string::npos);

  const std::string digest(64, 'a');
  auto typed = parse_required_sw_component("TMM:" + digest);
  REQUIRE(typed.has_value());
  CHECK(typed->type == "TMM");
  CHECK(typed->measurement == Bytes(32, 0xaa));
  auto untyped = parse_required_sw_component(digest);
  REQUIRE(untyped.has_value());
  CHECK_FALSE(untyped->type.has_value());
  CHECK_FALSE(parse_required_sw_component("TMM:abcd").has_value());  // not a digest size
  CHECK_FALSE(parse_required_sw_component(":" + digest).has_value());
  CHECK_FALSE(parse_required_sw_component("TMM:" + std::string(64, 'g')).has_value());

  CHECK(parse_sha256_fingerprint(digest) == Bytes(32, 0xaa));
  std::string colons;
  for (int i = 0; i < 32; ++i) colons += (i ? ":" : "") + std::string("AA");
  CHECK(parse_sha256_fingerprint(colons) == Bytes(32, 0xaa));
  CHECK_FALSE(parse_sha256_fingerprint(std::string(62, 'a')).has_value());
}
