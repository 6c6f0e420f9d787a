// The attestation port's application, one request path readable in order (style.md):
// rate limit -> parse -> nonce -> decide -> release and audit in one store transaction (the
// status it reads is final) -> seal -> respond.
#include "verifier-daemon/api/attestation_api.hpp"

#include <chrono>

#include "common/crypto/hash.hpp"
#include "verifier-daemon/policy/verdict_json.hpp"

namespace fde::verifier {

namespace {

constexpr std::string_view json_type = "application/json";

HttpResponse error_response(unsigned status, protocol::ErrorCode code, std::string message) {
  protocol::ErrorResponse body;
  body.error = code;
  body.message = std::move(message);
  return HttpResponse{status, std::string(json_type), protocol::serialize(body)};
}

HttpResponse error_response(protocol::ErrorCode code, std::string message) {
  return error_response(http_status_for(code), code, std::move(message));
}

bool is_json(const std::string& content_type) {
  // "application/json" with or without parameters; an absent type is tolerated.
  return content_type.empty() || content_type.rfind(json_type, 0) == 0;
}

// What the guest is told about a denial: the coarse code and a fixed text. Nothing the
// caller sent is echoed back, and nothing tells an unknown image from an enrolled one that
// was denied, or says how many decisions the verifier has made: the audit record, the log
// line and `fde-admin explain IMAGE` keep the detail for the operator.
std::string denial_message(protocol::ErrorCode code) {
  switch (code) {
    case protocol::ErrorCode::expired_nonce: return "the nonce has expired; request a new challenge";
    case protocol::ErrorCode::bad_request: return "the nonce was not issued by this verifier for this image";
    default: return "attestation failed; the verifier's operator can see why (fde-admin explain with this image id)";
  }
}

// A nonce check that failed, as the refusal's reason (a metrics label) and the guest's answer.
std::string_view nonce_refusal_reason(NonceStatus status) {
  switch (status) {
    case NonceStatus::malformed: return "nonce_malformed";
    case NonceStatus::forged: return "nonce_forged";
    case NonceStatus::expired: return "nonce_expired";
    case NonceStatus::valid: break;
  }
  return "nonce_malformed";
}

// The key read found the image no longer active (revoked after find_image): the request is
// denied exactly as for a revoked image, and the verdict records why, so the audit record,
// the log line and `fde-admin explain` agree.
void deny_at_key_read(Decision& decision, std::string found) {
  decision.verdict.add_fail("image.status", "active when the disk key is read", std::move(found));
  decision.evidence.reset();
  decision.guest_error = protocol::ErrorCode::attestation_failed;
}

}  // namespace

unsigned http_status_for(protocol::ErrorCode code) {
  switch (code) {
    case protocol::ErrorCode::bad_request: return 400;
    case protocol::ErrorCode::attestation_failed: return 403;
    case protocol::ErrorCode::unknown_image: return 404;
    case protocol::ErrorCode::expired_nonce: return 410;
    case protocol::ErrorCode::unavailable: return 503;
  }
  return 500;
}

AttestationApi::AttestationApi(std::shared_ptr<const VerificationPolicy> policy, Store& store, Metrics& metrics,
                               Logger& logger, TimeSource now, AttestationOptions options)
    : policy_(std::move(policy)),
      store_(store),
      metrics_(metrics),
      logger_(logger),
      now_(std::move(now)),
      options_(std::move(options)),
      rate_limiter_(options_.rate_limit),
      refusal_log_(options_.refusal_log_interval) {}

void AttestationApi::set_policy(std::shared_ptr<const VerificationPolicy> policy) {
  std::lock_guard lock(policy_mutex_);
  policy_ = std::move(policy);
}

std::shared_ptr<const VerificationPolicy> AttestationApi::policy() const {
  std::lock_guard lock(policy_mutex_);
  return policy_;
}

std::size_t AttestationApi::body_limit(const std::string& method, const std::string& target) {
  if (method != "POST") return 0;
  if (target == "/v1/challenge") return protocol::max_challenge_body;
  if (target == "/v1/attest") return protocol::max_attest_body;
  return 0;
}

HttpResponse AttestationApi::handle(const HttpRequest& request) {
  const auto started = std::chrono::steady_clock::now();
  metrics_.request_started();
  HttpResponse response = route(request);
  metrics_.request_finished(Metrics::endpoint_label(request.target), response.status,
                            std::chrono::steady_clock::now() - started);
  return response;
}

HttpResponse AttestationApi::route(const HttpRequest& request) {
  struct Route {
    std::string_view path;
    std::string_view method;
  };
  static constexpr Route routes[] = {{"/v1/challenge", "POST"}, {"/v1/attest", "POST"}};
  for (const Route& known : routes) {
    if (request.target != known.path) continue;
    if (request.method != known.method)
      return error_response(405, protocol::ErrorCode::bad_request,
                            std::string(known.path) + " takes " + std::string(known.method));
    if (known.method == "POST" && !is_json(request.content_type))
      return error_response(415, protocol::ErrorCode::bad_request, "the body must be application/json");
    if (known.path == "/v1/challenge") return challenge(request);
    return attest(request);
  }
  return error_response(404, protocol::ErrorCode::bad_request, "no such endpoint");
}

// The challenge does not look the image up: it reveals nothing about which images exist and
// costs no database read, so an unauthenticated flood of challenges stays cheap. The nonce's
// MAC covers the image id, so it is useless for any other image.
HttpResponse AttestationApi::challenge(const HttpRequest& request) {
  auto parsed = protocol::parse_challenge_request(request.body);
  if (!parsed) {
    if (auto suppressed = refusal_log_.admit("challenge_malformed", options_.steady_now()))
      logger_.info("challenge_refused", {{"peer", request.peer},
                                         {"error", parsed.error().describe()},
                                         {"suppressed", std::to_string(*suppressed)}});
    return error_response(protocol::ErrorCode::bad_request, parsed.error().message);
  }
  if (auto valid = protocol::validate_image_id(parsed->image_id); !valid)
    return error_response(protocol::ErrorCode::bad_request, valid.error().message);
  const auto issued = policy()->nonces().issue(parsed->image_id, now_());
  protocol::ChallengeResponse response;
  response.nonce = issued.nonce;
  response.expires_at = format_rfc3339(issued.expires_at);
  logger_.debug("challenge", {{"image", parsed->image_id}, {"peer", request.peer}, {"expires", response.expires_at}});
  return HttpResponse{200, std::string(json_type), protocol::serialize(response)};
}

void AttestationApi::note_refusal(std::string_view event, std::string_view reason, const HttpRequest& request,
                                  std::string_view detail) {
  metrics_.refused(reason);
  if (auto suppressed = refusal_log_.admit(reason, options_.steady_now()))
    logger_.info(event, {{"reason", reason},
                         {"peer", request.peer},
                         {"detail", detail},
                         {"suppressed", std::to_string(*suppressed)}});
}

HttpResponse AttestationApi::attest(const HttpRequest& request) {
  const auto started = std::chrono::steady_clock::now();
  auto elapsed_ms = [&] {
    return std::to_string(
        std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - started).count());
  };

