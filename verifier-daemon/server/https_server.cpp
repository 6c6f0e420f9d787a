// The attestation port's transport: TLS 1.3 accept loop, one coroutine per connection on its
// own strand, deadlines on every step, admission by ConnectionTable (slots and body memory),
// TLS handshakes a bounded number at a time in arrival order (ActiveGate), and the
// application handler run on a blocking pool, oldest connection first. A connection's whole life is
// serve_connection(), read top to bottom.
#include "verifier-daemon/server/https_server.hpp"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <sys/socket.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <deque>
#include <functional>
#include <queue>
#include <exception>
#include <limits>
#include <mutex>
#include <optional>
#include <thread>
#include <unordered_map>
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
#include "verifier-daemon/server/connection_table.hpp"

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
// The first TLS record is read whole before a connection queues for an active slot: a
// record holds at most 2^14 bytes of plaintext (a ClientHello is a few hundred bytes).
constexpr std::size_t max_hello_record = 5 + 16 * 1024;
// How long a handshake may hold an active slot (it also has handshake_timeout from then).
constexpr std::chrono::milliseconds max_active_handshake{2000};

// The size of the first TLS record, from its 5-byte header once those bytes are in: a
// handshake record's announced length (capped), anything else as read so far (the handshake
// then rejects it).
std::size_t hello_record_size(const char* data, std::size_t size) {
  if (size < 5) return data[0] == 0x16 ? 5 : size;
  if (data[0] != 0x16) return size;
  const std::size_t length = (static_cast<std::size_t>(static_cast<unsigned char>(data[3])) << 8) |
                             static_cast<unsigned char>(data[4]);
  return std::min(max_hello_record, 5 + length);
}

// Connections taken from the kernel's queue in one go before other handlers get a turn.
constexpr std::size_t max_accept_batch = 256;

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
  // Protocol v1 is TLS 1.3 only (docs/protocol.md, "Transport").
  if (SSL_CTX_set_min_proto_version(native, TLS1_3_VERSION) != 1 ||
      SSL_CTX_set_max_proto_version(native, TLS1_3_VERSION) != 1) {
    ERR_clear_error();
    return fail(Errc::internal, "cannot restrict TLS to version 1.3");
  }
  // The agent makes one connection per boot attempt: resumption tickets would only cost bytes.
  SSL_CTX_set_num_tickets(native, 0);
  // An idle connection gives its TLS record buffers back (about 34 KiB each) until it reads
  // or writes again: a thousand idle sockets should not cost a thousand buffer pairs.
  // The chain sent is the one configured, as it is: without this OpenSSL would try to build
  // it from an (empty) store on every handshake, one wasted X509_verify_cert each time.
  SSL_CTX_set_mode(native, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_NO_AUTO_CHAIN);
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

// The pool the handler runs on. Its queue is ordered by the accept time of each request's
// connection, oldest first (then by posting order), not by when the request came: in a boot
// storm an agent that arrived early has its attest handled before the challenges of agents
// that arrived after it, so early arrivals finish early instead of every agent progressing
// together. Closing it and posting to it are ordered by the mutex, so a task is either
// refused or queued before close_and_join() starts (and then runs before the threads end):
// none can be stranded in a pool whose threads are gone.
class BlockingPool {
 public:
  using Clock = std::chrono::steady_clock;

  explicit BlockingPool(unsigned threads) {
    threads_.reserve(threads);
    for (unsigned i = 0; i < threads; ++i) threads_.emplace_back([this] { run(); });
  }
  ~BlockingPool() { close_and_join(); }
  BlockingPool(const BlockingPool&) = delete;
  BlockingPool& operator=(const BlockingPool&) = delete;

  bool try_post(Clock::time_point order, std::function<void()> task) {
    {
      std::lock_guard lock(mutex_);
      if (closed_) return false;
      queue_.push(Task{order, next_sequence_++, std::move(task)});
    }
    ready_.notify_one();
    return true;
  }

