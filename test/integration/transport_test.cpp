// Integration tests for the transport: the real HTTPS server and client over TLS 1.3 on
// loopback (127.0.0.1 and ::1), raw OpenSSL clients for misbehaving peers, and the admin
// Unix socket. Every wait is bounded; every server is stopped on every path.
#include <arpa/inet.h>
#include <grp.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

#include "common/crypto/certificate.hpp"
#include "common/protocol/https_client.hpp"
#include "common/util/file.hpp"
#include "verifier-daemon/server/admin_socket.hpp"
#include "verifier-daemon/server/https_server.hpp"
#include "test/integration/stale_socket.hpp"

using namespace fde;
using namespace fde::verifier;
using namespace std::chrono_literals;
using fde::itest::make_stale_socket;
using Clock = std::chrono::steady_clock;

namespace {

long long elapsed_ms(Clock::time_point since) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - since).count();
}

void ignore_sigpipe() { ::signal(SIGPIPE, SIG_IGN); }

struct TempDir {
  std::string path;
  TempDir() {
    std::string pattern = (std::filesystem::temp_directory_path() / "fde-transport-XXXXXX").string();
    REQUIRE(::mkdtemp(pattern.data()) != nullptr);
    path = pattern;
  }
  ~TempDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path, ignored);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
};

// A throwaway CA and a server certificate for the loopback names, written as PEM files.
struct Pki {
  std::string ca_pem;
  TlsFiles files;
  std::string key_pem_path;
};

Pki make_pki(const std::string& dir, const std::string& name) {
  static long serial = 100;
  auto ca_key = crypto::PrivateKey::generate(crypto::KeyType::ec_p256);
  REQUIRE(ca_key);
  crypto::CertificateRequest ca_request;
  ca_request.common_name = name + " test CA";
  ca_request.is_ca = true;
  ca_request.valid_days = 2;
  ca_request.serial = ++serial;
  auto ca = crypto::issue_certificate(ca_request, ca_key->public_key(), *ca_key, nullptr);
  REQUIRE(ca);

  auto server_key = crypto::PrivateKey::generate(crypto::KeyType::ec_p256);
  REQUIRE(server_key);
  crypto::CertificateRequest server_request;
  server_request.common_name = name + " server";
  server_request.valid_days = 2;
  server_request.serial = ++serial;
  server_request.subject_alt_names = {"IP:127.0.0.1", "IP:::1", "DNS:localhost"};
  auto server = crypto::issue_certificate(server_request, server_key->public_key(), *ca_key, &*ca);
  REQUIRE(server);

  Pki pki;
  pki.ca_pem = ca->pem();
  pki.files.certificate_chain = dir + "/" + name + "-chain.pem";
  pki.files.private_key = dir + "/" + name + "-key.pem";
  REQUIRE(write_file_atomic(pki.files.certificate_chain, as_bytes(server->pem() + ca->pem()), 0644));
  const auto key_pem = server_key->to_pem();
  REQUIRE_FALSE(key_pem.empty());
  REQUIRE(write_file_atomic(pki.files.private_key, key_pem.view(), 0600));
  return pki;
}

ServerLimits test_limits() {
  ServerLimits limits;
  limits.handshake_timeout = 2000ms;
  limits.request_timeout = 2000ms;
  limits.idle_timeout = 2000ms;
  limits.threads = 2;
  limits.blocking_threads = 2;
  return limits;
}

constexpr std::size_t test_body_limit = 1024;

// The real server with an echoing handler that counts its calls.
class TestServer {
 public:
  TestServer(const TlsFiles& files, const ServerLimits& limits,
             std::vector<ListenAddress> listen = {{"127.0.0.1", 0}}) {
    auto created = HttpsServer::create(
        listen, files, limits,
        [this](const HttpRequest& request) {
          calls.fetch_add(1);
          {
            std::lock_guard lock(mutex_);
            targets_.push_back(request.target);
          }
          HttpResponse response;
          if (request.target == "/throw") throw std::runtime_error("handler bug");
          if (request.target == "/hold") {
            // Keeps the request "being answered" until release_held() (bounded).
            holding.fetch_add(1);
            std::unique_lock lock(mutex_);
            gate_.wait_for(lock, 5s, [this] { return released_; });
            holding.fetch_sub(1);
          }
          if (request.target == "/big") {
            response.body.assign(100 * 1024, 'x');
            return response;
          }
          if (request.target == "/limited") {
            response.status = 429;
            response.headers.emplace_back("Retry-After", "7");
          }
          response.body = R"({"method":")" + request.method + R"(","target":")" + request.target + R"(","size":)" +
                          std::to_string(request.body.size()) + R"(,"peer":")" + request.peer + R"("})";
          std::lock_guard lock(mutex_);
          last_peer_ = request.peer;
          return response;
        },
        [](const std::string& method, const std::string&) { return method == "POST" ? test_body_limit : 0; });
    REQUIRE(created);
    server = std::move(*created);
    server->start();
  }
  ~TestServer() {
    release_held();
    server->stop();
  }
  TestServer(const TestServer&) = delete;
  TestServer& operator=(const TestServer&) = delete;

  std::uint16_t port(std::size_t index = 0) const { return server->bound_ports().at(index); }

  std::string last_peer() const {
    std::lock_guard lock(mutex_);
    return last_peer_;
  }

  // The targets the handler was called for, in the order it was called.
  std::vector<std::string> targets() const {
    std::lock_guard lock(mutex_);
    return targets_;
  }

  void release_held() {
    {
      std::lock_guard lock(mutex_);
      released_ = true;
    }
    gate_.notify_all();
  }

  std::unique_ptr<HttpsServer> server;
  std::atomic<int> calls{0};
  std::atomic<int> holding{0};

 private:
  mutable std::mutex mutex_;
  std::condition_variable gate_;
  bool released_ = false;
  std::string last_peer_;
  std::vector<std::string> targets_;
};

protocol::HttpsClientOptions client_options(const std::string& ca_pem) {
  protocol::HttpsClientOptions options;
  options.ca_pem = ca_pem;
  options.connect_timeout = 2000ms;
  options.request_timeout = 5000ms;
  return options;
}

// Waits (bounded) until the server's statistics satisfy a condition.
template <class Condition>
bool eventually(const HttpsServer& server, Condition condition, std::chrono::milliseconds limit = 3000ms) {
  const auto until = Clock::now() + limit;
  while (Clock::now() < until) {
    if (condition(server.stats())) return true;
    std::this_thread::sleep_for(10ms);
  }
  return condition(server.stats());
}

struct SslCtxFree {
  void operator()(SSL_CTX* ctx) const { SSL_CTX_free(ctx); }
};
struct SslFree {
  void operator()(SSL* ssl) const { SSL_free(ssl); }
};

// A deliberately primitive client: a blocking socket with receive and send timeouts, plain
// or under OpenSSL, that can misbehave in the ways the server must survive.
class RawClient {
 public:
  // `source`: the local IPv4 address to connect from (another 127.0.0.x is another peer).
  RawClient(const std::string& ip, std::uint16_t port, const std::string& source = {}) {
    ignore_sigpipe();
    const bool v6 = ip.find(':') != std::string::npos;
    fd_ = ::socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    REQUIRE(fd_ >= 0);
    set_receive_timeout(3000ms);
    timeval send_timeout{3, 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_SNDTIMEO, &send_timeout, sizeof send_timeout);
    int rc = -1;
    if (v6) {
      sockaddr_in6 address{};
      address.sin6_family = AF_INET6;
      address.sin6_port = htons(port);
      REQUIRE(::inet_pton(AF_INET6, ip.c_str(), &address.sin6_addr) == 1);
      rc = ::connect(fd_, reinterpret_cast<const sockaddr*>(&address), sizeof address);
    } else {
      if (!source.empty()) {
        sockaddr_in local{};
        local.sin_family = AF_INET;
        REQUIRE(::inet_pton(AF_INET, source.c_str(), &local.sin_addr) == 1);
        REQUIRE(::bind(fd_, reinterpret_cast<const sockaddr*>(&local), sizeof local) == 0);
      }
      sockaddr_in address{};
      address.sin_family = AF_INET;
      address.sin_port = htons(port);
      REQUIRE(::inet_pton(AF_INET, ip.c_str(), &address.sin_addr) == 1);
      rc = ::connect(fd_, reinterpret_cast<const sockaddr*>(&address), sizeof address);
    }
    REQUIRE(rc == 0);
  }
  ~RawClient() {
    ssl_.reset();
    if (fd_ >= 0) ::close(fd_);
  }
  RawClient(const RawClient&) = delete;
  RawClient& operator=(const RawClient&) = delete;

