// Running a helper program (cryptsetup) from the agent: posix_spawn, optionally a secret on
// its stdin through a pipe (never a file, an argument or the environment), optionally its
// stdout captured up to a limit; its stderr stays the agent's, so its messages reach the
// console.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "common/util/error.hpp"
#include "common/util/secret_bytes.hpp"

namespace fde::agent {

struct ProgramInput {
  // Written to the program's stdin, then end of file. Without it stdin is /dev/null.
  const SecretBytes* secret_stdin = nullptr;
  // 0: stdout stays the agent's. Otherwise stdout is captured; more than this many bytes is
  // an error (the program is then killed).
  std::size_t max_output = 0;
};

struct ProgramRun {
  int wait_status = 0;  // as waitpid reports it
  std::string output;   // the captured stdout

  bool succeeded() const;  // exited with status 0
};

// argv[0] is the program's path (no PATH search). An error when it cannot be started, its
// stdin cannot be written, its output is too large, or its end cannot be learned (waitpid
// failed): only a wait status the kernel reported counts.
Result<ProgramRun> run_program(const std::vector<std::string>& argv, const ProgramInput& input = {});

// "exit 2", "killed by signal 9".
std::string describe_wait_status(int wait_status);

}  // namespace fde::agent
