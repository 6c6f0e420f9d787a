// fde-agent: attests the CVM to a verifier from the initramfs and unlocks the LUKS root
// volume with the released key (docs/fde-agent.md). Parses arguments, loads the
// configuration, wires the platform, client and unlocker into the boot flow, and maps the
// outcome to an exit code; nothing more.
//
// Exit status: 0 unlocked (or already unlocked); 1 internal error; 2 usage or configuration
// error; 3 gave up, failure policy poweroff (the hook powers the VM off), or, whatever the
// policy, a mapping of the volume is open that the agent could not verify (or close); 4 gave
// up, failure policy passphrase (the hook runs the normal LUKS passphrase prompt). With
// policy "wait" the agent does not give up. --check-mapping: 0 the open mapping is the
// enrolled volume, 3 it is not (or cannot be read), 2 configuration error.
#include <openssl/crypto.h>
#include <openssl/opensslv.h>
#include <signal.h>
#include <sys/stat.h>

#include <exception>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "common/util/process.hpp"
#include "common/util/command_line.hpp"
#include "common/util/file.hpp"
#include "guest-agent/client/attestation_client.hpp"
#include "guest-agent/config/agent_config.hpp"
#include "guest-agent/flow/boot_services.hpp"
#include "guest-agent/flow/unlock_flow.hpp"
#include "guest-agent/platform/platform_factory.hpp"
#include "guest-agent/unlock/dm_table.hpp"
#include "guest-agent/unlock/volume_unlocker.hpp"

