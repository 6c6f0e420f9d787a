// Hostile clients for the daemon's attestation port, for the flood test and the memory
// benchmark: many connections on loopback, each misbehaving in one way and opened again a
// while after the daemon drops it, all run by coroutines on one thread of the test process.
//
// Kinds: an idle TCP socket that never speaks; a TLS handshake that never finishes (half a
// ClientHello record); request headers dribbled one byte at a time after a real handshake;
// a large body announced, mostly sent at once, then trickled without ever ending.
// Connections come from the source addresses given (127.0.0.0/8 is all loopback on Linux),
// so that per-peer caps see many peers or one.
#pragma once

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

namespace fde::itest {

struct HostileMix {
  int idle_tcp = 0;
  int partial_handshakes = 0;
  int slow_headers = 0;
  int trickled_bodies = 0;
  // Each connection binds the next of these, round robin ("127.0.1.7"); empty: 127.0.0.1.
  std::vector<std::string> sources;
  std::size_t body_length = 1'400'000;        // announced in Content-Length, never completed
  std::size_t body_first_burst = 160 * 1024;  // sent at once after the headers
  std::size_t trickle_bytes = 4 * 1024;       // then this much per trickle_interval
  std::chrono::milliseconds trickle_interval{500};
  std::chrono::milliseconds header_byte_interval{500};
  std::chrono::milliseconds reconnect_delay{1000};  // after the daemon dropped one
  bool reconnect = true;
};

class HostileClients {
 public:
  struct Stats {
    long connects = 0;          // TCP connections established, reopened ones included
    long open = 0;              // established and not yet seen closed by the daemon
    long dropped = 0;           // seen closed by the daemon
    long connect_failures = 0;  // refused or unroutable
    long handshakes = 0;        // TLS handshakes completed (slow headers, trickled bodies)
    long body_bytes_sent = 0;
  };

  HostileClients(std::uint16_t port, HostileMix mix) : port_(port), mix_(std::move(mix)), tls_(make_tls()) {}
  ~HostileClients() { stop(); }
  HostileClients(const HostileClients&) = delete;
  HostileClients& operator=(const HostileClients&) = delete;

  void start() {
    int index = 0;
    auto spawn = [&](int count, Kind kind) {
      for (int i = 0; i < count; ++i, ++index)
        boost::asio::co_spawn(*io_, run(index, kind), boost::asio::detached);
    };
    spawn(mix_.idle_tcp, Kind::idle_tcp);
    spawn(mix_.partial_handshakes, Kind::partial_handshake);
    spawn(mix_.slow_headers, Kind::slow_headers);
    spawn(mix_.trickled_bodies, Kind::trickled_body);
    thread_ = std::thread([this] { io_->run(); });
  }

  // Ends every coroutine and closes every socket (destroying the io_context destroys the
  // coroutine frames that own them).
  void stop() {
    stopping_ = true;
    if (!io_) return;
    io_->stop();
    if (thread_.joinable()) thread_.join();
    io_.reset();
  }

  int total() const { return mix_.idle_tcp + mix_.partial_handshakes + mix_.slow_headers + mix_.trickled_bodies; }

  Stats stats() const {
    return Stats{connects_.load(), open_.load(), dropped_.load(), connect_failures_.load(), handshakes_.load(),
                 body_bytes_.load()};
  }

 private:
  enum class Kind { idle_tcp, partial_handshake, slow_headers, trickled_body };
  using tcp = boost::asio::ip::tcp;
  using error_code = boost::system::error_code;

  static auto on_error(error_code& ec) { return boost::asio::redirect_error(boost::asio::use_awaitable, ec); }

  static std::shared_ptr<boost::asio::ssl::context> make_tls() {
    auto context = std::make_shared<boost::asio::ssl::context>(boost::asio::ssl::context::tls_client);
    context->set_verify_mode(boost::asio::ssl::verify_none);  // the attacker does not care who answers
    return context;
  }

  boost::asio::awaitable<void> pause(std::chrono::milliseconds duration) {
    boost::asio::steady_timer timer(*io_, duration);
    error_code ec;
    co_await timer.async_wait(on_error(ec));
  }

  // Reads until the daemon closes the connection.
  template <class Stream>
  static boost::asio::awaitable<void> wait_for_close(Stream& stream) {
    std::array<char, 1024> sink{};
    error_code ec;
    while (!ec) co_await stream.async_read_some(boost::asio::buffer(sink), on_error(ec));
  }

