// The attestation port's transport: TLS 1.3 accept loop, one coroutine per connection on its
// own strand, deadlines on every step, and the application handler run on a blocking pool.
// A connection's whole life is serve_connection(), read top to bottom.
#include "verifier-daemon/server/https_server.hpp"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <exception>
#include <limits>
#include <mutex>
#include <optional>
#include <set>
#include <thread>
#include <utility>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ip/v6_only.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/string.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>

#include "common/util/file.hpp"
#include "common/util/secret_bytes.hpp"

namespace fde::verifier {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;
using boost::system::error_code;
using TlsStream = beast::ssl_stream<beast::tcp_stream>;

constexpr std::size_t max_tls_file = 1024 * 1024;
// The close_notify exchange at the end of a connection is a courtesy: never wait long for it.
constexpr std::chrono::milliseconds max_close_wait{2000};
// How much a keep-alive wait reads at once; the parser then takes it from the buffer.
constexpr std::size_t idle_read_size = 4096;

auto on_error(error_code& ec) { return asio::redirect_error(asio::use_awaitable, ec); }

Result<std::shared_ptr<ssl::context>> make_server_context(const TlsFiles& files) {
  auto chain = read_file(files.certificate_chain, max_tls_file);
  if (!chain) return fail_with_context("TLS certificate chain", chain.error());
  auto key_file = read_file(files.private_key, max_tls_file);
  if (!key_file) return fail_with_context("TLS private key", key_file.error());
  SecretBytes key = SecretBytes::copy_of(*key_file);
  wipe_bytes(*key_file);

  auto context = std::make_shared<ssl::context>(ssl::context::tls_server);
  SSL_CTX* native = context->native_handle();
  // Protocol v1 is TLS 1.3 only (design.md section 3).
  if (SSL_CTX_set_min_proto_version(native, TLS1_3_VERSION) != 1 ||
      SSL_CTX_set_max_proto_version(native, TLS1_3_VERSION) != 1) {
    ERR_clear_error();
    return fail(Errc::internal, "cannot restrict TLS to version 1.3");
  }
  // The agent makes one request per boot: resumption tickets would only cost bytes.
  SSL_CTX_set_num_tickets(native, 0);
  context->set_options(ssl::context::no_compression);

  error_code ec;
  context->use_certificate_chain(asio::buffer(chain->data(), chain->size()), ec);
  if (ec) {
    ERR_clear_error();
    return fail(Errc::invalid_argument,
                "TLS certificate chain " + files.certificate_chain + ": not a usable PEM chain (" + ec.message() + ")");
  }
  context->use_private_key(asio::buffer(key.data(), key.size()), ssl::context::pem, ec);
  if (ec && ERR_GET_REASON(static_cast<unsigned long>(ec.value())) == X509_R_KEY_VALUES_MISMATCH) {
    ERR_clear_error();
    return fail(Errc::invalid_argument, "TLS private key " + files.private_key + " does not match the certificate in " +
                                            files.certificate_chain);
  }
  if (ec) {
    ERR_clear_error();
    return fail(Errc::invalid_argument,
                "TLS private key " + files.private_key + ": not a usable PEM private key (" + ec.message() + ")");
  }
  if (SSL_CTX_check_private_key(native) != 1) {
    ERR_clear_error();
    return fail(Errc::invalid_argument, "TLS private key " + files.private_key + " does not match the certificate in " +
                                            files.certificate_chain);
  }
  return context;
}

std::string format_endpoint(const asio::ip::address& address, std::uint16_t port) {
  asio::ip::address shown = address;
  // A dual-stack listener sees IPv4 peers as ::ffff:a.b.c.d; log them as IPv4.
  if (shown.is_v6() && shown.to_v6().is_v4_mapped())
    shown = asio::ip::make_address_v4(asio::ip::v4_mapped, shown.to_v6());
  const std::string text = shown.to_string();
  return (shown.is_v6() ? "[" + text + "]" : text) + ":" + std::to_string(port);
}

std::string peer_of(const tcp::socket& socket) {
  error_code ec;
  const tcp::endpoint peer = socket.remote_endpoint(ec);
  return ec ? std::string("unknown") : format_endpoint(peer.address(), peer.port());
}

// The handler must not take the transport down: an exception becomes a 500.
HttpResponse invoke_handler(const RequestHandler& handler, const HttpRequest& request) {
  try {
    return handler(request);
  } catch (...) {
    return HttpResponse{500, "application/json", R"({"error":"unavailable","message":"internal error"})"};
  }
}

// The pool the handler runs on. Closing it and posting to it are ordered by a mutex, so a
// task is either refused or posted before join() starts (and then join() waits for it):
// none can be stranded in a pool whose threads are gone.
class BlockingPool {
 public:
  explicit BlockingPool(unsigned threads) : pool_(threads) {}