  // Closes both directions now (the descriptor stays until destruction).
  void hang_up() { ::shutdown(fd_, SHUT_RDWR); }

  void set_receive_timeout(std::chrono::milliseconds timeout) {
    timeval tv{static_cast<time_t>(timeout.count() / 1000), static_cast<suseconds_t>((timeout.count() % 1000) * 1000)};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  }

  // TLS without certificate checks (the server is under test here), limited to `max_version`.
  bool handshake(int max_version = TLS1_3_VERSION) {
    ctx_.reset(SSL_CTX_new(TLS_client_method()));
    REQUIRE(ctx_);
    SSL_CTX_set_min_proto_version(ctx_.get(), TLS1_VERSION);
    SSL_CTX_set_max_proto_version(ctx_.get(), max_version);
    SSL_CTX_set_verify(ctx_.get(), SSL_VERIFY_NONE, nullptr);
    ssl_.reset(SSL_new(ctx_.get()));
    REQUIRE(ssl_);
    SSL_set_fd(ssl_.get(), fd_);
    const bool ok = SSL_connect(ssl_.get()) == 1;
    ERR_clear_error();
    return ok;
  }

  std::string peer_certificate_subject() const {
    X509* cert = SSL_get1_peer_certificate(ssl_.get());
    if (cert == nullptr) return {};
    char buffer[256] = {};
    X509_NAME_oneline(X509_get_subject_name(cert), buffer, sizeof buffer);
    X509_free(cert);
    return buffer;
  }

  bool send(std::string_view data) {
    while (!data.empty()) {
      const int n = ssl_ ? SSL_write(ssl_.get(), data.data(), static_cast<int>(data.size()))
                         : static_cast<int>(::send(fd_, data.data(), data.size(), MSG_NOSIGNAL));
      if (n <= 0) {
        ERR_clear_error();
        return false;
      }
      data.remove_prefix(static_cast<std::size_t>(n));
    }
    return true;
  }

  enum class Read { data, closed, timeout };
  Read read_some(std::string& out) {
    char buffer[16384];
    errno = 0;
    if (ssl_) {
      const int n = SSL_read(ssl_.get(), buffer, sizeof buffer);
      if (n > 0) {
        out.append(buffer, static_cast<std::size_t>(n));
        return Read::data;
      }
      const int error = SSL_get_error(ssl_.get(), n);
      ERR_clear_error();
      if (error == SSL_ERROR_WANT_READ || ((error == SSL_ERROR_SYSCALL) && (errno == EAGAIN || errno == EWOULDBLOCK)))
        return Read::timeout;
      return Read::closed;
    }
    const ssize_t n = ::recv(fd_, buffer, sizeof buffer, 0);
    if (n > 0) {
      out.append(buffer, static_cast<std::size_t>(n));
      return Read::data;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return Read::timeout;
    return Read::closed;
  }

  // True if the server closed the connection within `limit` (data it sends is skipped).
  bool closed_within(std::chrono::milliseconds limit) {
    const auto until = Clock::now() + limit;
    std::string ignored;
    while (Clock::now() < until) {
      if (read_some(ignored) == Read::closed) return true;
    }
    return false;
  }

  struct Response {
    unsigned status = 0;
    std::string head;
    std::string body;
  };
  // One HTTP response with a Content-Length body; nullopt if the connection ends first.
  std::optional<Response> read_response() {
    std::string& data = pending_;
    std::size_t head_end = std::string::npos;
    while ((head_end = data.find("\r\n\r\n")) == std::string::npos)
      if (read_some(data) != Read::data) return std::nullopt;
    Response response;
    response.head = data.substr(0, head_end + 4);
    response.status = static_cast<unsigned>(std::stoul(response.head.substr(9, 3)));
    std::size_t length = 0;
    if (const auto at = response.head.find("Content-Length: "); at != std::string::npos)
      length = std::stoul(response.head.substr(at + 16));
    while (data.size() < head_end + 4 + length)
      if (read_some(data) != Read::data) return std::nullopt;
    response.body = data.substr(head_end + 4, length);
    data.erase(0, head_end + 4 + length);
    return response;
  }

 private:
  int fd_ = -1;
  std::unique_ptr<SSL_CTX, SslCtxFree> ctx_;
  std::unique_ptr<SSL, SslFree> ssl_;
  std::string pending_;
};

std::string get_request(const std::string& target, bool close = false) {
  return "GET " + target + " HTTP/1.1\r\nHost: 127.0.0.1\r\n" + (close ? "Connection: close\r\n" : "") + "\r\n";
}

}  // namespace

// ---------------------------------------------------------------------------------------
// HTTPS server and client
// ---------------------------------------------------------------------------------------

TEST_CASE("the client gets the handler's response over TLS 1.3 on 127.0.0.1 and on ::1") {
  TempDir dir;
  const Pki pki = make_pki(dir.path, "main");
  TestServer server(pki.files, test_limits(), {{"127.0.0.1", 0}, {"::1", 0}});
  REQUIRE(server.server->bound_ports().size() == 2);
  CHECK(server.port(0) != 0);
  CHECK(server.port(1) != 0);

  SECTION("IPv4") {
    auto result = protocol::https_post_json({"127.0.0.1", server.port(0), ""}, "/v1/challenge", R"({"image_id":"a"})",
                                            client_options(pki.ca_pem));
    REQUIRE(result);
    CHECK(result->status == 200);
    CHECK(result->body.find(R"("method":"POST","target":"/v1/challenge","size":16)") != std::string::npos);
    CHECK(server.last_peer().rfind("127.0.0.1:", 0) == 0);
  }
  SECTION("IPv6") {
    auto result = protocol::https_get({"::1", server.port(1), ""}, "/healthz", client_options(pki.ca_pem));
    REQUIRE(result);
    CHECK(result->status == 200);
    CHECK(result->body.find(R"("method":"GET","target":"/healthz")") != std::string::npos);
    CHECK(server.last_peer().rfind("[::1]:", 0) == 0);
  }
  SECTION("a bracketed IPv6 literal and the name localhost work too") {
    auto bracketed = protocol::https_get({"[::1]", server.port(1), ""}, "/healthz", client_options(pki.ca_pem));
    REQUIRE(bracketed);
    CHECK(bracketed->status == 200);
    auto named = protocol::https_get({"localhost", server.port(0), ""}, "/healthz", client_options(pki.ca_pem));
    REQUIRE(named);
    CHECK(named->status == 200);
  }
  SECTION("the connection really is TLS 1.3") {
    RawClient raw("127.0.0.1", server.port(0));
    REQUIRE(raw.handshake());
    REQUIRE(raw.send(get_request("/healthz", true)));
    auto response = raw.read_response();
    REQUIRE(response);
    CHECK(response->status == 200);
    CHECK(response->head.find("Connection: close") != std::string::npos);
  }
  const auto stats = server.server->stats();
  CHECK(stats.connections_accepted >= 1);
  CHECK(stats.handshake_failures == 0);
}

TEST_CASE("a client pinned to another CA, or expecting another name, fails with verification_failed") {
  TempDir dir;
  const Pki pki = make_pki(dir.path, "main");
  const Pki other = make_pki(dir.path, "other");
  TestServer server(pki.files, test_limits());

  SECTION("another CA") {
    auto result = protocol::https_get({"127.0.0.1", server.port(), ""}, "/healthz", client_options(other.ca_pem));
    REQUIRE_FALSE(result);
    CHECK(result.error().code == Errc::verification_failed);
    CHECK(result.error().message.find("not trusted") != std::string::npos);
  }
  SECTION("another host name") {
    auto result =
        protocol::https_get({"127.0.0.1", server.port(), "verifier.example"}, "/healthz", client_options(pki.ca_pem));
    REQUIRE_FALSE(result);
    CHECK(result.error().code == Errc::verification_failed);
  }
  SECTION("another IP address") {
    auto result =
        protocol::https_get({"127.0.0.1", server.port(), "127.0.0.2"}, "/healthz", client_options(pki.ca_pem));
    REQUIRE_FALSE(result);
    CHECK(result.error().code == Errc::verification_failed);
  }
  CHECK(server.calls == 0);
}

