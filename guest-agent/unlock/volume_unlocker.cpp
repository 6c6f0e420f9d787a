// Running cryptsetup with the key on a pipe.
#include "guest-agent/unlock/volume_unlocker.hpp"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>

extern char** environ;

namespace fde::agent {

namespace {

// Closes a descriptor once, on every path.
class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  ~Fd() { reset(); }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  void reset() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_;
};

std::string describe_status(int status) {
  if (WIFEXITED(status)) {
    // cryptsetup(8) EXIT STATUS.
    switch (WEXITSTATUS(status)) {
      case 1: return "cryptsetup failed: wrong parameters (exit 1)";
      case 2: return "the released key opens no keyslot of the volume (cryptsetup exit 2)";
      case 3: return "cryptsetup ran out of memory (exit 3)";
      case 4: return "cryptsetup: wrong device specified (exit 4)";
      case 5: return "cryptsetup: device already exists or is busy (exit 5)";
      default: return "cryptsetup failed (exit " + std::to_string(WEXITSTATUS(status)) + ")";
    }
  }
  if (WIFSIGNALED(status)) return "cryptsetup was killed by signal " + std::to_string(WTERMSIG(status));
  return "cryptsetup ended abnormally";
}

}  // namespace

std::vector<std::string> CryptsetupUnlocker::arguments() const {
  if (options_.test_only)
    return {options_.cryptsetup, "open", "--test-passphrase", "--key-file=-", options_.device};
  return {options_.cryptsetup, "open", "--key-file=-", options_.device, options_.mapper_name};
}

std::string CryptsetupUnlocker::describe() const {
  return options_.test_only ? "cryptsetup open --test-passphrase " + options_.device
                            : "cryptsetup open " + options_.device + " " + options_.mapper_name;
}

std::string CryptsetupUnlocker::done() const {
  return options_.test_only
             ? "the released key opens a keyslot of " + options_.device + " (--test-passphrase: nothing mapped)"
             : "unlocked " + options_.device + " as /dev/mapper/" + options_.mapper_name;
}

Result<void> CryptsetupUnlocker::unlock(const SecretBytes& key) {
  if (key.empty()) return fail(Errc::invalid_argument, "no key to unlock with");
  int pipe_fds[2];
  if (::pipe2(pipe_fds, O_CLOEXEC) != 0) return fail(Errc::io, std::string("pipe: ") + std::strerror(errno));
  Fd read_end(pipe_fds[0]), write_end(pipe_fds[1]);

  posix_spawn_file_actions_t actions;
  posix_spawnattr_t attributes;
  posix_spawn_file_actions_init(&actions);
  posix_spawnattr_init(&attributes);
  // The child's stdin is the pipe; dup2 clears O_CLOEXEC on the copy. stdout and stderr
  // stay the agent's, so cryptsetup's own messages reach the console.
  posix_spawn_file_actions_adddup2(&actions, read_end.get(), STDIN_FILENO);
  // The agent ignores SIGPIPE; cryptsetup gets the default back.
  sigset_t defaults;
  sigemptyset(&defaults);
  sigaddset(&defaults, SIGPIPE);
  posix_spawnattr_setsigdefault(&attributes, &defaults);
  posix_spawnattr_setflags(&attributes, POSIX_SPAWN_SETSIGDEF);

  std::vector<std::string> args = arguments();
  std::vector<char*> argv;
  for (auto& arg : args) argv.push_back(arg.data());
  argv.push_back(nullptr);
  pid_t pid = 0;
  int spawn_error = ::posix_spawn(&pid, options_.cryptsetup.c_str(), &actions, &attributes, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attributes);
  read_end.reset();
  if (spawn_error != 0)
    return fail(Errc::io, "cannot run " + options_.cryptsetup + ": " + std::strerror(spawn_error));

  // At most 64 bytes: far below PIPE_BUF, so one write fits the pipe whether or not
  // cryptsetup has started reading. EPIPE means it exited first; its status says why.
  // SIGPIPE is blocked around the write (and a pending one consumed), so this works whatever
  // the caller's disposition is.
  sigset_t pipe_signal, previous_mask;
  sigemptyset(&pipe_signal);
  sigaddset(&pipe_signal, SIGPIPE);
  sigset_t pending;
  sigpending(&pending);
  const bool already_pending = sigismember(&pending, SIGPIPE) == 1;
  pthread_sigmask(SIG_BLOCK, &pipe_signal, &previous_mask);
  Result<void> written;
  std::size_t offset = 0;
  while (offset < key.size()) {
    ssize_t n = ::write(write_end.get(), key.data() + offset, key.size() - offset);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      if (errno == EPIPE && !already_pending) {
        const timespec no_wait{0, 0};
        while (::sigtimedwait(&pipe_signal, nullptr, &no_wait) < 0 && errno == EINTR) {
        }
      } else if (errno != EPIPE) {
        written = fail(Errc::io, std::string("writing the key to cryptsetup: ") + std::strerror(errno));
      }
      break;
    }
    offset += static_cast<std::size_t>(n);
  }
  pthread_sigmask(SIG_SETMASK, &previous_mask, nullptr);
  // End of file tells cryptsetup the key is complete (--key-file=- reads to EOF).
  write_end.reset();

  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return fail(Errc::io, std::string("waitpid: ") + std::strerror(errno));
  }
  if (!written) return written;
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) return fail(Errc::verification_failed, describe_status(status));
  return {};
}

Result<std::string> find_cryptsetup() {
  for (const char* path : {"/usr/sbin/cryptsetup", "/sbin/cryptsetup", "/usr/bin/cryptsetup", "/bin/cryptsetup"})
    if (::access(path, X_OK) == 0) return std::string(path);
  return fail(Errc::not_found, "cryptsetup is not installed (looked in /usr/sbin, /sbin, /usr/bin, /bin)");
}

}  // namespace fde::agent