  void close_and_join() {
    {
      std::lock_guard lock(mutex_);
      closed_ = true;
    }
    ready_.notify_all();
    for (auto& thread : threads_)
      if (thread.joinable()) thread.join();
  }

 private:
  struct Task {
    Clock::time_point order;
    std::uint64_t sequence = 0;
    std::function<void()> run;
    // std::priority_queue puts the greatest first: the greatest here is the oldest.
    bool operator<(const Task& other) const {
      return order != other.order ? order > other.order : sequence > other.sequence;
    }
  };

  void run() {
    for (;;) {
      std::function<void()> task;
      {
        std::unique_lock lock(mutex_);
        ready_.wait(lock, [this] { return closed_ || !queue_.empty(); });
        if (queue_.empty()) return;  // closed and drained
        task = std::move(const_cast<Task&>(queue_.top()).run);
        queue_.pop();
      }
      task();
    }
  }

  std::mutex mutex_;
  std::condition_variable ready_;
  bool closed_ = false;
  std::uint64_t next_sequence_ = 0;
  std::priority_queue<Task> queue_;
  std::vector<std::thread> threads_;
};

// Runs the handler on the blocking pool and completes on the caller's executor (the
// connection's strand). The pending completion keeps the I/O context busy until then.
template <class CompletionToken>
auto async_run_handler(BlockingPool& pool, BlockingPool::Clock::time_point order, const RequestHandler& handler,
                       HttpRequest request, CompletionToken&& token) {
  return asio::async_initiate<CompletionToken, void(HttpResponse)>(
      [&pool, order, &handler](auto completion, HttpRequest owned) {
        auto home = asio::prefer(asio::get_associated_executor(completion), asio::execution::outstanding_work.tracked);
        auto deliver = [home](auto&& completion_handler, HttpResponse response) {
          asio::dispatch(
              home, [completion_handler = std::move(completion_handler), response = std::move(response)]() mutable {
                std::move(completion_handler)(std::move(response));
              });
        };
        // The task owns the completion; if the pool refuses it (stopping), it comes back.
        auto task = std::make_shared<std::optional<decltype(completion)>>(std::move(completion));
        const bool posted = pool.try_post(order, [&handler, owned = std::move(owned), task, deliver]() mutable {
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
http::response<http::string_body> transport_error(http::status status, unsigned version, std::string_view code,
                                                  std::string_view message) {
  http::response<http::string_body> response{status, version};
  response.set(http::field::content_type, "application/json");
  response.set(http::field::cache_control, "no-store");
  if (status == http::status::service_unavailable) response.set(http::field::retry_after, "1");
  response.body() = std::string(R"({"error":")") + std::string(code) + R"(","message":")" + std::string(message) + "\"}";
  response.keep_alive(false);
  response.prepare_payload();
  return response;
}

struct Counters {
  std::atomic<std::uint64_t> queued{0};
  std::atomic<std::uint64_t> queue_timeouts{0};
  std::atomic<std::uint64_t> clients_gone{0};
  std::atomic<std::uint64_t> accepted{0};
  std::atomic<std::uint64_t> refused{0};
  std::atomic<std::uint64_t> shed{0};
  std::atomic<std::uint64_t> handshake_failures{0};
  std::atomic<std::uint64_t> timeouts{0};
  std::atomic<std::uint64_t> oversized{0};
  std::atomic<std::uint64_t> bodies_refused{0};
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

// What the server needs to reach a live connection from another thread (to shed it, or at
// stop()). `stream` and `closed` are only touched on the connection's strand; `stream` is
// null until the coroutine has started and after it has ended.
struct ConnectionControl {
  ConnectionTable::Id id = 0;
  asio::any_io_executor strand;
  beast::tcp_stream* stream = nullptr;
  asio::steady_timer* queue_timer = nullptr;  // set while waiting for an active slot
  bool closed = false;
};

// Closing the socket cancels whatever the connection waits for; its coroutine then ends. A
// connection whose coroutine has not started yet sees `closed` and ends at once.
void close_on_strand(const std::shared_ptr<ConnectionControl>& control) {
  asio::post(control->strand, [control] {
    control->closed = true;
    if (control->stream != nullptr) control->stream->close();
    if (control->queue_timer != nullptr) control->queue_timer->cancel();
  });
}

// True if the peer has closed its end (or reset it): reading would give end of stream. A
// peer that half-closed after sending a full request is treated as gone too; the agent never
// does that, it waits for its answer.
bool peer_gone(tcp::socket& socket) {
  char byte = 0;
  const ssize_t n = ::recv(socket.native_handle(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
  if (n == 0) return true;
  return n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR;
}

// The active slots (ServerLimits::max_active) and the FIFO of connections waiting for one.
// A waiter is handed a slot by release(): it is marked granted under the mutex, then its
// timer (touched only on its strand) is cancelled to wake it.
class ActiveGate {
 public:
  struct Waiter {
    std::shared_ptr<ConnectionControl> control;
    bool granted = false;  // under the gate's mutex
  };

  explicit ActiveGate(std::size_t capacity) : capacity_(std::max<std::size_t>(1, capacity)) {}

  // True: a slot is taken now. False: the waiter is queued behind the others.
  bool enter_or_queue(const std::shared_ptr<Waiter>& waiter) {
    std::lock_guard lock(mutex_);
    if (active_ < capacity_ && queue_.empty()) {
      ++active_;
      return true;
    }
    queue_.push_back(waiter);
    return false;
  }

  bool granted(const std::shared_ptr<Waiter>& waiter) const {
    std::lock_guard lock(mutex_);
    return waiter->granted;
  }

  // The waiter gives up (closed or too old). True if a slot was granted meanwhile: the
  // caller holds it then (and releases it).
  bool leave(const std::shared_ptr<Waiter>& waiter) {
    std::lock_guard lock(mutex_);
    if (waiter->granted) return true;
    const auto found = std::find(queue_.begin(), queue_.end(), waiter);
    if (found != queue_.end()) queue_.erase(found);
    return false;
  }

  void release() {
    std::shared_ptr<Waiter> next;
    {
      std::lock_guard lock(mutex_);
      if (queue_.empty()) {
        if (active_ > 0) --active_;
        return;
      }
      next = std::move(queue_.front());
      queue_.pop_front();
      next->granted = true;  // the slot passes on: active_ is unchanged
    }
    auto control = next->control;
    asio::post(control->strand, [control] {
      if (control->queue_timer != nullptr) control->queue_timer->cancel();
    });
  }

  std::size_t active() const {
    std::lock_guard lock(mutex_);
    return active_;
  }
  std::size_t waiting() const {
    std::lock_guard lock(mutex_);
    return queue_.size();
  }

 private:
  const std::size_t capacity_;
  mutable std::mutex mutex_;
  std::size_t active_ = 0;
  std::deque<std::shared_ptr<Waiter>> queue_;
};

// Holds an active slot until release() or until it goes out of scope.
class ActiveSlot {
 public:
  explicit ActiveSlot(ActiveGate& gate) : gate_(&gate) {}
  ActiveSlot(const ActiveSlot&) = delete;
  ActiveSlot& operator=(const ActiveSlot&) = delete;
  ~ActiveSlot() { release(); }
  void release() {
    if (gate_ != nullptr) std::exchange(gate_, nullptr)->release();
  }

 private:
  ActiveGate* gate_;
};

// Clears ConnectionControl::queue_timer when the wait ends (on the connection's strand).
class TimerPublication {
 public:
  TimerPublication(ConnectionControl& control, asio::steady_timer& timer) : control_(control) {
    control_.queue_timer = &timer;
  }
  TimerPublication(const TimerPublication&) = delete;
  TimerPublication& operator=(const TimerPublication&) = delete;
  ~TimerPublication() { control_.queue_timer = nullptr; }

 private:
  ConnectionControl& control_;
};

// Clears ConnectionControl::stream when the connection's frame ends (declared after the
// stream, so it runs before the stream is destroyed).
class StreamPublication {
 public:
  StreamPublication(ConnectionControl& control, beast::tcp_stream& stream) : control_(control) {
    control_.stream = &stream;
  }
  StreamPublication(const StreamPublication&) = delete;
  StreamPublication& operator=(const StreamPublication&) = delete;
  ~StreamPublication() { control_.stream = nullptr; }

 private:
  ConnectionControl& control_;
};

// glibc keeps freed chunks in its arenas, so after a burst of large bodies or of many
// connections the resident size would stay at the peak; this hands the free pages back.
void return_free_memory() {
#ifdef __GLIBC__
  ::malloc_trim(0);
#endif
}

enum class BodyRead { complete, too_large, no_room, ended };

class Server final : public HttpsServer {
 public:
  Server(const ServerLimits& limits, RequestHandler handler, BodyLimit body_limit, std::shared_ptr<ssl::context> tls)
      : limits_(limits),
        handler_(std::move(handler)),
        body_limit_(std::move(body_limit)),
        tls_(std::move(tls)),
        table_(AdmissionLimits{limits.max_connections, limits.max_connections_per_peer, limits.max_buffered_body_bytes,
                               limits.shed_after, limits.body_bytes_per_connection}),
        io_threads_(limits.threads != 0 ? limits.threads : std::max(1U, std::thread::hardware_concurrency())),
        gate_(limits.max_active != 0 ? limits.max_active
                                     : 4 * (std::size_t{io_threads_} + std::max(1U, limits.blocking_threads))),
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
      for (const auto& [id, control] : connections_) open.push_back(control);
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
    for (auto& control : open) close_on_strand(control);
    if (!was_started) return;
    // Handlers already running finish (they may be in the middle of a database write); their
    // results go to closed connections.
    blocking_->close_and_join();
    work_.reset();
    {
      std::unique_lock lock(state_mutex_);
      drained_.wait_for(lock, std::chrono::seconds(5), [this] { return live_ == 0 && active_acceptors_ == 0; });
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
    out.connections_shed = counters_.shed.load();
    out.handshake_failures = counters_.handshake_failures.load();
    out.timeouts = counters_.timeouts.load();
    out.oversized_requests = counters_.oversized.load();
    out.bodies_refused = counters_.bodies_refused.load();
    out.requests_in_flight = counters_.in_flight.load();
    out.connections_queued = counters_.queued.load();
    out.queue_timeouts = counters_.queue_timeouts.load();
    out.clients_gone = counters_.clients_gone.load();
    out.connections_waiting = gate_.waiting();
    out.connections_active = gate_.active();
    std::lock_guard lock(state_mutex_);
    out.connections_open = table_.size();
    out.body_bytes_buffered = table_.buffered_body_bytes();
    return out;
  }

 private:
  using Clock = std::chrono::steady_clock;
  using Id = ConnectionTable::Id;
  using Controls = std::vector<std::shared_ptr<ConnectionControl>>;

  // A connection's place in the admission table and the registry, from admission until its
  // coroutine ends (or its frame is destroyed unstarted: it is a parameter of serve()).
  class Registration {
   public:
    Registration(Server& server, std::shared_ptr<ConnectionControl> control)
        : server_(&server), control_(std::move(control)) {}
    Registration(Registration&& other) noexcept
        : server_(std::exchange(other.server_, nullptr)), control_(std::move(other.control_)) {}
    Registration(const Registration&) = delete;
    Registration& operator=(const Registration&) = delete;
    Registration& operator=(Registration&&) = delete;
    ~Registration() {
      if (server_ != nullptr) server_->unregister(control_->id);
    }
    ConnectionControl& control() const { return *control_; }
    const std::shared_ptr<ConnectionControl>& shared_control() const { return control_; }

   private:
    Server* server_;
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

  // --- admission (the table and the registry change together, under state_mutex_) ---

  // Moves the connections the table shed out of the registry; the caller closes them once
  // the lock is released.
  void take_shed_locked(const std::vector<Id>& ids, Controls& out) {
    for (const Id id : ids) {
      const auto found = connections_.find(id);
      if (found == connections_.end()) continue;
      out.push_back(std::move(found->second));
      connections_.erase(found);
    }
  }

  void close_shed(const Controls& victims) {
    counters_.shed.fetch_add(victims.size());
    for (const auto& control : victims) close_on_strand(control);
  }

  std::optional<Registration> admit(const tcp::socket& socket, const asio::any_io_executor& strand) {
    error_code ec;
    const tcp::endpoint peer = socket.remote_endpoint(ec);
    if (ec) return std::nullopt;  // the peer has already left
    auto control = std::make_shared<ConnectionControl>();
    control->strand = strand;
    Controls victims;
    bool admitted = false;
    {
      std::lock_guard lock(state_mutex_);
      if (stopping_) return std::nullopt;
      control->id = next_id_++;
      auto admission = table_.admit(control->id, peer_group(peer.address()), Clock::now());
      take_shed_locked(admission.shed, victims);
      admitted = admission.admitted;
      if (admitted) {
        connections_.emplace(control->id, control);
        ++live_;
      }
    }
    close_shed(victims);
    if (!admitted) {
      counters_.refused.fetch_add(1);
      return std::nullopt;
    }
    counters_.accepted.fetch_add(1);
    return Registration(*this, std::move(control));
  }

  void unregister(Id id) {
    bool quiet = false;
    {
      std::lock_guard lock(state_mutex_);
      table_.remove(id);
      connections_.erase(id);
      --live_;
      quiet = table_.take_quiet_after_burst();
      if (live_ == 0) drained_.notify_all();
    }
    if (quiet) return_free_memory();
  }

  ConnectionTable::BodyVerdict hold_body(Id id, std::size_t bytes) {
    Controls victims;
    ConnectionTable::BodyVerdict verdict{};
    {
      std::lock_guard lock(state_mutex_);
      auto grant = table_.hold_body(id, bytes, Clock::now());
      take_shed_locked(grant.shed, victims);
      verdict = grant.verdict;
    }
    close_shed(victims);
    return verdict;
  }

  // False if the connection was shed meanwhile.
  bool note_answering(Id id) {
    std::lock_guard lock(state_mutex_);
    if (!table_.contains(id)) return false;
    table_.answering(id);
    return true;
  }

  void note_idle(Id id) {
    bool quiet = false;
    {
      std::lock_guard lock(state_mutex_);
      table_.idle(id, Clock::now());
      quiet = table_.take_quiet_after_burst();
    }
    if (quiet) return_free_memory();
  }

  // Out of descriptors: the oldest unfinished connection gives its descriptor up.
  void shed_for_descriptor() {
    Controls victims;
    {
      std::lock_guard lock(state_mutex_);
      take_shed_locked(table_.shed_oldest(), victims);
    }
    close_shed(victims);
  }

  // --- connections ---

  asio::awaitable<void> accept_loop(tcp::acceptor& acceptor) {
    error_code ec;
    // After each asynchronous accept, the connections already queued in the kernel are taken
    // at once with non-blocking accepts: under a flood a newcomer then waits for one pass of
    // the I/O queue, not for one pass per connection queued ahead of it.
    acceptor.non_blocking(true, ec);
    for (;;) {
      // Each connection gets its own strand: its handlers never run concurrently.
      asio::any_io_executor strand = asio::make_strand(io_);
      tcp::socket socket = co_await acceptor.async_accept(strand, on_error(ec));
      for (std::size_t taken = 0;;) {
        if (ec) {
          if (ec == asio::error::operation_aborted || !acceptor.is_open() || stopping()) co_return;
          if (ec == asio::error::connection_aborted) break;  // the peer left before accept
          // The loop never ends on an error. Out of descriptors: shed the oldest unfinished
          // connection to get one back; out of memory or anything else: back off briefly
          // instead of spinning on the error.
          if (ec == asio::error::no_descriptors || ec.value() == ENFILE) shed_for_descriptor();
          asio::steady_timer pause(co_await asio::this_coro::executor, std::chrono::milliseconds(10));
          co_await pause.async_wait(on_error(ec));
          break;
        }
        take(std::move(socket), strand);
        if (++taken == max_accept_batch) break;
        strand = asio::make_strand(io_);
        socket = acceptor.accept(strand, ec);
        if (ec == asio::error::would_block || ec == asio::error::try_again) break;
      }
    }
  }

  // Admits a new connection (or refuses it) and starts its coroutine.
  void take(tcp::socket socket, const asio::any_io_executor& strand) {
    error_code ec;
    const Clock::time_point accepted_at = Clock::now();
    auto registration = admit(socket, strand);
    if (!registration) {
      socket.close(ec);
      return;
    }
    // Responses go out as header and body records; don't let Nagle hold the second back.
    socket.set_option(tcp::no_delay(true), ec);
    asio::co_spawn(strand, serve(std::move(socket), std::move(*registration), current_tls(), accepted_at),
                   [](std::exception_ptr) {});
  }

  asio::awaitable<void> serve(tcp::socket socket, Registration registration, std::shared_ptr<ssl::context> tls,
                              Clock::time_point accepted_at) {
    try {
      co_await serve_connection(std::move(socket), registration.shared_control(), *tls, accepted_at);
    } catch (...) {
      // A connection's failure stays with that connection.
    }
  }

  // Waits (FIFO) for an active slot. Nullopt: the connection was closed meanwhile, or waited
  // queue_timeout since its accept and is dropped before its handshake.
  asio::awaitable<std::optional<Clock::time_point>> wait_for_slot(const std::shared_ptr<ConnectionControl>& control,
                                                                  Clock::time_point accepted_at) {
    auto waiter = std::make_shared<ActiveGate::Waiter>();
    waiter->control = control;
    if (gate_.enter_or_queue(waiter)) co_return accepted_at;
    counters_.queued.fetch_add(1);
    asio::steady_timer timer(co_await asio::this_coro::executor);
    const TimerPublication published(*control, timer);
    const Clock::time_point stale_at = accepted_at + limits_.queue_timeout;
    for (;;) {
      timer.expires_at(stale_at);
      error_code ec;
      if (!gate_.granted(waiter) && !control->closed) co_await timer.async_wait(on_error(ec));
      if (gate_.granted(waiter)) co_return Clock::now();
      if (control->closed || Clock::now() >= stale_at) {
        if (gate_.leave(waiter)) co_return Clock::now();  // granted at the last moment
        if (!control->closed) counters_.queue_timeouts.fetch_add(1);
        co_return std::nullopt;
      }
    }
  }

  asio::awaitable<void> serve_connection(tcp::socket socket, const std::shared_ptr<ConnectionControl>& shared_control,
                                         ssl::context& tls, Clock::time_point accepted_at) {
    ConnectionControl& control = *shared_control;
    const std::string peer = peer_of(socket);
    TlsStream stream(std::move(socket), tls);
    beast::tcp_stream& transport = beast::get_lowest_layer(stream);
    const StreamPublication published(control, transport);
    if (control.closed) co_return;  // shed (or stopped) before it started

    // A socket that never speaks loses its slot after first_byte_timeout. The whole first
    // TLS record (the ClientHello) is read before the connection queues for an active slot,
    // within handshake_timeout of accept, so a client that sends half a hello and stalls
    // never holds an active slot; what was read is handed to the handshake.
    error_code ec;
    transport.expires_at(accepted_at + std::min(limits_.first_byte_timeout, limits_.handshake_timeout));
    std::vector<char> hello(512);
    std::size_t hello_size = co_await transport.async_read_some(asio::buffer(hello), on_error(ec));
    transport.expires_at(accepted_at + limits_.handshake_timeout);
    while (!ec && hello_size < hello_record_size(hello.data(), hello_size)) {
      hello.resize(std::max(hello.size(), hello_record_size(hello.data(), hello_size)));
      hello_size += co_await transport.async_read_some(asio::buffer(hello.data() + hello_size, hello.size() - hello_size),
                                                       on_error(ec));
    }
    if (ec) {
      if (ec == beast::error::timeout) counters_.timeouts.fetch_add(1);
      co_return;
    }
    // In arrival order: the handshake waits for an active slot, and gives it back when done.
    // Once granted, the handshake is CPU work and one round trip: it gets at most
    // max_active_handshake (and handshake_timeout from the grant), so a client that stalls
    // in the middle cannot hold the slot long.
    {
      const auto started_at = co_await wait_for_slot(shared_control, accepted_at);
      if (!started_at) co_return;
      const ActiveSlot slot(gate_);
      if (control.closed) co_return;
      if (*started_at != accepted_at && peer_gone(transport.socket())) {
        counters_.clients_gone.fetch_add(1);  // gave up while it waited: no handshake for nobody
        co_return;
      }
      transport.expires_at(*started_at + std::min(limits_.handshake_timeout, max_active_handshake));
      co_await stream.async_handshake(ssl::stream_base::server, asio::buffer(hello.data(), hello_size), on_error(ec));
      if (ec) {
        (ec == beast::error::timeout ? counters_.timeouts : counters_.handshake_failures).fetch_add(1);
        co_return;
      }
    }
    std::vector<char>().swap(hello);

    beast::flat_buffer buffer;
    for (std::size_t served = 0; served < limits_.max_requests_per_connection; ++served) {
      if (served > 0 && buffer.size() == 0) {
        // Keep-alive: wait for the next request's first bytes; the header deadline starts then.
        transport.expires_after(limits_.idle_timeout);
        const std::size_t n = co_await stream.async_read_some(buffer.prepare(idle_read_size), on_error(ec));
        if (ec) co_return;  // the client left, or stayed idle too long: a normal end
        buffer.commit(n);
      }

      transport.expires_after(limits_.header_timeout);
      http::request_parser<http::string_body> parser;
      parser.header_limit(static_cast<std::uint32_t>(
          std::min<std::size_t>(limits_.max_header_bytes, std::numeric_limits<std::uint32_t>::max())));
      // The real limit depends on the target and is set once the header is known.
      parser.body_limit(std::numeric_limits<std::uint64_t>::max());
      co_await http::async_read_header(stream, buffer, parser, on_error(ec));
      if (ec == http::error::header_limit) {
        counters_.oversized.fetch_add(1);
        co_await refuse(stream, http::status::request_header_fields_too_large, 11, "bad_request",
                        "request header too large");
        co_return;
      }
      if (ec == beast::error::timeout) counters_.timeouts.fetch_add(1);
      if (ec == http::error::end_of_stream || ec == http::error::partial_message || ec == beast::error::timeout ||
          ec == asio::error::operation_aborted || ec == ssl::error::stream_truncated || ec == asio::error::eof)
        co_return;
      if (ec) {
        if (ec.category() == http::make_error_code(http::error::bad_target).category())
          co_await refuse(stream, http::status::bad_request, 11, "bad_request", "malformed HTTP request");
        co_return;
      }

      const unsigned version = parser.get().version();
      std::string method(parser.get().method_string());
      std::string target(parser.get().target());
      const std::size_t limit = body_limit_ ? body_limit_(method, target) : 0;
      if (const auto length = parser.content_length(); length && *length > limit) {
        // Refused from the header alone: the body is never read.
        counters_.oversized.fetch_add(1);
        co_await refuse(stream, http::status::payload_too_large, version, "bad_request", "request body too large");
        co_return;
      }
      parser.body_limit(static_cast<std::uint64_t>(limit));  // also bounds a chunked body
      // From here the body has its own, longer deadline.
      transport.expires_after(limits_.request_timeout);
      // curl and others wait up to a second for this before sending a large body.
      if (!parser.is_done() && beast::iequals(parser.get()[http::field::expect], "100-continue")) {
        http::response<http::empty_body> go_on{http::status::continue_, version};
        co_await http::async_write(stream, go_on, on_error(ec));
        if (ec) co_return;
      }
      switch (co_await read_body(stream, buffer, parser, control.id)) {
        case BodyRead::complete: break;
        case BodyRead::too_large:
          counters_.oversized.fetch_add(1);
          co_await refuse(stream, http::status::payload_too_large, version, "bad_request", "request body too large");
          co_return;
        case BodyRead::no_room:
          counters_.bodies_refused.fetch_add(1);
          co_await refuse(stream, http::status::service_unavailable, version, "unavailable",
                          "the server is busy; retry shortly");
          co_return;
        case BodyRead::ended: co_return;
      }
      if (!note_answering(control.id)) co_return;
      // No verification for a client that has already gone (an agent whose attempt deadline
      // ran out closes its socket).
      if (peer_gone(transport.socket())) {
        counters_.clients_gone.fetch_add(1);
        co_return;
      }

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
      HttpResponse answer = co_await async_run_handler(*blocking_, accepted_at, handler_, std::move(request), asio::use_awaitable);

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
      // The request's body is gone; until the next request arrives this connection is idle.
      note_idle(control.id);
    }

    transport.expires_after(std::min(limits_.handshake_timeout, max_close_wait));
    co_await stream.async_shutdown(on_error(ec));  // most clients just close: errors are normal
  }

  // Reads the body piece by piece; each piece is counted against max_buffered_body_bytes
  // before the next is read, so memory follows what clients really sent, not what they
  // announced. The body deadline was set by the caller.
  asio::awaitable<BodyRead> read_body(TlsStream& stream, beast::flat_buffer& buffer,
                                      http::request_parser<http::string_body>& parser, Id id) {
    error_code ec;
    while (!parser.is_done()) {
      co_await http::async_read_some(stream, buffer, parser, on_error(ec));
      if (ec == http::error::body_limit) co_return BodyRead::too_large;
      if (ec == beast::error::timeout) counters_.timeouts.fetch_add(1);
      if (ec) co_return BodyRead::ended;
      switch (hold_body(id, parser.get().body().size())) {
        case ConnectionTable::BodyVerdict::granted: break;
        case ConnectionTable::BodyVerdict::over_budget: co_return BodyRead::no_room;
        case ConnectionTable::BodyVerdict::gone: co_return BodyRead::ended;
      }
    }
    co_return BodyRead::complete;
  }

  // Writes a transport-level error and closes at once, without reading what the client may
  // still be sending (or attempting a TLS close it would not answer).
  asio::awaitable<void> refuse(TlsStream& stream, http::status status, unsigned version, std::string_view code,
                               std::string_view message) {
    auto response = transport_error(status, version, code, message);
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

  // The admission table and the registry of live connections change together under this.
  mutable std::mutex state_mutex_;
  std::condition_variable drained_;
  bool started_ = false;
  bool stopping_ = false;
  int active_acceptors_ = 0;
  ConnectionTable table_;
  std::unordered_map<Id, std::shared_ptr<ConnectionControl>> connections_;  // admitted, not shed
  Id next_id_ = 1;
  std::size_t live_ = 0;  // connection coroutines (or unstarted frames) not yet ended

  std::unique_ptr<BlockingPool> blocking_;
  std::vector<std::thread> threads_;
  const unsigned io_threads_;
  ActiveGate gate_;
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
