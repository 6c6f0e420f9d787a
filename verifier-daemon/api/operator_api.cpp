// Health, readiness and metrics for the operator's monitoring.
#include "verifier-daemon/api/operator_api.hpp"

namespace fde::verifier {

namespace {

constexpr std::string_view text_type = "text/plain; charset=utf-8";
constexpr std::string_view metrics_type = "text/plain; version=0.0.4; charset=utf-8";

HttpResponse text_response(unsigned status, std::string body) {
  return HttpResponse{status, std::string(text_type), std::move(body)};
}

}  // namespace

HttpResponse OperatorApi::handle(const HttpRequest& request) {
  const bool known = request.target == "/healthz" || request.target == "/readyz" || request.target == "/metrics";
  if (!known) return text_response(404, "no such endpoint (try /healthz, /readyz, /metrics)\n");
  if (request.method != "GET") return text_response(405, request.target + " takes GET\n");
  if (request.target == "/healthz") return text_response(200, "ok\n");
  if (request.target == "/metrics") return HttpResponse{200, std::string(metrics_type), metrics_.render()};
  if (auto alive = store_.ping(); !alive) {
    logger_.warning("not_ready", {{"error", alive.error().describe()}});
    return text_response(503, "not ready: the verifier's store is not available\n");
  }
  return text_response(200, "ready\n");
}

}  // namespace fde::verifier
