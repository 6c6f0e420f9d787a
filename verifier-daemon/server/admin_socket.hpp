// The administration channel: a Unix stream socket (mode 0600, owned by the daemon's user)
// that carries one JSON request and one JSON response per line. Only root may use it
// (SO_PEERCRED), plus one uid the configuration names explicitly (admin.allowed_uid); the
// daemon's own uid gets no implicit access. Never reachable over the network (docs/fde-verifierd.md
// section 3).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "common/util/error.hpp"

namespace fde::verifier {

// The connected client as the kernel reports it (SO_PEERCRED, taken at connect time); the
// handler records the uid with every change it makes.
struct AdminPeer {
  uid_t uid = static_cast<uid_t>(-1);
  gid_t gid = static_cast<gid_t>(-1);
  pid_t pid = 0;
};

// Takes the peer and one request line (without the newline) and returns one response line.
using AdminHandler = std::function<std::string(const AdminPeer& peer, const std::string& request_line)>;

constexpr std::size_t max_admin_request = 4 * 1024 * 1024;  // an enrollment bundle with references
// The largest response line admin_request() accepts (audit listings can be long).
constexpr std::size_t max_admin_response = 64 * 1024 * 1024;

struct AdminSocketLimits {
  std::chrono::milliseconds io_timeout{10'000};  // reading the request line; writing the response
  std::size_t max_request = max_admin_request;   // longer request lines are refused with too_large
  unsigned max_clients = 4;                      // served at once; others wait in the listen backlog
  // Root (uid 0) may always connect; this one other uid too, if set (admin.allowed_uid:
  // a developer running everything as themselves). Unset: root only.
  std::optional<uid_t> allowed_uid;
};

class AdminSocketServer {
 public:
  static Result<std::unique_ptr<AdminSocketServer>> create(const std::string& path, AdminHandler handler);
  // Replaces a stale socket file (nothing listening) but never a live socket or another
  // kind of file. The socket's directory must be owned by root or the daemon's user and not
  // writable by group or others, and must not be a symbolic link; otherwise create() refuses.
  // Sets the process umask for the moment of bind(): call it before other threads create
  // files. The handler runs on the socket's worker threads, one call per client.
  static Result<std::unique_ptr<AdminSocketServer>> create(const std::string& path, AdminHandler handler,
                                                           const AdminSocketLimits& limits);
  virtual ~AdminSocketServer() = default;
  virtual void start() = 0;  // serves on its own thread
  virtual void stop() = 0;   // closes and unlinks the socket
};

// Client side (fde-admin): sends one request line and reads one response line.
Result<std::string> admin_request(const std::string& socket_path, const std::string& request_line,
                                  std::chrono::milliseconds timeout = std::chrono::milliseconds(30'000));

}  // namespace fde::verifier
