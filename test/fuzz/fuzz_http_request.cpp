// libFuzzer target: the attestation port's request handling without sockets. The input is
// the raw bytes a client sends after the TLS handshake; they go through Beast's request
// parser with the daemon's header limit and per-target body limit (AttestationApi::body_limit,
// as server/https_server.cpp applies them), then the application's router and request
// parsers (AttestationApi::handle) against a real SQLite store. A request that passes the
// parser gets an answer with a status in 200..599 and, for an error, the JSON error body.
#include <unistd.h>

#include <boost/beast/core/error.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/string_body.hpp>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <limits>
#include <memory>
#include <string>

#include "common/crypto/random.hpp"
#include "common/protocol/messages.hpp"
#include "verifier-daemon/api/attestation_api.hpp"
#include "verifier-daemon/server/https_server.hpp"
#include "verifier-daemon/store/key_encryption_key.hpp"

namespace {

namespace http = boost::beast::http;
using namespace fde;
using namespace fde::verifier;

struct Daemon {
  Daemon() {
    char pattern[] = "/tmp/fde-fuzz-http-XXXXXX";
    if (::mkdtemp(pattern) == nullptr) __builtin_trap();
    dir = pattern;
    auto kek = KeyEncryptionKey::from_bytes(crypto::random_bytes(KeyEncryptionKey::key_size));
    if (!kek) __builtin_trap();
    auto opened = open_sqlite_store(dir + "/verifier.db", std::move(*kek));
    if (!opened) __builtin_trap();
    store = std::move(*opened);
    std::vector<SecretBytes> secrets;
    secrets.push_back(crypto::random_secret(32));
    auto nonces = NonceService::create(std::move(secrets), std::chrono::seconds(60));
    if (!nonces) __builtin_trap();
    auto policy = std::make_shared<const VerificationPolicy>(std::move(*nonces), DeciderConfig{});
    AttestationOptions options;
    options.rate_limit.per_minute = 0;  // no limit: every input reaches the parsers
    api = std::make_unique<AttestationApi>(policy, *store, metrics, logger, [] { return Clock::now(); }, options);
  }
  ~Daemon() {
    api.reset();
    store.reset();
    std::error_code ignored;
    std::filesystem::remove_all(dir, ignored);
  }
  static Daemon& instance() {
    static Daemon daemon;
    return daemon;
  }
  std::string dir;
  std::unique_ptr<Store> store;
  Metrics metrics;
  Logger logger{LogLevel::error, Logger::Sink([](std::string_view) {})};
  std::unique_ptr<AttestationApi> api;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  Daemon& daemon = Daemon::instance();
  const ServerLimits limits;
  http::request_parser<http::string_body> parser;
  parser.eager(false);
  parser.header_limit(static_cast<std::uint32_t>(limits.max_header_bytes));
  parser.body_limit(std::numeric_limits<std::uint64_t>::max());

  boost::beast::error_code ec;
  std::size_t used = 0;
  while (!parser.is_header_done()) {
    const std::size_t n = parser.put(boost::asio::buffer(data + used, size - used), ec);
    used += n;
    if (ec == http::error::need_more) return 0;  // the server would wait, then time out
    if (ec) return 0;                            // 400 or 431 from the transport
    if (n == 0) return 0;
  }
  const std::string method(parser.get().method_string());
  const std::string target(parser.get().target());
  const std::size_t limit = AttestationApi::body_limit(method, target);
  if (auto length = parser.content_length(); length && *length > limit) return 0;  // 413
  parser.body_limit(limit);
  parser.eager(true);
  while (!parser.is_done()) {
    if (used == size) {
      parser.put_eof(ec);  // the client closed: the end of a body without a length
      if (ec) return 0;
      break;
    }
    const std::size_t n = parser.put(boost::asio::buffer(data + used, size - used), ec);
    used += n;
    if (ec == http::error::need_more) {
      ec = {};
      if (n == 0) used = size;  // what is left cannot complete the next element
      continue;
    }
    if (ec) return 0;  // 413 for http::error::body_limit, else 400 and a closed connection
    if (n == 0) return 0;
  }
  if (!parser.is_done()) return 0;
  HttpRequest request;
  request.method = method;
  request.target = target;
  request.content_type = std::string(parser.get()[http::field::content_type]);
  request.body = parser.get().body();
  request.peer = "192.0.2.7:40000";
  if (request.body.size() > limit) __builtin_trap();  // the limit held

  const HttpResponse answer = daemon.api->handle(request);
  if (answer.status < 200 || answer.status > 599) __builtin_trap();
  if (answer.status >= 400) {
    // Every refusal is a JSON error body the agent can parse.
    if (!protocol::parse_error_response(answer.body)) __builtin_trap();
  }
  return 0;
}
