// `fde-admin verify-token`: offline inspection of a captured attestation token.
#pragma once

#include <ostream>
#include <string>
#include <vector>

namespace fde::verifier {

// Exit codes of verify-token (documented in docs/fde-admin.md and --help).
constexpr int exit_verified = 0;      // every requested check passed
constexpr int exit_check_failed = 1;  // at least one check failed
constexpr int exit_unusable = 2;      // unreadable file, malformed token, bad arguments

// Runs the command with the arguments after "verify-token"; writes the report to `out`
// and one-line errors to `err`; returns the exit code.
int run_verify_token(const std::vector<std::string>& args, std::ostream& out, std::ostream& err);

}  // namespace fde::verifier
