// The verdict as JSON: the audit record stores the checks in this form, and `fde-admin
// explain` reads them back, so the log, the audit trail and explain show one list of checks.
#pragma once

#include <string>
#include <string_view>

#include "common/token/verdict.hpp"
#include "common/util/error.hpp"

namespace fde::verifier {

// [{"name": ..., "expected": ..., "found": ..., "passed": bool}, ...]
std::string checks_to_json(const Verdict& verdict);
Result<Verdict> checks_from_json(std::string_view json);

}  // namespace fde::verifier
