// The policy step: docs/fde-verifierd.md "The checks", in order, every step recorded as a Check. Later steps
// run where their inputs allow, so the operator sees the whole picture, but a check whose
// input an earlier check rejected is recorded as failed ("not checked: ..."), never passed.
#include "verifier-daemon/policy/decision.hpp"

#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <algorithm>

#include "common/crypto/hash.hpp"
#include "common/crypto/hpke.hpp"
#include "common/eventlog/ccel.hpp"
#include "common/eventlog/event_log.hpp"
#include "common/reference/reference_matcher.hpp"
#include "common/token/token.hpp"
#include "common/util/strict_json.hpp"

namespace fde::verifier {

namespace {

std::string not_checked(std::string_view reason) { return "not checked: " + std::string(reason); }

bool check_passed(const Verdict& verdict, std::string_view name) {
  const auto& checks = verdict.checks();
  return std::any_of(checks.begin(), checks.end(), [&](const Check& c) { return c.name == name && c.passed; });
}

// Step 0 (section 3): the nonce is ours, unexpired, and was issued for this image (its MAC
// covers the image id, so a nonce for another image does not authenticate).
void check_nonce(NonceStatus status, const std::string& image_id, Verdict& verdict) {
  const std::string expected = "a nonce this verifier issued for image \"" + image_id + "\", not expired";
  switch (status) {
    case NonceStatus::valid: verdict.add_pass("request.nonce", expected, "authentic and unexpired"); return;
    case NonceStatus::expired: verdict.add_fail("request.nonce", expected, "authentic but expired"); return;
    case NonceStatus::forged:
      verdict.add_fail("request.nonce", expected,
                       "does not authenticate (not issued by this verifier's secret, or issued for another image)");
      return;
    case NonceStatus::malformed: verdict.add_fail("request.nonce", expected, "malformed"); return;
  }
}

void check_image_known(const std::optional<ImageRecord>& image, const std::string& image_id, Verdict& verdict) {
  verdict.add("request.image", "an enrolled image", image ? "\"" + image_id + "\" is enrolled" : "no image \"" + image_id + "\"",
              image.has_value());
}

// The device certificate as TMM_GET_DEVICE_CERT returns it: DER (legacy firmware) or PEM
// (newer firmware); further PEM certificates are untrusted intermediates for path building.
// The blob is parsed once per configuration (DeviceCertificates); the entry then also
// validates the chain, remembering the result within the certificates' validity.
std::shared_ptr<const DeviceCertificates::Entry> check_device_certificate(DeviceCertificates& known, const Bytes& blob,
                                                                          std::vector<crypto::Certificate>& intermediates,
                                                                          Verdict& verdict) {
  const std::string expected = "a device certificate in DER or PEM";
  auto entry = known.parse(blob);
  if (!entry) {
    verdict.add_fail("device.certificate", expected, entry.error().describe());
    return nullptr;
  }
  const auto& certificates = (*entry)->certificates();
  intermediates.insert(intermediates.end(), certificates.begin() + 1, certificates.end());
  verdict.add_pass("device.certificate", expected,
                   "\"" + (*entry)->leaf_subject() + "\"" +
                       (certificates.size() > 1 ? " with " + std::to_string(certificates.size() - 1) + " more" : ""));
  return *entry;
}

// Step 4: challenge == SHA-512("virtcca-fde/v1" || nonce || E.public). The token's challenge
// claim counts only once the CVM signature has vouched for it.
void check_binding(const protocol::AttestRequest& request, const token::Token* token, const Verdict& token_verdict,
                   Verdict& verdict) {
  const std::string name = "request.binding";
  if (request.ephemeral_public.size() != protocol::ephemeral_public_size) {
    verdict.add_fail(name, "a " + std::to_string(protocol::ephemeral_public_size) + "-byte X25519 ephemeral_public",
                     std::to_string(request.ephemeral_public.size()) + " bytes");
    return;
  }
  const Bytes binding = protocol::challenge_binding(request.nonce, request.ephemeral_public);
  const std::string expected =
      "CVM challenge = SHA-512(\"virtcca-fde/v1\" || nonce || ephemeral_public) = " + hex_encode(binding);
  if (token == nullptr) {
    verdict.add_fail(name, expected, not_checked("the token could not be parsed (token.parse)"));
    return;
  }
  if (!check_passed(token_verdict, "cvm.signature")) {
    verdict.add_fail(name, expected, not_checked("the CVM token signature was not verified (cvm.signature)"));
    return;
  }
  const Bytes& challenge = token->cvm.challenge;
  verdict.add(name, expected, "CVM challenge " + (challenge.empty() ? std::string("(empty)") : hex_encode(challenge)),
              equal_constant_time(binding, challenge));
}

// The event log is optional (direct boot). When it is sent it must parse: a grub-boot VM
// whose log is unreadable must not be judged as a direct boot.
struct EventLogOutcome {
  bool present = false;
  std::optional<eventlog::EventLog> log;
};

EventLogOutcome check_event_log(const protocol::AttestRequest& request, Verdict& verdict) {
  EventLogOutcome outcome;
  std::optional<eventlog::CcelTable> table;
  if (request.ccel_table) {
    auto parsed = eventlog::parse_ccel_table(*request.ccel_table);
    verdict.add("eventlog.ccel_table", "an ACPI CCEL table (signature, length, checksum)",
                parsed ? "log area " + std::to_string(parsed->log_area_length) + " bytes" : parsed.error().describe(),
                parsed.has_value());
    if (parsed) table = *parsed;
  }
  if (!request.event_log) return outcome;
  outcome.present = true;
  const Bytes& bytes = *request.event_log;
  if (table && bytes.size() > table->log_area_length) {
    verdict.add_fail("eventlog.parse", "an event log that fits the CCEL log area (" +
                                           std::to_string(table->log_area_length) + " bytes)",
                     std::to_string(bytes.size()) + " bytes");
    return outcome;
  }
  auto log = eventlog::parse_event_log(bytes);
  if (!log) {
    verdict.add_fail("eventlog.parse", "a TCG2 crypto-agile event log", log.error().describe());
    return outcome;
  }
  verdict.add_pass("eventlog.parse", "a TCG2 crypto-agile event log",
                   std::to_string(log->events.size()) + " events in " + std::to_string(bytes.size()) + " bytes");
  outcome.log = std::move(*log);
  return outcome;
}

// Steps 5 and 6. Measurements of a token that did not verify are not evidence of anything,
// so they are compared only once every token check has passed.
reference::MatchOutcome check_reference_values(const std::optional<ImageRecord>& image, const token::Token* token,
                                               const Verdict& token_verdict, const EventLogOutcome& event_log,
                                               Verdict& verdict) {
  const std::string name = "reference.values";
  const std::string expected = "the token's measurements match one of the image's reference sets";
  if (!image) {
    verdict.add_fail(name, expected, not_checked("no such image (request.image)"));
    return {};
  }
  if (token == nullptr) {
    verdict.add_fail(name, expected, not_checked("the token could not be parsed (token.parse)"));
    return {};
  }
  if (const Check* failed = token_verdict.first_failure()) {
    verdict.add_fail(name, expected, not_checked("the token failed " + failed->name));
    return {};
  }
  if (event_log.present && !event_log.log) {
    verdict.add_fail(name, expected, not_checked("the event log could not be used (eventlog.parse)"));
    return {};
  }
  const token::CvmClaims& cvm = token->cvm;
  const auto alg = crypto::hash_alg_from_name(cvm.hash_algo_id);
  if (!alg) {  // cvm.hash_algo has failed already; kept for a hand-built token
    verdict.add_fail(name, expected, not_checked("unknown CVM hash algorithm"));
    return {};
  }
  reference::TokenMeasurements measured{*alg, cvm.initial_measurement, cvm.extensible_measurements,
                                        cvm.personalization_value};
  return reference::match_reference_values(measured, event_log.log ? &*event_log.log : nullptr, image->reference,
                                           verdict);
}

// Step 7.
void check_image_status(const std::optional<ImageRecord>& image, Verdict& verdict) {
  if (!image) {
    verdict.add_fail("image.status", "active", not_checked("no such image (request.image)"));
    return;
  }
  verdict.add("image.status", "active", std::string(image_status_name(image->status)),
              image->status == ImageStatus::active);
}

// What the audit record keeps of the evidence: enough to recognise the boot later.
std::string measurements_json(const token::Token* token, bool token_verified, const EventLogOutcome& event_log,
                              const reference::MatchOutcome& match) {
  rapidjson::StringBuffer buffer;
  rapidjson::Writer<rapidjson::StringBuffer> writer(buffer);
  auto text = [&](const std::string& value) {
    const std::string valid = json::valid_utf8(value);
    writer.String(valid.c_str(), static_cast<rapidjson::SizeType>(valid.size()));
  };
  writer.StartObject();
  writer.Key("token_verified");
  writer.Bool(token_verified);
  if (token != nullptr) {
    const token::CvmClaims& cvm = token->cvm;
    writer.Key("token_kind");
    text(token->is_full() ? "full" : "legacy");
    writer.Key("hash_alg");
    text(cvm.hash_algo_id);
    writer.Key("rim");
    text(hex_encode(cvm.initial_measurement));
    writer.Key("rems");
    writer.StartArray();
    for (const Bytes& rem : cvm.extensible_measurements) text(hex_encode(rem));
    writer.EndArray();
    writer.Key("rpv");
    text(hex_encode(cvm.personalization_value));
  }
  writer.Key("boot");
  text(event_log.present ? "grub (event log)" : "direct (no event log)");
  writer.Key("matched_set");
  if (match.set_name.empty())
    writer.Null();
  else
    text(match.set_name);
  writer.EndObject();
  return std::string(buffer.GetString(), buffer.GetSize());
}

// The coarse reason the guest is told (docs/protocol.md, "Errors"), from the first failed check.
// An image that is not enrolled is denied like any other failed check: a distinct answer
// would let anyone with a free nonce test which image ids are enrolled here.
protocol::ErrorCode guest_error_for(const Verdict& verdict, NonceStatus nonce) {
  const Check* failed = verdict.first_failure();
  if (failed == nullptr) return protocol::ErrorCode::attestation_failed;
  if (failed->name == "request.nonce")
    return nonce == NonceStatus::expired ? protocol::ErrorCode::expired_nonce : protocol::ErrorCode::bad_request;
  return protocol::ErrorCode::attestation_failed;
}

}  // namespace

Decision Decider::decide(const protocol::AttestRequest& request, const std::optional<ImageRecord>& image,
                         Clock::time_point now) const {
  Decision decision;
  Verdict& verdict = decision.verdict;

  const NonceStatus nonce = nonces_.check(request.nonce, request.image_id, now);
  check_nonce(nonce, request.image_id, verdict);
  check_image_known(image, request.image_id, verdict);

  // Steps 1-3: the token's encoding, its signatures and the device certificate's chain.
  auto parsed = token::parse_token(request.token);
  const token::Token* token = parsed ? &*parsed : nullptr;
  verdict.add("token.parse", "a well-formed virtCCA token (CBOR tag 399, COSE_Sign1, expected claims and sizes)",
              parsed ? std::to_string(request.token.size()) + " bytes, well-formed" : parsed.error().describe(),
              parsed.has_value());
  token::TokenPolicy policy;
  policy.trusted_roots = config_.trusted_roots;
  policy.intermediates = config_.intermediates;
  policy.allow_legacy = config_.allow_legacy;
  policy.platform = config_.platform;
  policy.at_time = Clock::to_time_t(now);
  token::DeviceEvidence device;
  const auto device_entry =
      check_device_certificate(device_certificates_, request.device_cert, policy.intermediates, verdict);
  if (device_entry) {
    device.device_certificate = device_entry->certificates().front();
    policy.chain_validator = device_entry.get();
  }
  Verdict token_verdict;
  if (token != nullptr) token_verdict = token::verify_token(*token, device, policy);
  verdict.append(token_verdict);

  check_binding(request, token, token_verdict, verdict);

  // Steps 5-6.
  const EventLogOutcome event_log = check_event_log(request, verdict);
  const reference::MatchOutcome match = check_reference_values(image, token, token_verdict, event_log, verdict);

  check_image_status(image, verdict);

  decision.measurements_json =
      measurements_json(token, token != nullptr && token_verdict.passed(), event_log, match);
  decision.guest_error = guest_error_for(verdict, nonce);
  if (verdict.passed()) decision.evidence = VerifiedEvidence(request.image_id, request.nonce, request.ephemeral_public);
  return decision;
}

Result<protocol::AttestResponse> release_key(const VerifiedEvidence& evidence, const SecretBytes& disk_key) {
  if (disk_key.empty() || disk_key.size() > protocol::max_disk_key_size)
    return fail(Errc::internal, "the stored disk key of \"" + evidence.image_id() + "\" has " +
                                    std::to_string(disk_key.size()) + " bytes");
  const Bytes info = protocol::hpke_info(evidence.image_id(), evidence.nonce());
  auto sealed = crypto::hpke::seal(evidence.ephemeral_public(), info, {}, disk_key.view());
  if (!sealed) return fail_with_context("sealing the disk key", sealed.error());
  protocol::AttestResponse response;
  response.enc = std::move(sealed->enc);
  response.sealed_key = std::move(sealed->ciphertext);
  return response;
}

}  // namespace fde::verifier
