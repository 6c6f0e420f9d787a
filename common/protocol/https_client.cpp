// Protocol v1's HTTPS client: a session of requests over one TLS 1.3 connection (or one
// request per connection), the server checked
// against the pinned CA only and against the expected name or IP, every step on a deadline.
// Asynchronous Beast on a private io_context, so the deadlines apply; synchronous to callers.
#include "common/protocol/https_client.hpp"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>

#include <exception>
#include <optional>
#include <vector>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>

#include "common/crypto/certificate.hpp"

namespace fde::protocol {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;
using boost::system::error_code;
using TlsStream = beast::ssl_stream<beast::tcp_stream>;

auto on_error(error_code& ec) { return asio::redirect_error(asio::use_awaitable, ec); }

std::string strip_brackets(const std::string& host) {
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') return host.substr(1, host.size() - 2);
  return host;
}

// The agent runs in an initramfs with a static glibc: NSS (and so getaddrinfo for names)
// is not available there, so only literals and "localhost" are accepted, never resolved.
Result<std::vector<tcp::endpoint>> endpoints_for(const std::string& host, std::uint16_t port) {
  const std::string literal = strip_brackets(host);
  if (literal == "localhost")
    return std::vector<tcp::endpoint>{{asio::ip::address_v4::loopback(), port},
                                      {asio::ip::address_v6::loopback(), port}};
  error_code ec;
  const asio::ip::address address = asio::ip::make_address(literal, ec);
  if (ec || literal.empty())
    return fail(Errc::invalid_argument,
                "verifier host must be an IP address (got '" + host + "'; names cannot be resolved in the initramfs)");
  return std::vector<tcp::endpoint>{{address, port}};
}

// An IP literal as it appears in a certificate's iPAddress entry (no brackets, no zone).
std::optional<std::string> ip_literal(const std::string& name) {
  std::string literal = strip_brackets(name);
  if (const auto zone = literal.find('%'); zone != std::string::npos) literal.resize(zone);
  error_code ec;
  (void)asio::ip::make_address(literal, ec);
  if (ec) return std::nullopt;
  return literal;
}

Result<void> check_target(const std::string& target) {
  if (target.empty() || target.front() != '/')
    return fail(Errc::invalid_argument, "request target must start with '/'");
  for (const char c : target)
    if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7f)
      return fail(Errc::invalid_argument, "request target contains a space or control character");
  return {};
}

Result<ssl::context> make_client_context(const std::string& ca_pem) {
  if (ca_pem.empty()) return fail(Errc::invalid_argument, "no pinned CA certificate is configured");
  auto roots = crypto::Certificate::load_all(as_bytes(ca_pem));
  if (!roots) return fail_with_context("pinned CA", roots.error());

  ssl::context context(ssl::context::tls_client);
  SSL_CTX* native = context.native_handle();
  if (SSL_CTX_set_min_proto_version(native, TLS1_3_VERSION) != 1 ||
      SSL_CTX_set_max_proto_version(native, TLS1_3_VERSION) != 1) {
    ERR_clear_error();
    return fail(Errc::internal, "cannot restrict TLS to version 1.3");
  }
  // Only the pinned certificates are trusted: the context's store starts empty and no
  // default paths are loaded. A pinned intermediate may serve as the anchor.
  X509_STORE* store = SSL_CTX_get_cert_store(native);
  for (const auto& root : *roots)
    if (X509_STORE_add_cert(store, root.native()) != 1) ERR_clear_error();  // a duplicate is fine
  X509_STORE_set_flags(store, X509_V_FLAG_PARTIAL_CHAIN);
  context.set_verify_mode(ssl::verify_peer);
  return context;
}

