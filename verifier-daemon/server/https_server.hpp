// The attestation port: HTTP/1.1 over TLS 1.3 only, on Boost.Asio/Beast, one coroutine per
// connection, deadlines on handshake, read and write, a cap on concurrent connections, and
// request bodies bounded per target before they are read (design.md 3, style.md "Asio").
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/util/error.hpp"
#include "verifier-daemon/server/http_types.hpp"

namespace fde::verifier {

struct TlsFiles {
  std::string certificate_chain;  // PEM: server certificate, then intermediates
  std::string private_key;        // PEM
};

struct ServerLimits {
  std::size_t max_connections = 1024;  // further connections are accepted and closed at once
  std::chrono::milliseconds handshake_timeout{10'000};
  std::chrono::milliseconds request_timeout{15'000};  // whole request: headers and body
  std::chrono::milliseconds idle_timeout{30'000};     // keep-alive wait for the next request
  std::size_t max_header_bytes = 8 * 1024;
  std::size_t max_requests_per_connection = 100;
  unsigned threads = 0;           // I/O threads; 0 = one per core
  unsigned blocking_threads = 4;  // the pool the handler runs on (SQLite writes happen there)
};

struct ListenAddress {
  std::string host;  // "127.0.0.1", "::1", "0.0.0.0"
  std::uint16_t port = 0;  // 0 = pick a free port (tests)
};

// Counters the transport keeps; the application's /metrics reads them (stats() is cheap and
// thread-safe). A handshake that times out counts in timeouts, not handshake_failures; an
// idle keep-alive connection closed by idle_timeout counts in neither; a header over
// max_header_bytes (431) counts in oversized_requests like a body over its limit (413).
struct TransportStats {
  std::uint64_t connections_accepted = 0;
  std::uint64_t connections_refused = 0;   // over max_connections
  std::uint64_t handshake_failures = 0;
  std::uint64_t timeouts = 0;
  std::uint64_t oversized_requests = 0;
  std::uint64_t connections_open = 0;
  std::uint64_t requests_in_flight = 0;
};

class HttpsServer {
 public:
  static Result<std::unique_ptr<HttpsServer>> create(const std::vector<ListenAddress>& listen, const TlsFiles& tls,
                                                     const ServerLimits& limits, RequestHandler handler,
                                                     BodyLimit body_limit);
  virtual ~HttpsServer() = default;
  // The ports actually bound (after port 0 was resolved), in listen order.
  virtual std::vector<std::uint16_t> bound_ports() const = 0;
  // Starts the I/O and blocking-work threads and returns.
  virtual void start() = 0;
  // Stops accepting, closes connections, joins the threads. Idempotent.
  virtual void stop() = 0;
  // Loads a new certificate and key for connections accepted from now on (SIGHUP).
  virtual Result<void> reload_tls(const TlsFiles& tls) = 0;
  virtual TransportStats stats() const = 0;
};

}  // namespace fde::verifier