TEST_CASE("the client refuses host names it would have to resolve and reports unreachable servers") {
  TempDir dir;
  const Pki pki = make_pki(dir.path, "main");
  auto named = protocol::https_get({"verifier.example", 443, ""}, "/healthz", client_options(pki.ca_pem));
  REQUIRE_FALSE(named);
  CHECK(named.error().code == Errc::invalid_argument);
  CHECK(named.error().message.rfind("verifier host must be an IP address", 0) == 0);

  auto no_ca = protocol::https_get({"127.0.0.1", 443, ""}, "/healthz", client_options(""));
  REQUIRE_FALSE(no_ca);
  CHECK(no_ca.error().code == Errc::invalid_argument);

  auto bad_target = protocol::https_get({"127.0.0.1", 443, ""}, "/a b", client_options(pki.ca_pem));
  REQUIRE_FALSE(bad_target);
  CHECK(bad_target.error().code == Errc::invalid_argument);

  // A port that was free a moment ago: nothing listens there.
  std::uint16_t free_port = 0;
  {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    REQUIRE(fd >= 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::bind(fd, reinterpret_cast<const sockaddr*>(&address), sizeof address) == 0);
    socklen_t size = sizeof address;
    REQUIRE(::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &size) == 0);
    free_port = ntohs(address.sin_port);
    ::close(fd);
  }
  const auto start = Clock::now();
  auto refused = protocol::https_get({"127.0.0.1", free_port, ""}, "/healthz", client_options(pki.ca_pem));
  REQUIRE_FALSE(refused);
  CHECK(refused.error().code == Errc::io);
  CHECK(elapsed_ms(start) < 2000);
}

TEST_CASE("the client bounds the response body") {
  TempDir dir;
  const Pki pki = make_pki(dir.path, "main");
  TestServer server(pki.files, test_limits());
  auto options = client_options(pki.ca_pem);
  options.max_response_body = 64 * 1024;
  auto result = protocol::https_get({"127.0.0.1", server.port(), ""}, "/big", options);
  REQUIRE_FALSE(result);
  CHECK(result.error().code == Errc::too_large);
  options.max_response_body = 200 * 1024;
  auto fits = protocol::https_get({"127.0.0.1", server.port(), ""}, "/big", options);
  REQUIRE(fits);
  CHECK(fits->body.size() == 100 * 1024);
}

TEST_CASE("a TLS 1.2-only client fails the handshake") {
  TempDir dir;
  const Pki pki = make_pki(dir.path, "main");
  TestServer server(pki.files, test_limits());
  RawClient old_client("127.0.0.1", server.port());
  CHECK_FALSE(old_client.handshake(TLS1_2_VERSION));
  CHECK(eventually(*server.server, [](const TransportStats& s) { return s.handshake_failures == 1; }));
  CHECK(server.calls == 0);
}

TEST_CASE("an oversized request is refused before its body is read and the handler is never called") {
  TempDir dir;
  const Pki pki = make_pki(dir.path, "main");
  TestServer server(pki.files, test_limits());

  SECTION("a Content-Length over the target's limit gets 413") {
    const std::string body(64 * 1024, 'a');
    auto result =
        protocol::https_post_json({"127.0.0.1", server.port(), ""}, "/v1/attest", body, client_options(pki.ca_pem));
    REQUIRE(result);
    CHECK(result->status == 413);
    CHECK(result->body.find("bad_request") != std::string::npos);
  }
  SECTION("a body on a target that takes none gets 413 from the header alone") {
    RawClient raw("127.0.0.1", server.port());
    REQUIRE(raw.handshake());
    // The body is announced but never sent: the answer cannot depend on reading it.
    REQUIRE(raw.send("GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n"));
    auto response = raw.read_response();
    REQUIRE(response);
    CHECK(response->status == 413);
    CHECK(raw.closed_within(2000ms));
  }
  SECTION("a chunked body that grows over the limit gets 413") {
    RawClient raw("127.0.0.1", server.port());
    REQUIRE(raw.handshake());
    std::string request = "POST /v1/attest HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
    for (int i = 0; i < 3; ++i) request += "200\r\n" + std::string(0x200, 'b') + "\r\n";
    request += "0\r\n\r\n";
    REQUIRE(raw.send(request));
    auto response = raw.read_response();
    REQUIRE(response);
    CHECK(response->status == 413);
  }
  SECTION("a header over max_header_bytes gets 431") {
    RawClient raw("127.0.0.1", server.port());
    REQUIRE(raw.handshake());
    REQUIRE(raw.send("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Padding: " + std::string(16 * 1024, 'p') + "\r\n\r\n"));
    auto response = raw.read_response();
    REQUIRE(response);
    CHECK(response->status == 431);
  }
  CHECK(server.calls == 0);
  CHECK(server.server->stats().oversized_requests == 1);

  // The server is unharmed: a request within the limit still gets through.
  auto fine = protocol::https_post_json({"127.0.0.1", server.port(), ""}, "/v1/attest", std::string(1000, 'c'),
                                        client_options(pki.ca_pem));
  REQUIRE(fine);
  CHECK(fine->status == 200);
  CHECK(server.calls == 1);
}

TEST_CASE("a large body refused early still gets its 413 to the client") {
  TempDir dir;
  const Pki pki = make_pki(dir.path, "main");
  TestServer server(pki.files, test_limits());
  // Far more than the socket buffers hold: the server answers and closes while the client
  // is still sending, and the client reads the answer anyway.
  const std::string body(8 * 1024 * 1024, 'a');
  auto result =
      protocol::https_post_json({"127.0.0.1", server.port(), ""}, "/v1/attest", body, client_options(pki.ca_pem));
  if (result) {
    CHECK(result->status == 413);
  } else {
    CHECK(result.error().code == Errc::io);
    WARN("the kernel dropped the early 413 with the reset: " << result.error().describe());
  }
  CHECK(server.calls == 0);
  CHECK(server.server->stats().oversized_requests == 1);
}

TEST_CASE("a request with Expect: 100-continue is told to go on and then answered") {
  TempDir dir;
  const Pki pki = make_pki(dir.path, "main");
  TestServer server(pki.files, test_limits());
  RawClient raw("127.0.0.1", server.port());
  REQUIRE(raw.handshake());
  REQUIRE(raw.send("POST /v1/challenge HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"));
  auto interim = raw.read_response();
  REQUIRE(interim);
  CHECK(interim->status == 100);
  REQUIRE(raw.send("hello"));
  auto final_response = raw.read_response();
  REQUIRE(final_response);
  CHECK(final_response->status == 200);
  CHECK(final_response->body.find(R"("size":5)") != std::string::npos);
}

TEST_CASE("a handler that throws yields a 500 and the connection and server go on") {
  TempDir dir;
  const Pki pki = make_pki(dir.path, "main");
  TestServer server(pki.files, test_limits());
  RawClient raw("127.0.0.1", server.port());
  REQUIRE(raw.handshake());
  REQUIRE(raw.send(get_request("/throw")));
  auto failed = raw.read_response();
  REQUIRE(failed);
  CHECK(failed->status == 500);
  CHECK(failed->body.find("unavailable") != std::string::npos);
  REQUIRE(raw.send(get_request("/healthz")));
  auto next = raw.read_response();
  REQUIRE(next);
  CHECK(next->status == 200);
  CHECK(eventually(*server.server, [](const TransportStats& s) { return s.requests_in_flight == 0; }));
}

TEST_CASE("header fields the handler adds (Retry-After) reach the client") {
  TempDir dir;
  const Pki pki = make_pki(dir.path, "main");
  TestServer server(pki.files, test_limits());
  RawClient raw("127.0.0.1", server.port());
  REQUIRE(raw.handshake());
  REQUIRE(raw.send(get_request("/limited")));
  auto response = raw.read_response();
  REQUIRE(response);
  CHECK(response->status == 429);
  CHECK(response->head.find("\r\nRetry-After: 7\r\n") != std::string::npos);
}

TEST_CASE("a slow client that sends half a header and stalls is disconnected after header_timeout") {
  TempDir dir;
  const Pki pki = make_pki(dir.path, "main");
  auto limits = test_limits();
  limits.header_timeout = 300ms;
  TestServer server(pki.files, limits);

  SECTION("stalling") {
    RawClient slow("127.0.0.1", server.port());
    REQUIRE(slow.handshake());
    REQUIRE(slow.send("POST /v1/attest HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Le"));
    const auto start = Clock::now();
    CHECK(slow.closed_within(3000ms));
    const auto waited = elapsed_ms(start);
    CHECK(waited >= 200);
    CHECK(waited < 1500);
  }
  SECTION("dribbling a byte every 50 ms (slowloris)") {
    RawClient slow("127.0.0.1", server.port());
    REQUIRE(slow.handshake());
    slow.set_receive_timeout(50ms);
    const std::string header = "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + std::string(200, 's');
    const auto start = Clock::now();
    bool cut_off = false;
    for (std::size_t i = 0; i < header.size() && elapsed_ms(start) < 3000; ++i) {
      std::string ignored;
      if (!slow.send(header.substr(i, 1)) || slow.read_some(ignored) == RawClient::Read::closed) {
        cut_off = true;
        break;
      }
    }
    CHECK(cut_off);
    CHECK(elapsed_ms(start) < 1500);
  }
  CHECK(eventually(*server.server, [](const TransportStats& s) { return s.timeouts == 1; }));
  CHECK(server.calls == 0);
}

