// The operator listener's application (server/operator_server.hpp): what monitoring asks
// for, kept off the attestation port, where the hosts would see it.
//
//   GET /healthz   200 "ok"          (the process answers)
//   GET /readyz    200 "ready" | 503 (the store answers)
//   GET /metrics   Prometheus text (metrics/)
//
// Anything else: 404, or 405 for another method; plain-text bodies.
#pragma once

#include "verifier-daemon/log/logger.hpp"
#include "verifier-daemon/metrics/metrics.hpp"
#include "verifier-daemon/server/http_types.hpp"
#include "verifier-daemon/store/store.hpp"

namespace fde::verifier {

class OperatorApi {
 public:
  // `store`, `metrics` and `logger` must outlive the API.
  OperatorApi(Store& store, const Metrics& metrics, Logger& logger) : store_(store), metrics_(metrics), logger_(logger) {}

  // The RequestHandler. Safe to call from several threads at once.
  HttpResponse handle(const HttpRequest& request);

 private:
  Store& store_;
  const Metrics& metrics_;
  Logger& logger_;
};

}  // namespace fde::verifier
