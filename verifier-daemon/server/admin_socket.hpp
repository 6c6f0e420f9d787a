// The administration channel: a Unix stream socket (mode 0600, owned by the daemon's user)
// that carries one JSON request and one JSON response per line. Connections from a peer
// whose uid is neither root nor the daemon's own are refused (SO_PEERCRED). Never reachable
// over the network (design.md section 3).
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include "common/util/error.hpp"

namespace fde::verifier {

// Takes one request line (without the newline) and returns one response line.
using AdminHandler = std::function<std::string(const std::string& request_line)>;

constexpr std::size_t max_admin_request = 4 * 1024 * 1024;  // an enrollment bundle with references

class AdminSocketServer {
 public:
  static Result<std::unique_ptr<AdminSocketServer>> create(const std::string& path, AdminHandler handler);
  virtual ~AdminSocketServer() = default;
  virtual void start() = 0;  // serves on its own thread
  virtual void stop() = 0;   // closes and unlinks the socket
};

// Client side (fde-admin): sends one request line and reads one response line.
Result<std::string> admin_request(const std::string& socket_path, const std::string& request_line,
                                  std::chrono::milliseconds timeout = std::chrono::milliseconds(30'000));

}  // namespace fde::verifier