// SNI and the name check for a DNS name; the iPAddress check (and no SNI, RFC 6066 3) for
// an IP literal.
Result<void> expect_server_identity(SSL* ssl, const std::string& server_name) {
  if (const auto ip = ip_literal(server_name)) {
    if (X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), ip->c_str()) != 1) {
      ERR_clear_error();
      return fail(Errc::invalid_argument, "cannot check the server certificate against " + *ip);
    }
    return {};
  }
  SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
  if (SSL_set1_host(ssl, server_name.c_str()) != 1 ||
      SSL_ctrl(ssl, SSL_CTRL_SET_TLSEXT_HOSTNAME, TLSEXT_NAMETYPE_host_name, const_cast<char*>(server_name.c_str())) !=
          1) {
    ERR_clear_error();
    return fail(Errc::invalid_argument, "'" + server_name + "' is not a usable server name");
  }
  return {};
}

std::string describe(const error_code& ec, std::chrono::milliseconds timeout) {
  if (ec == beast::error::timeout) return "timed out after " + std::to_string(timeout.count()) + " ms";
  return ec.message();
}

// What one request on the session's connection came to. `retry_fresh`: the connection was
// an old one and the server closed it before any byte of an answer, so the same request may
// go out once more on a new connection.
struct Outcome {
  Result<HttpsResult> result = fail(Errc::internal, "the request did not run");
  bool retry_fresh = false;
  bool server_keeps = false;  // the answer allows another request on this connection
};

asio::awaitable<void> open_connection(TlsStream& stream, const std::vector<tcp::endpoint>& endpoints,
                                      const std::string& where, const HttpsClientOptions& options,
                                      std::chrono::steady_clock::time_point& deadline, Result<void>& out) {
  beast::tcp_stream& transport = beast::get_lowest_layer(stream);
  error_code ec;
  transport.expires_after(options.connect_timeout);
  co_await transport.async_connect(endpoints, on_error(ec));
  if (ec) {
    out = fail(Errc::io, "cannot connect to " + where + ": " + describe(ec, options.connect_timeout));
    co_return;
  }
  // Beast writes the header and the body as separate TLS records; with Nagle on, the second
  // waits for the server's delayed ACK (about 40 ms per request).
  transport.socket().set_option(asio::ip::tcp::no_delay(true), ec);
  // One deadline for the rest: handshake, request and response together.
  deadline = std::chrono::steady_clock::now() + options.request_timeout;
  transport.expires_at(deadline);
  co_await stream.async_handshake(ssl::stream_base::client, on_error(ec));
  if (ec) {
    const long verify = SSL_get_verify_result(stream.native_handle());
    ERR_clear_error();
    if (verify != X509_V_OK)
      out = fail(Errc::verification_failed,
                 "the server certificate of " + where + " is not trusted: " + X509_verify_cert_error_string(verify));
    else
      out = fail(Errc::io, "TLS handshake with " + where + " failed: " + describe(ec, options.request_timeout));
    co_return;
  }
  out = {};
}

asio::awaitable<void> run_request(TlsStream& stream, beast::flat_buffer& buffer,
                                  http::request<http::string_body>& request, const std::string& where,
                                  const HttpsClientOptions& options, std::chrono::steady_clock::time_point deadline,
                                  bool reused, Outcome& out) {
  beast::tcp_stream& transport = beast::get_lowest_layer(stream);
  error_code ec;
  transport.expires_at(deadline);
  co_await http::async_write(stream, request, on_error(ec));
  // A server may answer early and close while the request is still going out (a 413, say);
  // its answer is still worth reading, so only a timeout ends the exchange here.
  if (ec == beast::error::timeout) {
    out.result = fail(Errc::io, "sending the request to " + where + " " + describe(ec, options.request_timeout));
    co_return;
  }
  const error_code write_error = ec;

  http::response_parser<http::string_body> parser;
  parser.body_limit(static_cast<std::uint64_t>(options.max_response_body));
  transport.expires_at(deadline);
  co_await http::async_read(stream, buffer, parser, on_error(ec));
  if (ec == http::error::body_limit) {
    out.result = fail(Errc::too_large, "the response from " + where + " exceeds " +
                                           std::to_string(options.max_response_body) + " bytes");
  } else if (ec) {
    const error_code& cause = write_error ? write_error : ec;
    out.retry_fresh = reused && !parser.got_some() && ec != beast::error::timeout;
    out.result = fail(Errc::io, "no response from " + where + ": " + describe(cause, options.request_timeout));
  } else {
    HttpsResult result;
    result.status = parser.get().result_int();
    result.body = std::move(parser.get().body());
    out.server_keeps = parser.get().keep_alive() && !write_error;
    out.result = std::move(result);
  }
}

}  // namespace