  template <class Task>
  bool try_post(Task&& task) {
    std::lock_guard lock(mutex_);
    if (closed_) return false;
    asio::post(pool_, std::forward<Task>(task));
    return true;
  }

  void close_and_join() {
    {
      std::lock_guard lock(mutex_);
      closed_ = true;
    }
    pool_.join();
  }

 private:
  std::mutex mutex_;
  bool closed_ = false;
  asio::thread_pool pool_;
};

// Runs the handler on the blocking pool and completes on the caller's executor (the
// connection's strand). The pending completion keeps the I/O context busy until then.
template <class CompletionToken>
auto async_run_handler(BlockingPool& pool, const RequestHandler& handler, HttpRequest request,
                       CompletionToken&& token) {
  return asio::async_initiate<CompletionToken, void(HttpResponse)>(
      [&pool, &handler](auto completion, HttpRequest owned) {
        auto home = asio::prefer(asio::get_associated_executor(completion), asio::execution::outstanding_work.tracked);
        auto deliver = [home](auto&& completion_handler, HttpResponse response) {
          asio::dispatch(
              home, [completion_handler = std::move(completion_handler), response = std::move(response)]() mutable {
                std::move(completion_handler)(std::move(response));
              });
        };
        // The task owns the completion; if the pool refuses it (stopping), it comes back.
        auto task = std::make_shared<std::optional<decltype(completion)>>(std::move(completion));
        const bool posted = pool.try_post([&handler, owned = std::move(owned), task, deliver]() mutable {
          HttpResponse response = invoke_handler(handler, owned);
          deliver(std::move(**task), std::move(response));
        });
        if (!posted)
          deliver(std::move(**task), HttpResponse{503, "application/json",
                                                  R"({"error":"unavailable","message":"the server is stopping"})"});
      },
      token, std::move(request));
}

// A response the transport writes itself, in the protocol's error format.
http::response<http::string_body> transport_error(http::status status, unsigned version, std::string_view message) {
  http::response<http::string_body> response{status, version};
  response.set(http::field::content_type, "application/json");
  response.set(http::field::cache_control, "no-store");
  response.body() = std::string(R"({"error":"bad_request","message":")") + std::string(message) + "\"}";
  response.keep_alive(false);
  response.prepare_payload();
  return response;
}

struct Counters {
  std::atomic<std::uint64_t> accepted{0};
  std::atomic<std::uint64_t> refused{0};
  std::atomic<std::uint64_t> handshake_failures{0};
  std::atomic<std::uint64_t> timeouts{0};
  std::atomic<std::uint64_t> oversized{0};
  std::atomic<std::uint64_t> open{0};
  std::atomic<std::uint64_t> in_flight{0};
};

// Decrements a counter when it goes out of scope (also when a coroutine frame is destroyed).
class CountedScope {
 public:
  explicit CountedScope(std::atomic<std::uint64_t>& counter) : counter_(&counter) {}
  CountedScope(CountedScope&& other) noexcept : counter_(std::exchange(other.counter_, nullptr)) {}
  CountedScope(const CountedScope&) = delete;
  CountedScope& operator=(const CountedScope&) = delete;
  CountedScope& operator=(CountedScope&&) = delete;
  ~CountedScope() {
    if (counter_ != nullptr) counter_->fetch_sub(1);
  }

