// Tests of the simulated virtCCA platform: devices, byte-exact tokens checked against the real
// secGear token, round trips through the real token parser/verifier and event log parser.
#include <sys/stat.h>

#include <catch2/catch.hpp>

#include <filesystem>
#include <string>

#include "common/cose/cose_sign1.hpp"
#include "common/crypto/hash.hpp"
#include "common/crypto/random.hpp"
#include "common/eventlog/ccel.hpp"
#include "common/eventlog/event_log.hpp"
#include "common/eventlog/firmware_events.hpp"
#include "common/sim/event_log_builder.hpp"
#include "common/sim/sim_device.hpp"
#include "common/sim/token_issuer.hpp"
#include "common/token/token.hpp"
#include "common/token/token_verifier.hpp"
#include "common/util/file.hpp"

using namespace fde;

namespace {

template <class T>
T expect_ok(Result<T> result) {
  if (!result) FAIL(result.error().describe());
  return std::move(*result);
}

// Devices are generated once per test binary: RSA-4096 keys take seconds.
const sim::SimDevice& p521_device() {
  static const sim::SimDevice device = expect_ok(sim::SimDevice::create({sim::DeviceType::p521, "SIMP521A", false}));
  return device;
}
const sim::SimDevice& rsa_device() {
  static const sim::SimDevice device = expect_ok(sim::SimDevice::create({sim::DeviceType::rsa, "SIMRSA0001", false}));
  return device;
}
// A second P-521 device under the first one's CA: trusted by the same verifier, but a
// different board.
struct SharedCaDevices {
  sim::SimCa ca;
  sim::SimDevice a;
  sim::SimDevice b;
};
const SharedCaDevices& shared_ca_devices() {
  static const SharedCaDevices devices = [] {
    auto ca = expect_ok(sim::SimCa::create(crypto::KeyType::ec_p521));
    auto a = expect_ok(sim::SimDevice::create({sim::DeviceType::p521, "SIMBOARDA", false}, ca));
    auto b = expect_ok(sim::SimDevice::create({sim::DeviceType::p521, "SIMBOARDB", false}, ca));
    return SharedCaDevices{std::move(ca), std::move(a), std::move(b)};
  }();
  return devices;
}

Bytes filled(std::size_t size, std::uint8_t value) { return Bytes(size, value); }

sim::TokenRequest basic_request(sim::TokenFormat format) {
  sim::TokenRequest request;
  request.challenge = crypto::random_bytes(64);
  request.rim = crypto::sha256(as_bytes("simulated RIM"));
  for (std::size_t i = 0; i < 4; ++i) request.rems[i] = filled(32, static_cast<std::uint8_t>(0x10 + i));
  request.format = format;
  return request;
}

token::TokenPolicy policy_for(const sim::SimDevice& device, const Bytes& challenge) {
  token::TokenPolicy policy;
  policy.trusted_roots = {device.ca_certificate()};
  policy.expected_challenge = challenge;
  return policy;
}

token::DeviceEvidence evidence_of(const sim::SimDevice& device) {
  // The certificate as the TSI ioctl hands it over (DER or PEM), as the agent would send it.
  return {expect_ok(crypto::Certificate::from_pem_or_der(device.device_certificate_blob()))};
}

Verdict verify(const Bytes& token_bytes, const sim::SimDevice& device, const token::TokenPolicy& policy) {
  auto parsed = expect_ok(token::parse_token(token_bytes));
  return token::verify_token(parsed, evidence_of(device), policy);
}

// True if the named check ran and failed.
bool failed_check(const Verdict& verdict, std::string_view name) {
  for (const auto& check : verdict.checks())
    if (check.name == name && !check.passed) return true;
  return false;
}

std::string describe(const Verdict& verdict) {
  std::string out;
  for (const auto& check : verdict.checks())
    out += (check.passed ? "  pass " : "  FAIL ") + check.name + ": expected " + check.expected + ", found " +
           check.found + "\n";
  return out;
}

Bytes real_secgear_token() {
  return expect_ok(read_file(std::string(FDE_EXTERNAL_TESTDATA) + "/virtcca-secgear/virtcca.cbor", 8192));
}

// Offsets into the real token, from decoding it (test/data/external/README.md): the payload bstr's
// content (895 bytes) starts at 21 and the 512-byte signature at 919.
constexpr std::size_t real_payload_offset = 21;
constexpr std::size_t real_payload_size = 895;
constexpr std::size_t real_signature_size = 512;

// The claim values of the real token, taken from their positions in it.
token::CvmClaims real_secgear_claims(const Bytes& real) {
  token::CvmClaims claims;
  claims.challenge = Bytes(real.begin() + 26 + 2, real.begin() + 26 + 2 + 64);
  claims.personalization_value = Bytes(real.begin() + 95 + 2, real.begin() + 95 + 2 + 64);
  claims.public_key = Bytes(real.begin() + 164 + 3, real.begin() + 164 + 3 + 550);
  claims.hash_algo_id = "sha-256";
  claims.public_key_hash_algo_id = "sha-256";
  claims.initial_measurement = expect_ok(hex_decode("7309ec52e2870938ffa6930793d61e55ab982a756111410829d6073f66c71708"));
  for (auto& rem : claims.extensible_measurements) rem = Bytes(32, 0);
  return claims;
}

struct TempDir {
  std::filesystem::path path;
  TempDir() {
    path = std::filesystem::temp_directory_path() / ("fde-sim-test-" + hex_encode(crypto::random_bytes(6)));
  }
  ~TempDir() {
    std::error_code error;
    std::filesystem::remove_all(path, error);
  }
};

mode_t file_mode(const std::filesystem::path& path) {
  struct stat st {};
  REQUIRE(::stat(path.c_str(), &st) == 0);
  return st.st_mode & 0777;
}

sim::GrubBoot sample_grub_boot(std::span<const crypto::HashAlg> banks) {
  sim::GrubBoot boot;
  boot.grub_authenticode = sim::Measurement::of_content(as_bytes("BOOTAA64.EFI authenticode image"), banks);
  boot.grub_cfg = sim::Measurement::of_content(as_bytes("menuentry 'openEuler' { linux /vmlinuz-6.6.0 }\n"), banks);
  boot.grub_commands = {"set root=hd0,msdos1", "insmod gzio"};
  boot.kernel_path = "/vmlinuz-6.6.0-28.0.0.34.oe2403.aarch64";
  boot.kernel = sim::Measurement::of_content(as_bytes("decompressed arm64 Image"), banks);
  boot.kernel_arguments = "root=/dev/mapper/encroot ro console=ttyAMA0";
  boot.initramfs_path = "/initramfs-6.6.0-28.0.0.34.oe2403.aarch64.img";
  boot.initramfs = sim::Measurement::of_content(as_bytes("initramfs cpio"), banks);
  return boot;
}

}  // namespace