TEST_CASE("a client that connects and never handshakes is dropped after handshake_timeout") {
  TempDir dir;
  const Pki pki = make_pki(dir.path, "main");
  auto limits = test_limits();
  limits.handshake_timeout = 300ms;
  TestServer server(pki.files, limits);
  RawClient silent("127.0.0.1", server.port());
  const auto start = Clock::now();
  CHECK(silent.closed_within(3000ms));
  const auto waited = elapsed_ms(start);
  CHECK(waited >= 200);
  CHECK(waited < 1500);
  CHECK(eventually(*server.server, [](const TransportStats& s) { return s.timeouts == 1 && s.connections_open == 0; }));
}

TEST_CASE("a client that connects and never sends a byte is dropped after first_byte_timeout") {
  TempDir dir;
  const Pki pki = make_pki(dir.path, "main");
  auto limits = test_limits();
  limits.first_byte_timeout = 300ms;
  limits.handshake_timeout = 10'000ms;
  TestServer server(pki.files, limits);
  RawClient silent("127.0.0.1", server.port());
  const auto start = Clock::now();
  CHECK(silent.closed_within(3000ms));
  const auto waited = elapsed_ms(start);
  CHECK(waited >= 200);
  CHECK(waited < 1500);
  CHECK(eventually(*server.server, [](const TransportStats& s) { return s.timeouts == 1 && s.connections_open == 0; }));
  // A client that does speak in time still gets the whole handshake deadline and is served.
  auto result = protocol::https_get({"127.0.0.1", server.port(), ""}, "/healthz", client_options(pki.ca_pem));
  REQUIRE(result);
  CHECK(result->status == 200);
}

TEST_CASE("the body has its own deadline, longer than the header's") {
  TempDir dir;
  const Pki pki = make_pki(dir.path, "main");
  auto limits = test_limits();
  limits.header_timeout = 300ms;
  limits.request_timeout = 3000ms;
  TestServer server(pki.files, limits);
  RawClient raw("127.0.0.1", server.port());
  REQUIRE(raw.handshake());
  REQUIRE(raw.send("POST /v1/challenge HTTP/1.1\r\nHost: x\r\nContent-Length: 8\r\n\r\n"));
  // Eight bytes over 800 ms: past the header deadline, within the body's.
  for (int i = 0; i < 8; ++i) {
    std::this_thread::sleep_for(100ms);
    REQUIRE(raw.send("b"));
  }
  auto response = raw.read_response();
  REQUIRE(response);
  CHECK(response->status == 200);
  CHECK(response->body.find(R"("size":8)") != std::string::npos);
}

TEST_CASE("over max_connections the oldest unfinished connection is shed for a new one") {
  TempDir dir;
  const Pki pki = make_pki(dir.path, "main");
  auto limits = test_limits();
  limits.max_connections = 2;
  limits.request_timeout = 5000ms;
  limits.idle_timeout = 5000ms;
  limits.header_timeout = 5000ms;
  limits.shed_after = 1500ms;
  TestServer server(pki.files, limits);

  // Two connections that have not sent a request yet hold both slots.
  RawClient first("127.0.0.1", server.port());
  REQUIRE(first.handshake());
  RawClient second("127.0.0.1", server.port());
  REQUIRE(second.handshake());
  REQUIRE(eventually(*server.server, [](const TransportStats& s) { return s.connections_open == 2; }));

  // Both are younger than shed_after: a newcomer is refused and they stay.
  {
    RawClient early("127.0.0.1", server.port());
    CHECK(early.closed_within(1000ms));
  }
  CHECK(server.server->stats().connections_refused == 1);
  CHECK(server.server->stats().connections_shed == 0);
  std::this_thread::sleep_for(1600ms);

  // Now a new client is served; the oldest unfinished connection made room for it.
  auto result = protocol::https_get({"127.0.0.1", server.port(), ""}, "/healthz", client_options(pki.ca_pem));
  REQUIRE(result);
  CHECK(result->status == 200);
  CHECK(first.closed_within(2000ms));
  CHECK(server.server->stats().connections_shed == 1);
  CHECK(server.server->stats().connections_refused == 1);

  // The younger one was left alone.
  REQUIRE(second.send(get_request("/healthz")));
  auto response = second.read_response();
  REQUIRE(response);
  CHECK(response->status == 200);
}

TEST_CASE("a connection being answered is never shed; when every slot is answering, new ones are refused") {
  TempDir dir;
  const Pki pki = make_pki(dir.path, "main");
  auto limits = test_limits();
  limits.max_connections = 2;
  limits.request_timeout = 5000ms;
  limits.shed_after = 0ms;  // only "answering" protects here
  TestServer server(pki.files, limits);

  RawClient first("127.0.0.1", server.port());
  REQUIRE(first.handshake());
  REQUIRE(first.send(get_request("/hold")));
  RawClient second("127.0.0.1", server.port());
  REQUIRE(second.handshake());
  REQUIRE(second.send(get_request("/hold")));
  REQUIRE(eventually(*server.server, [](const TransportStats& s) { return s.requests_in_flight == 2; }));

  for (int i = 0; i < 3; ++i) {
    RawClient extra("127.0.0.1", server.port());
    const auto start = Clock::now();
    CHECK(extra.closed_within(2000ms));
    CHECK(elapsed_ms(start) < 1000);
  }
  CHECK(server.server->stats().connections_refused == 3);
  CHECK(server.server->stats().connections_shed == 0);

  server.release_held();
  for (RawClient* held : {&first, &second}) {
    auto response = held->read_response();
    REQUIRE(response);
    CHECK(response->status == 200);
  }
  // Idle again, so a new client can take a slot.
  auto result = protocol::https_get({"127.0.0.1", server.port(), ""}, "/healthz", client_options(pki.ca_pem));
  REQUIRE(result);
  CHECK(result->status == 200);
}

// A real ClientHello, made with memory BIOs: sent raw by a client that then never finishes
// its handshake, it keeps the server in the handshake (holding an active slot) until the
// server's deadline.
std::string client_hello() {
  std::unique_ptr<SSL_CTX, SslCtxFree> ctx(SSL_CTX_new(TLS_client_method()));
  REQUIRE(ctx);
  std::unique_ptr<SSL, SslFree> ssl(SSL_new(ctx.get()));
  REQUIRE(ssl);
  BIO* in = BIO_new(BIO_s_mem());
  BIO* out = BIO_new(BIO_s_mem());
  SSL_set_bio(ssl.get(), in, out);
  SSL_set_connect_state(ssl.get());
  REQUIRE(SSL_do_handshake(ssl.get()) != 1);
  ERR_clear_error();
  char* data = nullptr;
  const long size = BIO_get_mem_data(out, &data);
  REQUIRE(size > 5);
  return std::string(data, static_cast<std::size_t>(size));
}

namespace {
std::string testing_order_text(const std::vector<int>& order) {
  std::string text;
  for (const int i : order) text += (text.empty() ? "" : " ") + std::to_string(i);
  return text;
}
}  // namespace