  // 0. The peer's rate, before the body is even parsed.
  if (auto wait = rate_limiter_.admit(request.peer, options_.steady_now())) {
    note_refusal("attest_refused", "rate_limited", request, "over the per-address rate limit");
    HttpResponse response = error_response(429, protocol::ErrorCode::unavailable,
                                           "too many attestation requests from this address; retry later");
    response.headers.emplace_back("Retry-After", std::to_string(wait->count()));
    return response;
  }

  // 1. Parse: strict, sizes checked before decoding (protocol/messages).
  auto parsed = protocol::parse_attest_request(request.body);
  if (!parsed) {
    note_refusal("attest_refused", "malformed", request, parsed.error().describe());
    return error_response(protocol::ErrorCode::bad_request, parsed.error().message);
  }
  const protocol::AttestRequest& attest_request = *parsed;
  const std::string& image_id = attest_request.image_id;

  // 2. The nonce (one MAC), before any token, certificate or database work: only a nonce
  // this verifier issued for this image, unexpired and not used before, buys the checks and
  // an audit record. Anyone can send the others, as often as the rate limit lets them.
  const auto policy_now = policy();
  const Clock::time_point now = now_();
  const NonceStatus nonce = policy_now->nonces().check(attest_request.nonce, image_id, now);
  if (nonce != NonceStatus::valid) {
    note_refusal("attest_refused", nonce_refusal_reason(nonce), request, nonce_status_name(nonce));
    const auto code =
        nonce == NonceStatus::expired ? protocol::ErrorCode::expired_nonce : protocol::ErrorCode::bad_request;
    return error_response(code, denial_message(code));
  }
  // One attestation per nonce. The first use was audited, whatever its outcome; a replay
  // could only repeat it (the key is sealed to the ephemeral key the token binds).
  if (!used_nonces_.first_use(attest_request.nonce, NonceService::expires_at(attest_request.nonce), now)) {
    note_refusal("attest_refused", "nonce_replayed", request, "the nonce was used by an earlier request");
    return error_response(protocol::ErrorCode::expired_nonce, "the nonce has been used; request a new challenge");
  }
  const std::string token_digest = hex_encode(crypto::sha256(attest_request.token));