// --- Devices ---

TEST_CASE("a simulated P-521 device has a digitalSignature certificate for its board serial, chained to its CA") {
  const auto& device = p521_device();
  CHECK(device.type() == sim::DeviceType::p521);
  CHECK(device.device_key().type() == crypto::KeyType::ec_p521);
  CHECK(device.board_serial() == "SIMP521A");
  CHECK(device.device_certificate().subject().find("CN=SIMP521A") != std::string::npos);
  CHECK(device.ca_certificate().is_self_signed());
  CHECK(device.device_certificate().public_key().equals(device.device_key().public_key()));
  std::vector<crypto::Certificate> roots{device.ca_certificate()};
  CHECK(crypto::verify_chain(device.device_certificate(), {}, roots));
  // Newer firmware serves the certificate as PEM (section a.1).
  CHECK(as_text(device.device_certificate_blob()).substr(0, 27) == "-----BEGIN CERTIFICATE-----");
}

TEST_CASE("a simulated RSA device has an RSA-4096 key and serves its certificate as DER like legacy firmware") {
  const auto& device = rsa_device();
  CHECK(device.device_key().public_key().bits() == 4096);
  CHECK(device.device_key().public_key().spki_der().size() == 550);
  Bytes blob = device.device_certificate_blob();
  REQUIRE(!blob.empty());
  CHECK(blob[0] == 0x30);
  CHECK(expect_ok(crypto::Certificate::from_der(blob)).der() == device.device_certificate().der());
}

