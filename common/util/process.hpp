// Process-wide settings: protection for programs that hold key material, and the resource
// limits a server needs.
#pragma once

#include <cstdint>

namespace fde {

// No core file and no ptrace attach by other users (PR_SET_DUMPABLE 0, RLIMIT_CORE 0), so
// keys in memory cannot end up in a dump. Every main() of the project calls it first.
void keep_secrets_out_of_core_dumps();

// Raises the soft limit on open descriptors (RLIMIT_NOFILE) to the hard limit, which an
// unprivileged process may do; many systems start services with a soft limit of 1024.
// Returns the soft limit now in force.
std::uint64_t raise_open_files_limit();

}  // namespace fde