  // 3. Decide: every check of docs/fde-verifierd.md "The checks", as data.
  auto image = store_.find_image(image_id);
  if (!image) {
    logger_.error("store_failed", {{"operation", "find_image"}, {"image", image_id}, {"error", image.error().describe()}});
    return error_response(protocol::ErrorCode::unavailable, "the verifier cannot read its state; try again later");
  }
  Decision decision = policy_now->decider().decide(attest_request, *image, now);

  // 4-5. Release or deny, and audit it before anything leaves: a key is never released
  // without its record. A release is recorded in the store transaction that re-reads the
  // image's status and unwraps the key, so a revoke is ordered against it in the audit chain:
  // one committed before is seen here (denied, below), one committed later is chained after.
  auto audit_entry = [&](bool release) {
    AuditEntry entry;
    entry.image_id = image_id;
    entry.peer = request.peer;
    entry.token_digest = token_digest;
    entry.measurements = decision.measurements_json;
    entry.decision = release ? "release" : "deny";
    entry.reason = decision.verdict.summary();
    entry.checks = checks_to_json(decision.verdict);
    return entry;
  };
  std::optional<SecretBytes> disk_key;
  std::optional<AuditRecord> record;
  if (decision.evidence) {
    auto released = store_.append_release(audit_entry(true));
    if (!released && released.error().code != Errc::not_found) {
      logger_.error("release_failed", {{"image", image_id}, {"error", released.error().describe()}});
      return error_response(protocol::ErrorCode::unavailable, "the verifier cannot release the key; try again later");
    }
    if (released && *released) {
      disk_key = std::move((*released)->disk_key);
      record = std::move((*released)->record);
    } else {
      deny_at_key_read(decision, released ? "revoked after the checks above" : "no longer enrolled");
    }
  }
  const Verdict& verdict = decision.verdict;
  const bool release = disk_key.has_value();
  const Check* failed = verdict.first_failure();
  const std::string reason = failed != nullptr ? failed->name : "";
  if (!release) {
    auto denied = store_.append_audit(audit_entry(false));
    if (!denied) {
      logger_.error("audit_failed", {{"image", image_id}, {"peer", request.peer}, {"decision", "deny"},
                                     {"error", denied.error().describe()}});
      return error_response(protocol::ErrorCode::unavailable, "the verifier cannot record the decision; try again later");
    }
    record = std::move(*denied);
  }
  const std::string sequence = std::to_string(record->sequence);

  if (!release) {
    metrics_.denied(reason);
    const std::string guest_error(protocol::error_code_name(decision.guest_error));
    logger_.info("attest", {{"image", image_id},
                            {"peer", request.peer},
                            {"decision", "deny"},
                            {"reason", reason},
                            {"detail", verdict.summary()},
                            {"guest_error", guest_error},
                            {"audit", sequence},
                            {"token_sha256", token_digest},
                            {"ms", elapsed_ms()}});
    return error_response(decision.guest_error, denial_message(decision.guest_error));
  }

  // 6. Seal the key to the VM's ephemeral key; the plaintext key is wiped at once.
  auto sealed = release_key(*decision.evidence, *disk_key);
  disk_key->wipe();
  if (!sealed) {
    logger_.error("release_failed", {{"image", image_id}, {"audit", sequence}, {"error", sealed.error().describe()}});
    return error_response(protocol::ErrorCode::unavailable, "the verifier cannot release the key; try again later");
  }

  // 7. Respond.
  metrics_.released();
  logger_.info("attest", {{"image", image_id},
                          {"peer", request.peer},
                          {"decision", "release"},
                          {"reason", verdict.summary()},
                          {"audit", sequence},
                          {"token_sha256", token_digest},
                          {"ms", elapsed_ms()}});
  return HttpResponse{200, std::string(json_type), protocol::serialize(*sealed)};
}

}  // namespace fde::verifier