 private:
  std::atomic<std::uint64_t>* counter_;
};

// What stop() needs to reach a live connection. `stream` is only touched on the
// connection's strand and is null once the connection has ended.
struct ConnectionControl {
  asio::any_io_executor strand;
  beast::tcp_stream* stream = nullptr;
};

class Server final : public HttpsServer {
 public:
  Server(const ServerLimits& limits, RequestHandler handler, BodyLimit body_limit, std::shared_ptr<ssl::context> tls)
      : limits_(limits),
        handler_(std::move(handler)),
        body_limit_(std::move(body_limit)),
        tls_(std::move(tls)),
        io_threads_(limits.threads != 0 ? limits.threads : std::max(1U, std::thread::hardware_concurrency())),
        io_(static_cast<int>(io_threads_)) {}

  ~Server() override { stop(); }

  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  Result<void> listen(const std::vector<ListenAddress>& addresses) {
    if (addresses.empty()) return fail(Errc::invalid_argument, "no listen address is configured");
    for (const auto& address : addresses) {
      std::string host = address.host;
      if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
      error_code ec;
      const asio::ip::address ip = asio::ip::make_address(host, ec);
      if (ec) return fail(Errc::invalid_argument, "listen address '" + address.host + "' is not an IP address");
      const tcp::endpoint endpoint(ip, address.port);
      const std::string shown = format_endpoint(ip, address.port);
      auto acceptor = std::make_unique<tcp::acceptor>(asio::make_strand(io_));
      acceptor->open(endpoint.protocol(), ec);
      if (!ec) acceptor->set_option(asio::socket_base::reuse_address(true), ec);
      // So that "0.0.0.0" and "::" can be listed together on one port.
      if (!ec && ip.is_v6()) acceptor->set_option(asio::ip::v6_only(true), ec);
      if (!ec) acceptor->bind(endpoint, ec);
      if (!ec) acceptor->listen(asio::socket_base::max_listen_connections, ec);
      if (ec) return fail(Errc::io, "cannot listen on " + shown + ": " + ec.message());
      const tcp::endpoint bound = acceptor->local_endpoint(ec);
      if (ec) return fail(Errc::io, "cannot read the port bound for " + shown + ": " + ec.message());
      ports_.push_back(bound.port());
      acceptors_.push_back(std::move(acceptor));
    }
    return {};
  }

  std::vector<std::uint16_t> bound_ports() const override { return ports_; }

  void start() override {
    std::lock_guard lock(state_mutex_);
    if (started_ || stopping_) return;
    started_ = true;
    blocking_ = std::make_unique<BlockingPool>(std::max(1U, limits_.blocking_threads));
    work_.emplace(io_.get_executor());
    for (auto& acceptor : acceptors_) {
      ++active_acceptors_;
      asio::co_spawn(acceptor->get_executor(), accept_loop(*acceptor), [this](std::exception_ptr) {
        std::lock_guard done(state_mutex_);
        --active_acceptors_;
        drained_.notify_all();
      });
    }
    threads_.reserve(io_threads_);
    for (unsigned i = 0; i < io_threads_; ++i) threads_.emplace_back([this] { run_io(); });
  }

  void stop() override {
    std::vector<std::shared_ptr<ConnectionControl>> open;
    bool was_started = false;
    {
      std::lock_guard lock(state_mutex_);
      if (stopping_) return;
      stopping_ = true;
      was_started = started_;
      open.assign(connections_.begin(), connections_.end());
    }
    for (auto& acceptor : acceptors_) {
      tcp::acceptor* target = acceptor.get();
      auto close = [target] {
        error_code ignored;
        target->close(ignored);
      };
      if (was_started) {
        asio::post(target->get_executor(), close);
      } else {
        close();
      }
    }
    // Closing the socket cancels whatever the connection waits for; its coroutine ends.
    for (auto& control : open)
      asio::post(control->strand, [control] {
        if (control->stream != nullptr) control->stream->close();
      });
    if (!was_started) return;
    // Handlers already running finish (they may be in the middle of a database write); their
    // results go to closed connections.
    blocking_->close_and_join();
    work_.reset();
    {
      std::unique_lock lock(state_mutex_);
      drained_.wait_for(lock, std::chrono::seconds(5),
                        [this] { return connections_.empty() && active_acceptors_ == 0; });
    }
    io_.stop();
    for (auto& thread : threads_)
      if (thread.joinable()) thread.join();
  }

