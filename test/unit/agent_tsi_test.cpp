// The TSI provider without a device: the ABI constants of docs/virtcca-platform.md a.1 and the
// validation of what the driver returns (partial tokens, sizes, DER/PEM certificates, the
// pre-release ABI), through the ioctl seam.
#include <linux/ioctl.h>

#include <catch2/catch.hpp>
#include <cerrno>
#include <cstring>

#include "common/crypto/certificate.hpp"
#include "common/sim/sim_device.hpp"
#include "common/sim/token_issuer.hpp"
#include "guest-agent/platform/tsi_platform.hpp"

using namespace fde;
using namespace fde::agent;

namespace {

struct FakeTsi final : TsiDevice {
  int version_error = 0;
  int token_error = 0;
  int cert_error = 0;
  Bytes token;
  std::uint64_t reported_token_size = 0;  // 0: the token's size
  Bytes certificate;
  Bytes last_challenge;

  int get_version(tsi::Version& version) override {
    version = {1, 0};
    return version_error;
  }
  int get_attestation_token(tsi::AttestationRequest& request) override {
    last_challenge.assign(request.challenge, request.challenge + tsi::challenge_size);
    if (token_error != 0) return token_error;
    if (!token.empty()) std::memcpy(request.token, token.data(), std::min(token.size(), tsi::max_token_size));
    request.token_size = reported_token_size != 0 ? reported_token_size : token.size();
    return 0;
  }
  int get_device_cert(tsi::DeviceCertificate& response) override {
    if (cert_error != 0) return cert_error;
    if (!certificate.empty()) std::memcpy(response.value, certificate.data(), certificate.size());
    response.size = certificate.size();
    return 0;
  }
};

const sim::SimDevice& p521_device() {
  static const sim::SimDevice device = [] {
    sim::DeviceOptions options;
    options.type = sim::DeviceType::p521;
    return std::move(*sim::SimDevice::create(options));
  }();
  return device;
}

Bytes full_token(ByteView challenge) {
  sim::TokenRequest request;
  request.challenge = to_bytes(challenge);
  request.rim = Bytes(32, 0x11);
  auto issued = sim::issue_token(p521_device(), request);
  REQUIRE(issued);
  return issued->token;
}

std::unique_ptr<TsiPlatform> platform_over(std::unique_ptr<FakeTsi> fake) {
  auto platform = TsiPlatform::create(std::move(fake), CcelSource{"/nonexistent/CCEL", "/nonexistent/data/CCEL"});
  REQUIRE(platform);
  return std::move(*platform);
}

}  // namespace

TEST_CASE("the TSI structures and request numbers match the specification's table") {
  CHECK(sizeof(tsi::Version) == 8);
  CHECK(sizeof(tsi::AttestationRequest) == 8264);
  CHECK(offsetof(tsi::AttestationRequest, token_size) == 8256);
  CHECK(sizeof(tsi::DeviceCertificate) == 4104);
  CHECK(tsi::get_version_request == 0x80085400UL);
  CHECK(tsi::get_attestation_token_request == 0xE0485401UL);
  CHECK(tsi::get_device_cert_request == 0x90085402UL);
  CHECK(tsi::legacy_attestation_token_request == 0xC0785401UL);
  CHECK(tsi::legacy_attestation_token_request != tsi::get_attestation_token_request);
}

TEST_CASE("a complete token from the device is returned unchanged and the challenge passed in full") {
  auto fake = std::make_unique<FakeTsi>();
  Bytes challenge(64);
  for (std::size_t i = 0; i < challenge.size(); ++i) challenge[i] = static_cast<std::uint8_t>(i + 1);
  fake->token = full_token(challenge);
  FakeTsi* seen = fake.get();
  Bytes expected = fake->token;
  auto platform = platform_over(std::move(fake));
  auto token = platform->attestation_token(challenge);
  REQUIRE(token);
  CHECK(*token == expected);
  CHECK(seen->last_challenge == challenge);
  CHECK(platform->version().major == 1);
}