TEST_CASE("over max_active connections wait before their handshake and are served in arrival order") {
  TempDir dir;
  const Pki pki = make_pki(dir.path, "main");
  auto limits = test_limits();
  limits.max_active = 1;
  limits.queue_timeout = 8000ms;
  limits.request_timeout = 5000ms;
  TestServer server(pki.files, limits);

  // The first connection takes the only active slot with a ClientHello and stalls there,
  // until the server's handshake deadline (2 s here) gives the slot up.
  RawClient holder("127.0.0.1", server.port());
  REQUIRE(holder.send(client_hello()));
  REQUIRE(eventually(*server.server, [](const TransportStats& s) { return s.connections_active == 1; }));

  // Five more arrive one after another; each starts its handshake at once.
  constexpr int waiting = 5;
  std::vector<std::unique_ptr<RawClient>> clients;
  std::vector<std::thread> threads;
  std::mutex order_mutex;
  std::vector<int> order;
  std::atomic<int> handshakes{0};
  std::array<bool, waiting> served{};
  for (int i = 0; i < waiting; ++i) {
    clients.push_back(std::make_unique<RawClient>("127.0.0.1", server.port()));
    RawClient* client = clients.back().get();
    client->set_receive_timeout(6000ms);
    threads.emplace_back([client, i, &order_mutex, &order, &handshakes, &served] {
      if (!client->handshake()) return;
      {
        std::lock_guard lock(order_mutex);
        order.push_back(i);
      }
      handshakes.fetch_add(1);
      if (!client->send(get_request("/healthz", true))) return;
      const auto response = client->read_response();
      served[static_cast<std::size_t>(i)] = response && response->status == 200;
      client->hang_up();
    });
    REQUIRE(eventually(*server.server, [i](const TransportStats& s) {
      return s.connections_waiting == static_cast<std::uint64_t>(i + 1);
    }));
  }
  // While the slot is held, nobody behind it gets a handshake.
  std::this_thread::sleep_for(300ms);
  CHECK(handshakes.load() == 0);
  CHECK(server.server->stats().connections_active == 1);

  for (auto& thread : threads) thread.join();
  // The server admits them one at a time in arrival order. `order` is when each client's
  // thread saw its handshake finish, so a client thread descheduled at that moment can be
  // overtaken by the next one (the slot is free again once the server's side is done): a
  // neighbour swapped now and then is scheduling, a reversed or shuffled order is not FIFO.
  REQUIRE(order.size() == static_cast<std::size_t>(waiting));
  int inversions = 0;
  for (std::size_t a = 0; a < order.size(); ++a)
    for (std::size_t b = a + 1; b < order.size(); ++b) inversions += order[a] > order[b] ? 1 : 0;
  INFO("handshakes finished in the order " << testing_order_text(order));
  CHECK(inversions <= 2);
  for (const bool ok : served) CHECK(ok);
  const TransportStats stats = server.server->stats();
  CHECK(stats.connections_queued == waiting);
  CHECK(stats.queue_timeouts == 0);
  CHECK(stats.timeouts == 1);  // the holder's stalled handshake
  CHECK(stats.handshake_failures == 0);
}

TEST_CASE("a connection that waited queue_timeout for an active slot is closed without a handshake") {
  TempDir dir;
  const Pki pki = make_pki(dir.path, "main");
  auto limits = test_limits();
  limits.max_active = 1;
  limits.queue_timeout = 500ms;
  limits.request_timeout = 5000ms;
  TestServer server(pki.files, limits);

  RawClient holder("127.0.0.1", server.port());
  REQUIRE(holder.send(client_hello()));
  REQUIRE(eventually(*server.server, [](const TransportStats& s) { return s.connections_active == 1; }));
  RawClient late("127.0.0.1", server.port());
  const auto start = Clock::now();
  CHECK_FALSE(late.handshake());  // closed by the server, not answered
  const long long waited = elapsed_ms(start);
  CHECK(waited >= 400);
  CHECK(waited < 1800);
  TransportStats stats = server.server->stats();
  CHECK(stats.queue_timeouts == 1);
  CHECK(stats.handshake_failures == 0);
  CHECK(stats.connections_waiting == 0);

  // Once the stalled handshake has lost its slot, a newcomer is served at once.
  REQUIRE(eventually(*server.server, [](const TransportStats& s) { return s.connections_active == 0; }));
  auto result = protocol::https_get({"127.0.0.1", server.port(), ""}, "/healthz", client_options(pki.ca_pem));
  REQUIRE(result);
  CHECK(result->status == 200);
  CHECK(server.server->stats().queue_timeouts == 1);
}

TEST_CASE("a client that left while it waited for an active slot gets no handshake") {
  TempDir dir;
  const Pki pki = make_pki(dir.path, "main");
  auto limits = test_limits();
  limits.max_active = 1;
  limits.queue_timeout = 8000ms;
  limits.request_timeout = 5000ms;
  TestServer server(pki.files, limits);

  RawClient holder("127.0.0.1", server.port());
  REQUIRE(holder.send(client_hello()));
  REQUIRE(eventually(*server.server, [](const TransportStats& s) { return s.connections_active == 1; }));
  {
    // A complete (if meaningless) first TLS record, then the client gives up and closes.
    RawClient quitter("127.0.0.1", server.port());
    REQUIRE(quitter.send(std::string("\x16\x03\x01\x00\x05hello", 10)));
    REQUIRE(eventually(*server.server, [](const TransportStats& s) { return s.connections_waiting == 1; }));
  }
  REQUIRE(eventually(*server.server, [](const TransportStats& s) { return s.clients_gone == 1; }, 5000ms));
  const TransportStats stats = server.server->stats();
  CHECK(stats.handshake_failures == 0);
  CHECK(stats.connections_waiting == 0);
  CHECK(stats.timeouts == 1);  // the holder
}

TEST_CASE("queued requests are handled oldest connection first, not in the order they came") {
  TempDir dir;
  const Pki pki = make_pki(dir.path, "main");
  auto limits = test_limits();
  limits.blocking_threads = 1;
  limits.request_timeout = 5000ms;
  TestServer server(pki.files, limits);

  // The only blocking thread is held; then an early and a late connection queue requests,
  // the late one first.
  RawClient holder("127.0.0.1", server.port());
  REQUIRE(holder.handshake());
  REQUIRE(holder.send(get_request("/hold")));
  REQUIRE(eventually(*server.server, [](const TransportStats& s) { return s.requests_in_flight == 1; }));
  RawClient early("127.0.0.1", server.port());
  REQUIRE(early.handshake());
  RawClient late("127.0.0.1", server.port());
  REQUIRE(late.handshake());
  REQUIRE(late.send(get_request("/late")));
  REQUIRE(eventually(*server.server, [](const TransportStats& s) { return s.requests_in_flight == 2; }));
  REQUIRE(early.send(get_request("/early")));
  REQUIRE(eventually(*server.server, [](const TransportStats& s) { return s.requests_in_flight == 3; }));

  server.release_held();
  for (RawClient* client : {&holder, &early, &late}) {
    const auto response = client->read_response();
    REQUIRE(response);
    CHECK(response->status == 200);
  }
  CHECK(server.targets() == std::vector<std::string>{"/hold", "/early", "/late"});
}

TEST_CASE("over max_connections_per_peer a peer's own oldest unfinished connection is shed, other peers keep theirs") {
  TempDir dir;
  const Pki pki = make_pki(dir.path, "main");
  auto limits = test_limits();
  limits.max_connections = 100;
  limits.max_connections_per_peer = 2;
  limits.header_timeout = 5000ms;
  limits.shed_after = 0ms;
  TestServer server(pki.files, limits);

  RawClient other_a("127.0.0.1", server.port(), "127.0.0.2");
  REQUIRE(other_a.handshake());
  RawClient other_b("127.0.0.1", server.port(), "127.0.0.2");
  REQUIRE(other_b.handshake());
  RawClient mine_old("127.0.0.1", server.port(), "127.0.0.3");
  REQUIRE(mine_old.handshake());
  RawClient mine_young("127.0.0.1", server.port(), "127.0.0.3");
  REQUIRE(mine_young.handshake());
  REQUIRE(eventually(*server.server, [](const TransportStats& s) { return s.connections_open == 4; }));

  RawClient mine_third("127.0.0.1", server.port(), "127.0.0.3");
  REQUIRE(mine_third.handshake());
  CHECK(mine_old.closed_within(2000ms));
  CHECK(server.server->stats().connections_shed == 1);
  for (RawClient* alive : {&other_a, &other_b, &mine_young, &mine_third}) {
    REQUIRE(alive->send(get_request("/healthz")));
    auto response = alive->read_response();
    REQUIRE(response);
    CHECK(response->status == 200);
  }
  CHECK(server.server->stats().connections_shed == 1);
}

