// Plain-HTTP operator listener: one I/O thread, one coroutine per connection, one request
// per connection, read top to bottom in serve().
#include "verifier-daemon/server/operator_server.hpp"

#include <atomic>
#include <mutex>
#include <optional>
#include <thread>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ip/v6_only.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>

namespace fde::verifier {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using boost::system::error_code;

auto on_error(error_code& ec) { return asio::redirect_error(asio::use_awaitable, ec); }

std::string peer_text(const tcp::socket& socket) {
  error_code ec;
  const tcp::endpoint peer = socket.remote_endpoint(ec);
  if (ec) return "unknown";
  const std::string host = peer.address().to_string();
  return (peer.address().is_v6() ? "[" + host + "]" : host) + ":" + std::to_string(peer.port());
}

class Server final : public OperatorServer {
 public:
  Server(RequestHandler handler, const OperatorServerLimits& limits) : handler_(std::move(handler)), limits_(limits) {}
  ~Server() override { stop(); }
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  Result<void> listen(const ListenAddress& address) {
    std::string host = address.host;
    if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
    error_code ec;
    const asio::ip::address ip = asio::ip::make_address(host, ec);
    if (ec) return fail(Errc::invalid_argument, "operator listen address '" + address.host + "' is not an IP address");
    const tcp::endpoint endpoint(ip, address.port);
    acceptor_.open(endpoint.protocol(), ec);
    if (!ec) acceptor_.set_option(asio::socket_base::reuse_address(true), ec);
    if (!ec && ip.is_v6()) acceptor_.set_option(asio::ip::v6_only(true), ec);
    if (!ec) acceptor_.bind(endpoint, ec);
    if (!ec) acceptor_.listen(asio::socket_base::max_listen_connections, ec);
    const std::string shown = (ip.is_v6() ? "[" + ip.to_string() + "]" : ip.to_string()) + ":" +
                              std::to_string(address.port);
    if (ec) return fail(Errc::io, "cannot listen on " + shown + " (operator listener): " + ec.message());
    port_ = acceptor_.local_endpoint(ec).port();
    if (ec) return fail(Errc::io, "cannot read the port bound for " + shown + ": " + ec.message());
    return {};
  }

  std::uint16_t bound_port() const override { return port_; }

  void start() override {
    std::lock_guard lock(mutex_);
    if (started_ || stopped_) return;
    started_ = true;
    asio::co_spawn(io_, accept_loop(), [](std::exception_ptr) {});
    thread_ = std::thread([this] {
      for (;;) {
        try {
          io_.run();
          return;
        } catch (...) {
          // A connection's failure stays with that connection.
        }
      }
    });
  }

  void stop() override {
    {
      std::lock_guard lock(mutex_);
      if (stopped_) return;
      stopped_ = true;
    }
    asio::post(io_, [this] {
      error_code ignored;
      acceptor_.close(ignored);
    });
    io_.stop();
    if (thread_.joinable()) thread_.join();
  }

 private:
  asio::awaitable<void> accept_loop() {
    for (;;) {
      error_code ec;
      tcp::socket socket = co_await acceptor_.async_accept(on_error(ec));
      if (ec) {
        if (ec == asio::error::operation_aborted || !acceptor_.is_open()) co_return;
        asio::steady_timer pause(io_, std::chrono::milliseconds(50));  // out of descriptors: back off
        co_await pause.async_wait(on_error(ec));
        continue;
      }
      if (open_.load() >= limits_.max_connections) {
        socket.close(ec);
        continue;
      }
      ++open_;
      asio::co_spawn(io_, serve(std::move(socket)), [this](std::exception_ptr) { --open_; });
    }
  }

  asio::awaitable<void> serve(tcp::socket socket) {
    const std::string peer = peer_text(socket);
    beast::tcp_stream stream(std::move(socket));
    stream.expires_after(limits_.request_timeout);
    beast::flat_buffer buffer;
    http::request_parser<http::empty_body> parser;
    parser.header_limit(static_cast<std::uint32_t>(limits_.max_header_bytes));
    error_code ec;
    co_await http::async_read(stream, buffer, parser, on_error(ec));

    HttpResponse answer;
    if (ec == http::error::unexpected_body) {
      answer = HttpResponse{413, "text/plain; charset=utf-8", "requests take no body\n"};
    } else if (ec == http::error::header_limit) {
      answer = HttpResponse{431, "text/plain; charset=utf-8", "request header too large\n"};
    } else if (ec) {
      co_return;  // closed, timed out or not HTTP: nothing to answer
    } else {
      HttpRequest request;
      request.method = std::string(parser.get().method_string());
      request.target = std::string(parser.get().target());
      request.peer = peer;
      try {
        answer = handler_(request);
      } catch (...) {
        answer = HttpResponse{500, "text/plain; charset=utf-8", "internal error\n"};
      }
    }
    http::response<http::string_body> response{http::status::ok, 11};
    response.result(answer.status >= 200 && answer.status <= 599 ? answer.status : 500U);
    if (!answer.content_type.empty()) response.set(http::field::content_type, answer.content_type);
    response.set(http::field::cache_control, "no-store");
    for (const auto& [name, value] : answer.headers) response.set(name, value);
    response.body() = std::move(answer.body);
    response.keep_alive(false);
    response.prepare_payload();
    co_await http::async_write(stream, response, on_error(ec));
    stream.socket().shutdown(tcp::socket::shutdown_both, ec);
  }

  const RequestHandler handler_;
  const OperatorServerLimits limits_;
  std::atomic<std::size_t> open_{0};
  std::mutex mutex_;
  bool started_ = false;
  bool stopped_ = false;
  std::uint16_t port_ = 0;
  std::thread thread_;
  // After everything a coroutine frame touches: destroying the context destroys the frames
  // of connections that were still open at stop().
  asio::io_context io_{1};
  tcp::acceptor acceptor_{io_};
};

}  // namespace

Result<std::unique_ptr<OperatorServer>> OperatorServer::create(const ListenAddress& listen, RequestHandler handler,
                                                               const OperatorServerLimits& limits) {
  if (!handler) return fail(Errc::invalid_argument, "no request handler");
  if (limits.max_connections == 0 || limits.max_header_bytes == 0)
    return fail(Errc::invalid_argument, "operator listener limits must be positive");
  auto server = std::make_unique<Server>(std::move(handler), limits);
  if (auto ok = server->listen(listen); !ok) return tl::unexpected(ok.error());
  return std::unique_ptr<OperatorServer>(std::move(server));
}

}  // namespace fde::verifier