  Result<void> reload_tls(const TlsFiles& files) override {
    auto context = make_server_context(files);
    if (!context) return tl::unexpected(context.error());
    std::lock_guard lock(tls_mutex_);
    tls_ = std::move(*context);
    return {};
  }

  TransportStats stats() const override {
    TransportStats out;
    out.connections_accepted = counters_.accepted.load();
    out.connections_refused = counters_.refused.load();
    out.handshake_failures = counters_.handshake_failures.load();
    out.timeouts = counters_.timeouts.load();
    out.oversized_requests = counters_.oversized.load();
    out.connections_open = counters_.open.load();
    out.requests_in_flight = counters_.in_flight.load();
    return out;
  }

 private:
  // Removes a connection from the registry when its coroutine ends.
  class Registration {
   public:
    Registration(Server& server, std::shared_ptr<ConnectionControl> control)
        : server_(server), control_(std::move(control)) {}
    Registration(const Registration&) = delete;
    Registration& operator=(const Registration&) = delete;
    ~Registration() {
      control_->stream = nullptr;
      std::lock_guard lock(server_.state_mutex_);
      server_.connections_.erase(control_);
      if (server_.connections_.empty()) server_.drained_.notify_all();
    }

   private:
    Server& server_;
    std::shared_ptr<ConnectionControl> control_;
  };

  void run_io() {
    // Nothing throws out of a coroutine; this only guards against a library surprise.
    for (;;) {
      try {
        io_.run();
        return;
      } catch (...) {
      }
    }
  }

  std::shared_ptr<ssl::context> current_tls() const {
    std::lock_guard lock(tls_mutex_);
    return tls_;
  }

  bool stopping() const {
    std::lock_guard lock(state_mutex_);
    return stopping_;
  }

  asio::awaitable<void> accept_loop(tcp::acceptor& acceptor) {
    for (;;) {
      error_code ec;
      // Each connection gets its own strand: its handlers never run concurrently.
      const asio::any_io_executor strand = asio::make_strand(io_);
      tcp::socket socket = co_await acceptor.async_accept(strand, on_error(ec));
      if (ec) {
        if (ec == asio::error::operation_aborted || !acceptor.is_open() || stopping()) co_return;
        // Out of descriptors or memory: back off instead of spinning on the error.
        asio::steady_timer pause(co_await asio::this_coro::executor, std::chrono::milliseconds(50));
        co_await pause.async_wait(on_error(ec));
        continue;
      }
      if (counters_.open.fetch_add(1) >= limits_.max_connections) {
        counters_.open.fetch_sub(1);
        counters_.refused.fetch_add(1);
        socket.close(ec);
        continue;
      }
      counters_.accepted.fetch_add(1);
      // Responses go out as header and body records; don't let Nagle hold the second back.
      socket.set_option(tcp::no_delay(true), ec);
      CountedScope slot(counters_.open);
      asio::co_spawn(strand, serve(std::move(socket), current_tls(), std::move(slot)), [](std::exception_ptr) {});
    }
  }

  // The slot is a parameter so that it is released even if the coroutine never runs.
  asio::awaitable<void> serve(tcp::socket socket, std::shared_ptr<ssl::context> tls, CountedScope slot) {
    (void)slot;
    try {
      co_await serve_connection(std::move(socket), *tls);
    } catch (...) {
      // A connection's failure stays with that connection.
    }
  }