TEST_CASE("a partial token that the driver reports as a success is refused") {
  Bytes challenge(64, 0x42);
  Bytes token = full_token(challenge);
  for (std::size_t cut : {token.size() - 1, token.size() / 2, std::size_t{40}, std::size_t{3}}) {
    auto fake = std::make_unique<FakeTsi>();
    fake->token = Bytes(token.begin(), token.begin() + static_cast<std::ptrdiff_t>(cut));
    auto platform = platform_over(std::move(fake));
    auto result = platform->attestation_token(challenge);
    REQUIRE_FALSE(result);
    CHECK(result.error().message.find("incomplete or malformed token") != std::string::npos);
  }
}

TEST_CASE("token sizes of zero or beyond 8192 bytes are refused") {
  Bytes challenge(64, 1);
  auto empty = std::make_unique<FakeTsi>();
  empty->token = Bytes{};
  CHECK(platform_over(std::move(empty))->attestation_token(challenge).error().message == "TSI returned an empty token");
  auto oversized = std::make_unique<FakeTsi>();
  oversized->token = full_token(challenge);
  oversized->reported_token_size = 8193;
  CHECK(platform_over(std::move(oversized))->attestation_token(challenge).error().message.find("more than the 8192") !=
        std::string::npos);
}

TEST_CASE("a challenge of any length but 64 bytes is refused before the device is asked") {
  auto platform = platform_over(std::make_unique<FakeTsi>());
  CHECK(platform->attestation_token(Bytes(32, 0)).error().code == Errc::invalid_argument);
}

TEST_CASE("a kernel that answers ENOTTY speaks an unsupported (pre-release) TSI ABI") {
  auto fake = std::make_unique<FakeTsi>();
  fake->version_error = ENOTTY;
  auto platform = TsiPlatform::create(std::move(fake), CcelSource{});
  REQUIRE_FALSE(platform);
  CHECK(platform.error().code == Errc::unsupported);
  CHECK(platform.error().message.find("unsupported kernel TSI ABI (pre-release kernel?)") == 0);

  auto token_fake = std::make_unique<FakeTsi>();
  token_fake->token_error = ENOTTY;
  auto result = platform_over(std::move(token_fake))->attestation_token(Bytes(64, 0));
  CHECK(result.error().code == Errc::unsupported);
  auto io_fake = std::make_unique<FakeTsi>();
  io_fake->token_error = EIO;
  CHECK(platform_over(std::move(io_fake))->attestation_token(Bytes(64, 0)).error().code == Errc::io);
}

TEST_CASE("the device certificate is passed on as DER whether the firmware serves DER or PEM") {
  const Bytes der = p521_device().device_certificate().der();
  auto der_fake = std::make_unique<FakeTsi>();
  der_fake->certificate = der;
  CHECK(*platform_over(std::move(der_fake))->device_certificate() == der);
  auto pem_fake = std::make_unique<FakeTsi>();
  std::string pem = p521_device().device_certificate().pem();
  pem_fake->certificate = to_bytes(as_bytes(pem));
  CHECK(*platform_over(std::move(pem_fake))->device_certificate() == der);
}

TEST_CASE("an empty, oversized or unparsable device certificate is refused") {
  tsi::DeviceCertificate response{};
  response.size = 0;
  CHECK_FALSE(certificate_from_response(response));
  response.size = 4097;
  CHECK(certificate_from_response(response).error().message.find("more than the 4096") != std::string::npos);
  response.size = 100;
  std::memset(response.value, 0x30, 100);
  CHECK_FALSE(certificate_from_response(response));
}

TEST_CASE("without /dev/tsi the platform reports that this is not a virtCCA CVM") {
  auto device = open_tsi_device("/nonexistent/tsi");
  REQUIRE_FALSE(device);
  CHECK(device.error().code == Errc::not_found);
}

TEST_CASE("a boot without a CCEL table has no event log, which is not an error") {
  auto platform = platform_over(std::make_unique<FakeTsi>());
  auto log = platform->boot_event_log();
  REQUIRE(log);
  CHECK_FALSE(log->has_value());
}