TEST_CASE("request bodies share max_buffered_body_bytes: old partial bodies are shed for new ones, else 503") {
  TempDir dir;
  const Pki pki = make_pki(dir.path, "main");
  auto limits = test_limits();
  limits.max_buffered_body_bytes = 1500;  // the body limit is 1024
  limits.body_bytes_per_connection = 0;    // count every byte
  limits.request_timeout = 5000ms;
  limits.shed_after = 0ms;
  TestServer server(pki.files, limits);
  const auto post_head = [](const std::string& target, std::size_t length) {
    return "POST " + target + " HTTP/1.1\r\nHost: x\r\nContent-Length: " + std::to_string(length) + "\r\n\r\n";
  };

  SECTION("bodies still arriving are shed, oldest first, for a new one") {
    RawClient older("127.0.0.1", server.port());
    REQUIRE(older.handshake());
    REQUIRE(older.send(post_head("/v1/attest", 1000) + std::string(800, 'o')));
    REQUIRE(eventually(*server.server, [](const TransportStats& s) { return s.body_bytes_buffered == 800; }));
    RawClient younger("127.0.0.1", server.port());
    REQUIRE(younger.handshake());
    REQUIRE(younger.send(post_head("/v1/attest", 1000) + std::string(600, 'y')));
    REQUIRE(eventually(*server.server, [](const TransportStats& s) { return s.body_bytes_buffered == 1400; }));

    RawClient fast("127.0.0.1", server.port());
    REQUIRE(fast.handshake());
    REQUIRE(fast.send(post_head("/v1/attest", 1000) + std::string(1000, 'f')));
    auto response = fast.read_response();
    REQUIRE(response);
    CHECK(response->status == 200);
    CHECK(response->body.find(R"("size":1000)") != std::string::npos);
    CHECK(older.closed_within(2000ms));
    CHECK(younger.closed_within(2000ms));
    CHECK(server.server->stats().connections_shed == 2);
    CHECK(server.server->stats().bodies_refused == 0);
  }
  SECTION("bodies being answered are not shed: a body that does not fit then gets 503") {
    RawClient held("127.0.0.1", server.port());
    REQUIRE(held.handshake());
    REQUIRE(held.send(post_head("/hold", 1000) + std::string(1000, 'h')));
    REQUIRE(eventually(*server.server, [](const TransportStats& s) { return s.requests_in_flight == 1; }));
    RawClient late("127.0.0.1", server.port());
    REQUIRE(late.handshake());
    REQUIRE(late.send(post_head("/v1/attest", 1000) + std::string(1000, 'l')));
    auto refused = late.read_response();
    REQUIRE(refused);
    CHECK(refused->status == 503);
    CHECK(refused->body.find("unavailable") != std::string::npos);
    CHECK(refused->head.find("Retry-After: 1") != std::string::npos);
    CHECK(server.server->stats().bodies_refused == 1);
    server.release_held();
    auto answered = held.read_response();
    REQUIRE(answered);
    CHECK(answered->status == 200);
    CHECK(server.server->stats().connections_shed == 0);
  }
  // Nothing stays counted once the connections are gone.
  CHECK(eventually(*server.server, [](const TransportStats& s) { return s.body_bytes_buffered == 0; }));
}

TEST_CASE("keep-alive serves several requests on one connection, up to max_requests_per_connection") {
  TempDir dir;
  const Pki pki = make_pki(dir.path, "main");
  auto limits = test_limits();
  limits.max_requests_per_connection = 3;
  TestServer server(pki.files, limits);

  RawClient raw("127.0.0.1", server.port());
  REQUIRE(raw.handshake());
  std::string first_peer;
  for (int i = 0; i < 3; ++i) {
    INFO("request " << i);
    REQUIRE(raw.send(get_request("/healthz?n=" + std::to_string(i))));
    auto response = raw.read_response();
    REQUIRE(response);
    CHECK(response->status == 200);
    CHECK(response->body.find("/healthz?n=" + std::to_string(i)) != std::string::npos);
    if (i == 0) first_peer = server.last_peer();
    CHECK(server.last_peer() == first_peer);  // the same client port: the same connection
    CHECK((response->head.find("Connection: close") != std::string::npos) == (i == 2));
  }
  CHECK(raw.closed_within(2000ms));
  CHECK(server.calls == 3);
  CHECK(server.server->stats().connections_accepted == 1);

  SECTION("pipelined requests are answered in order") {
    RawClient pipelined("127.0.0.1", server.port());
    REQUIRE(pipelined.handshake());
    REQUIRE(pipelined.send(get_request("/one") + get_request("/two")));
    auto one = pipelined.read_response();
    auto two = pipelined.read_response();
    REQUIRE(one);
    REQUIRE(two);
    CHECK(one->body.find("/one") != std::string::npos);
    CHECK(two->body.find("/two") != std::string::npos);
  }
}

TEST_CASE("an HTTPS session sends its requests over one connection and reconnects when the server closed it") {
  TempDir dir;
  const Pki pki = make_pki(dir.path, "main");
  auto limits = test_limits();
  limits.max_requests_per_connection = 2;
  limits.idle_timeout = 300ms;
  TestServer server(pki.files, limits);
  protocol::HttpsSession session({"127.0.0.1", server.port(), ""}, client_options(pki.ca_pem));

  // Challenge and attest on one TLS connection: one handshake.
  auto challenge = session.post_json("/v1/challenge", R"({"image_id":"a"})");
  auto attest = session.post_json("/v1/attest", R"({"n":1})");
  REQUIRE(challenge);
  REQUIRE(attest);
  CHECK(challenge->status == 200);
  CHECK(attest->body.find(R"("target":"/v1/attest")") != std::string::npos);
  CHECK(session.connections_opened() == 1);
  CHECK(server.server->stats().connections_accepted == 1);

  // The server's request limit (2) ended that connection with "Connection: close": the
  // next request opens another.
  auto third = session.get("/healthz");
  REQUIRE(third);
  CHECK(third->status == 200);
  CHECK(session.connections_opened() == 2);

  // The server closes the kept connection after its idle timeout; the session notices only
  // when it sends, and sends the request again on a new connection.
  std::this_thread::sleep_for(900ms);
  auto fourth = session.get("/healthz?after=idle");
  REQUIRE(fourth);
  CHECK(fourth->body.find("/healthz?after=idle") != std::string::npos);
  CHECK(session.connections_opened() == 3);
  CHECK(server.server->stats().connections_accepted == 3);
  CHECK(server.calls == 4);

  // A request with an effect (the agent's attest) is never sent twice by the session: left
  // unanswered on a connection the server closed, it fails, and the caller's retry decides.
  std::this_thread::sleep_for(900ms);
  auto once = client_options(pki.ca_pem);
  once.resend_unanswered = false;
  auto unanswered = session.post_json("/v1/attest", R"({"n":2})", once);
  CHECK_FALSE(unanswered);
  CHECK(session.connections_opened() == 3);
  CHECK(server.calls == 4);
  auto next = session.post_json("/v1/attest", R"({"n":3})", once);
  REQUIRE(next);
  CHECK(session.connections_opened() == 4);
  CHECK(server.calls == 5);

  // A session to a server that is gone fails like a one-shot request.
  session.close();
  server.server->stop();
  auto gone = session.get("/healthz");
  CHECK_FALSE(gone);
}

TEST_CASE("200 concurrent requests from 8 threads all succeed") {
  TempDir dir;
  const Pki pki = make_pki(dir.path, "main");
  TestServer server(pki.files, test_limits());
  const auto options = client_options(pki.ca_pem);
  std::atomic<int> succeeded{0};
  std::atomic<int> failed{0};
  std::vector<std::thread> threads;
  const auto start = Clock::now();
  for (int t = 0; t < 8; ++t)
    threads.emplace_back([&, t] {
      for (int i = 0; i < 25; ++i) {
        const std::string body = R"({"thread":)" + std::to_string(t) + R"(,"i":)" + std::to_string(i) + "}";
        auto result = protocol::https_post_json({"127.0.0.1", server.port(), ""}, "/v1/challenge", body, options);
        const bool ok = result && result->status == 200 &&
                        result->body.find(R"("size":)" + std::to_string(body.size())) != std::string::npos;
        (ok ? succeeded : failed).fetch_add(1);
      }
    });
  for (auto& thread : threads) thread.join();
  const auto total = elapsed_ms(start);
  std::cout << "transport: 200 HTTPS requests (new TLS 1.3 connection each) from 8 threads in " << total << " ms\n";
  CHECK(succeeded == 200);
  CHECK(failed == 0);
  CHECK(server.calls == 200);
  const auto stats = server.server->stats();
  CHECK(stats.connections_accepted == 200);
  CHECK(stats.connections_refused == 0);
  CHECK(stats.handshake_failures == 0);
  CHECK(eventually(*server.server,
                   [](const TransportStats& s) { return s.connections_open == 0 && s.requests_in_flight == 0; }));
}

