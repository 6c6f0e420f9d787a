// The administration socket: plain POSIX on an accept thread plus a few worker threads, one
// line in and one line out per connection, peers checked with SO_PEERCRED. Request lines may
// carry a disk key (enroll), so every buffer that held one is wiped.
#include "verifier-daemon/server/admin_socket.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <list>
#include <mutex>
#include <span>
#include <thread>

#include "common/util/secret_bytes.hpp"

namespace fde::verifier {
namespace {

using Clock = std::chrono::steady_clock;

constexpr int listen_backlog = 16;
constexpr std::size_t read_chunk = 64 * 1024;

class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  UniqueFd(UniqueFd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept {
    if (this != &other) {
      reset();
      fd_ = std::exchange(other.fd_, -1);
    }
    return *this;
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  ~UniqueFd() { reset(); }

  int get() const { return fd_; }
  int release() { return std::exchange(fd_, -1); }
  explicit operator bool() const { return fd_ >= 0; }
  void reset() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_ = -1;
};

void wipe_string(std::string& text) {
  wipe_bytes({reinterpret_cast<std::uint8_t*>(text.data()), text.size()});
  text.clear();
}

std::string errno_text(int error) { return std::strerror(error); }

// {"ok":false,...} in the admin API's error shape; the message is escaped minimally.
std::string error_line(std::string_view code, std::string_view message) {
  std::string out = R"({"ok":false,"error":")" + std::string(code) + R"(","message":")";
  for (const char c : message) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) >= 0x20) {
      out += c;
    }
  }
  return out + "\"}";
}

Result<sockaddr_un> socket_address(const std::string& path) {
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof address.sun_path)
    return fail(Errc::invalid_argument, "admin socket path '" + path + "' is empty or longer than " +
                                            std::to_string(sizeof address.sun_path - 1) + " bytes");
  std::memcpy(address.sun_path, path.c_str(), path.size() + 1);
  return address;
}

int connect_to(int fd, const sockaddr_un& address) {
  return ::connect(fd, reinterpret_cast<const sockaddr*>(&address), sizeof address);
}

// Where the socket file goes: the directory (opened and checked below) and the name in it.
struct SocketLocation {
  std::string directory;
  std::string name;
};

Result<SocketLocation> split_socket_path(const std::string& path) {
  const auto slash = path.rfind('/');
  if (slash == std::string::npos) return SocketLocation{".", path};
  SocketLocation location{slash == 0 ? "/" : path.substr(0, slash), path.substr(slash + 1)};
  if (location.name.empty() || location.name == "." || location.name == "..")
    return fail(Errc::invalid_argument, "admin socket path '" + path + "' does not end in a file name");
  return location;
}

