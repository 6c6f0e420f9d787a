// Process-wide protection for programs that hold key material.
#pragma once

namespace fde {

// No core file and no ptrace attach by other users (PR_SET_DUMPABLE 0, RLIMIT_CORE 0), so
// keys in memory cannot end up in a dump. Every main() of the project calls it first.
void keep_secrets_out_of_core_dumps();

}  // namespace fde