TEST_CASE("stop() while connections are open returns promptly") {
  TempDir dir;
  const Pki pki = make_pki(dir.path, "main");
  auto limits = test_limits();
  limits.handshake_timeout = 30'000ms;
  limits.request_timeout = 30'000ms;
  limits.idle_timeout = 30'000ms;
  TestServer server(pki.files, limits);

  RawClient idle("127.0.0.1", server.port());
  REQUIRE(idle.handshake());
  REQUIRE(idle.send(get_request("/healthz")));
  REQUIRE(idle.read_response());  // now waiting in keep-alive
  RawClient half("127.0.0.1", server.port());
  REQUIRE(half.handshake());
  REQUIRE(half.send("GET /healthz HTTP/1.1\r\nHo"));
  RawClient silent("127.0.0.1", server.port());
  REQUIRE(eventually(*server.server, [](const TransportStats& s) { return s.connections_open == 3; }));

  const auto start = Clock::now();
  server.server->stop();
  const auto took = elapsed_ms(start);
  std::cout << "transport: stop() with 3 open connections took " << took << " ms\n";
  CHECK(took < 1000);
  CHECK(idle.closed_within(1000ms));
  CHECK(half.closed_within(1000ms));
  CHECK(silent.closed_within(1000ms));
  server.server->stop();  // idempotent
  CHECK(server.server->stats().connections_open == 0);
}

TEST_CASE("stop() lets a running handler finish and a server that never started stops too") {
  TempDir dir;
  const Pki pki = make_pki(dir.path, "main");
  std::atomic<bool> finished{false};
  auto created = HttpsServer::create(
      {{"127.0.0.1", 0}}, pki.files, test_limits(),
      [&finished](const HttpRequest&) {
        std::this_thread::sleep_for(300ms);
        finished = true;
        return HttpResponse{};
      },
      [](const std::string&, const std::string&) { return std::size_t{0}; });
  REQUIRE(created);
  auto& server = **created;
  server.start();
  std::thread client([&] {
    (void)protocol::https_get({"127.0.0.1", server.bound_ports().at(0), ""}, "/slow", client_options(pki.ca_pem));
  });
  REQUIRE(eventually(server, [](const TransportStats& s) { return s.requests_in_flight == 1; }));
  server.stop();
  CHECK(finished);
  client.join();

  auto never_started = HttpsServer::create(
      {{"127.0.0.1", 0}}, pki.files, test_limits(), [](const HttpRequest&) { return HttpResponse{}; }, nullptr);
  REQUIRE(never_started);
  (*never_started)->stop();
  (*never_started)->start();  // after stop: does nothing
}

TEST_CASE("reload_tls serves the new certificate to new connections") {
  TempDir dir;
  const Pki before = make_pki(dir.path, "before");
  const Pki after = make_pki(dir.path, "after");
  auto limits = test_limits();
  limits.idle_timeout = 5000ms;
  TestServer server(before.files, limits);
  const protocol::HttpsEndpoint endpoint{"127.0.0.1", server.port(), ""};

  REQUIRE(protocol::https_get(endpoint, "/healthz", client_options(before.ca_pem)));
  RawClient old_connection("127.0.0.1", server.port());
  REQUIRE(old_connection.handshake());
  CHECK(old_connection.peer_certificate_subject().find("before server") != std::string::npos);

  REQUIRE(server.server->reload_tls(after.files));
  auto with_new = protocol::https_get(endpoint, "/healthz", client_options(after.ca_pem));
  REQUIRE(with_new);
  CHECK(with_new->status == 200);
  auto with_old = protocol::https_get(endpoint, "/healthz", client_options(before.ca_pem));
  REQUIRE_FALSE(with_old);
  CHECK(with_old.error().code == Errc::verification_failed);

  // A connection made before the reload keeps working.
  REQUIRE(old_connection.send(get_request("/healthz")));
  auto response = old_connection.read_response();
  REQUIRE(response);
  CHECK(response->status == 200);

  // A failed reload keeps the current certificate.
  TlsFiles broken = after.files;
  broken.private_key = dir.path + "/missing-key.pem";
  auto failed = server.server->reload_tls(broken);
  REQUIRE_FALSE(failed);
  CHECK(failed.error().message.find("missing-key.pem") != std::string::npos);
  CHECK(protocol::https_get(endpoint, "/healthz", client_options(after.ca_pem)));
}

TEST_CASE("unusable TLS files and listen addresses are clear errors at create") {
  TempDir dir;
  const Pki pki = make_pki(dir.path, "main");
  const Pki other = make_pki(dir.path, "other");
  auto handler = [](const HttpRequest&) { return HttpResponse{}; };
  const std::vector<ListenAddress> loopback{{"127.0.0.1", 0}};

  TlsFiles missing = pki.files;
  missing.certificate_chain = dir.path + "/nope.pem";
  auto no_chain = HttpsServer::create(loopback, missing, test_limits(), handler, nullptr);
  REQUIRE_FALSE(no_chain);
  CHECK(no_chain.error().message.find("TLS certificate chain") != std::string::npos);
  CHECK(no_chain.error().message.find("nope.pem") != std::string::npos);

  TlsFiles mismatched{pki.files.certificate_chain, other.files.private_key};
  auto wrong_key = HttpsServer::create(loopback, mismatched, test_limits(), handler, nullptr);
  REQUIRE_FALSE(wrong_key);
  CHECK(wrong_key.error().message.find("does not match") != std::string::npos);

  TlsFiles not_pem{pki.files.certificate_chain, pki.files.certificate_chain};
  auto bad_key = HttpsServer::create(loopback, not_pem, test_limits(), handler, nullptr);
  REQUIRE_FALSE(bad_key);
  CHECK(bad_key.error().message.find("TLS private key") != std::string::npos);

  auto named = HttpsServer::create({{"localhost", 0}}, pki.files, test_limits(), handler, nullptr);
  REQUIRE_FALSE(named);
  CHECK(named.error().code == Errc::invalid_argument);

  auto first = HttpsServer::create(loopback, pki.files, test_limits(), handler, nullptr);
  REQUIRE(first);
  auto taken =
      HttpsServer::create({{"127.0.0.1", (*first)->bound_ports().at(0)}}, pki.files, test_limits(), handler, nullptr);
  REQUIRE_FALSE(taken);
  CHECK(taken.error().code == Errc::io);
}

// ---------------------------------------------------------------------------------------
// Admin socket
// ---------------------------------------------------------------------------------------

namespace {

struct AdminFixture {
  TempDir dir;
  std::string path = dir.path + "/admin.sock";
  std::atomic<int> calls{0};
  AdminHandler handler() {
    return [this](const AdminPeer&, const std::string& line) {
      calls.fetch_add(1);
      return R"({"ok":true,"result":{"echo_size":)" + std::to_string(line.size()) + "}}";
    };
  }
};


}  // namespace

TEST_CASE("the admin socket answers one request line with the handler's line") {
  AdminFixture fixture;
  auto server = AdminSocketServer::create(fixture.path, fixture.handler());
  REQUIRE(server);
  (*server)->start();
  auto response = admin_request(fixture.path, R"({"command":"list"})", 5000ms);
  REQUIRE(response);
  CHECK(*response == R"({"ok":true,"result":{"echo_size":18}})");
  // Several in a row, each on its own connection, never turned away as busy.
  for (int i = 0; i < 20; ++i) {
    auto again = admin_request(fixture.path, "{}", 5000ms);
    REQUIRE(again);
    CHECK(again->find(R"("ok":true)") != std::string::npos);
  }
  CHECK(fixture.calls == 21);

  auto multi_line = admin_request(fixture.path, "{}\n{}", 5000ms);
  REQUIRE_FALSE(multi_line);
  CHECK(multi_line.error().code == Errc::invalid_argument);
  (*server)->stop();
}

TEST_CASE("the admin handler is told the peer's uid and pid as the kernel reports them (SO_PEERCRED)") {
  AdminFixture fixture;
  AdminPeer seen;
  auto server = AdminSocketServer::create(fixture.path, [&](const AdminPeer& peer, const std::string&) {
    seen = peer;
    return std::string(R"({"ok":true,"result":{}})");
  });
  REQUIRE(server);
  (*server)->start();
  REQUIRE(admin_request(fixture.path, R"({"command":"list"})", 5000ms));
  (*server)->stop();
  CHECK(seen.uid == ::geteuid());
  CHECK(seen.gid == ::getegid());
  CHECK(seen.pid == ::getpid());
}

