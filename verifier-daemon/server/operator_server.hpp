// The operator listener: plain HTTP/1.1 for monitoring (health, readiness, metrics), on
// 127.0.0.1 by default and never on the attestation port. It is deliberately small: GET
// only, no request body, one request per connection, one I/O thread that also runs the
// handler, a short deadline and a cap on open connections. If it is bound to a non-loopback
// address, whoever can reach that address reads the metrics: restrict it by firewall.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>

#include "common/util/error.hpp"
#include "verifier-daemon/server/http_types.hpp"
#include "verifier-daemon/server/https_server.hpp"

namespace fde::verifier {

struct OperatorServerLimits {
  std::size_t max_connections = 16;  // further connections are closed at once
  std::chrono::milliseconds request_timeout{5'000};  // whole exchange: request and response
  std::size_t max_header_bytes = 8 * 1024;
};

class OperatorServer {
 public:
  static Result<std::unique_ptr<OperatorServer>> create(const ListenAddress& listen, RequestHandler handler,
                                                        const OperatorServerLimits& limits = {});
  virtual ~OperatorServer() = default;
  // The port actually bound (port 0 resolved).
  virtual std::uint16_t bound_port() const = 0;
  // Starts the I/O thread and returns.
  virtual void start() = 0;
  // Stops accepting, drops open connections, joins the thread. Idempotent.
  virtual void stop() = 0;
};

}  // namespace fde::verifier
