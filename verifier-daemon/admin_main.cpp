// fde-admin: the verifier's administration tool. Parses the subcommand and hands over.
#include <sys/prctl.h>
#include <sys/resource.h>

#include <iostream>
#include <string>
#include <vector>

#include "verifier-daemon/admin/verify_token_command.hpp"

namespace {

void disable_core_dumps() {
  ::prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
  struct rlimit none {0, 0};
  ::setrlimit(RLIMIT_CORE, &none);
}

constexpr const char* usage =
    "usage: fde-admin COMMAND [OPTIONS]\n\n"
    "Commands:\n"
    "  verify-token   decode a captured attestation token and run the verifier's checks offline\n\n"
    "Run 'fde-admin COMMAND --help' for a command's options.\n";

}  // namespace

int main(int argc, char** argv) {
  disable_core_dumps();
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty() || args[0] == "--help" || args[0] == "-h") {
    std::cout << usage;
    return args.empty() ? 2 : 0;
  }
  if (args[0] == "--version") {
    std::cout << "fde-admin " FDE_VERSION "\n";
    return 0;
  }
  std::string command = args[0];
  args.erase(args.begin());
  if (command == "verify-token") return fde::verifier::run_verify_token(args, std::cout, std::cerr);
  std::cerr << "fde-admin: unknown command '" << command << "' (try --help)\n";
  return 2;
}