  asio::awaitable<void> serve_connection(tcp::socket socket, ssl::context& tls) {
    const std::string peer = peer_of(socket);
    TlsStream stream(std::move(socket), tls);
    beast::tcp_stream& transport = beast::get_lowest_layer(stream);

    auto control = std::make_shared<ConnectionControl>();
    control->strand = co_await asio::this_coro::executor;
    control->stream = &transport;
    {
      std::lock_guard lock(state_mutex_);
      if (stopping_) co_return;
      connections_.insert(control);
    }
    Registration registration(*this, control);

    error_code ec;
    transport.expires_after(limits_.handshake_timeout);
    co_await stream.async_handshake(ssl::stream_base::server, on_error(ec));
    if (ec) {
      (ec == beast::error::timeout ? counters_.timeouts : counters_.handshake_failures).fetch_add(1);
      co_return;
    }

    beast::flat_buffer buffer;
    for (std::size_t served = 0; served < limits_.max_requests_per_connection; ++served) {
      if (served > 0 && buffer.size() == 0) {
        // Keep-alive: wait for the next request's first bytes; the request deadline starts then.
        transport.expires_after(limits_.idle_timeout);
        const std::size_t n = co_await stream.async_read_some(buffer.prepare(idle_read_size), on_error(ec));
        if (ec) co_return;  // the client left, or stayed idle too long: a normal end
        buffer.commit(n);
      }

      transport.expires_after(limits_.request_timeout);
      http::request_parser<http::string_body> parser;
      parser.header_limit(static_cast<std::uint32_t>(
          std::min<std::size_t>(limits_.max_header_bytes, std::numeric_limits<std::uint32_t>::max())));
      // The real limit depends on the target and is set once the header is known.
      parser.body_limit(std::numeric_limits<std::uint64_t>::max());
      co_await http::async_read_header(stream, buffer, parser, on_error(ec));
      if (ec == http::error::header_limit) {
        counters_.oversized.fetch_add(1);
        co_await refuse(stream, http::status::request_header_fields_too_large, 11, "request header too large");
        co_return;
      }
      if (ec == beast::error::timeout) counters_.timeouts.fetch_add(1);
      if (ec == http::error::end_of_stream || ec == http::error::partial_message || ec == beast::error::timeout ||
          ec == asio::error::operation_aborted || ec == ssl::error::stream_truncated || ec == asio::error::eof)
        co_return;
      if (ec) {
        if (ec.category() == http::make_error_code(http::error::bad_target).category())
          co_await refuse(stream, http::status::bad_request, 11, "malformed HTTP request");
        co_return;
      }

      const unsigned version = parser.get().version();
      std::string method(parser.get().method_string());
      std::string target(parser.get().target());
      const std::size_t limit = body_limit_ ? body_limit_(method, target) : 0;
      if (const auto length = parser.content_length(); length && *length > limit) {
        // Refused from the header alone: the body is never read.
        counters_.oversized.fetch_add(1);
        co_await refuse(stream, http::status::payload_too_large, version, "request body too large");
        co_return;
      }
      parser.body_limit(static_cast<std::uint64_t>(limit));  // also bounds a chunked body
      // curl and others wait up to a second for this before sending a large body.
      if (!parser.is_done() && beast::iequals(parser.get()[http::field::expect], "100-continue")) {
        http::response<http::empty_body> go_on{http::status::continue_, version};
        co_await http::async_write(stream, go_on, on_error(ec));
        if (ec) co_return;
      }
      // No new deadline: request_timeout covers header and body together, so a client that
      // dribbles its body is cut off just like one that dribbles its header.
      co_await http::async_read(stream, buffer, parser, on_error(ec));
      if (ec == http::error::body_limit) {
        counters_.oversized.fetch_add(1);
        co_await refuse(stream, http::status::payload_too_large, version, "request body too large");
        co_return;
      }
      if (ec == beast::error::timeout) counters_.timeouts.fetch_add(1);
      if (ec) co_return;

      const bool keep_alive =
          parser.get().keep_alive() && served + 1 < limits_.max_requests_per_connection && !stopping();
      HttpRequest request;
      request.method = std::move(method);
      request.target = std::move(target);
      request.content_type = std::string(parser.get()[http::field::content_type]);
      request.body = std::move(parser.get().body());
      request.peer = peer;

      counters_.in_flight.fetch_add(1);
      CountedScope in_flight(counters_.in_flight);
      HttpResponse answer = co_await async_run_handler(*blocking_, handler_, std::move(request), asio::use_awaitable);

      http::response<http::string_body> response{http::status::ok, version};
      // A final status only; 204 and 304 carry no body by definition (Beast would throw).
      response.result(answer.status >= 200 && answer.status <= 599 ? answer.status : 500U);
      const bool bodiless = answer.status == 204 || answer.status == 304;
      if (!answer.content_type.empty() && !bodiless) response.set(http::field::content_type, answer.content_type);
      response.set(http::field::cache_control, "no-store");
      for (const auto& [name, value] : answer.headers) response.set(name, value);
      if (!bodiless) response.body() = std::move(answer.body);
      response.keep_alive(keep_alive);
      response.prepare_payload();
      transport.expires_after(limits_.request_timeout);
      co_await http::async_write(stream, response, on_error(ec));
      if (ec == beast::error::timeout) counters_.timeouts.fetch_add(1);
      if (ec) co_return;
      if (!keep_alive) break;
    }

    transport.expires_after(std::min(limits_.handshake_timeout, max_close_wait));
    co_await stream.async_shutdown(on_error(ec));  // most clients just close: errors are normal
  }