TEST_CASE("a saved device loads back with the same keys and certificates and private keys in 0600 files") {
  TempDir dir;
  auto created = expect_ok(sim::SimDevice::create({sim::DeviceType::p521, "SIMSAVED1", true}));
  REQUIRE(created.persistent_rak());
  REQUIRE(created.save(dir.path.string()));
  CHECK(file_mode(dir.path) == 0700);
  CHECK(file_mode(dir.path / "device-key.pem") == 0600);
  CHECK(file_mode(dir.path / "rak-key.pem") == 0600);
  CHECK(file_mode(dir.path / "ca.pem") == 0644);

  auto loaded = expect_ok(sim::SimDevice::load(dir.path.string()));
  CHECK(loaded.type() == sim::DeviceType::p521);
  CHECK(loaded.board_serial() == "SIMSAVED1");
  CHECK(loaded.device_certificate().der() == created.device_certificate().der());
  CHECK(loaded.ca_certificate().der() == created.ca_certificate().der());
  CHECK(loaded.device_key().public_key().equals(created.device_key().public_key()));
  REQUIRE(loaded.persistent_rak());
  CHECK(loaded.persistent_rak()->public_key().equals(created.persistent_rak()->public_key()));
  CHECK(loaded.platform_claims().instance_id == created.platform_claims().instance_id);
}

TEST_CASE("a cached RSA device round-trips through save and load") {
  TempDir dir;
  REQUIRE(rsa_device().save(dir.path.string()));
  auto loaded = expect_ok(sim::SimDevice::load(dir.path.string()));
  CHECK(loaded.type() == sim::DeviceType::rsa);
  CHECK(loaded.device_key().public_key().equals(rsa_device().device_key().public_key()));
  CHECK(!loaded.persistent_rak());
}

TEST_CASE("a device directory whose key belongs to another device is refused on load") {
  TempDir dir;
  REQUIRE(p521_device().save(dir.path.string()));
  TempDir other;
  REQUIRE(shared_ca_devices().a.save(other.path.string()));
  std::filesystem::copy_file(other.path / "device-key.pem", dir.path / "device-key.pem",
                             std::filesystem::copy_options::overwrite_existing);
  auto loaded = sim::SimDevice::load(dir.path.string());
  REQUIRE(!loaded);
  CHECK(loaded.error().message.find("does not match") != std::string::npos);
}

TEST_CASE("loading a device from a missing directory fails with an I/O error") {
  TempDir dir;
  auto loaded = sim::SimDevice::load(dir.path.string());
  REQUIRE(!loaded);
  CHECK(loaded.error().code == Errc::io);
}

TEST_CASE("a device's platform claims follow section b.3: six sw components and a 33-byte instance id") {
  auto claims = p521_device().platform_claims();
  CHECK(claims.challenge.empty());
  CHECK(claims.implementation_id.size() == 32);
  REQUIRE(claims.instance_id.size() == 33);
  CHECK(claims.instance_id[0] == 0x01);
  REQUIRE(claims.sw_components.size() == 6);
  for (const auto& component : claims.sw_components) {
    CHECK(component.measurement.size() == 32);
    CHECK(component.signer_id.size() == 32);
    CHECK(component.hash_algo_id == std::optional<std::string>("sha-256"));
  }
  CHECK(claims.hash_algo_id == "sha-256");
}

// --- Byte-exact encoding against the real secGear token ---

TEST_CASE("the real secGear token's claims re-encode to exactly its bytes") {
  Bytes real = real_secgear_token();
  REQUIRE(real.size() == 1431);
  auto claims = real_secgear_claims(real);
  Bytes payload = sim::encode_cvm_payload(claims);
  REQUIRE(payload.size() == real_payload_size);
  CHECK(payload == Bytes(real.begin() + real_payload_offset, real.begin() + real_payload_offset + real_payload_size));

  // With the real signature in place, the whole token is reproduced: the framing (tag 399,
  // map, bstr heads, protected header a1 01 38 24, empty unprotected map) is the same.
  Bytes signature(real.end() - real_signature_size, real.end());
  Bytes sign1 = sim::encode_sign1(sim::encode_protected_header(crypto::SigAlg::ps256), payload, signature);
  CHECK(sim::encode_token({}, sign1) == real);
}

TEST_CASE("a legacy token signed with the claim values of the real token differs from it only in the signature") {
  Bytes real = real_secgear_token();
  auto claims = real_secgear_claims(real);
  // The real RAK is in the claims, but the signature is the simulated device's: the framing
  // and every claim byte must still match.
  Bytes sign1 = expect_ok(sim::sign_sign1(rsa_device().device_key(), sim::encode_cvm_payload(claims)));
  Bytes issued = sim::encode_token({}, sign1);
  REQUIRE(issued.size() == real.size());
  CHECK(Bytes(issued.begin(), issued.end() - real_signature_size) ==
        Bytes(real.begin(), real.end() - real_signature_size));
  CHECK(Bytes(issued.end() - real_signature_size, issued.end()) !=
        Bytes(real.end() - real_signature_size, real.end()));
}

