// The attestation port's application: a pure function from HttpRequest to HttpResponse
// (the transport in server/ reads, limits and writes; this decides what to answer).
//
//   POST /v1/challenge  {"image_id"} -> 200 {"nonce", "expires_at"}
//   POST /v1/attest     rate limit -> parse -> nonce -> decide (policy/) -> audit (store/)
//                       -> seal the key -> 200
//
// Nothing else is served here: health, readiness and metrics are on the operator listener
// (operator_api.hpp), which is not reachable from the hosts by default.
//
// Errors are {"error": CODE, "message": text} with the coarse codes of docs/protocol.md "Errors",
// and these HTTP statuses: bad_request 400, attestation_failed 403, expired_nonce 410,
// unavailable 503 (429 when the peer's rate limit refuses, with Retry-After); an unknown
// path is 404 and a wrong method 405 (both bad_request). An unknown image and a denied one
// get the same answer. The operator's detail goes to the log and the audit record, never to
// the guest.
//
// What costs what: the rate limit, the body's parse and the nonce's MAC come first and are
// cheap; a request that fails them (or reuses a nonce) is counted in the metrics and logged
// at most once per kind and interval, never audited. Only a request with a fresh nonce this
// verifier issued for the image runs the checks, and each of those gets one audit record.
#pragma once

#include <functional>
#include <memory>
#include <mutex>

#include "verifier-daemon/limits/peer_rate_limiter.hpp"
#include "verifier-daemon/log/logger.hpp"
#include "verifier-daemon/metrics/metrics.hpp"
#include "verifier-daemon/nonce/used_nonces.hpp"
#include "verifier-daemon/policy/decision.hpp"
#include "verifier-daemon/server/http_types.hpp"
#include "verifier-daemon/store/store.hpp"

namespace fde::verifier {

unsigned http_status_for(protocol::ErrorCode code);

struct AttestationOptions {
  RateLimit rate_limit;  // per source address (IPv6: per /64), on POST /v1/attest
  // At most one log line per kind of refusal and interval.
  std::chrono::milliseconds refusal_log_interval{10'000};
  // The clock of the rate limit and the log throttle (tests move it).
  std::function<std::chrono::steady_clock::time_point()> steady_now = [] { return std::chrono::steady_clock::now(); };
};

class AttestationApi {
 public:
  using TimeSource = std::function<Clock::time_point()>;

  // `store`, `metrics` and `logger` must outlive the API. `now` is the wall clock used for
  // nonces and certificate validity (tests move it).
  AttestationApi(std::shared_ptr<const VerificationPolicy> policy, Store& store, Metrics& metrics, Logger& logger,
                 TimeSource now = [] { return Clock::now(); }, AttestationOptions options = {});

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
  // Counts a request answered without a decision and logs it, throttled.
  void note_refusal(std::string_view event, std::string_view reason, const HttpRequest& request,
                    std::string_view detail);

  mutable std::mutex policy_mutex_;
  std::shared_ptr<const VerificationPolicy> policy_;
  Store& store_;
  Metrics& metrics_;
  Logger& logger_;
  TimeSource now_;
  AttestationOptions options_;
  PeerRateLimiter rate_limiter_;
  UsedNonces used_nonces_;
  LogThrottle refusal_log_;
};

}  // namespace fde::verifier