TEST_CASE("the admin socket serves at most max_clients at once and queues the others") {
  AdminFixture fixture;
  AdminSocketLimits limits;
  limits.max_clients = 2;
  std::atomic<int> running{0};
  std::atomic<int> most{0};
  auto server = AdminSocketServer::create(
      fixture.path,
      [&](const AdminPeer&, const std::string&) {
        const int now = running.fetch_add(1) + 1;
        int seen = most.load();
        while (now > seen && !most.compare_exchange_weak(seen, now)) {
        }
        std::this_thread::sleep_for(100ms);
        running.fetch_sub(1);
        return std::string(R"({"ok":true,"result":{}})");
      },
      limits);
  REQUIRE(server);
  (*server)->start();
  std::atomic<int> answered{0};
  std::vector<std::thread> clients;
  for (int i = 0; i < 6; ++i)
    clients.emplace_back([&] {
      auto response = admin_request(fixture.path, "{}", 10'000ms);
      if (response && response->find(R"("ok":true)") != std::string::npos) answered.fetch_add(1);
    });
  for (auto& client : clients) client.join();
  CHECK(answered == 6);
  CHECK(most <= 2);
  CHECK(most >= 1);
}

TEST_CASE("the admin socket file has mode 0600") {
  AdminFixture fixture;
  const mode_t previous = ::umask(022);
  auto server = AdminSocketServer::create(fixture.path, fixture.handler());
  ::umask(previous);
  REQUIRE(server);
  struct stat st {};
  REQUIRE(::lstat(fixture.path.c_str(), &st) == 0);
  CHECK(S_ISSOCK(st.st_mode));
  CHECK((st.st_mode & 07777) == 0600);
  CHECK(st.st_uid == ::geteuid());
}

TEST_CASE("an admin request over the size limit is refused without calling the handler") {
  AdminFixture fixture;
  auto server = AdminSocketServer::create(fixture.path, fixture.handler());
  REQUIRE(server);
  (*server)->start();
  const std::string huge(max_admin_request + 1, 'x');
  auto response = admin_request(fixture.path, huge, 10'000ms);
  REQUIRE(response);
  CHECK(response->find(R"("ok":false)") != std::string::npos);
  CHECK(response->find("too_large") != std::string::npos);
  CHECK(fixture.calls == 0);
  // Exactly at the limit is fine.
  auto at_limit = admin_request(fixture.path, std::string(max_admin_request, 'y'), 10'000ms);
  REQUIRE(at_limit);
  CHECK(at_limit->find("echo_size\":" + std::to_string(max_admin_request)) != std::string::npos);
  CHECK(fixture.calls == 1);
}

TEST_CASE("a client that never finishes its admin request line is dropped after the timeout") {
  AdminFixture fixture;
  AdminSocketLimits limits;
  limits.io_timeout = 300ms;
  auto server = AdminSocketServer::create(fixture.path, fixture.handler(), limits);
  REQUIRE(server);
  (*server)->start();
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  REQUIRE(fd >= 0);
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  std::strncpy(address.sun_path, fixture.path.c_str(), sizeof address.sun_path - 1);
  REQUIRE(::connect(fd, reinterpret_cast<const sockaddr*>(&address), sizeof address) == 0);
  timeval tv{3, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  REQUIRE(::send(fd, "{\"comm", 6, MSG_NOSIGNAL) == 6);
  const auto start = Clock::now();
  char byte = 0;
  CHECK(::recv(fd, &byte, 1, 0) == 0);
  CHECK(elapsed_ms(start) < 2000);
  ::close(fd);
  CHECK(fixture.calls == 0);
  // Meanwhile and afterwards others are served.
  CHECK(admin_request(fixture.path, "{}", 5000ms));
}

TEST_CASE("a stale admin socket file is replaced but a live socket or another file is not") {
  AdminFixture fixture;
  SECTION("stale socket") {
    make_stale_socket(fixture.path);
    auto server = AdminSocketServer::create(fixture.path, fixture.handler());
    REQUIRE(server);
    (*server)->start();
    CHECK(admin_request(fixture.path, "{}", 5000ms));
  }
  SECTION("live socket") {
    auto first = AdminSocketServer::create(fixture.path, fixture.handler());
    REQUIRE(first);
    (*first)->start();
    auto second = AdminSocketServer::create(fixture.path, fixture.handler());
    REQUIRE_FALSE(second);
    CHECK(second.error().message.find("in use") != std::string::npos);
    CHECK(admin_request(fixture.path, "{}", 5000ms));  // the first is untouched
  }
  SECTION("regular file") {
    { std::ofstream(fixture.path) << "precious"; }
    auto server = AdminSocketServer::create(fixture.path, fixture.handler());
    REQUIRE_FALSE(server);
    CHECK(server.error().message.find("not a socket") != std::string::npos);
    std::ifstream in(fixture.path);
    std::string content;
    in >> content;
    CHECK(content == "precious");
  }
}

TEST_CASE("stop() unlinks the admin socket and admin_request then reports the daemon missing") {
  AdminFixture fixture;
  auto server = AdminSocketServer::create(fixture.path, fixture.handler());
  REQUIRE(server);
  (*server)->start();
  REQUIRE(admin_request(fixture.path, "{}", 5000ms));
  const auto start = Clock::now();
  (*server)->stop();
  CHECK(elapsed_ms(start) < 1000);
  struct stat st {};
  CHECK(::lstat(fixture.path.c_str(), &st) != 0);
  (*server)->stop();  // idempotent
  auto missing = admin_request(fixture.path, "{}", 1000ms);
  REQUIRE_FALSE(missing);
  CHECK(missing.error().code == Errc::not_found);

  // A stale file with nothing listening is a clear error too.
  make_stale_socket(fixture.path);
  auto refused = admin_request(fixture.path, "{}", 1000ms);
  REQUIRE_FALSE(refused);
  CHECK(refused.error().message.find("nothing is listening") != std::string::npos);
}

TEST_CASE("stop() of the admin socket interrupts a client that is still sending") {
  AdminFixture fixture;
  auto server = AdminSocketServer::create(fixture.path, fixture.handler());
  REQUIRE(server);
  (*server)->start();
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  REQUIRE(fd >= 0);
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  std::strncpy(address.sun_path, fixture.path.c_str(), sizeof address.sun_path - 1);
  REQUIRE(::connect(fd, reinterpret_cast<const sockaddr*>(&address), sizeof address) == 0);
  REQUIRE(::send(fd, "{", 1, MSG_NOSIGNAL) == 1);
  std::this_thread::sleep_for(50ms);  // the worker is now waiting for the rest of the line
  const auto start = Clock::now();
  (*server)->stop();
  CHECK(elapsed_ms(start) < 1000);
  ::close(fd);
  CHECK(fixture.calls == 0);
}

TEST_CASE("a peer that is neither root nor the daemon's user is refused by SO_PEERCRED") {
  if (::geteuid() != 0) {
    WARN("needs root to connect as another uid; skipped");
    return;
  }
  AdminFixture fixture;
  auto server = AdminSocketServer::create(fixture.path, fixture.handler());
  REQUIRE(server);
  (*server)->start();
  // Let another user reach the socket file, so only the credential check stands in the way.
  REQUIRE(::chmod(fixture.dir.path.c_str(), 0711) == 0);
  REQUIRE(::chmod(fixture.path.c_str(), 0666) == 0);

  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  std::strncpy(address.sun_path, fixture.path.c_str(), sizeof address.sun_path - 1);
  const pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    // Only system calls here: the parent has threads.
    const gid_t nogroup = 65534;
    if (::setgroups(1, &nogroup) != 0 || ::setgid(65534) != 0 || ::setuid(65534) != 0) ::_exit(10);
    const int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    if (fd < 0 || ::connect(fd, reinterpret_cast<const sockaddr*>(&address), sizeof address) != 0) ::_exit(11);
    timeval tv{5, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    // The daemon may refuse and close before this arrives; its answer is readable all the same.
    (void)::send(fd, "{}\n", 3, MSG_NOSIGNAL);
    char buffer[512] = {};
    std::size_t got = 0;
    while (got < sizeof buffer - 1) {
      const ssize_t n = ::recv(fd, buffer + got, sizeof buffer - 1 - got, 0);
      if (n <= 0) break;
      got += static_cast<std::size_t>(n);
    }
    ::_exit(std::strstr(buffer, "permission_denied") != nullptr ? 0 : 13);
  }
  int status = 0;
  REQUIRE(::waitpid(child, &status, 0) == child);
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  CHECK(fixture.calls == 0);
  CHECK(admin_request(fixture.path, "{}", 5000ms));  // root still gets in
}