  boost::asio::awaitable<void> run(int index, Kind kind) {
    const auto endpoint = tcp::endpoint(boost::asio::ip::make_address("127.0.0.1"), port_);
    while (!stopping_) {
      tcp::socket socket(*io_);
      error_code ec;
      socket.open(tcp::v4(), ec);
      if (!ec && !mix_.sources.empty()) {
        const auto& source = mix_.sources[static_cast<std::size_t>(index) % mix_.sources.size()];
        socket.bind(tcp::endpoint(boost::asio::ip::make_address(source), 0), ec);
      }
      if (!ec) co_await socket.async_connect(endpoint, on_error(ec));
      if (ec) {
        connect_failures_.fetch_add(1);
        co_await pause(mix_.reconnect_delay);
        continue;
      }
      connects_.fetch_add(1);
      open_.fetch_add(1);
      switch (kind) {
        case Kind::idle_tcp: co_await wait_for_close(socket); break;
        case Kind::partial_handshake: {
          // A TLS record header announcing a ClientHello, and two bytes of it.
          const std::array<unsigned char, 7> half{0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00};
          co_await boost::asio::async_write(socket, boost::asio::buffer(half), on_error(ec));
          if (!ec) co_await wait_for_close(socket);
          break;
        }
        case Kind::slow_headers: co_await slow_headers(std::move(socket)); break;
        case Kind::trickled_body: co_await trickled_body(std::move(socket)); break;
      }
      open_.fetch_sub(1);
      dropped_.fetch_add(1);
      if (!mix_.reconnect) co_return;
      co_await pause(mix_.reconnect_delay);
    }
  }

  boost::asio::awaitable<void> slow_headers(tcp::socket socket) {
    boost::asio::ssl::stream<tcp::socket> stream(std::move(socket), *tls_);
    error_code ec;
    co_await stream.async_handshake(boost::asio::ssl::stream_base::client, on_error(ec));
    if (!ec) handshakes_.fetch_add(1);
    const std::string start = "POST /v1/attest HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ";
    if (!ec) co_await boost::asio::async_write(stream, boost::asio::buffer(start), on_error(ec));
    while (!ec && !stopping_) {
      co_await pause(mix_.header_byte_interval);
      co_await boost::asio::async_write(stream, boost::asio::buffer("s", 1), on_error(ec));
    }
  }

  boost::asio::awaitable<void> trickled_body(tcp::socket socket) {
    boost::asio::ssl::stream<tcp::socket> stream(std::move(socket), *tls_);
    error_code ec;
    co_await stream.async_handshake(boost::asio::ssl::stream_base::client, on_error(ec));
    if (!ec) handshakes_.fetch_add(1);
    const std::string head = "POST /v1/attest HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                             "Content-Length: " + std::to_string(mix_.body_length) + "\r\n\r\n";
    if (!ec) co_await boost::asio::async_write(stream, boost::asio::buffer(head), on_error(ec));
    std::size_t sent = 0;
    // Everything but the last byte, first in a burst, then in dribbles: the request never ends.
    if (!ec) co_await send_body(stream, sent, mix_.body_first_burst, ec);
    while (!ec && !stopping_ && sent + 1 < mix_.body_length) {
      co_await pause(mix_.trickle_interval);
      co_await send_body(stream, sent, mix_.trickle_bytes, ec);
    }
    if (!ec) co_await wait_for_close(stream);
  }

  boost::asio::awaitable<void> send_body(boost::asio::ssl::stream<tcp::socket>& stream, std::size_t& sent,
                                         std::size_t amount, error_code& ec) {
    static const std::string filler(16 * 1024, 'a');  // one TLS record
    amount = std::min(amount, mix_.body_length - 1 - sent);
    while (amount > 0 && !ec) {
      const std::size_t piece = std::min(amount, filler.size());
      co_await boost::asio::async_write(stream, boost::asio::buffer(filler.data(), piece), on_error(ec));
      if (ec) break;
      sent += piece;
      amount -= piece;
      body_bytes_.fetch_add(static_cast<long>(piece));
    }
  }

  const std::uint16_t port_;
  const HostileMix mix_;
  std::shared_ptr<boost::asio::ssl::context> tls_;
  std::unique_ptr<boost::asio::io_context> io_ = std::make_unique<boost::asio::io_context>(1);
  std::thread thread_;
  std::atomic<bool> stopping_{false};
  std::atomic<long> connects_{0};
  std::atomic<long> open_{0};
  std::atomic<long> dropped_{0};
  std::atomic<long> connect_failures_{0};
  std::atomic<long> handshakes_{0};
  std::atomic<long> body_bytes_{0};
};

}  // namespace fde::itest