struct HttpsSession::Impl {
  HttpsEndpoint endpoint;
  HttpsClientOptions options;
  bool keep_alive = true;
  std::optional<Error> setup_error;  // reported by the first request
  std::vector<tcp::endpoint> endpoints;
  std::string server_name;
  std::string authority;  // the Host header
  std::string where;      // "127.0.0.1:8443" for messages
  std::optional<ssl::context> context;
  asio::io_context io{1};
  std::unique_ptr<TlsStream> stream;  // the open connection, if any
  beast::flat_buffer buffer;
  std::size_t opened = 0;

  // Runs one coroutine on the private context to its end.
  template <class Awaitable>
  Result<void> run(Awaitable awaitable) {
    bool crashed = false;
    asio::co_spawn(io, std::move(awaitable), [&crashed](std::exception_ptr error) { crashed = error != nullptr; });
    try {
      io.run();
    } catch (const std::exception& e) {
      io.restart();
      return fail(Errc::internal, std::string("HTTPS request failed unexpectedly: ") + e.what());
    }
    io.restart();
    if (crashed) return fail(Errc::internal, "HTTPS request failed unexpectedly");
    return {};
  }

  void drop() {
    if (stream) {
      error_code ignored;
      beast::get_lowest_layer(*stream).socket().close(ignored);  // no TLS close exchange: it adds nothing
    }
    stream.reset();
    buffer.clear();
  }

  Result<void> connect(const HttpsClientOptions& timeouts, std::chrono::steady_clock::time_point& deadline) {
    drop();
    stream = std::make_unique<TlsStream>(io, *context);
    if (auto ok = expect_server_identity(stream->native_handle(), server_name); !ok) {
      stream.reset();
      return ok;
    }
    ++opened;
    Result<void> connected = fail(Errc::internal, "the connection did not run");
    if (auto ran = run(open_connection(*stream, endpoints, where, timeouts, deadline, connected)); !ran) {
      drop();
      return ran;
    }
    if (!connected) drop();
    return connected;
  }

  Result<HttpsResult> request(http::verb method, const std::string& target, const std::string* body,
                              const HttpsClientOptions& timeouts) {
    if (auto ok = check_target(target); !ok) return tl::unexpected(ok.error());
    if (setup_error) return tl::unexpected(*setup_error);
    http::request<http::string_body> message{method, target, 11};
    message.set(http::field::host, authority);
    message.set(http::field::user_agent, "virtcca-fde");
    message.set(http::field::accept, "application/json");
    if (body != nullptr) {
      message.set(http::field::content_type, "application/json");
      message.body() = *body;
    }
    message.keep_alive(keep_alive);
    message.prepare_payload();

    // At most two tries: a kept connection the server has meanwhile closed, then a new one;
    // both together within what one request on a new connection may take.
    const auto limit = std::chrono::steady_clock::now() + timeouts.connect_timeout + timeouts.request_timeout;
    for (int attempt = 0; attempt < 2; ++attempt) {
      const bool reused = stream != nullptr;
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(limit - std::chrono::steady_clock::now());
      if (left <= std::chrono::milliseconds(0))
        return fail(Errc::io, "no response from " + where + ": timed out after a closed connection");
      HttpsClientOptions bounded = timeouts;
      bounded.connect_timeout = std::min(timeouts.connect_timeout, left);
      bounded.request_timeout = std::min(timeouts.request_timeout, left);
      // Handshake (when new), request and response together within request_timeout.
      auto deadline = std::chrono::steady_clock::now() + bounded.request_timeout;
      if (!reused) {
        if (auto ok = connect(bounded, deadline); !ok) return tl::unexpected(ok.error());
      }
      deadline = std::min(deadline, limit);
      Outcome outcome;
      if (auto ran = run(run_request(*stream, buffer, message, where, timeouts, deadline, reused, outcome)); !ran) {
        drop();
        return tl::unexpected(ran.error());
      }
      if (!outcome.result || !outcome.server_keeps || !keep_alive) drop();
      if (!outcome.result && outcome.retry_fresh && timeouts.resend_unanswered) continue;
      return std::move(outcome.result);
    }
    return fail(Errc::io, "no response from " + where + ": the connection closed twice");
  }
};

