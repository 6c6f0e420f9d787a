// How the client reaches a verifier: JSON POSTs over TLS 1.3 to a pinned CA, the requests of
// one attempt (challenge, then attest) on one connection when the verifier keeps it open. HttpsTransport is the real one (common/protocol/https_client); tests of the retry and
// failure logic substitute their own.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "common/protocol/https_client.hpp"
#include "guest-agent/config/agent_config.hpp"
#include "guest-agent/retry/retry_schedule.hpp"

namespace fde::agent {

class Transport {
 public:
  virtual ~Transport() = default;
  // Any HTTP status is a result; transport failures (refused, timed out, certificate not
  // trusted) are errors. The exchange must end by `deadline`. `has_effect`: the request
  // changes the verifier's state (attest: a release and its audit record), so the transport
  // never sends it twice on its own.
  virtual Result<protocol::HttpsResult> post_json(const VerifierUrl& verifier, std::string_view target,
                                                  const std::string& body, std::size_t max_response_body,
                                                  TimePoint deadline, bool has_effect) = 0;
  // The attempt is over: a connection kept for it is closed.
  virtual void end_attempt() {}
};

class HttpsTransport final : public Transport {
 public:
  // `ca_pem`: the pinned CA; `server_name`: the name to check in the certificate (empty: the
  // verifier's IP address, which the certificate must then list as an IP SAN).
  HttpsTransport(std::string ca_pem, std::string server_name)
      : ca_pem_(std::move(ca_pem)), server_name_(std::move(server_name)) {}
  Result<protocol::HttpsResult> post_json(const VerifierUrl& verifier, std::string_view target,
                                          const std::string& body, std::size_t max_response_body,
                                          TimePoint deadline, bool has_effect) override;
  void end_attempt() override;

 private:
  std::string ca_pem_;
  std::string server_name_;
  // The connection kept between the requests of one attempt, to one verifier.
  std::unique_ptr<protocol::HttpsSession> session_;
};

}  // namespace fde::agent
