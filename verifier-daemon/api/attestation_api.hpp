// The attestation port's application: a pure function from HttpRequest to HttpResponse
// (the transport in server/ reads, limits and writes; this decides what to answer).
//
//   POST /v1/challenge  {"image_id"} -> 200 {"nonce", "expires_at"}
//   POST /v1/attest     parse -> decide (policy/) -> audit (store/) -> seal the key -> 200
//   GET  /healthz       200 "ok"          (the process answers)
//   GET  /readyz        200 "ready" | 503 (the store answers)
//   GET  /metrics       Prometheus text
//
// Errors are {"error": CODE, "message": text} with the coarse codes of design.md section 3,
// and these HTTP statuses: bad_request 400, attestation_failed 403, unknown_image 404,
// expired_nonce 410, unavailable 503; an unknown path is 404 and a wrong method 405 (both
// bad_request). The operator's detail goes to the log and the audit record, never to the guest.
#pragma once

#include <functional>
#include <memory>
#include <mutex>

#include "verifier-daemon/log/logger.hpp"
#include "verifier-daemon/metrics/metrics.hpp"
#include "verifier-daemon/policy/decision.hpp"
#include "verifier-daemon/server/http_types.hpp"
#include "verifier-daemon/store/store.hpp"

namespace fde::verifier {

unsigned http_status_for(protocol::ErrorCode code);

class AttestationApi {
 public:
  using TimeSource = std::function<Clock::time_point()>;

  // `store`, `metrics` and `logger` must outlive the API. `now` is the wall clock used for
  // nonces and certificate validity (tests move it).
  AttestationApi(std::shared_ptr<const VerificationPolicy> policy, Store& store, Metrics& metrics, Logger& logger,
                 TimeSource now = [] { return Clock::now(); });

  // The RequestHandler. Safe to call from several threads at once.
  HttpResponse handle(const HttpRequest& request);

  // SIGHUP: new roots, options or nonce secrets for requests that start from now on.
  void set_policy(std::shared_ptr<const VerificationPolicy> policy);

  // The BodyLimit: challenge 1 KiB, attest protocol::max_attest_body, anything else 0.
  static std::size_t body_limit(const std::string& method, const std::string& target);

 private:
  std::shared_ptr<const VerificationPolicy> policy() const;
  HttpResponse route(const HttpRequest& request);
  HttpResponse challenge(const HttpRequest& request);
  HttpResponse attest(const HttpRequest& request);
  HttpResponse ready();

  mutable std::mutex policy_mutex_;
  std::shared_ptr<const VerificationPolicy> policy_;
  Store& store_;
  Metrics& metrics_;
  Logger& logger_;
  TimeSource now_;
};

}  // namespace fde::verifier
