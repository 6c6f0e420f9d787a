// The transport-neutral request and response the HTTPS server hands to the application.
// The application (api/) is a pure function from HttpRequest to HttpResponse.
#pragma once

#include <functional>
#include <string>
#include <utility>
#include <vector>

namespace fde::verifier {

struct HttpRequest {
  std::string method;  // "GET", "POST"
  std::string target;  // "/v1/attest"
  std::string content_type;
  std::string body;
  std::string peer;  // "127.0.0.1:53122", "[::1]:53122" (IPv4-mapped IPv6 shown as IPv4)
};

struct HttpResponse {
  unsigned status = 200;
  std::string content_type = "application/json";
  std::string body;
  // Further header fields, as the application's own fixed names ("Retry-After").
  std::vector<std::pair<std::string, std::string>> headers = {};
};

// Called on the server's blocking pool (ServerLimits::blocking_threads threads), so up to
// that many calls run at once: it must be thread-safe, and it may block (SQLite). An
// exception becomes a 500 {"error":"unavailable"}. Statuses outside 200..599 become 500.
using RequestHandler = std::function<HttpResponse(const HttpRequest&)>;
// The largest body accepted for a target (method + path); 0 refuses any body. Consulted
// after the headers are read and before the body is, so oversized bodies cost nothing.
// Called on the I/O threads, concurrently: it must be cheap, thread-safe and non-blocking.
using BodyLimit = std::function<std::size_t(const std::string& method, const std::string& target)>;

}  // namespace fde::verifier