HttpsSession::HttpsSession(HttpsEndpoint endpoint, HttpsClientOptions options, bool keep_alive)
    : impl_(std::make_unique<Impl>()) {
  Impl& s = *impl_;
  s.keep_alive = keep_alive;
  s.endpoint = std::move(endpoint);
  s.options = std::move(options);
  auto endpoints = endpoints_for(s.endpoint.host, s.endpoint.port);
  if (!endpoints) {
    s.setup_error = endpoints.error();
    return;
  }
  s.endpoints = std::move(*endpoints);
  auto context = make_client_context(s.options.ca_pem);
  if (!context) {
    s.setup_error = context.error();
    return;
  }
  s.context.emplace(std::move(*context));
  s.server_name = s.endpoint.server_name.empty() ? strip_brackets(s.endpoint.host) : s.endpoint.server_name;
  const bool bracket = s.server_name.find(':') != std::string::npos;  // an IPv6 literal
  s.authority = (bracket ? "[" + s.server_name + "]" : s.server_name) +
                (s.endpoint.port == 443 ? "" : ":" + std::to_string(s.endpoint.port));
  const std::string host_text = strip_brackets(s.endpoint.host);
  s.where = (host_text.find(':') != std::string::npos ? "[" + host_text + "]" : host_text) + ":" +
            std::to_string(s.endpoint.port);
}

HttpsSession::~HttpsSession() {
  if (impl_) impl_->drop();
}

Result<HttpsResult> HttpsSession::post_json(const std::string& target, const std::string& body) {
  return impl_->request(http::verb::post, target, &body, impl_->options);
}

Result<HttpsResult> HttpsSession::post_json(const std::string& target, const std::string& body,
                                            const HttpsClientOptions& timeouts) {
  return impl_->request(http::verb::post, target, &body, timeouts);
}

Result<HttpsResult> HttpsSession::get(const std::string& target) {
  return impl_->request(http::verb::get, target, nullptr, impl_->options);
}

void HttpsSession::close() { impl_->drop(); }

std::size_t HttpsSession::connections_opened() const { return impl_->opened; }

const HttpsEndpoint& HttpsSession::endpoint() const { return impl_->endpoint; }

namespace {

// One request, one connection, "Connection: close".
Result<HttpsResult> https_request(const HttpsEndpoint& endpoint, http::verb method, const std::string& target,
                                  const std::string* body, const HttpsClientOptions& options) {
  HttpsSession session(endpoint, options, false);
  return method == http::verb::get ? session.get(target) : session.post_json(target, *body);
}

}  // namespace

Result<HttpsResult> https_post_json(const HttpsEndpoint& endpoint, const std::string& target, const std::string& body,
                                    const HttpsClientOptions& options) {
  return https_request(endpoint, http::verb::post, target, &body, options);
}

Result<HttpsResult> https_get(const HttpsEndpoint& endpoint, const std::string& target,
                              const HttpsClientOptions& options) {
  return https_request(endpoint, http::verb::get, target, nullptr, options);
}

}  // namespace fde::protocol