// The socket's directory must be one that only the daemon's user or root can change: anyone
// else who can write there could swap the stale socket we are about to remove, or the new
// socket before it is checked, for a file or link of their choosing. Opened without following
// a symbolic link, and every later step works relative to this descriptor.
Result<UniqueFd> open_socket_directory(const std::string& directory) {
  UniqueFd fd(::open(directory.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!fd) {
    const int error = errno;
    if (error == ELOOP || error == ENOTDIR)
      return fail(Errc::invalid_argument, "admin socket directory " + directory +
                                              " is a symbolic link or not a directory; refusing to use it");
    return fail(Errc::io, "admin socket directory " + directory + ": " + errno_text(error));
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return fail(Errc::io, "admin socket directory " + directory + ": " + errno_text(errno));
  if (st.st_uid != 0 && st.st_uid != ::geteuid())
    return fail(Errc::invalid_argument, "admin socket directory " + directory + " is owned by uid " +
                                            std::to_string(st.st_uid) + ", neither root nor the daemon's user (uid " +
                                            std::to_string(::geteuid()) + "); refusing to use it");
  if ((st.st_mode & (S_IWGRP | S_IWOTH)) != 0) {
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
    return fail(Errc::invalid_argument, "admin socket directory " + directory + " has mode " + mode +
                                            ": others can write to it; refusing to use it (chmod go-w it)");
  }
  return fd;
}

// A socket file left by a daemon that died is replaced; a live socket or any other file is not.
Result<void> clear_stale_socket(int directory, const std::string& name, const std::string& path,
                                const sockaddr_un& address) {
  struct stat st {};
  if (::fstatat(directory, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
    if (errno == ENOENT) return {};
    return fail(Errc::io, "admin socket " + path + ": " + errno_text(errno));
  }
  if (!S_ISSOCK(st.st_mode))
    return fail(Errc::invalid_argument, "admin socket " + path + " exists and is not a socket; not replacing it");
  UniqueFd probe(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!probe) return fail(Errc::io, "socket: " + errno_text(errno));
  if (connect_to(probe.get(), address) == 0 || errno == EAGAIN)
    return fail(Errc::io, "admin socket " + path + " is in use by a running process");
  if (errno != ECONNREFUSED) return fail(Errc::io, "admin socket " + path + ": " + errno_text(errno));
  if (::unlinkat(directory, name.c_str(), 0) != 0 && errno != ENOENT)
    return fail(Errc::io, "cannot remove the stale admin socket " + path + ": " + errno_text(errno));
  return {};
}

int remaining_ms(Clock::time_point deadline) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
  return left <= 0 ? 0 : static_cast<int>(std::min<long long>(left, 60'000));
}

enum class IoStatus { done, timeout, closed, stopped, failed, too_large };

// Waits until `fd` is ready for `events`, the deadline passes, or `wake_fd` (if any) fires.
IoStatus wait_for(int fd, short events, int wake_fd, Clock::time_point deadline) {
  for (;;) {
    pollfd fds[2] = {{fd, events, 0}, {wake_fd, POLLIN, 0}};
    const int timeout = remaining_ms(deadline);
    if (timeout == 0) return IoStatus::timeout;
    const int ready = ::poll(fds, wake_fd >= 0 ? 2 : 1, timeout);
    if (ready < 0) {
      if (errno == EINTR) continue;
      return IoStatus::failed;
    }
    if (ready == 0) continue;  // the loop re-checks the deadline
    if (wake_fd >= 0 && (fds[1].revents & POLLIN) != 0) return IoStatus::stopped;
    return IoStatus::done;  // readiness or an error condition, which the next call reports
  }
}

IoStatus send_all(int fd, std::string_view data, int wake_fd, Clock::time_point deadline) {
  while (!data.empty()) {
    const ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      data.remove_prefix(static_cast<std::size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno != EAGAIN) return errno == EPIPE || errno == ECONNRESET ? IoStatus::closed : IoStatus::failed;
    if (const auto status = wait_for(fd, POLLOUT, wake_fd, deadline); status != IoStatus::done) return status;
  }
  return IoStatus::done;
}

// Reads up to the first newline (not included) into `line`. A line longer than `limit` is
// too_large; the end of the stream before a newline ends the line only if `eof_ends_line`.
IoStatus read_line(int fd, std::string& line, std::size_t limit, int wake_fd, Clock::time_point deadline,
                   bool eof_ends_line) {
  char chunk[read_chunk];
  IoStatus status = IoStatus::failed;
  for (;;) {
    const ssize_t n = ::recv(fd, chunk, sizeof chunk, MSG_DONTWAIT);
    if (n > 0) {
      const std::string_view got(chunk, static_cast<std::size_t>(n));
      const auto newline = got.find('\n');
      const std::size_t take = newline == std::string_view::npos ? got.size() : newline;
      if (line.size() + take > limit) {
        status = IoStatus::too_large;
        break;
      }
      line.append(got.substr(0, take));
      if (newline != std::string_view::npos) {
        status = IoStatus::done;
        break;
      }
      continue;
    }
    if (n == 0) {
      status = eof_ends_line && !line.empty() ? IoStatus::done : IoStatus::closed;
      break;
    }
    if (errno == EINTR) continue;
    if (errno != EAGAIN) {
      status = errno == ECONNRESET ? IoStatus::closed : IoStatus::failed;
      break;
    }
    if (status = wait_for(fd, POLLIN, wake_fd, deadline); status != IoStatus::done) break;
  }
  wipe_bytes({reinterpret_cast<std::uint8_t*>(chunk), sizeof chunk});
  return status;
}

class AdminServer final : public AdminSocketServer {
 public:
  AdminServer(std::string name, AdminHandler handler, const AdminSocketLimits& limits, UniqueFd directory,
              UniqueFd listener, UniqueFd wake, dev_t device, ino_t inode)
      : name_(std::move(name)),
        handler_(std::move(handler)),
        limits_(limits),
        directory_(std::move(directory)),
        listener_(std::move(listener)),
        wake_(std::move(wake)),
        device_(device),
        inode_(inode) {}

  ~AdminServer() override { stop(); }
  AdminServer(const AdminServer&) = delete;
  AdminServer& operator=(const AdminServer&) = delete;

  void start() override {
    std::lock_guard lock(mutex_);
    if (started_ || stopped_) return;
    started_ = true;
    acceptor_ = std::thread([this] { accept_loop(); });
  }

  void stop() override {
    {
      std::lock_guard lock(mutex_);
      if (stopped_) return;
      stopped_ = true;
    }
    slot_free_.notify_all();
    // The eventfd stays readable once written: every poll in every thread wakes up.
    const std::uint64_t one = 1;
    [[maybe_unused]] const ssize_t written = ::write(wake_.get(), &one, sizeof one);
    if (acceptor_.joinable()) acceptor_.join();
    std::list<Worker> workers;
    {
      std::lock_guard lock(mutex_);
      workers.swap(workers_);
    }
    for (auto& worker : workers)
      if (worker.thread.joinable()) worker.thread.join();
    listener_.reset();
    // Only our own socket file: another daemon may have replaced it since.
    struct stat st {};
    if (::fstatat(directory_.get(), name_.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISSOCK(st.st_mode) &&
        st.st_dev == device_ && st.st_ino == inode_)
      ::unlinkat(directory_.get(), name_.c_str(), 0);
  }

 private:
  struct Worker {
    std::thread thread;
    bool done = false;  // under mutex_
  };

  void accept_loop() {
    for (;;) {
      // At most max_clients at once; others wait in the listen backlog rather than being
      // turned away, so fde-admin commands run back to back never see a spurious "busy".
      {
        std::unique_lock lock(mutex_);
        slot_free_.wait(lock, [this] {
          reap_finished();
          return stopped_ || workers_.size() < limits_.max_clients;
        });
        if (stopped_) return;
      }
      if (wait_for(listener_.get(), POLLIN, wake_.get(), Clock::now() + std::chrono::hours(1)) == IoStatus::stopped)
        return;
      UniqueFd client(::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
      if (!client) {
        // Out of descriptors: pause rather than spin; other errors are the client's.
        if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)
          if (wait_for(wake_.get(), POLLIN, -1, Clock::now() + std::chrono::milliseconds(100)) == IoStatus::done)
            return;
        continue;
      }
      start_worker(std::move(client));
    }
  }

  // The worker owns the client from here; if no thread can be made, the client is closed.
  void start_worker(UniqueFd client) {
    std::lock_guard lock(mutex_);
    Worker& worker = workers_.emplace_back();
    try {
      worker.thread = std::thread([this, &worker, fd = client.get()] {
        serve_client(UniqueFd(fd));
        {
          std::lock_guard done(mutex_);
          worker.done = true;
        }
        slot_free_.notify_all();
      });
    } catch (...) {
      workers_.pop_back();
      return;
    }
    (void)client.release();
  }

  void reap_finished() {
    for (auto it = workers_.begin(); it != workers_.end();) {
      if (it->done) {
        it->thread.join();
        it = workers_.erase(it);
      } else {
        ++it;
      }
    }
  }

  void serve_client(UniqueFd client) {
    const int wake = wake_.get();
    const auto deadline = Clock::now() + limits_.io_timeout;
    ucred peer{};
    socklen_t size = sizeof peer;
    // Root only (docs/fde-verifierd.md, "The admin socket"), plus the one uid admin.allowed_uid names. The daemon's
    // own uid gets no implicit access: whoever takes over the service user must not also
    // be able to enroll, revoke or read the audit log.
    const bool credentials = ::getsockopt(client.get(), SOL_SOCKET, SO_PEERCRED, &peer, &size) == 0 && size == sizeof peer;
    if (!credentials || (peer.uid != 0 && peer.uid != limits_.allowed_uid.value_or(0))) {
      const std::string who = credentials ? "uid " + std::to_string(peer.uid) : std::string("this peer");
      (void)send_all(client.get(),
                     error_line("permission_denied",
                                who + " may not use the admin socket (root only, unless admin.allowed_uid names it)") +
                         "\n",
                     wake, deadline);
      return;
    }
    std::string request;
    // Reserved once, so a growing string never leaves unwiped copies of a key behind.
    request.reserve(limits_.max_request + 1);
    const IoStatus status = read_line(client.get(), request, limits_.max_request, wake, deadline, true);
    if (status == IoStatus::too_large) {
      wipe_string(request);
      (void)send_all(
          client.get(),
          error_line("too_large", "request exceeds the limit of " + std::to_string(limits_.max_request) + " bytes") +
              "\n",
          wake, Clock::now() + limits_.io_timeout);
      return;
    }
    if (status != IoStatus::done) {
      wipe_string(request);
      return;
    }
    std::string response;
    try {
      response = handler_(AdminPeer{peer.uid, peer.gid, peer.pid}, request);
    } catch (...) {
      response = error_line("internal", "the request failed unexpectedly");
    }
    wipe_string(request);
    response += '\n';
    (void)send_all(client.get(), response, wake, Clock::now() + limits_.io_timeout);
  }

  const std::string name_;  // in directory_
  const AdminHandler handler_;
  const AdminSocketLimits limits_;
  const UniqueFd directory_;
  UniqueFd listener_;
  UniqueFd wake_;
  const dev_t device_;
  const ino_t inode_;

  std::mutex mutex_;
  std::condition_variable slot_free_;
  bool started_ = false;
  bool stopped_ = false;
  std::thread acceptor_;
  std::list<Worker> workers_;  // a list: a running thread holds a reference to its entry
};

}  // namespace

Result<std::unique_ptr<AdminSocketServer>> AdminSocketServer::create(const std::string& path, AdminHandler handler) {
  return create(path, std::move(handler), AdminSocketLimits{});
}

Result<std::unique_ptr<AdminSocketServer>> AdminSocketServer::create(const std::string& path, AdminHandler handler,
                                                                     const AdminSocketLimits& limits) {
  if (!handler) return fail(Errc::invalid_argument, "no admin handler");
  if (limits.max_clients == 0 || limits.max_request == 0)
    return fail(Errc::invalid_argument, "admin socket limits must be positive");
  auto address = socket_address(path);
  if (!address) return tl::unexpected(address.error());
  auto location = split_socket_path(path);
  if (!location) return tl::unexpected(location.error());
  auto directory = open_socket_directory(location->directory);
  if (!directory) return tl::unexpected(directory.error());
  const int dir = directory->get();
  const std::string& name = location->name;
  if (auto ok = clear_stale_socket(dir, name, path, *address); !ok) return tl::unexpected(ok.error());

  UniqueFd listener(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!listener) return fail(Errc::io, "socket: " + errno_text(errno));
  // bind() creates the file with mode 0777 less the umask, so the socket is 0600 from its
  // first moment; a chmod() by path afterwards would act on whatever the name then points
  // to. The umask is per process: create() runs at start-up, before other threads make files.
  const mode_t previous_umask = ::umask(0177);
  const int bound = ::bind(listener.get(), reinterpret_cast<const sockaddr*>(&*address), sizeof *address);
  const int bind_error = errno;
  ::umask(previous_umask);
  if (bound != 0) return fail(Errc::io, "cannot create the admin socket " + path + ": " + errno_text(bind_error));
  // What bind() made must be in the directory checked above, as a socket of mode 0600.
  struct stat st {};
  if (::fstatat(dir, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0)
    return fail(Errc::io, "admin socket " + path + " is not in the directory that was checked: " + errno_text(errno));
  if (!S_ISSOCK(st.st_mode) || (st.st_mode & 07777) != 0600) {
    if (S_ISSOCK(st.st_mode)) ::unlinkat(dir, name.c_str(), 0);
    return fail(Errc::io, "admin socket " + path + " was not created as a socket of mode 0600");
  }
  auto remove_socket = [&] { ::unlinkat(dir, name.c_str(), 0); };
  if (::listen(listener.get(), listen_backlog) != 0) {
    const int error = errno;
    remove_socket();
    return fail(Errc::io, "cannot listen on the admin socket " + path + ": " + errno_text(error));
  }
  UniqueFd wake(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!wake) {
    const int error = errno;
    remove_socket();
    return fail(Errc::io, "eventfd: " + errno_text(error));
  }
  return std::unique_ptr<AdminSocketServer>(std::make_unique<AdminServer>(name, std::move(handler), limits,
                                                                          std::move(*directory), std::move(listener),
                                                                          std::move(wake), st.st_dev, st.st_ino));
}

Result<std::string> admin_request(const std::string& socket_path, const std::string& request_line,
                                  std::chrono::milliseconds timeout) {
  if (request_line.find('\n') != std::string::npos)
    return fail(Errc::invalid_argument, "an admin request must be a single line");
  auto address = socket_address(socket_path);
  if (!address) return tl::unexpected(address.error());
  const auto deadline = Clock::now() + timeout;

  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd) return fail(Errc::io, "socket: " + errno_text(errno));
  if (connect_to(fd.get(), *address) != 0) {
    const int error = errno;
    if (error == ENOENT) return fail(Errc::not_found, socket_path + " does not exist (is fde-verifierd running?)");
    if (error == ECONNREFUSED)
      return fail(Errc::io, "nothing is listening on " + socket_path + " (is fde-verifierd running?)");
    if (error == EACCES || error == EPERM)
      return fail(Errc::io, "permission denied on " + socket_path + " (run as root)");
    if (error == EAGAIN) return fail(Errc::io, "fde-verifierd is too busy to accept a connection; try again");
    return fail(Errc::io, socket_path + ": " + errno_text(error));
  }

  // Sent as two writes so the request (which may hold a key) is never copied.
  IoStatus sent = send_all(fd.get(), request_line, -1, deadline);
  if (sent == IoStatus::done) sent = send_all(fd.get(), "\n", -1, deadline);
  if (sent == IoStatus::timeout) return fail(Errc::io, "timed out sending the request to " + socket_path);
  // A daemon that refused the request (too large, not allowed) has closed its side already;
  // its one-line answer is still waiting to be read, so read on whatever the send said.

  std::string response;
  const IoStatus status = read_line(fd.get(), response, max_admin_response, -1, deadline, false);
  switch (status) {
    case IoStatus::done:
      return response;
    case IoStatus::timeout:
      return fail(Errc::io, "timed out after " + std::to_string(timeout.count()) + " ms waiting for " + socket_path);
    case IoStatus::too_large:
      return fail(Errc::too_large, "the response exceeds " + std::to_string(max_admin_response) + " bytes");
    case IoStatus::closed:
      return fail(Errc::io, response.empty() ? "the daemon closed the connection without answering"
                                             : "the daemon's response was cut short");
    default:
      return fail(Errc::io, "reading from " + socket_path + ": " + errno_text(errno));
  }
}

}  // namespace fde::verifier
