// Process-wide protection for programs that hold key material.
#include "common/util/process.hpp"

#include <sys/prctl.h>
#include <sys/resource.h>

namespace fde {

void keep_secrets_out_of_core_dumps() {
  ::prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
  struct rlimit none {};
  ::setrlimit(RLIMIT_CORE, &none);
}

}  // namespace fde
