// `fde-admin migrate-store --from CONFIG --to CONFIG`: both are fde-verifierd configuration
// files; their [store] sections name the source and the target. The KEK comes from the
// source configuration and opens both stores (keys are copied wrapped, never rewrapped).
#include "verifier-daemon/admin/migrate_store_command.hpp"

#include "common/util/command_line.hpp"
#include "verifier-daemon/config/config.hpp"
#include "verifier-daemon/service/runtime.hpp"
#include "verifier-daemon/store/store.hpp"

namespace fde::verifier {

namespace {

const std::vector<OptionSpec>& option_specs() {
  static const std::vector<OptionSpec> specs{
      {"from", true, false, "CONFIG", "the configuration whose [store] is copied, and whose KEK opens both (required)"},
      {"to", true, false, "CONFIG", "the configuration whose [store] receives the copy; it must be empty (required)"},
      {"help", false, false, "", "show this help"},
  };
  return specs;
}

std::string usage() {
  return "usage: fde-admin migrate-store --from CONFIG --to CONFIG\n\n"
         "Copies every image (its disk key still wrapped under the KEK) and the whole audit chain\n"
         "from the store of one fde-verifierd configuration into the empty store of another\n"
         "(SQLite to PostgreSQL or back), then checks the copy: the chain verifies with the same\n"
         "head and every active image's key unwraps. Stop every fde-verifierd first.\n"
         "Exit status: 0 copied and checked; 1 a check failed or the target is not empty;\n"
         "2 bad usage or unusable input.\n\n" +
         options_help(option_specs());
}

Result<Config> load_store_config(const std::string& path) {
  auto config = load_config_file(path);
  if (!config) return fail_with_context(path, config.error());
  return config;
}

}  // namespace

int run_migrate_store(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  auto options = parse_options(args, option_specs());
  if (!options) {
    err << "fde-admin migrate-store: " << options.error().message << " (try --help)\n";
    return 2;
  }
  if (options->has("help")) {
    out << usage();
    return 0;
  }
  auto from_path = options->get("from");
  auto to_path = options->get("to");
  if (!from_path || !to_path || !options->positional().empty()) {
    err << "fde-admin migrate-store: --from CONFIG and --to CONFIG are required (try --help)\n";
    return 2;
  }
  auto from = load_store_config(*from_path);
  auto to = from ? load_store_config(*to_path) : Result<Config>(tl::unexpected(from.error()));
  if (!from || !to) {
    err << "fde-admin migrate-store: " << (!from ? from.error() : to.error()).describe() << "\n";
    return 2;
  }
  if (describe_store(*from) == describe_store(*to)) {
    err << "fde-admin migrate-store: --from and --to name the same store (" << describe_store(*from) << ")\n";
    return 2;
  }
  auto source_kek = load_kek(*from);
  auto target_kek = load_kek(*from);
  if (!source_kek || !target_kek) {
    err << "fde-admin migrate-store: " << source_kek.error().describe() << "\n";
    return 2;
  }
  auto source = open_configured_store(*from, std::move(*source_kek));
  if (!source) {
    err << "fde-admin migrate-store: source " << describe_store(*from) << ": " << source.error().describe() << "\n";
    return 2;
  }
  auto target = open_configured_store(*to, std::move(*target_kek));
  if (!target) {
    err << "fde-admin migrate-store: target " << describe_store(*to) << ": " << target.error().describe() << "\n";
    return 2;
  }
  auto report = copy_store(**source, **target);
  if (!report) {
    err << "fde-admin migrate-store: " << report.error().describe() << "\n";
    return 1;
  }
  out << "copied " << report->images << " images and " << report->records << " audit records from "
      << describe_store(*from) << " to " << describe_store(*to) << "\n"
      << "audit chain intact in the target, head " << format_audit_head(report->head) << "\n"
      << "every active image's key unwraps in the target (" << report->active_keys_checked << " checked)\n";
  return 0;
}

}  // namespace fde::verifier
