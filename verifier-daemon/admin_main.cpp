// fde-admin: the verifier's administration tool. Parses the subcommand and hands over.
//
// Exit status (docs/fde-admin.md): 0 done / verified; 1 the daemon refused, a check failed or
// the audit chain is broken; 2 bad usage, unusable input, or the daemon cannot be reached.

#include <iostream>
#include <string>
#include <vector>

#include "common/util/process.hpp"
#include "verifier-daemon/admin/admin_commands.hpp"
#include "verifier-daemon/admin/migrate_store_command.hpp"
#include "verifier-daemon/admin/verify_token_command.hpp"

namespace {

std::string usage() {
  return "usage: fde-admin [--socket PATH] [--json] COMMAND [OPTIONS]\n\n"
         "Commands that talk to fde-verifierd over its admin socket (default " +
         std::string(fde::verifier::default_admin_socket) + "):\n" + fde::verifier::admin_commands_usage() +
         "\nOffline:\n"
         "  verify-token      decode a captured attestation token and run the verifier's checks\n"
         "  migrate-store     copy the store from one backend to another (SQLite, PostgreSQL)\n\n"
         "--json prints the daemon's JSON response ({\"ok\": ..., \"result\": ...}) for scripts.\n"
         "Exit status: 0 done; 1 refused by the daemon or a check failed; 2 bad usage, unusable input\n"
         "or daemon unreachable. Run 'fde-admin COMMAND --help' for a command's options.\n";
}

}  // namespace

int main(int argc, char** argv) {
  fde::keep_secrets_out_of_core_dumps();  // `enroll` holds a disk key for a moment
  std::vector<std::string> args(argv + 1, argv + argc);
  // Global options may precede the command; they are handed to it like its own.
  std::vector<std::string> socket_globals;
  bool json = false;
  while (!args.empty()) {
    const std::string& arg = args.front();
    if (arg == "--json") {
      json = true;
      args.erase(args.begin());
    } else if (arg.rfind("--socket=", 0) == 0) {
      socket_globals.push_back(arg);
      args.erase(args.begin());
    } else if (arg == "--socket" && args.size() >= 2) {
      socket_globals.insert(socket_globals.end(), args.begin(), args.begin() + 2);
      args.erase(args.begin(), args.begin() + 2);
    } else {
      break;
    }
  }
  if (args.empty() || args[0] == "--help" || args[0] == "-h" || args[0] == "help") {
    std::cout << usage();
    return args.empty() ? 2 : 0;
  }
  if (args[0] == "--version") {
    std::cout << "fde-admin " FDE_VERSION "\n";
    return 0;
  }
  std::string command = args[0];
  args.erase(args.begin());
  if (json) args.push_back("--json");
  // verify-token is offline: a global --socket means nothing to it.
  if (command == "verify-token") return fde::verifier::run_verify_token(args, std::cout, std::cerr);
  if (command == "migrate-store") return fde::verifier::run_migrate_store(args, std::cout, std::cerr);
  args.insert(args.end(), socket_globals.begin(), socket_globals.end());
  return fde::verifier::run_admin_command(command, args, std::cout, std::cerr);
}
