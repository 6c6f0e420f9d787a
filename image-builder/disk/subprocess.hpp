// Runs a helper program (qemu-img, e2fsck in tests) with an argument vector, no shell.
#pragma once

#include <span>
#include <string>
#include <vector>

#include "common/util/error.hpp"

namespace fde::image {

struct ProcessResult {
  int exit_code = -1;  // -1: killed by a signal
  std::string output;  // stdout and stderr together, capped at 64 KiB
};

// Finds `argv[0]` on PATH; fails with Errc::not_found when the program is not installed.
// `inherited_fds` (each above 2) stay open in the child at the same numbers, so that it can
// be handed "/proc/self/fd/N" instead of a file name.
Result<ProcessResult> run_process(const std::vector<std::string>& argv, std::span<const int> inherited_fds = {});

}  // namespace fde::image