TEST_CASE("a legacy token from the issuer has the real token's shape: PS256, double-wrapped payload, RAK = device key") {
  auto request = basic_request(sim::TokenFormat::legacy);
  auto issued = expect_ok(sim::issue_token(rsa_device(), request));
  CHECK(issued.token.size() == 1431);  // same claim sizes as the real token
  CHECK(!issued.platform);
  const Bytes prefix{0xd9, 0x01, 0x8f, 0xa1, 0x19, 0xac, 0xd1, 0x59, 0x05, 0x8d,
                     0xd2, 0x84, 0x44, 0xa1, 0x01, 0x38, 0x24, 0xa0, 0x59, 0x03, 0x7f, 0x59, 0x03, 0x7c, 0xa7};
  CHECK(Bytes(issued.token.begin(), issued.token.begin() + static_cast<long>(prefix.size())) == prefix);
  CHECK(issued.cvm.public_key == rsa_device().device_key().public_key().spki_der());
  CHECK(issued.cvm.public_key.size() == 550);
}

TEST_CASE("a full token puts the platform token first and the CVM token's protected header is ES512") {
  auto issued = expect_ok(sim::issue_token(p521_device(), basic_request(sim::TokenFormat::full)));
  const Bytes prefix{0xd9, 0x01, 0x8f, 0xa2, 0x19, 0xac, 0xca};
  CHECK(Bytes(issued.token.begin(), issued.token.begin() + 7) == prefix);
  REQUIRE(issued.platform);
  CHECK(issued.cvm.public_key.size() == 133);
  CHECK(issued.cvm.public_key[0] == 0x04);
  CHECK(issued.platform->challenge == crypto::sha256(issued.cvm.public_key));
  auto cvm = expect_ok(cose::parse_sign1(issued.cvm_sign1));
  CHECK(cvm.protected_header == Bytes{0xa1, 0x01, 0x38, 0x23});
  CHECK(cvm.signature.size() == 132);
  auto platform = expect_ok(cose::parse_sign1(*issued.platform_sign1));
  CHECK(platform.alg == crypto::SigAlg::es512);
}

// --- Round trips through the real parser and verifier ---

TEST_CASE("a full P-521 token verifies against the simulator CA with the expected challenge") {
  const auto& device = p521_device();
  auto request = basic_request(sim::TokenFormat::full);
  auto issued = expect_ok(sim::issue_token(device, request));
  auto parsed = expect_ok(token::parse_token(issued.token));
  CHECK(parsed.is_full());
  CHECK(parsed.cvm_wrapping == token::CvmPayloadWrapping::double_wrapped);
  CHECK(parsed.cvm.challenge == request.challenge);
  CHECK(parsed.cvm.public_key == issued.cvm.public_key);
  CHECK(parsed.cvm.initial_measurement == request.rim);
  CHECK(parsed.cvm.extensible_measurements == issued.cvm.extensible_measurements);
  REQUIRE(parsed.platform);
  CHECK(parsed.platform->challenge == issued.platform->challenge);
  CHECK(parsed.platform->sw_components.size() == 6);

  auto verdict = token::verify_token(parsed, evidence_of(device), policy_for(device, request.challenge));
  INFO(describe(verdict));
  CHECK(verdict.passed());
}

TEST_CASE("a full token with DER-encoded ECDSA signatures verifies") {
  const auto& device = p521_device();
  auto request = basic_request(sim::TokenFormat::full);
  request.ecdsa_encoding = crypto::EcdsaEncoding::der;
  auto issued = expect_ok(sim::issue_token(device, request));
  auto cvm = expect_ok(cose::parse_sign1(issued.cvm_sign1));
  CHECK(cvm.signature[0] == 0x30);
  auto platform = expect_ok(cose::parse_sign1(*issued.platform_sign1));
  CHECK(platform.signature[0] == 0x30);
  auto verdict = verify(issued.token, device, policy_for(device, request.challenge));
  INFO(describe(verdict));
  CHECK(verdict.passed());
}

TEST_CASE("a full token from an RSA device carries a PS256 platform token and verifies") {
  const auto& device = rsa_device();
  auto request = basic_request(sim::TokenFormat::full);
  auto issued = expect_ok(sim::issue_token(device, request));
  auto platform = expect_ok(cose::parse_sign1(*issued.platform_sign1));
  CHECK(platform.alg == crypto::SigAlg::ps256);
  CHECK(issued.cvm.public_key.size() == 133);
  auto verdict = verify(issued.token, device, policy_for(device, request.challenge));
  INFO(describe(verdict));
  CHECK(verdict.passed());
}

