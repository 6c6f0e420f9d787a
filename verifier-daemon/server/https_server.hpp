// The attestation port: HTTP/1.1 over TLS 1.3 only, on Boost.Asio/Beast, one coroutine per
// connection, deadlines on every step, caps on connections (in total and per peer) that shed
// the oldest unfinished connection rather than refuse a new one, a budget for request bodies
// held in memory, and bodies bounded per target before they are read (docs/protocol.md, "Limits and timeouts").
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
  // Slots. When every slot is taken, a new connection takes the slot of the oldest one that
  // has not finished its request (handshake, headers or body still coming) or waits idle
  // between keep-alive requests, if that one is at least shed_after old; otherwise the new
  // connection is refused. The same holds within one peer (an IPv4 address or an IPv6 /64)
  // at its own cap. A connection whose request is being answered is never shed.
  std::size_t max_connections = 1024;
  std::size_t max_connections_per_peer = 64;  // 0: no per-peer cap
  std::chrono::milliseconds shed_after{1'000};
  // Request-body bytes held in memory across all connections, counted as they arrive. A
  // body that does not fit sheds bodies that started before it (at least shed_after ago)
  // and are still arriving, oldest first; if that cannot make room it gets 503 (the agent
  // retries).
  std::size_t max_buffered_body_bytes = 64 * 1024 * 1024;
  // The first bytes of each body are not counted (bounded by max_connections anyway), so a
  // small request never gets 503 because large ones hold the budget.
  std::size_t body_bytes_per_connection = 16 * 1024;
  // Admission in arrival order. At most max_active connections are in their TLS handshake
  // (the expensive part of a connection on the I/O threads) at once; the others wait, holding
  // only their socket and the ClientHello they sent (read whole first), and start in the
  // order they were accepted, so under a storm early arrivals finish early instead of every
  // handshake progressing together. A slot is held for at most 2 s (and handshake_timeout).
  // Requests then run on the blocking pool oldest connection first. 0: four per thread (I/O
  // and blocking threads together). A connection that
  // waited queue_timeout since its accept is closed before its handshake (the agent retries on
  // its schedule) rather than served an answer it has already given up on; keep it well under
  // the agents' attempt timeout (30 s).
  std::size_t max_active = 0;
  std::chrono::milliseconds queue_timeout{10'000};
  // Deadlines. From accept: the first byte of the TLS ClientHello, then the whole
  // handshake (once the ClientHello is in and an active slot granted, the rest of the
  // handshake has at most 2 s from the grant). From the end of the handshake (or a
  // keep-alive request's first byte): the request headers. From the end of the headers: the
  // body. Writing a response has request_timeout again. Between keep-alive requests:
  // idle_timeout.
  std::chrono::milliseconds first_byte_timeout{2'000};
  std::chrono::milliseconds handshake_timeout{5'000};
  std::chrono::milliseconds header_timeout{5'000};
  std::chrono::milliseconds request_timeout{15'000};
  // An agent's attempt is two requests (challenge, attest) on one connection, with the
  // token fetched in between: a short idle wait and a small request count suffice.
  std::chrono::milliseconds idle_timeout{5'000};
  std::size_t max_header_bytes = 8 * 1024;
  std::size_t max_requests_per_connection = 4;
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
  std::uint64_t connections_refused = 0;  // no slot: every slot (of the peer) was answering
  std::uint64_t connections_shed = 0;     // closed unfinished to make room (slots or body memory)
  std::uint64_t handshake_failures = 0;
  std::uint64_t timeouts = 0;
  std::uint64_t oversized_requests = 0;
  std::uint64_t bodies_refused = 0;  // 503: no room in max_buffered_body_bytes
  std::uint64_t connections_queued = 0;  // had to wait for an active slot (max_active)
  std::uint64_t queue_timeouts = 0;      // closed unhandshaken after waiting queue_timeout
  std::uint64_t clients_gone = 0;        // request not handled: the client had already closed
  std::uint64_t connections_waiting = 0; // waiting for an active slot now
  std::uint64_t connections_active = 0;  // holding an active slot now
  std::uint64_t connections_open = 0;
  std::uint64_t requests_in_flight = 0;
  std::uint64_t body_bytes_buffered = 0;
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
