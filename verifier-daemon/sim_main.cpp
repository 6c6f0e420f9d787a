// fde-sim: the simulated virtCCA platform as a command (create devices, issue tokens, build
// event logs) for demos and tests. Exit codes: 0 ok, 1 the work failed, 2 usage or input error.

#include <algorithm>
#include <charconv>
#include <filesystem>
#include <iostream>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "common/util/process.hpp"
#include "common/crypto/hash.hpp"
#include "common/sim/event_log_builder.hpp"
#include "common/sim/sim_device.hpp"
#include "common/sim/token_issuer.hpp"
#include "common/util/command_line.hpp"
#include "common/util/file.hpp"

namespace {

using namespace fde;

constexpr int exit_ok = 0;
constexpr int exit_failure = 1;
constexpr int exit_usage = 2;

constexpr std::size_t max_input_file_size = 512u * 1024 * 1024;  // kernels and initramfs images

int usage_error(const std::string& message) {
  std::cerr << "fde-sim: " << message << "\n";
  return exit_usage;
}
int usage_error(const Error& error) { return usage_error(error.message); }
int work_failure(const Error& error) {
  std::cerr << "fde-sim: " << error.message << "\n";
  return exit_failure;
}

// The shared parser leaves "required" and "hex" to the caller; an empty value ("--out=")
// counts as missing, as a path or digest can never be empty.
Result<std::string> required(const ParsedOptions& options, const std::string& name) {
  auto value = options.get(name);
  if (!value || value->empty()) return fail(Errc::invalid_argument, "--" + name + " is required");
  return *value;
}

Result<Bytes> hex_option(const ParsedOptions& options, const std::string& name) {
  auto text = required(options, name);
  if (!text) return tl::unexpected(text.error());
  auto bytes = hex_decode(*text);
  if (!bytes) return fail_with_context("--" + name, bytes.error());
  return bytes;
}

Result<crypto::HashAlg> hash_alg_option(const ParsedOptions& options) {
  std::string name = options.get("hash-alg").value_or("sha-256");
  auto alg = crypto::hash_alg_from_name(name);
  // virtCCA's CVM config knows SHA-256 and SHA-512 only (section c.1).
  if (!alg || *alg == crypto::HashAlg::sha384)
    return fail(Errc::invalid_argument, "--hash-alg must be sha-256 or sha-512, not " + name);
  return *alg;
}

int run_device(const ParsedOptions& options) {
  auto directory = required(options, "out");
  if (!directory) return usage_error(directory.error());
  sim::DeviceOptions device_options;
  std::string type = options.get("type").value_or("p521");
  auto device_type = sim::device_type_from_name(type);
  if (!device_type) return usage_error("--type must be rsa or p521, not " + type);
  device_options.type = *device_type;
  device_options.board_serial = options.get("serial").value_or("");
  device_options.persistent_rak = options.has("persistent-rak");
  // Replacing a device silently would orphan whatever already trusts its CA.
  std::error_code error;
  if (!options.has("force") &&
      std::filesystem::exists(std::filesystem::path(*directory) / std::string(sim::device_key_file_name), error))
    return usage_error(*directory + " already holds a device (use --force to replace it)");

  auto device = sim::SimDevice::create(device_options);
  if (!device) return work_failure(device.error());
  if (auto saved = device->save(*directory); !saved) return work_failure(saved.error());
  std::cout << "created " << sim::device_type_name(device->type()) << " device " << device->board_serial()
            << " in " << *directory << " (trust " << *directory << "/" << sim::ca_file_name << ")\n";
  return exit_ok;
}

int run_token(const ParsedOptions& options) {
  auto device_directory = required(options, "device");
  if (!device_directory) return usage_error(device_directory.error());
  auto out = required(options, "out");
  if (!out) return usage_error(out.error());
  auto device = sim::SimDevice::load(*device_directory);
  if (!device) return usage_error(device.error());

  sim::TokenRequest request;
  auto challenge = hex_option(options, "challenge");
  if (!challenge) return usage_error(challenge.error());
  // The SDK zero-pads a shorter challenge to the 64 bytes the ioctl always copies (a.1).
  if (challenge->size() > 64)
    return usage_error("--challenge is " + std::to_string(challenge->size()) + " bytes, over 64");
  challenge->resize(64, 0);
  request.challenge = std::move(*challenge);
  auto alg = hash_alg_option(options);
  if (!alg) return usage_error(alg.error());
  request.hash_alg = *alg;
  auto rim = hex_option(options, "rim");
  if (!rim) return usage_error(rim.error());
  request.rim = std::move(*rim);
  auto rems = options.get_all("rem");
  if (!rems.empty() && rems.size() != 4)
    return usage_error("--rem must be given 0 or 4 times, not " + std::to_string(rems.size()));
  for (std::size_t i = 0; i < rems.size(); ++i) {
    auto rem = hex_decode(rems[i]);
    if (!rem) return usage_error("--rem #" + std::to_string(i + 1) + ": " + rem.error().message);
    request.rems[i] = std::move(*rem);
  }
  if (options.has("rpv")) {
    auto rpv = hex_option(options, "rpv");
    if (!rpv) return usage_error(rpv.error());
    request.personalization_value = std::move(*rpv);
  }
  request.format = options.has("legacy") ? sim::TokenFormat::legacy : sim::TokenFormat::full;
  request.ecdsa_encoding = options.has("der-signature") ? crypto::EcdsaEncoding::der : crypto::EcdsaEncoding::raw;

  auto issued = sim::issue_token(*device, request);
  // Sizes and the legacy/RSA pairing are the caller's input; anything else is a failure.
  if (!issued)
    return issued.error().code == Errc::invalid_argument ? usage_error(issued.error()) : work_failure(issued.error());
  if (auto ok = write_file_atomic(*out, issued->token, 0644); !ok) return work_failure(ok.error());
  if (auto cert_out = options.get("device-cert-out")) {
    if (auto ok = write_file_atomic(*cert_out, device->device_certificate_blob(), 0644); !ok)
      return work_failure(ok.error());
  }
  std::cout << "wrote " << (issued->platform ? "full" : "legacy") << " token (" << issued->token.size()
            << " bytes) to " << *out << "\n";
  return exit_ok;
}

// A measured object given as a file (hashed here) or as a digest; option names without "--".
Result<sim::Measurement> measurement_option(const ParsedOptions& options, const std::string& file_option,
                                            const std::string& digest_option, crypto::HashAlg alg, bool mandatory) {
  auto file = options.get(file_option);
  bool has_digest = options.has(digest_option);
  if (file && has_digest)
    return fail(Errc::invalid_argument, "give --" + file_option + " or --" + digest_option + ", not both");
  if (has_digest) {
    auto digest = hex_option(options, digest_option);
    if (!digest) return tl::unexpected(digest.error());
    if (digest->size() != crypto::digest_size(alg))
      return fail(Errc::invalid_argument,
                  "--" + digest_option + " must be " + std::to_string(crypto::digest_size(alg)) + " bytes");
    return sim::Measurement::of_digest(alg, std::move(*digest));
  }
  if (file) {
    auto content = read_file(*file, max_input_file_size);
    if (!content) return tl::unexpected(content.error());
    const crypto::HashAlg algs[] = {alg};
    return sim::Measurement::of_content(*content, algs);
  }
  if (mandatory)
    return fail(Errc::invalid_argument, "--" + file_option + " or --" + digest_option + " is required");
  return sim::Measurement{};
}

Result<std::size_t> size_option(const ParsedOptions& options, const std::string& name, std::size_t fallback) {
  auto text = options.get(name);
  if (!text) return fallback;
  std::size_t value = 0;
  auto [end, error] = std::from_chars(text->data(), text->data() + text->size(), value);
  if (error != std::errc() || end != text->data() + text->size() || value == 0)
    return fail(Errc::invalid_argument, "--" + name + " is not a positive number of bytes: " + *text);
  return value;
}

int run_eventlog(const ParsedOptions& options) {
  auto alg = hash_alg_option(options);
  if (!alg) return usage_error(alg.error());
  auto out_log = required(options, "out-log");
  if (!out_log) return usage_error(out_log.error());
  auto log_size = size_option(options, "log-size", sim::default_log_area_size);
  if (!log_size) return usage_error(log_size.error());

  sim::GrubBoot boot;
  // grub's measurement is its Authenticode hash, which only a PE tool computes: a digest.
  auto grub_digest = hex_option(options, "grub-digest");
  if (!grub_digest) return usage_error(grub_digest.error());
  if (grub_digest->size() != crypto::digest_size(*alg))
    return usage_error("--grub-digest must be " + std::to_string(crypto::digest_size(*alg)) + " bytes");
  boot.grub_authenticode = sim::Measurement::of_digest(*alg, std::move(*grub_digest));
  auto grub_cfg = measurement_option(options, "grub-cfg", "grub-cfg-digest", *alg, true);
  if (!grub_cfg) return usage_error(grub_cfg.error());
  boot.grub_cfg = std::move(*grub_cfg);
  auto kernel = measurement_option(options, "kernel", "kernel-digest", *alg, true);
  if (!kernel) return usage_error(kernel.error());
  boot.kernel = std::move(*kernel);
  auto initramfs = measurement_option(options, "initramfs", "initramfs-digest", *alg, false);
  if (!initramfs) return usage_error(initramfs.error());
  boot.initramfs = std::move(*initramfs);

  if (auto path = options.get("grub-cfg-path")) boot.grub_cfg_path = *path;
  // grub names a file as grub.cfg wrote it ("/vmlinuz-6.6.0"); the file's own name is the
  // best default when it follows the distribution's naming.
  if (auto path = options.get("kernel-path"))
    boot.kernel_path = *path;
  else if (auto file = options.get("kernel"))
    boot.kernel_path = "/" + std::filesystem::path(*file).filename().string();
  if (auto path = options.get("initramfs-path"))
    boot.initramfs_path = *path;
  else if (auto file = options.get("initramfs"))
    boot.initramfs_path = "/" + std::filesystem::path(*file).filename().string();
  if (auto cmdline = options.get("cmdline")) boot.kernel_arguments = *cmdline;
  boot.grub_commands = options.get_all("grub-cmd");
  if (options.has("script-from-grub-cfg")) {
    // The straight-line grub.cfg fde-image writes: every line but blanks and comments is one
    // command, measured as written.
    auto file = options.get("grub-cfg");
    if (!file) return usage_error("--script-from-grub-cfg needs --grub-cfg FILE");
    if (!boot.grub_commands.empty()) return usage_error("--script-from-grub-cfg and --grub-cmd exclude each other");
    auto text = read_file(*file, 4u << 20);
    if (!text) return work_failure(text.error());
    std::vector<std::string> script;
    std::istringstream in{std::string(text->begin(), text->end())};
    for (std::string line; std::getline(in, line);)
      if (!line.empty() && line.front() != '#') script.push_back(line);
    boot.script = std::move(script);
  }
  if (options.get("kernel-efi-digest")) {
    auto digest = hex_option(options, "kernel-efi-digest");
    if (!digest) return usage_error(digest.error());
    if (digest->size() != crypto::digest_size(*alg))
      return usage_error("--kernel-efi-digest must be " + std::to_string(crypto::digest_size(*alg)) + " bytes");
    boot.kernel_efi = sim::Measurement::of_digest(*alg, std::move(*digest));
  }
  if (auto by = options.get("kernel-efi-by")) {
    if (!boot.kernel_efi) return usage_error("--kernel-efi-by needs --kernel-efi-digest");
    if (*by == "shim")
      boot.kernel_efi_by = sim::KernelEfiMeasurer::shim;
    else if (*by == "load-image")
      boot.kernel_efi_by = sim::KernelEfiMeasurer::load_image;
    else
      return usage_error("--kernel-efi-by must be shim or load-image, not " + *by);
  }

  auto builder = sim::build_grub_boot_log(boot, {*alg});
  if (!builder) return usage_error(builder.error());
  auto area = builder->log_area(*log_size);
  if (!area) return usage_error(area.error());
  auto rems = builder->rems(*alg);
  if (!rems) return work_failure(rems.error());
  if (auto ok = write_file_atomic(*out_log, *area, 0644); !ok) return work_failure(ok.error());
  if (auto out_ccel = options.get("out-ccel")) {
    if (auto ok = write_file_atomic(*out_ccel, sim::build_ccel(*log_size), 0644); !ok)
      return work_failure(ok.error());
  }
  for (const auto& rem : *rems) std::cout << hex_encode(rem) << "\n";
  return exit_ok;
}

// One subcommand: its synopsis and description for --help, its options and its handler.
struct Command {
  std::string_view name;
  std::string_view synopsis;
  std::vector<OptionSpec> options;
  int (*handler)(const ParsedOptions&);
};

const std::vector<Command>& commands() {
  static const std::vector<Command> table{
      {"device",
       "fde-sim device --out DIR [--type rsa|p521] [--serial SERIAL] [--persistent-rak] [--force]\n"
       "    Create a simulated device: its own test CA (DIR/ca.pem), the device certificate\n"
       "    (DIR/device-cert.pem) and key (DIR/device-key.pem, 0600). Default type p521.\n",
       {
           {"out", true, false, "DIR", "directory to write the device to (required)"},
           {"type", true, false, "rsa|p521", "device type (default p521)"},
           {"serial", true, false, "SERIAL", "board serial, the certificate's CN (default random)"},
           {"persistent-rak", false, false, "", "P-521: keep one RAK for every token"},
           {"force", false, false, "", "replace a device already in DIR"},
           {"help", false, false, "", "show this help"},
       },
       run_device},
      {"token",
       "fde-sim token --device DIR --challenge HEX --rim HEX [--rem HEX (x4)] [--rpv HEX]\n"
       "              [--hash-alg sha-256|sha-512] [--legacy] [--der-signature] --out FILE\n"
       "              [--device-cert-out FILE]\n"
       "    Issue a token. The challenge is at most 64 bytes, zero-padded to 64 as the SDK does.\n"
       "    --rem is given 0 times (all zero) or 4 times (REM[0..3]). --legacy issues a CVM-only\n"
       "    token signed with the RSA device key; the default is a full token with a fresh P-521\n"
       "    RAK. --device-cert-out writes the certificate as TMM_GET_DEVICE_CERT returns it.\n",
       {
           {"device", true, false, "DIR", "a directory written by 'fde-sim device' (required)"},
           {"challenge", true, false, "HEX", "the verifier's challenge, at most 64 bytes (required)"},
           {"rim", true, false, "HEX", "the RIM claim (required)"},
           {"rem", true, true, "HEX", "REM[0..3], 0 or 4 times"},
           {"rpv", true, false, "HEX", "the 64-byte personalization value (default zeros)"},
           {"hash-alg", true, false, "ALG", "sha-256 (default) or sha-512"},
           {"legacy", false, false, "", "CVM-only token signed with the RSA device key"},
           {"der-signature", false, false, "", "DER-encoded ECDSA signatures (firmware quirk)"},
           {"out", true, false, "FILE", "where to write the token (required)"},
           {"device-cert-out", true, false, "FILE", "also write the device certificate blob"},
           {"help", false, false, "", "show this help"},
       },
       run_token},
      {"eventlog",
       "fde-sim eventlog --grub-digest HEX --grub-cfg FILE|--grub-cfg-digest HEX\n"
       "                 --kernel FILE|--kernel-digest HEX\n"
       "                 [--initramfs FILE|--initramfs-digest HEX] [--cmdline ARGS]\n"
       "                 [--grub-cfg-path P] [--kernel-path P] [--initramfs-path P]\n"
       "                 [--grub-cmd CMD]... [--script-from-grub-cfg] [--kernel-efi-digest HEX]\n"
       "                 [--kernel-efi-by shim|load-image]\n"
       "                 [--hash-alg sha-256|sha-512] [--log-size BYTES] --out-log FILE [--out-ccel FILE]\n"
       "    Build the CCEL event log of a UEFI + grub boot and print REM[0..3], one hex line\n"
       "    each. --grub-digest is grub's Authenticode hash; --kernel is the decompressed kernel.\n"
       "    --script-from-grub-cfg measures the lines of a straight-line grub.cfg (what fde-image\n"
       "    writes) as the commands, linux and initrd included, instead of --grub-cmd/--cmdline.\n"
       "    --kernel-efi-by: who logs the kernel as an EFI application: shim (x86_64 Secure Boot,\n"
       "    after the kernel file; the default) or load-image (arm64 grub: the firmware's LoadImage\n"
       "    at boot, then the kernel stub's load-options event).\n",
       {
           {"grub-digest", true, false, "HEX", "grub's Authenticode digest (required)"},
           {"grub-cfg", true, false, "FILE", "grub.cfg to measure"},
           {"grub-cfg-digest", true, false, "HEX", "or its digest"},
           {"kernel", true, false, "FILE", "decompressed kernel to measure"},
           {"kernel-digest", true, false, "HEX", "or its digest"},
           {"initramfs", true, false, "FILE", "initramfs to measure (default: none loaded)"},
           {"initramfs-digest", true, false, "HEX", "or its digest"},
           {"cmdline", true, false, "ARGS", "kernel arguments"},
           {"grub-cfg-path", true, false, "P", "grub.cfg path as grub names it"},
           {"kernel-path", true, false, "P", "kernel path as grub.cfg names it"},
           {"initramfs-path", true, false, "P", "initramfs path as grub.cfg names it"},
           {"grub-cmd", true, true, "CMD", "a grub command run before 'linux'"},
           {"script-from-grub-cfg", false, false, "", "the commands are --grub-cfg's lines"},
           {"kernel-efi-digest", true, false, "HEX", "the kernel's Authenticode digest, logged as an EFI application"},
           {"kernel-efi-by", true, false, "WHO", "shim (default) or load-image: where the kernel's EFI application event goes"},
           {"hash-alg", true, false, "ALG", "sha-256 (default) or sha-512"},
           {"log-size", true, false, "BYTES", "size of the log area"},
           {"out-log", true, false, "FILE", "where to write the log area (required)"},
           {"out-ccel", true, false, "FILE", "also write the ACPI CCEL table"},
           {"help", false, false, "", "show this help"},
       },
       run_eventlog},
  };
  return table;
}

std::string usage_text() {
  std::string text = "usage:\n";
  for (const auto& command : commands()) text += "  " + std::string(command.synopsis);
  text += "Run 'fde-sim COMMAND --help' for a command's options.\n";
  text += "exit codes: 0 ok, 1 the work failed, 2 usage or input error\n";
  return text;
}

std::string command_help(const Command& command) {
  return "usage: " + std::string(command.synopsis) + "\n" + options_help(command.options) +
         "exit codes: 0 ok, 1 the work failed, 2 usage or input error\n";
}

int run(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty()) {
    std::cerr << usage_text();
    return exit_usage;
  }
  if (args[0] == "--help" || args[0] == "-h" || args[0] == "help") {
    std::cout << usage_text();
    return exit_ok;
  }
  if (args[0] == "--version") {
    std::cout << "fde-sim " FDE_VERSION "\n";
    return exit_ok;
  }
  std::string name = args[0];
  args.erase(args.begin());
  const auto& table = commands();
  auto command = std::find_if(table.begin(), table.end(), [&](const Command& c) { return c.name == name; });
  if (command == table.end())
    return usage_error("unknown command " + name + " (device, token, eventlog; --help for usage)");
  auto options = parse_options(args, command->options);
  if (!options) return usage_error(options.error());
  if (options->has("help")) {
    std::cout << command_help(*command);
    return exit_ok;
  }
  if (!options->positional().empty()) return usage_error("unexpected argument " + options->positional().front());
  return command->handler(*options);
}

}  // namespace

int main(int argc, char** argv) {
  fde::keep_secrets_out_of_core_dumps();  // this process holds private keys
  return run(argc, argv);
}