TEST_CASE("a token with a persistent RAK verifies and keeps the RAK across tokens") {
  auto device = expect_ok(sim::SimDevice::create({sim::DeviceType::p521, "SIMPERSIST", true}));
  auto first = expect_ok(sim::issue_token(device, basic_request(sim::TokenFormat::full)));
  auto request = basic_request(sim::TokenFormat::full);
  auto second = expect_ok(sim::issue_token(device, request));
  CHECK(first.cvm.public_key == second.cvm.public_key);
  auto verdict = verify(second.token, device, policy_for(device, request.challenge));
  INFO(describe(verdict));
  CHECK(verdict.passed());
  // Without a persistent RAK every CVM gets its own.
  auto fresh_a = expect_ok(sim::issue_token(p521_device(), basic_request(sim::TokenFormat::full)));
  auto fresh_b = expect_ok(sim::issue_token(p521_device(), basic_request(sim::TokenFormat::full)));
  CHECK(fresh_a.cvm.public_key != fresh_b.cvm.public_key);
}

TEST_CASE("a SHA-512 CVM token carries 64-byte measurements and verifies") {
  const auto& device = p521_device();
  auto request = basic_request(sim::TokenFormat::full);
  request.hash_alg = crypto::HashAlg::sha512;
  request.rim = crypto::sha512(as_bytes("simulated RIM"));
  for (auto& rem : request.rems) rem.clear();
  auto issued = expect_ok(sim::issue_token(device, request));
  CHECK(issued.cvm.hash_algo_id == "sha-512");
  CHECK(issued.cvm.extensible_measurements[3] == Bytes(64, 0));
  auto verdict = verify(issued.token, device, policy_for(device, request.challenge));
  INFO(describe(verdict));
  CHECK(verdict.passed());
}

TEST_CASE("a legacy RSA token verifies when the policy allows legacy tokens") {
  const auto& device = rsa_device();
  auto request = basic_request(sim::TokenFormat::legacy);
  auto issued = expect_ok(sim::issue_token(device, request));
  auto policy = policy_for(device, request.challenge);
  policy.allow_legacy = true;
  auto verdict = verify(issued.token, device, policy);
  INFO(describe(verdict));
  CHECK(verdict.passed());
}

TEST_CASE("a legacy token is rejected while the policy disallows legacy tokens") {
  const auto& device = rsa_device();
  auto request = basic_request(sim::TokenFormat::legacy);
  auto issued = expect_ok(sim::issue_token(device, request));
  auto verdict = verify(issued.token, device, policy_for(device, request.challenge));
  INFO(describe(verdict));
  CHECK(!verdict.passed());
  CHECK(failed_check(verdict, "legacy.policy"));
}

TEST_CASE("a legacy token presented with another device's certificate is rejected") {
  // Legacy tokens have no platform token: the only hardware link is RAK == device key (b.8).
  const auto& device = rsa_device();
  auto request = basic_request(sim::TokenFormat::legacy);
  auto issued = expect_ok(sim::issue_token(device, request));
  auto policy = policy_for(device, request.challenge);
  policy.allow_legacy = true;
  policy.trusted_roots.push_back(p521_device().ca_certificate());
  auto parsed = expect_ok(token::parse_token(issued.token));
  auto verdict = token::verify_token(parsed, evidence_of(p521_device()), policy);
  INFO(describe(verdict));
  CHECK(!verdict.passed());
  CHECK(!failed_check(verdict, "device.chain"));
  CHECK(failed_check(verdict, "legacy.rak_is_device_key"));
}

TEST_CASE("a legacy token whose RAK differs from the device certificate's key is rejected") {
  // What secGear would accept (b.8): a well-formed token self-signed with any RSA key.
  static const auto other_rsa = expect_ok(crypto::PrivateKey::generate(crypto::KeyType::rsa, 4096));
  const auto& device = rsa_device();
  auto request = basic_request(sim::TokenFormat::legacy);
  request.rak = other_rsa;
  auto issued = expect_ok(sim::issue_token(device, request));
  CHECK(issued.token.size() == 1431);
  auto policy = policy_for(device, request.challenge);
  policy.allow_legacy = true;
  auto verdict = verify(issued.token, device, policy);
  INFO(describe(verdict));
  CHECK(!verdict.passed());
  CHECK(!failed_check(verdict, "cvm.signature"));
  CHECK(failed_check(verdict, "legacy.rak_is_device_key"));
}