namespace {

using namespace fde;
using namespace fde::agent;

constexpr int exit_unlocked = 0;
constexpr int exit_internal = 1;
constexpr int exit_config = 2;
constexpr int exit_poweroff = 3;
constexpr int exit_passphrase = 4;

constexpr std::size_t max_kernel_command_line_size = 64 * 1024;

const std::vector<OptionSpec>& option_specs() {
  static const std::vector<OptionSpec> specs = {
      {"config", true, false, "FILE", "configuration file (default /etc/fde/agent.conf)"},
      {"cmdline", true, false, "FILE", "kernel command line to read rd.fde.* from (default /proc/cmdline)"},
      {"platform", true, false, "tsi|sim", "platform provider (overrides the configuration)"},
      {"device", true, false, "PATH", "use this LUKS device or image file (its UUID must still match)"},
      {"test-passphrase", false, false, "", "only check that the released key opens a keyslot"},
      {"header-dir", true, false, "DIR",
       "private directory for the checked copy of the LUKS2 header (default /run/fde-agent/luks-header)"},
      {"check-config", false, false, "", "validate the configuration, print it and exit"},
      {"resolve-volume", false, false, "", "print 'DEVICE MAPPER-NAME' of the volume and exit"},
      {"check-mapping", false, false, "",
       "exit 0 only if the open mapping of the volume is the enrolled one (UUID, cipher, volume key)"},
      {"version", false, false, "", "print the version and exit"},
      {"help", false, false, "", "show this help"},
  };
  return specs;
}

std::string usage() {
  return "usage: fde-agent [--config FILE] [OPTIONS]\n\n"
         "Attests this virtCCA CVM to the configured verifiers and unlocks its LUKS volume with the\n"
         "released key. Exit status: 0 unlocked; 1 internal error; 2 usage or configuration error;\n"
         "3 gave up (policy poweroff) or an unverified mapping is open; 4 gave up (policy passphrase).\n\n" +
         options_help(option_specs());
}

void harden_process() {
  // The process holds the disk key: no core file and no ptrace by other users may see it.
  fde::keep_secrets_out_of_core_dumps();
  // A verifier or cryptsetup closing its end must be an error value, not a signal.
  ::signal(SIGPIPE, SIG_IGN);
  ::umask(077);
  // No openssl.cnf: whatever the initramfs carries must not change the agent's crypto, and a
  // static binary could not load the provider modules such a file might name.
  OPENSSL_init_crypto(OPENSSL_INIT_NO_LOAD_CONFIG, nullptr);
}

std::optional<std::string> read_kernel_command_line(const ParsedOptions& options) {
  std::string path = options.get("cmdline").value_or("/proc/cmdline");
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return std::nullopt;
  auto text = read_file(path, max_kernel_command_line_size);
  if (!text) return std::nullopt;
  return std::string(as_text(*text));
}

int config_error(const std::string& message) {
  std::cerr << "fde-agent: " << message << "\n";
  return exit_config;
}

int exit_for(FailurePolicy policy) { return policy == FailurePolicy::passphrase ? exit_passphrase : exit_poweroff; }

std::string version_text() {
  return std::string("fde-agent ") + FDE_VERSION + " (platforms: tsi" + (sim_platform_available() ? ", sim" : "") +
         "; " + OPENSSL_VERSION_TEXT + ")";
}

// --check-mapping (the pre-pivot hook, fde-unlock --verify-root): whichever program opened
// /dev/mapper/<luks_name> (the agent, or the passphrase prompt), the kernel's table must show
// the enrolled volume: its LUKS2 UUID, luks_cipher and a volume key with volume_key_check.
int check_mapping(const AgentConfig& config) {
  const std::string mapped = "/dev/mapper/" + config.mapper_name();
  auto mapping = read_crypt_mapping(config.mapper_name());
  auto checked = mapping.and_then([&](const CryptMapping& found) {
    return check_luks2_mapping(found, config.luks_uuid, config.luks_cipher, config.volume_key_check);
  });
  if (!checked) {
    std::cerr << "fde-agent: " << mapped << " is not the enrolled volume: " << checked.error().message << "\n";
    return exit_poweroff;
  }
  std::cerr << "fde-agent: " << mapped << " is LUKS2 volume " << config.luks_uuid << " with cipher " << mapping->cipher
            << " and the enrolled volume key\n";
  return exit_unlocked;
}

int run(const std::vector<std::string>& args) {
  auto options = parse_options(args, option_specs());
  if (!options) return config_error(options.error().message + "\n" + usage());
  if (options->has("help")) {
    std::cout << usage();
    return exit_unlocked;
  }
  if (options->has("version")) {
    std::cout << version_text() << "\n";
    return exit_unlocked;
  }
  if (!options->positional().empty()) return config_error("unexpected argument '" + options->positional()[0] + "'");

  const std::string config_path = options->get("config").value_or(default_config_path);
  auto config = load_config(config_path, read_kernel_command_line(*options));
  if (!config) return config_error(config.error().message);
  if (auto platform = options->get("platform")) {
    if (auto ok = apply_setting(*config, "platform", *platform, "--platform", false); !ok)
      return config_error(ok.error().message);
  }
  if (config->platform == PlatformKind::sim && !sim_platform_available())
    return config_error("platform sim: this fde-agent was built without the simulated platform (FDE_WITH_SIM=OFF)");
  auto ca_pem = read_file(config->ca_file, max_config_file_size);
  if (!ca_pem) return config_error("ca_file: " + ca_pem.error().message);
  std::string cryptsetup = config->cryptsetup;
  if (cryptsetup.empty()) {
    // Only needed once a key is released; a missing one is reported then, by the unlocker.
    auto found = find_cryptsetup();
    cryptsetup = found ? *found : "/usr/sbin/cryptsetup";
  }
  const std::string explicit_device = options->get("device").value_or("");
  const bool test_only = options->has("test-passphrase");
  const std::string header_directory = options->get("header-dir").value_or(default_header_directory);
  if (header_directory.empty() || header_directory.front() != '/')
    return config_error("--header-dir: must be an absolute path");

  if (options->has("check-config")) {
    std::cout << "image_id = " << config->image_id << "\n";
    for (const auto& verifier : config->verifiers) std::cout << "verifier = " << verifier.text << "\n";
    if (!config->server_name.empty()) std::cout << "server_name = " << config->server_name << "\n";
    if (!config->sim_dir.empty()) std::cout << "sim_dir = " << config->sim_dir << "\n";
    std::cout << "ca_file = " << config->ca_file << "\nluks_uuid = " << config->luks_uuid
              << "\nluks_name = " << config->mapper_name() << "\nluks_cipher = " << config->luks_cipher
              << "\nplatform = " << platform_kind_name(config->platform)
              << "\nfailure_policy = " << failure_policy_name(config->failure_policy)
              << "\nnetwork_timeout = " << format_duration(config->network_timeout)
              << "\ndevice_timeout = " << format_duration(config->device_timeout)
              << "\nattempt_timeout = " << format_duration(config->attempt_timeout)
              << "\noverall_timeout = " << format_duration(config->overall_timeout)
              << "\nbackoff_initial = " << format_duration(config->backoff_initial)
              << "\nbackoff_max = " << format_duration(config->backoff_max) << "\ncryptsetup = " << cryptsetup
              << "\n";
    return exit_unlocked;
  }

  if (options->has("check-mapping")) return check_mapping(*config);

  UuidDeviceLocator locator(config->luks_uuid, config->mapper_name(), explicit_device);
  if (options->has("resolve-volume")) {
    auto device = locator.locate();
    if (!device) return config_error(device.error().message);
    std::cout << *device << " " << config->mapper_name() << "\n";
    return exit_unlocked;
  }

  SystemClock clock;
  StatusReporter status(std::cerr);
  status.line(version_text() + ": unlocking LUKS volume UUID=" + config->luks_uuid + " for image " +
              config->image_id);
  auto platform = create_platform(*config);
  if (!platform) {
    status.line("cannot attest: " + platform.error().message + "; " +
                (config->failure_policy == FailurePolicy::passphrase
                     ? "failure policy 'passphrase': falling back to the LUKS passphrase prompt"
                     : "the VM will power off"));
    return exit_for(config->failure_policy);
  }
  HttpsTransport transport(std::string(as_text(*ca_pem)), config->server_name);
  AttestationClient client(**platform, transport, config->image_id);
  RoutingTableProbe network;
  // Re-running after a successful unlock is harmless; in test mode nothing is mapped.
  struct TestLocator final : DeviceLocator {
    explicit TestLocator(DeviceLocator& inner) : inner_(inner) {}
    Result<std::string> locate() override { return inner_.locate(); }
    bool already_unlocked() override { return false; }
    Result<CryptMapping> existing_mapping() override { return inner_.existing_mapping(); }
    DeviceLocator& inner_;
  } test_locator(locator);

  FlowServices services{
      clock,
      status,
      network,
      test_only ? static_cast<DeviceLocator&>(test_locator) : static_cast<DeviceLocator&>(locator),
      [&client](const VerifierUrl& verifier, TimePoint deadline) { return client.attempt(verifier, deadline); },
      [&](const std::string& device) -> std::unique_ptr<VolumeUnlocker> {
        CryptsetupOptions unlock_options;
        unlock_options.cryptsetup = cryptsetup;
        unlock_options.device = device;
        unlock_options.mapper_name = config->mapper_name();
        unlock_options.test_only = test_only;
        unlock_options.expected_cipher = config->luks_cipher;
        unlock_options.header_directory = header_directory;
        unlock_options.volume_key_check = config->volume_key_check;
        return std::make_unique<CryptsetupUnlocker>(std::move(unlock_options));
      },
      {},
  };
  switch (run_unlock_flow(*config, services)) {
    case FlowResult::unlocked:
    case FlowResult::already_unlocked: return exit_unlocked;
    case FlowResult::give_up_passphrase: return exit_passphrase;
    case FlowResult::give_up_poweroff:
    case FlowResult::fatal_poweroff: return exit_poweroff;
  }
  return exit_internal;
}

}  // namespace

int main(int argc, char** argv) {
  harden_process();
  try {
    return run(std::vector<std::string>(argv + 1, argv + argc));
  } catch (const std::exception& error) {
    std::cerr << "fde-agent: internal error: " << error.what() << "\n";
  } catch (...) {
    std::cerr << "fde-agent: internal error\n";
  }
  return exit_internal;
}
