// run_process: fork + execvp with a pipe for the combined output.
#include "image-builder/disk/subprocess.hpp"

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace fde::image {

Result<ProcessResult> run_process(const std::vector<std::string>& argv, std::span<const int> inherited_fds) {
  if (argv.empty()) return fail(Errc::invalid_argument, "run_process: empty command");
  for (int fd : inherited_fds)
    if (fd <= 2) return fail(Errc::internal, "run_process: descriptor " + std::to_string(fd) + " cannot be passed on");
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return fail(Errc::io, std::string("pipe: ") + std::strerror(errno));
  int error_pipe[2];  // tells the parent that exec failed, and why
  if (::pipe2(error_pipe, O_CLOEXEC) != 0) {
    ::close(fds[0]);
    ::close(fds[1]);
    return fail(Errc::io, std::string("pipe: ") + std::strerror(errno));
  }
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  const pid_t pid = ::fork();
  if (pid < 0) return fail(Errc::io, std::string("fork: ") + std::strerror(errno));
  if (pid == 0) {
    ::dup2(fds[1], 1);
    ::dup2(fds[1], 2);
    const int devnull = ::open("/dev/null", O_RDONLY);
    if (devnull >= 0) ::dup2(devnull, 0);
    // Every descriptor is close-on-exec; these stay open, at the same numbers.
    for (int fd : inherited_fds) ::fcntl(fd, F_SETFD, 0);
    ::execvp(args[0], args.data());
    const int err = errno;
    [[maybe_unused]] auto n = ::write(error_pipe[1], &err, sizeof err);
    ::_exit(127);
  }
  ::close(fds[1]);
  ::close(error_pipe[1]);
  ProcessResult result;
  char buffer[4096];
  for (;;) {
    const ssize_t n = ::read(fds[0], buffer, sizeof buffer);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    if (result.output.size() < 65536) result.output.append(buffer, static_cast<std::size_t>(n));
  }
  ::close(fds[0]);
  int exec_errno = 0;
  const bool exec_failed = ::read(error_pipe[0], &exec_errno, sizeof exec_errno) == sizeof exec_errno;
  ::close(error_pipe[0]);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (exec_failed) {
    if (exec_errno == ENOENT)
      return fail(Errc::not_found, argv[0] + " is not installed (not found on PATH)");
    return fail(Errc::io, "cannot run " + argv[0] + ": " + std::strerror(exec_errno));
  }
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

}  // namespace fde::image
