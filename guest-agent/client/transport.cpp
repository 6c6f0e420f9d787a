// The HTTPS transport over the shared client: one session (one connection) per attempt.
#include "guest-agent/client/transport.hpp"

#include <algorithm>

namespace fde::agent {

Result<protocol::HttpsResult> HttpsTransport::post_json(const VerifierUrl& verifier, std::string_view target,
                                                        const std::string& body, std::size_t max_response_body,
                                                        TimePoint deadline, bool has_effect) {
  auto remaining = std::chrono::duration_cast<Milliseconds>(deadline - SteadyClock::now());
  if (remaining <= Milliseconds(0)) return fail(Errc::io, "attempt deadline reached");
  protocol::HttpsEndpoint endpoint;
  endpoint.host = verifier.host;
  endpoint.port = verifier.port;
  endpoint.server_name = server_name_.empty() ? verifier.host : server_name_;
  protocol::HttpsClientOptions options;
  options.ca_pem = ca_pem_;
  if (session_ && (session_->endpoint().host != endpoint.host || session_->endpoint().port != endpoint.port ||
                   session_->endpoint().server_name != endpoint.server_name))
    session_.reset();
  if (!session_) session_ = std::make_unique<protocol::HttpsSession>(endpoint, options);
  // Connect, then the rest (handshake, write, read), together within the attempt deadline.
  options.connect_timeout = std::min(remaining, options.connect_timeout);
  options.request_timeout = std::max(remaining - options.connect_timeout, std::min(remaining, Milliseconds(1'000)));
  options.max_response_body = max_response_body;
  options.resend_unanswered = !has_effect;
  return session_->post_json(std::string(target), body, options);
}

void HttpsTransport::end_attempt() { session_.reset(); }

}  // namespace fde::agent