TEST_CASE("a token carrying a different challenge is rejected") {
  const auto& device = p521_device();
  auto issued = expect_ok(sim::issue_token(device, basic_request(sim::TokenFormat::full)));
  auto verdict = verify(issued.token, device, policy_for(device, crypto::random_bytes(64)));
  INFO(describe(verdict));
  CHECK(!verdict.passed());
  CHECK(failed_check(verdict, "cvm.challenge"));
}

TEST_CASE("a token from a device of another simulator CA is rejected") {
  const auto& trusted = p521_device();
  const auto& foreign = shared_ca_devices().a;  // its own CA, not trusted here
  auto request = basic_request(sim::TokenFormat::full);
  auto issued = expect_ok(sim::issue_token(foreign, request));
  auto parsed = expect_ok(token::parse_token(issued.token));
  auto verdict = token::verify_token(parsed, evidence_of(foreign), policy_for(trusted, request.challenge));
  INFO(describe(verdict));
  CHECK(!verdict.passed());
  CHECK(failed_check(verdict, "device.chain"));
}

TEST_CASE("a platform token whose challenge is not the hash of the RAK is rejected") {
  const auto& device = p521_device();
  auto request = basic_request(sim::TokenFormat::full);
  auto platform = device.platform_claims();
  platform.challenge = crypto::random_bytes(32);
  request.platform_claims = platform;
  auto issued = expect_ok(sim::issue_token(device, request));
  auto verdict = verify(issued.token, device, policy_for(device, request.challenge));
  INFO(describe(verdict));
  CHECK(!verdict.passed());
  CHECK(failed_check(verdict, "platform.rak_binding"));
  CHECK(!failed_check(verdict, "platform.signature"));
}

TEST_CASE("a RAK swapped after signing is rejected") {
  const auto& device = p521_device();
  auto request = basic_request(sim::TokenFormat::full);
  auto issued = expect_ok(sim::issue_token(device, request));
  auto attacker_rak = expect_ok(crypto::PrivateKey::generate(crypto::KeyType::ec_p521));
  auto claims = issued.cvm;
  claims.public_key = sim::rak_claim(attacker_rak.public_key());
  auto original = expect_ok(cose::parse_sign1(issued.cvm_sign1));

  SECTION("keeping the original CVM signature breaks the CVM signature") {
    Bytes cvm = sim::encode_sign1(original.protected_header, sim::encode_cvm_payload(claims), original.signature);
    auto verdict = verify(sim::encode_token(*issued.platform_sign1, cvm), device,
                          policy_for(device, request.challenge));
    INFO(describe(verdict));
    CHECK(!verdict.passed());
    CHECK(failed_check(verdict, "cvm.signature"));
  }
  SECTION("re-signing the CVM token with the swapped RAK breaks the platform binding") {
    Bytes cvm = expect_ok(sim::sign_sign1(attacker_rak, sim::encode_cvm_payload(claims)));
    auto verdict = verify(sim::encode_token(*issued.platform_sign1, cvm), device,
                          policy_for(device, request.challenge));
    INFO(describe(verdict));
    CHECK(!verdict.passed());
    CHECK(failed_check(verdict, "platform.rak_binding"));
    CHECK(!failed_check(verdict, "cvm.signature"));
  }
}

TEST_CASE("a platform token from device A combined with a CVM token from device B is rejected") {
  const auto& devices = shared_ca_devices();
  auto request = basic_request(sim::TokenFormat::full);
  auto from_a = expect_ok(sim::issue_token(devices.a, request));
  auto from_b = expect_ok(sim::issue_token(devices.b, request));
  Bytes spliced = sim::encode_token(*from_a.platform_sign1, from_b.cvm_sign1);

  SECTION("presented with A's certificate, the RAK binding fails") {
    auto verdict = verify(spliced, devices.a, policy_for(devices.a, request.challenge));
    INFO(describe(verdict));
    CHECK(!verdict.passed());
    CHECK(!failed_check(verdict, "device.chain"));
    CHECK(failed_check(verdict, "platform.rak_binding"));
  }
  SECTION("presented with B's certificate, the platform signature fails") {
    auto verdict = verify(spliced, devices.b, policy_for(devices.b, request.challenge));
    INFO(describe(verdict));
    CHECK(!verdict.passed());
    CHECK(failed_check(verdict, "platform.signature"));
  }
  SECTION("each device's own token verifies under the shared CA") {
    CHECK(verify(from_a.token, devices.a, policy_for(devices.a, request.challenge)).passed());
    CHECK(verify(from_b.token, devices.b, policy_for(devices.b, request.challenge)).passed());
  }
}

