// `fde-admin` commands that talk to a running fde-verifierd over its admin socket
// (api/admin_api.hpp has the protocol; docs/fde-admin.md the commands and exit codes).
#pragma once

#include <functional>
#include <ostream>
#include <string>
#include <string_view>
#include <vector>

#include "common/util/error.hpp"

namespace fde::verifier {

constexpr std::string_view default_admin_socket = "/run/fde-verifier/admin.sock";

// Exit codes of the socket commands (docs/fde-admin.md).
constexpr int admin_exit_ok = 0;       // done; for `audit --verify`, the chain is intact
constexpr int admin_exit_refused = 1;  // the daemon refused the request, or the chain is broken
constexpr int admin_exit_usage = 2;    // bad arguments, unusable file, daemon unreachable

// Sends one request line to the socket and returns the response line (admin_request() by
// default; tests connect the command to an AdminApi directly).
using AdminSender = std::function<Result<std::string>(const std::string& socket_path, const std::string& request_line)>;
AdminSender socket_sender();

// The commands run_admin_command knows ("enroll", "list", ...), for the usage text.
const std::vector<std::string_view>& admin_command_names();
bool is_admin_command(std::string_view command);

// Runs `command` with the arguments after it. Global options (--socket PATH, --json) may be
// among `args`. Writes the report to `out`, one-line errors to `err`; returns the exit code.
int run_admin_command(const std::string& command, const std::vector<std::string>& args, std::ostream& out,
                      std::ostream& err, const AdminSender& send = socket_sender());

// The one-paragraph usage of the socket commands (shown by fde-admin --help).
std::string admin_commands_usage();

}  // namespace fde::verifier
