// The systemd notification protocol (sd_notify(3)) without libsystemd: one datagram per
// message to the AF_UNIX socket named by $NOTIFY_SOCKET ("@name" = abstract namespace).
// Without $NOTIFY_SOCKET (not started by systemd with Type=notify) every call is a no-op.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <string_view>

#include "common/util/error.hpp"

namespace fde::verifier {

class SystemdNotifier {
 public:
  // Reads $NOTIFY_SOCKET and $WATCHDOG_USEC (honouring $WATCHDOG_PID) once.
  static SystemdNotifier from_environment();
  // For tests: an explicit socket path ("" disables).
  explicit SystemdNotifier(std::string socket_path, std::optional<std::chrono::microseconds> watchdog = std::nullopt)
      : socket_path_(std::move(socket_path)), watchdog_(watchdog) {}

  bool enabled() const { return !socket_path_.empty(); }
  // Sends "READY=1\nSTATUS=...", "WATCHDOG=1", "RELOADING=1", "STOPPING=1" and the like.
  Result<void> notify(std::string_view message) const;
  Result<void> ready(std::string_view status) const;
  Result<void> watchdog_ping() const { return notify("WATCHDOG=1"); }
  Result<void> reloading() const;
  Result<void> stopping() const { return notify("STOPPING=1"); }

  // How often to ping: half of $WATCHDOG_USEC, or nullopt when no watchdog is configured.
  std::optional<std::chrono::milliseconds> watchdog_interval() const;

 private:
  std::string socket_path_;
  std::optional<std::chrono::microseconds> watchdog_;
};

}  // namespace fde::verifier
