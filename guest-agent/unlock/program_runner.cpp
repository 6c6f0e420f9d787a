// posix_spawn with a secret on a pipe and a bounded capture of stdout.
#include "guest-agent/unlock/program_runner.hpp"

#include <fcntl.h>
#include <limits.h>
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
  void reset(int fd = -1) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
  }

 private:
  int fd_;
};

// Writes the whole secret; a program that exits without reading it is not an error here
// (its exit status says why). SIGPIPE is blocked around the write (and a pending one
// consumed), so this works whatever the caller's disposition is.
Result<void> write_secret(int fd, const SecretBytes& secret) {
  sigset_t pipe_signal, previous_mask, pending;
  sigemptyset(&pipe_signal);
  sigaddset(&pipe_signal, SIGPIPE);
  sigpending(&pending);
  const bool already_pending = sigismember(&pending, SIGPIPE) == 1;
  pthread_sigmask(SIG_BLOCK, &pipe_signal, &previous_mask);
  Result<void> written;
  std::size_t offset = 0;
  while (offset < secret.size()) {
    ssize_t n = ::write(fd, secret.data() + offset, secret.size() - offset);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      if (errno == EPIPE && !already_pending) {
        const timespec no_wait{0, 0};
        while (::sigtimedwait(&pipe_signal, nullptr, &no_wait) < 0 && errno == EINTR) {
        }
      } else if (errno != EPIPE) {
        written = fail(Errc::io, std::string("writing to the program's stdin: ") + std::strerror(errno));
      }
      break;
    }
    offset += static_cast<std::size_t>(n);
  }
  pthread_sigmask(SIG_SETMASK, &previous_mask, nullptr);
  return written;
}

// The child's wait status. A waitpid that fails (ECHILD: someone else reaped it, or SIGCHLD
// is ignored) says nothing about how the program ended, so it is an error, never a success.
Result<int> wait_for(pid_t pid, const std::string& program) {
  int status = 0;
  for (;;) {
    if (::waitpid(pid, &status, 0) == pid) return status;
    if (errno != EINTR)
      return fail(Errc::io, "cannot learn how " + program + " ended: waitpid: " + std::strerror(errno));
  }
}

}  // namespace

bool ProgramRun::succeeded() const { return WIFEXITED(wait_status) && WEXITSTATUS(wait_status) == 0; }

std::string describe_wait_status(int wait_status) {
  if (WIFEXITED(wait_status)) return "exit " + std::to_string(WEXITSTATUS(wait_status));
  if (WIFSIGNALED(wait_status)) return "killed by signal " + std::to_string(WTERMSIG(wait_status));
  return "ended abnormally";
}

Result<ProgramRun> run_program(const std::vector<std::string>& argv, const ProgramInput& input) {
  if (argv.empty()) return fail(Errc::invalid_argument, "no program to run");
  // One write of at most PIPE_BUF bytes fits the pipe whether or not the program has started
  // reading, so writing the secret first and reading stdout afterwards cannot deadlock.
  if (input.secret_stdin != nullptr && input.secret_stdin->size() > PIPE_BUF)
    return fail(Errc::invalid_argument, "the input for " + argv[0] + " is larger than a pipe buffer");
  Fd stdin_read, stdin_write, stdout_read, stdout_write;
  if (input.secret_stdin != nullptr) {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) return fail(Errc::io, std::string("pipe: ") + std::strerror(errno));
    stdin_read.reset(fds[0]);
    stdin_write.reset(fds[1]);
  }
  if (input.max_output > 0) {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) return fail(Errc::io, std::string("pipe: ") + std::strerror(errno));
    stdout_read.reset(fds[0]);
    stdout_write.reset(fds[1]);
  }

  posix_spawn_file_actions_t actions;
  posix_spawnattr_t attributes;
  posix_spawn_file_actions_init(&actions);
  posix_spawnattr_init(&attributes);
  // dup2 clears O_CLOEXEC on the copies; every other descriptor of the agent is close-on-exec.
  if (input.secret_stdin != nullptr)
    posix_spawn_file_actions_adddup2(&actions, stdin_read.get(), STDIN_FILENO);
  else
    posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  if (input.max_output > 0) posix_spawn_file_actions_adddup2(&actions, stdout_write.get(), STDOUT_FILENO);
  // The agent ignores SIGPIPE; the program gets the default back.
  sigset_t defaults;
  sigemptyset(&defaults);
  sigaddset(&defaults, SIGPIPE);
  posix_spawnattr_setsigdefault(&attributes, &defaults);
  posix_spawnattr_setflags(&attributes, POSIX_SPAWN_SETSIGDEF);

  std::vector<std::string> args = argv;
  std::vector<char*> pointers;
  for (auto& arg : args) pointers.push_back(arg.data());
  pointers.push_back(nullptr);
  pid_t pid = 0;
  int spawn_error = ::posix_spawn(&pid, args[0].c_str(), &actions, &attributes, pointers.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attributes);
  stdin_read.reset();
  stdout_write.reset();
  if (spawn_error != 0) return fail(Errc::io, "cannot run " + args[0] + ": " + std::strerror(spawn_error));

  Result<void> written;
  if (input.secret_stdin != nullptr) written = write_secret(stdin_write.get(), *input.secret_stdin);
  // End of file tells the program the input is complete (cryptsetup --key-file=- reads to EOF).
  stdin_write.reset();

  ProgramRun run;
  Result<void> captured;
  if (input.max_output > 0) {
    char buffer[16384];
    for (;;) {
      ssize_t n = ::read(stdout_read.get(), buffer, sizeof buffer);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        captured = fail(Errc::io, "reading the output of " + args[0] + ": " + std::strerror(errno));
        break;
      }
      if (n == 0) break;
      if (run.output.size() + static_cast<std::size_t>(n) > input.max_output) {
        captured = fail(Errc::too_large, "the output of " + args[0] + " is larger than " +
                                             std::to_string(input.max_output) + " bytes");
        break;
      }
      run.output.append(buffer, static_cast<std::size_t>(n));
    }
    // A program that keeps writing is stopped rather than waited for.
    if (!captured) ::kill(pid, SIGKILL);
    stdout_read.reset();
  }
  auto waited = wait_for(pid, args[0]);
  if (!written) return tl::unexpected(written.error());
  if (!captured) return tl::unexpected(captured.error());
  if (!waited) return tl::unexpected(waited.error());
  run.wait_status = *waited;
  return run;
}

}  // namespace fde::agent
