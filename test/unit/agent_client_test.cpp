// One attempt of the agent's protocol client against a scripted verifier: what each answer of
// the verifier's attest endpoint means for the boot (retry, denied), including the per-address
// rate limit's 429 and the one answer a verifier gives for unknown and denied images.
#include <catch2/catch.hpp>

#include <deque>

#include "common/protocol/messages.hpp"
#include "guest-agent/client/attestation_client.hpp"

using namespace fde;
using namespace fde::agent;

namespace {

struct FakePlatform final : Platform {
  std::string_view name() const override { return "fake"; }
  Result<Bytes> attestation_token(ByteView challenge) override { return Bytes(challenge.begin(), challenge.end()); }
  Result<Bytes> device_certificate() override { return Bytes(16, 0x30); }
  Result<std::optional<BootEventLog>> boot_event_log() override { return std::optional<BootEventLog>(); }
};

// Answers the challenge with a nonce and the attest with `attest_answer`.
struct ScriptedVerifier final : Transport {
  protocol::HttpsResult attest_answer;
  std::deque<std::string> targets;
  Result<protocol::HttpsResult> post_json(const VerifierUrl&, std::string_view target, const std::string&, std::size_t,
                                          TimePoint, bool has_effect) override {
    if (has_effect != (target == "/v1/attest")) throw std::logic_error("only the attest request has an effect");
    targets.emplace_back(target);
    if (target == "/v1/challenge") {
      protocol::ChallengeResponse challenge;
      challenge.nonce = Bytes(protocol::nonce_size, 0x42);
      challenge.expires_at = "2026-12-06T23:00:00Z";
      return protocol::HttpsResult{200, protocol::serialize(challenge)};
    }
    return attest_answer;
  }
  void end_attempt() override { targets.emplace_back("(end of attempt)"); }
};

AttemptResult attempt_with(protocol::HttpsResult answer) {
  FakePlatform platform;
  ScriptedVerifier verifier;
  verifier.attest_answer = std::move(answer);
  AttestationClient client(platform, verifier, "web-01");
  VerifierUrl url;
  url.text = "https://192.0.2.10:8443";
  url.host = "192.0.2.10";
  url.port = 8443;
  AttemptResult result = client.attempt(url, SteadyClock::now() + std::chrono::seconds(30));
  // Both requests within one attempt, whose end closes the connection they shared.
  CHECK(verifier.targets == std::deque<std::string>{"/v1/challenge", "/v1/attest", "(end of attempt)"});
  return result;
}

}  // namespace

TEST_CASE("the verifier's rate limit (429) is a reason to try again later, not a denial") {
  const auto limited = attempt_with(
      {429, R"({"error":"unavailable","message":"too many attestation requests from this address; retry later"})"});
  CHECK(limited.status == AttemptStatus::retry);
  CHECK(limited.step == "attest");
  CHECK(limited.message.find("HTTP 429 unavailable") == 0);
  // A proxy's 429 without the protocol's body means the same.
  CHECK(attempt_with({429, "Too Many Requests"}).status == AttemptStatus::retry);
}

TEST_CASE("a denial, for an unknown or an enrolled image alike, ends the attempts") {
  const auto denied = attempt_with(
      {403, R"x({"error":"attestation_failed","message":"attestation failed; the verifier's operator can see why (fde-admin explain with this image id)"})x"});
  CHECK(denied.status == AttemptStatus::denied);
  CHECK(denied.message.find("HTTP 403 attestation_failed") == 0);
  // An older verifier's distinct answer for an unknown image is still a denial.
  CHECK(attempt_with({404, R"({"error":"unknown_image","message":"the requested image is not enrolled here"})"}).status ==
        AttemptStatus::denied);
  // A used or expired nonce: a new challenge may help.
  CHECK(attempt_with({410, R"({"error":"expired_nonce","message":"the nonce has been used; request a new challenge"})"})
            .status == AttemptStatus::retry);
}
