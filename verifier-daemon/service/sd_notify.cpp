// sd_notify over a datagram socket, as systemd documents the protocol.
#include "verifier-daemon/service/sd_notify.hpp"

#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstddef>
#include <cstdlib>
#include <cstring>

namespace fde::verifier {

namespace {

std::optional<std::uint64_t> env_number(const char* name) {
  const char* text = std::getenv(name);
  if (text == nullptr) return std::nullopt;
  std::uint64_t value = 0;
  const char* end = text + std::strlen(text);
  const auto [stop, ec] = std::from_chars(text, end, value);
  if (ec != std::errc() || stop != end) return std::nullopt;
  return value;
}

}  // namespace

SystemdNotifier SystemdNotifier::from_environment() {
  const char* socket = std::getenv("NOTIFY_SOCKET");
  std::optional<std::chrono::microseconds> watchdog;
  if (auto usec = env_number("WATCHDOG_USEC"); usec && *usec > 0) {
    // WATCHDOG_PID, when set, names the process the watchdog is meant for.
    auto pid = env_number("WATCHDOG_PID");
    if (!pid || *pid == static_cast<std::uint64_t>(::getpid()))
      watchdog = std::chrono::microseconds(static_cast<std::int64_t>(*usec));
  }
  return SystemdNotifier(socket != nullptr ? socket : "", watchdog);
}

std::optional<std::chrono::milliseconds> SystemdNotifier::watchdog_interval() const {
  if (!watchdog_) return std::nullopt;
  auto half = std::chrono::duration_cast<std::chrono::milliseconds>(*watchdog_ / 2);
  return std::max(half, std::chrono::milliseconds(1));
}

Result<void> SystemdNotifier::notify(std::string_view message) const {
  if (socket_path_.empty()) return {};
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  if (socket_path_.size() >= sizeof address.sun_path || (socket_path_[0] != '/' && socket_path_[0] != '@'))
    return fail(Errc::invalid_argument, "NOTIFY_SOCKET \"" + socket_path_ + "\" is not a usable socket address");
  std::memcpy(address.sun_path, socket_path_.data(), socket_path_.size());
  // An abstract socket's name starts with a NUL byte and is exactly as long as given.
  if (socket_path_[0] == '@') address.sun_path[0] = '\0';
  const auto length = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + socket_path_.size() +
                                             (socket_path_[0] == '@' ? 0 : 1));

  const int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return fail(Errc::io, std::string("notify socket: ") + std::strerror(errno));
  const ssize_t sent =
      ::sendto(fd, message.data(), message.size(), MSG_NOSIGNAL, reinterpret_cast<const sockaddr*>(&address), length);
  const int saved = errno;
  ::close(fd);
  if (sent < 0) return fail(Errc::io, "notify " + socket_path_ + ": " + std::strerror(saved));
  return {};
}

Result<void> SystemdNotifier::ready(std::string_view status) const {
  return notify("READY=1\nSTATUS=" + std::string(status) + "\nMAINPID=" + std::to_string(::getpid()));
}

Result<void> SystemdNotifier::reloading() const {
  // systemd 253+ wants MONOTONIC_USEC with RELOADING=1 (Type=notify-reload); older ones ignore it.
  timespec now{};
  ::clock_gettime(CLOCK_MONOTONIC, &now);
  const long long usec = static_cast<long long>(now.tv_sec) * 1'000'000 + now.tv_nsec / 1000;
  return notify("RELOADING=1\nMONOTONIC_USEC=" + std::to_string(usec));
}

}  // namespace fde::verifier