// --- Issuer input checks ---

TEST_CASE("the issuer refuses a challenge that is not 64 bytes and measurements of the wrong size") {
  auto request = basic_request(sim::TokenFormat::full);
  request.challenge.resize(32);
  CHECK(sim::issue_token(p521_device(), request).error().code == Errc::invalid_argument);
  request = basic_request(sim::TokenFormat::full);
  request.rim.resize(64);
  CHECK(!sim::issue_token(p521_device(), request));
  request = basic_request(sim::TokenFormat::full);
  request.rems[2].resize(31);
  CHECK(!sim::issue_token(p521_device(), request));
  request = basic_request(sim::TokenFormat::full);
  request.personalization_value.resize(63);
  CHECK(!sim::issue_token(p521_device(), request));
}

TEST_CASE("a legacy token from a P-521 device without an explicit RAK is refused") {
  auto issued = sim::issue_token(p521_device(), basic_request(sim::TokenFormat::legacy));
  REQUIRE(!issued);
  CHECK(issued.error().code == Errc::invalid_argument);
}

// --- Event logs ---

TEST_CASE("an event log built for a grub boot parses and replays to the builder's REMs") {
  const crypto::HashAlg banks[] = {crypto::HashAlg::sha256};
  auto builder = expect_ok(sim::build_grub_boot_log(sample_grub_boot(banks)));
  auto area = expect_ok(builder.log_area());
  auto log = expect_ok(eventlog::parse_event_log(area));
  REQUIRE(log.algorithms.size() == 1);
  CHECK(log.algorithms[0].algorithm_id == 0x000B);
  CHECK(log.algorithms[0].digest_size == 32);
  auto rems = expect_ok(builder.rems(crypto::HashAlg::sha256));
  CHECK(expect_ok(eventlog::replay(log, crypto::HashAlg::sha256)) == rems);
  CHECK(rems[3] == Bytes(32, 0));  // firmware does not use REM[3]
  CHECK(rems[0] != Bytes(32, 0));
}

TEST_CASE("firmware event extraction finds grub, grub.cfg, kernel, initramfs and the command line") {
  const crypto::HashAlg banks[] = {crypto::HashAlg::sha256};
  auto boot = sample_grub_boot(banks);
  auto builder = expect_ok(sim::build_grub_boot_log(boot));
  auto log = expect_ok(eventlog::parse_event_log(expect_ok(builder.log_area())));
  auto events = expect_ok(eventlog::extract_firmware_events(log, crypto::HashAlg::sha256));

  REQUIRE(events.boot_applications.size() == 1);
  CHECK(events.boot_applications[0] == *boot.grub_authenticode.digest_for(crypto::HashAlg::sha256));
  REQUIRE(events.grub_cfg);
  CHECK(events.grub_cfg->text == boot.grub_cfg_path);
  CHECK(events.grub_cfg->digest == *boot.grub_cfg.digest_for(crypto::HashAlg::sha256));
  REQUIRE(events.kernel);
  CHECK(events.kernel->text == boot.kernel_path);
  CHECK(events.kernel->digest == *boot.kernel.digest_for(crypto::HashAlg::sha256));
  REQUIRE(events.initramfs);
  CHECK(events.initramfs->text == boot.initramfs_path);
  CHECK(events.initramfs->digest == *boot.initramfs.digest_for(crypto::HashAlg::sha256));
  REQUIRE(events.kernel_cmdline);
  CHECK(events.kernel_cmdline->text.find(sim::grub_kernel_cmdline(boot)) != std::string::npos);
  // grub measures the command line text after its "kernel_cmdline: " prefix.
  CHECK(events.kernel_cmdline->digest == crypto::sha256(as_bytes(sim::grub_kernel_cmdline(boot))));
  CHECK(events.grub_commands.size() == boot.grub_commands.size() + 2);  // + linux, initrd
}

