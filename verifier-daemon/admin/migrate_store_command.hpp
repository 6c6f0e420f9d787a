// `fde-admin migrate-store`: copies the verifier's store from one backend to another
// (SQLite to PostgreSQL and back), offline, with the KEK of the source configuration.
#pragma once

#include <ostream>
#include <string>
#include <vector>

namespace fde::verifier {

// Runs the command with the arguments after "migrate-store"; returns 0 (copied and checked),
// 1 (the copy failed a check or the target is not empty) or 2 (bad usage, unusable input).
int run_migrate_store(const std::vector<std::string>& args, std::ostream& out, std::ostream& err);

}  // namespace fde::verifier
