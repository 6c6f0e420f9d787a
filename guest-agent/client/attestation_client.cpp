// The protocol v1 exchange of one attempt.
#include "guest-agent/client/attestation_client.hpp"

#include "common/crypto/hpke.hpp"
#include "common/protocol/messages.hpp"

namespace fde::agent {

namespace {

AttemptResult outcome(AttemptStatus status, std::string step, std::string message) {
  AttemptResult result;
  result.status = status;
  result.step = std::move(step);
  result.message = std::move(message);
  return result;
}

// A non-200 answer: the stable error code decides (docs/protocol.md, "Errors"). The verifier tells
// the guest only a coarse reason; the operator finds the detail in its log.
AttemptResult http_failure(std::string step, const protocol::HttpsResult& response) {
  auto error = protocol::parse_error_response(response.body);
  std::string status = "HTTP " + std::to_string(response.status);
  if (!error) {
    // A proxy or a broken server: 5xx is worth another try, anything else is not ours.
    bool transient = response.status >= 500 || response.status == 429 || response.status == 408;
    return outcome(transient ? AttemptStatus::retry : AttemptStatus::denied, std::move(step),
                   status + " without a protocol error body");
  }
  std::string message = status + " " + std::string(protocol::error_code_name(error->error));
  if (!error->message.empty()) message += " (" + error->message + ")";
  switch (error->error) {
    case protocol::ErrorCode::unavailable:
    case protocol::ErrorCode::expired_nonce:
      return outcome(AttemptStatus::retry, std::move(step), std::move(message));
    case protocol::ErrorCode::attestation_failed:
    case protocol::ErrorCode::unknown_image:
    case protocol::ErrorCode::bad_request:
      return outcome(AttemptStatus::denied, std::move(step), std::move(message));
  }
  return outcome(AttemptStatus::denied, std::move(step), std::move(message));
}

AttemptResult platform_failure(std::string step, const Error& error) {
  // No device or an ABI we refuse will not change during this boot.
  bool permanent = error.code == Errc::not_found || error.code == Errc::unsupported;
  return outcome(permanent ? AttemptStatus::fatal : AttemptStatus::retry, std::move(step), error.message);
}

}  // namespace

std::string_view attempt_status_name(AttemptStatus status) {
  switch (status) {
    case AttemptStatus::released: return "released";
    case AttemptStatus::retry: return "retry";
    case AttemptStatus::denied: return "denied";
    case AttemptStatus::fatal: return "fatal";
  }
  return "retry";
}

AttemptResult AttestationClient::attempt(const VerifierUrl& verifier, TimePoint deadline) {
  // The challenge and the attest request share a connection; it does not outlive the attempt.
  struct EndAttempt {
    Transport& transport;
    ~EndAttempt() { transport.end_attempt(); }
  } end_attempt{transport_};
  // Evidence that does not depend on the nonce first: a platform that cannot provide it
  // should not cost the verifier a challenge.
  if (!device_certificate_) {
    auto certificate = platform_.device_certificate();
    if (!certificate) return platform_failure("device certificate", certificate.error());
    device_certificate_ = std::move(*certificate);
  }
  if (!event_log_) {
    auto log = platform_.boot_event_log();
    if (!log) return platform_failure("event log", log.error());
    event_log_ = std::move(*log);
  }

  auto challenge_response = transport_.post_json(verifier, "/v1/challenge",
                                                 protocol::serialize(protocol::ChallengeRequest{image_id_}),
                                                 protocol::max_error_body, deadline, /*has_effect=*/false);
  if (!challenge_response) return outcome(AttemptStatus::retry, "challenge", challenge_response.error().message);
  if (challenge_response->status != 200) return http_failure("challenge", *challenge_response);
  auto challenge = protocol::parse_challenge_response(challenge_response->body);
  if (!challenge) return outcome(AttemptStatus::retry, "challenge", "bad response: " + challenge.error().message);

  // A fresh key pair per attempt: the sealed key opens only with this private key.
  auto ephemeral = crypto::hpke::X25519KeyPair::generate();
  const Bytes binding = protocol::challenge_binding(challenge->nonce, ephemeral.public_key());
  auto token = platform_.attestation_token(binding);
  if (!token) return platform_failure("token", token.error());

  protocol::AttestRequest request;
  request.image_id = image_id_;
  request.nonce = challenge->nonce;
  request.ephemeral_public = ephemeral.public_key();
  request.token = std::move(*token);
  request.device_cert = *device_certificate_;
  if (*event_log_) {
    request.event_log = (*event_log_)->event_log;
    request.ccel_table = (*event_log_)->ccel_table;
  }
  auto attest_response = transport_.post_json(verifier, "/v1/attest", protocol::serialize(request),
                                              protocol::max_error_body, deadline, /*has_effect=*/true);
  if (!attest_response) return outcome(AttemptStatus::retry, "attest", attest_response.error().message);
  if (attest_response->status != 200) return http_failure("attest", *attest_response);
  auto sealed = protocol::parse_attest_response(attest_response->body);
  if (!sealed) return outcome(AttemptStatus::retry, "attest", "bad response: " + sealed.error().message);

  auto key = crypto::hpke::open(ephemeral, sealed->enc, protocol::hpke_info(image_id_, challenge->nonce), ByteView{},
                                sealed->sealed_key);
  if (!key) return outcome(AttemptStatus::retry, "open", "the sealed key does not open: " + key.error().message);
  if (key->size() < min_disk_key_size || key->size() > max_disk_key_size)
    return outcome(AttemptStatus::denied, "open",
                   "the released key has " + std::to_string(key->size()) + " bytes, not 32..64");
  AttemptResult released = outcome(AttemptStatus::released, "attest", "key released");
  released.key = std::move(*key);
  return released;
}

}  // namespace fde::agent