TEST_CASE("an event log with SHA-256 and SHA-512 banks replays in both") {
  const crypto::HashAlg banks[] = {crypto::HashAlg::sha256, crypto::HashAlg::sha512};
  auto builder = expect_ok(
      sim::build_grub_boot_log(sample_grub_boot(banks), {crypto::HashAlg::sha256, crypto::HashAlg::sha512}));
  auto log = expect_ok(eventlog::parse_event_log(expect_ok(builder.log_area())));
  REQUIRE(log.algorithms.size() == 2);
  CHECK(log.algorithms[1].algorithm_id == 0x000D);
  CHECK(log.algorithms[1].digest_size == 64);
  CHECK(expect_ok(eventlog::replay(log, crypto::HashAlg::sha256)) == expect_ok(builder.rems(crypto::HashAlg::sha256)));
  CHECK(expect_ok(eventlog::replay(log, crypto::HashAlg::sha512)) == expect_ok(builder.rems(crypto::HashAlg::sha512)));
}

TEST_CASE("an event needs a digest for every bank of the log") {
  sim::EventLogBuilder builder({crypto::HashAlg::sha256, crypto::HashAlg::sha512});
  auto only_sha256 = sim::Measurement::of_digest(crypto::HashAlg::sha256, Bytes(32, 1));
  CHECK(!builder.add_grub_file("/vmlinuz-6.6.0", only_sha256));
  CHECK(!builder.add_grub_file("/vmlinuz-6.6.0", sim::Measurement::of_digest(crypto::HashAlg::sha256, Bytes(31, 1))
                                                      .and_digest(crypto::HashAlg::sha512, Bytes(64, 1))));
  CHECK(!builder.add_event(5, eventlog::ev_ipl, {}, builder.measure({})));
  // A refused event leaves nothing behind: the log is still only the Spec ID event.
  CHECK(builder.log() == sim::EventLogBuilder({crypto::HashAlg::sha256, crypto::HashAlg::sha512}).log());
  CHECK(expect_ok(builder.rems(crypto::HashAlg::sha512))[2] == Bytes(64, 0));
}

TEST_CASE("the log area is 0xFF-filled to its size and the CCEL table describes it") {
  sim::EventLogBuilder builder;
  builder.add_efi_separator();
  Bytes log = builder.log();
  auto area = expect_ok(builder.log_area(4096));
  REQUIRE(area.size() == 4096);
  CHECK(Bytes(area.begin(), area.begin() + static_cast<long>(log.size())) == log);
  CHECK(std::all_of(area.begin() + static_cast<long>(log.size()), area.end(), [](std::uint8_t b) { return b == 0xFF; }));
  CHECK(!builder.log_area(log.size() - 1));

  Bytes table = sim::build_ccel(4096, 0x1234'5000);
  REQUIRE(table.size() == 56);
  auto parsed = expect_ok(eventlog::parse_ccel_table(table));
  CHECK(parsed.log_area_length == 4096);
  CHECK(parsed.log_area_address == 0x1234'5000);
}

TEST_CASE("a token carrying the event log's REMs matches the verifier's replay of that log") {
  const crypto::HashAlg banks[] = {crypto::HashAlg::sha256};
  auto builder = expect_ok(sim::build_grub_boot_log(sample_grub_boot(banks)));
  auto request = basic_request(sim::TokenFormat::full);
  auto rems = expect_ok(builder.rems(crypto::HashAlg::sha256));
  std::copy(rems.begin(), rems.end(), request.rems.begin());
  auto issued = expect_ok(sim::issue_token(p521_device(), request));
  auto parsed = expect_ok(token::parse_token(issued.token));
  auto log = expect_ok(eventlog::parse_event_log(expect_ok(builder.log_area())));
  auto replayed = expect_ok(eventlog::replay(log, crypto::HashAlg::sha256));
  for (std::size_t i = 0; i < 4; ++i) CHECK(replayed[i] == parsed.cvm.extensible_measurements[i]);
}

TEST_CASE("a tampered initramfs changes REM[2] but no other REM") {
  const crypto::HashAlg banks[] = {crypto::HashAlg::sha256};
  auto boot = sample_grub_boot(banks);
  auto good = expect_ok(expect_ok(sim::build_grub_boot_log(boot)).rems(crypto::HashAlg::sha256));
  boot.initramfs = sim::Measurement::of_content(as_bytes("initramfs cpio with init=/bin/sh"), banks);
  auto bad = expect_ok(expect_ok(sim::build_grub_boot_log(boot)).rems(crypto::HashAlg::sha256));
  CHECK(good[0] == bad[0]);
  CHECK(good[1] == bad[1]);
  CHECK(good[2] != bad[2]);
  CHECK(good[3] == bad[3]);
}