  // Writes a transport-level error and closes at once, without reading what the client may
  // still be sending (or attempting a TLS close it would not answer).
  asio::awaitable<void> refuse(TlsStream& stream, http::status status, unsigned version, std::string_view message) {
    auto response = transport_error(status, version, message);
    error_code ec;
    beast::tcp_stream& transport = beast::get_lowest_layer(stream);
    transport.expires_after(limits_.request_timeout);
    co_await http::async_write(stream, response, on_error(ec));
    transport.socket().shutdown(tcp::socket::shutdown_send, ec);
    transport.close();
  }

  const ServerLimits limits_;
  const RequestHandler handler_;
  const BodyLimit body_limit_;

  mutable std::mutex tls_mutex_;
  std::shared_ptr<ssl::context> tls_;  // for connections accepted from now on

  Counters counters_;

  mutable std::mutex state_mutex_;
  std::condition_variable drained_;
  bool started_ = false;
  bool stopping_ = false;
  int active_acceptors_ = 0;
  std::set<std::shared_ptr<ConnectionControl>> connections_;

  std::unique_ptr<BlockingPool> blocking_;
  std::vector<std::thread> threads_;
  const unsigned io_threads_;
  // Declared after everything a coroutine frame touches: destroying the context destroys
  // frames that never finished, and those still reach the registry and the counters.
  asio::io_context io_;
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work_;
  std::vector<std::unique_ptr<tcp::acceptor>> acceptors_;  // each used on its own strand
  std::vector<std::uint16_t> ports_;
};

}  // namespace

Result<std::unique_ptr<HttpsServer>> HttpsServer::create(const std::vector<ListenAddress>& listen, const TlsFiles& tls,
                                                         const ServerLimits& limits, RequestHandler handler,
                                                         BodyLimit body_limit) {
  if (!handler) return fail(Errc::invalid_argument, "no request handler");
  if (limits.max_connections == 0 || limits.max_requests_per_connection == 0 || limits.max_header_bytes == 0)
    return fail(Errc::invalid_argument, "server limits must be positive");
  auto context = make_server_context(tls);
  if (!context) return tl::unexpected(context.error());
  auto server = std::make_unique<Server>(limits, std::move(handler), std::move(body_limit), std::move(*context));
  if (auto ok = server->listen(listen); !ok) return tl::unexpected(ok.error());
  return std::unique_ptr<HttpsServer>(std::move(server));
}

}  // namespace fde::verifier
