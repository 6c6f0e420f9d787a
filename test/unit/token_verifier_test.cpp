// Unit tests for token verification: verdict checks on real and synthetic tokens.
#include "common/token/token_verifier.hpp"

#include <catch2/catch.hpp>
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

struct TokenSpec {
  bool legacy = false;
  crypto::EcdsaEncoding encoding = crypto::EcdsaEncoding::raw;
  std::string rak_hash = "sha-256";
  Bytes challenge = challenge_bytes();
  bool wrong_platform_challenge = false;
  bool tamper_cvm_payload = false;
  const crypto::PrivateKey* platform_signer = nullptr;  // default: the device key
};

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
  const crypto::PrivateKey& rak = spec.legacy ? rsa_pki().device_key : p521_rak();
  const Bytes rak_claim = spec.legacy ? rak.public_key().spki_der() : rak.public_key().ec_point();
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
  const auto cvm_alg = spec.legacy ? crypto::SigAlg::ps256 : crypto::SigAlg::es512;
  const Bytes cvm = signed_sign1(rak, cvm_alg, cvm_payload, spec.encoding, spec.tamper_cvm_payload);
  if (spec.legacy) return Writer().tag(399).map(1).integer(key_cvm_token).bytes(cvm).take();

  const auto rak_hash = crypto::hash_alg_from_name(spec.rak_hash).value_or(crypto::HashAlg::sha256);
  Bytes platform_challenge = crypto::digest(rak_hash, rak_claim);
  if (spec.wrong_platform_challenge) platform_challenge[0] ^= 0xff;
  Bytes instance(33, 0x02);
  instance[0] = 0x01;
  Writer platform;
  platform.map(7);
  platform.integer(platform_claim::challenge).bytes(platform_challenge);
  platform.integer(platform_claim::implementation_id).bytes(Bytes(32, 0x10));
  platform.integer(platform_claim::instance_id).bytes(instance);
  platform.integer(platform_claim::config).bytes(Bytes{0x01});
  platform.integer(platform_claim::lifecycle).integer(0x3000);
  platform.integer(platform_claim::sw_components).array(1).map(3);
  platform.integer(sw_component_key::type).text("TMM");
  platform.integer(sw_component_key::measurement).bytes(Bytes(32, 0x20));
  platform.integer(sw_component_key::signer_id).bytes(Bytes(32, 0x21));
  platform.integer(platform_claim::hash_algo_id).text("sha-256");
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
                                                   "platform.rak_binding", "platform.claims", "cvm.challenge"});
  CHECK(check_of(verdict, "cvm.rak").found.rfind("EC P-521", 0) == 0);
  CHECK(verdict.summary() == "all 10 checks passed");

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
