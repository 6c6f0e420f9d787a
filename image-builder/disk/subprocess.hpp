// Runs a helper program (qemu-img, e2fsck in tests) with an argument vector, no shell.
#pragma once

#include <string>
#include <vector>

#include "common/util/error.hpp"

namespace fde::image {

struct ProcessResult {
  int exit_code = -1;  // -1: killed by a signal
  std::string output;  // stdout and stderr together, capped at 64 KiB
};

// Finds `argv[0]` on PATH; fails with Errc::not_found when the program is not installed.
Result<ProcessResult> run_process(const std::vector<std::string>& argv);

}  // namespace fde::image
