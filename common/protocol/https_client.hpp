// A small synchronous HTTPS client for protocol v1: TLS 1.3 only, the server certificate
// verified against a pinned CA (no system store) and the host name, a deadline on every
// step, response bodies bounded. Used by fde-agent and by the tests that drive the daemon.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "common/util/error.hpp"

namespace fde::protocol {

struct HttpsEndpoint {
  std::string host;  // an IP literal or a name resolved without NSS plugins (see agent docs)
  std::uint16_t port = 443;
  std::string server_name;  // SNI and the name checked in the certificate; defaults to host
};

struct HttpsClientOptions {
  std::string ca_pem;  // the pinned CA certificate(s), PEM
  std::chrono::milliseconds connect_timeout{5'000};
  std::chrono::milliseconds request_timeout{15'000};  // handshake + write + read
  std::size_t max_response_body = 64 * 1024;
  // HttpsSession: whether a request left unanswered on a kept connection the server closed
  // may be sent again on a new one. False for a request with an effect on the server (the
  // agent's attest, which may release a key): the caller's own retry decides instead.
  bool resend_unanswered = true;
};

struct HttpsResult {
  unsigned status = 0;
  std::string body;
};

// Several requests over one TLS connection (HTTP/1.1 keep-alive): the agent's challenge and
// attest requests share one handshake. The connection opens on the first request; when the
// server has closed a kept connection (its idle timeout, its per-connection request limit,
// a restart) before any byte of the answer came back, the request is sent once more on a
// fresh connection. A server that answers "Connection: close" is followed. close() ends the
// connection; so does the destructor. Not thread-safe: one session per thread.
class HttpsSession {
 public:
  // `options.ca_pem` is fixed for the session; the timeouts and the response bound may be
  // given again per request. keep_alive = false: each request on its own connection, sent
  // with "Connection: close".
  HttpsSession(HttpsEndpoint endpoint, HttpsClientOptions options, bool keep_alive = true);
  ~HttpsSession();
  HttpsSession(const HttpsSession&) = delete;
  HttpsSession& operator=(const HttpsSession&) = delete;

  Result<HttpsResult> post_json(const std::string& target, const std::string& body);
  Result<HttpsResult> post_json(const std::string& target, const std::string& body,
                                const HttpsClientOptions& timeouts);
  Result<HttpsResult> get(const std::string& target);
  void close();
  // TLS connections this session has opened (handshakes made).
  std::size_t connections_opened() const;
  const HttpsEndpoint& endpoint() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// One request on a fresh connection. Transport failures (refused, timeout, certificate not
// trusted) are errors with Errc::io or Errc::verification_failed; any HTTP status is a
// result.
Result<HttpsResult> https_post_json(const HttpsEndpoint& endpoint, const std::string& target,
                                    const std::string& body, const HttpsClientOptions& options);
Result<HttpsResult> https_get(const HttpsEndpoint& endpoint, const std::string& target,
                              const HttpsClientOptions& options);

}  // namespace fde::protocol
