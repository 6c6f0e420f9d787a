// fde-image: command-line front end of the image builder (build, inspect, measure, rebind).
// Exit codes: 0 success, 1 failure, 2 usage error, 130 interrupted.
#include <signal.h>

#include <cstdio>
#include <iostream>

#include "common/util/process.hpp"
#include "common/util/command_line.hpp"
#include "common/util/file.hpp"
#include "image-builder/assembly/image_builder.hpp"
#include "image-builder/assembly/rebind.hpp"

namespace {

using namespace fde;
using namespace fde::image;

constexpr int exit_failure = 1;
constexpr int exit_usage = 2;
constexpr int exit_interrupted = 130;

const std::vector<OptionSpec> common_specs = {
    {"input-format", true, false, "FORMAT", "qcow2 (default, checked) or raw"},
    {"work-dir", true, false, "DIR", "directory for intermediate files (default: beside the output/image)"},
    {"help", false, false, "", "show this help (also -h)"},
};

std::vector<OptionSpec> build_specs() {
  std::vector<OptionSpec> specs = {
      {"input", true, false, "IN.qcow2", "the bootable CVM image to encrypt (not modified; no backing or data file)"},
      {"output", true, false, "OUT.qcow2", "the encrypted image to write (neither it nor OUT.qcow2.partial may exist)"},
      {"output-format", true, false, "FORMAT", "qcow2 (default) or raw"},
      {"image-id", true, false, "ID", "the image's name at the verifier"},
      {"verifier", true, true, "URL", "https:// URL of a verifier, tried in the order given"},
      {"verifier-ca", true, false, "CA.pem", "CA certificate the agent pins for the verifier's TLS"},
      {"agent", true, false, "PATH", "fde-agent binary to add to each initramfs (required unless --no-agent)"},
      {"no-agent", false, false, "", "add no agent binary: the base initramfs already holds /usr/sbin/fde-agent"},
      {"agent-config", true, false, "FILE", "use this /etc/fde/agent.conf instead of the generated one"},
      {"agent-platform", true, false, "tsi|sim", "platform of the generated agent.conf: tsi (default) or sim (QEMU tests)"},
      {"initramfs-overlay", true, false, "DIR", "directory tree added to each initramfs (no lib/, bin/, sbin/)"},
      {"recovery-passphrase-file", true, false, "FILE", "add a recovery keyslot (Argon2id) with this passphrase"},
      {"rim", true, true, "HEX", "accepted firmware RIM for the reference values"},
      {"grub-efi-digest", true, true, "HEX", "Authenticode sha256 of an EFI application the firmware starts (grub, shim); default: computed from the image's EFI System Partition"},
      {"reference-in", true, false, "JSON", "the SDK's image_reference_measurement.json (grub); with it the ESP is not read"},
      {"kernel-cmdline", true, false, "ARGS", "kernel arguments for the grub.cfg fde-image writes, instead of the image's grub.cfg's (ima_rot=tpm is added)"},
      {"kernel-version", true, false, "V", "the kernel grub.cfg boots (default: the newest vmlinuz-V)"},
      {"root-partition", true, false, "N", "partition number of the root partition (default: detected)"},
      {"sector-size", true, false, "BYTES", "LUKS2 encryption sector size, 4096 (default) or 512"},
      {"bundle", true, false, "FILE", "enrollment bundle to write, mode 0600 (default: OUT.enrollment.json)"},
      {"reference-out", true, false, "FILE", "reference values to write (default: OUT.reference.json)"},
      {"quiet", false, false, "", "no progress output"},
  };
  specs.insert(specs.end(), common_specs.begin(), common_specs.end());
  return specs;
}

std::vector<OptionSpec> measure_specs() {
  std::vector<OptionSpec> specs = {
      {"image-id", true, false, "ID", "image id to put into the document"},
      {"rim", true, true, "HEX", "accepted firmware RIM"},
      {"grub-efi-digest", true, true, "HEX", "Authenticode sha256 of an EFI application the firmware starts (grub, shim); default: computed from the image's EFI System Partition"},
      {"reference-in", true, false, "JSON", "the SDK's image_reference_measurement.json (grub); with it the ESP is not read"},
      {"output", true, false, "FILE", "write the document here instead of stdout"},
  };
  specs.insert(specs.end(), common_specs.begin(), common_specs.end());
  return specs;
}

std::vector<OptionSpec> rebind_specs() {
  std::vector<OptionSpec> specs = {
      {"output", true, false, "OUT.qcow2", "the rebound image to write (neither it nor OUT.qcow2.partial may exist)"},
      {"in-place", false, false, "", "replace IMAGE itself (atomically, once everything succeeded) instead of --output"},
      {"verifier", true, true, "URL", "https:// URL of a verifier, tried in the order given; replaces all of the image's"},
      {"verifier-ca", true, false, "CA.pem", "CA certificate the agent pins for the verifier's TLS; replaces the image's"},
      {"rim", true, true, "HEX", "accepted firmware RIM for the reference values"},
      {"grub-efi-digest", true, true, "HEX", "Authenticode sha256 of an EFI application the firmware starts (grub, shim); default: computed from the image's EFI System Partition"},
      {"reference-in", true, false, "JSON", "the SDK's image_reference_measurement.json (grub); with it the ESP is not read"},
      {"reference-out", true, false, "FILE", "reference values to write (default: OUT.reference.json; with --in-place: IMAGE.rebind.reference.json)"},
      {"quiet", false, false, "", "no progress output"},
  };
  specs.insert(specs.end(), common_specs.begin(), common_specs.end());
  return specs;
}

void usage(std::FILE* out) {
  std::fprintf(out,
               "usage: fde-image build --input IN.qcow2 --output OUT.qcow2 --image-id ID --verifier URL...\n"
               "                       --verifier-ca CA.pem --rim HEX (--agent PATH | --no-agent) [options]\n"
               "       fde-image inspect IMAGE [--input-format F] [--work-dir DIR]\n"
               "       fde-image measure IMAGE [--reference-in JSON | --grub-efi-digest HEX] [options]\n"
               "       fde-image rebind IMAGE (--output OUT.qcow2 | --in-place) [--verifier URL...]\n"
               "                        [--verifier-ca CA.pem] --rim HEX [options]\n"
               "\nbuild replaces the image's grub.cfg with a straight-line one that boots one kernel, so that\n"
               "the reference values name every command grub runs; measure reads that file back.\n"
               "\nWithout --grub-efi-digest and --reference-in, the `grub` reference values are the Authenticode\n"
               "digests of EFI/BOOT/BOOT{AA64,X64}.EFI and EFI/*/{grub,shim}{aa64,x64}.efi on the image's EFI\n"
               "System Partition (read in user space; inspect lists them).\n"
               "\nrebind points an image build made at other verifiers: it rewrites the agent configuration\n"
               "(verifier URLs, CA) in the archive build appended to the initramfs and writes new reference\n"
               "values. The LUKS2 header, the encrypted root and the disk key stay: the enrollment stays valid.\n"
               "\nEvery argument is checked before the input is read. fde-image --version prints the version.\n"
               "\nbuild options:\n%s\nmeasure options:\n%s\nrebind options:\n%s\nSee docs/fde-image.md.\n",
               options_help(build_specs()).c_str(), options_help(measure_specs()).c_str(),
               options_help(rebind_specs()).c_str());
}

void on_signal(int) { request_cancel(); }

Result<std::vector<Bytes>> hex_list(const ParsedOptions& parsed, const std::string& name) {
  std::vector<Bytes> out;
  for (const auto& text : parsed.get_all(name)) {
    auto bytes = hex_decode(text);
    if (!bytes || bytes->size() != 32) return fail(Errc::invalid_argument, "--" + name + ": expected 64 hex digits");
    out.push_back(std::move(*bytes));
  }
  return out;
}

Result<std::optional<ImageFormat>> format_option(const ParsedOptions& parsed, const std::string& name) {
  auto text = parsed.get(name);
  if (!text) return std::optional<ImageFormat>{};
  auto format = image_format_from_name(*text);
  if (!format) return tl::unexpected(format.error());
  return std::optional<ImageFormat>{*format};
}

int report_error(const std::string& command, const Error& error) {
  std::fprintf(stderr, "fde-image %s: %s\n", command.c_str(), error.message.c_str());
  if (cancel_requested()) return exit_interrupted;
  return error.code == Errc::invalid_argument ? exit_usage : exit_failure;
}

int run_build(const ParsedOptions& parsed) {
  BuildOptions options;
  for (const char* required : {"input", "output", "image-id", "verifier", "verifier-ca", "rim"})
    if (!parsed.has(required)) {
      std::fprintf(stderr, "fde-image build: --%s is required (see --help)\n", required);
      return exit_usage;
    }
  options.input = *parsed.get("input");
  options.output = *parsed.get("output");
  options.image_id = *parsed.get("image-id");
  options.verifiers = parsed.get_all("verifier");
  options.verifier_ca = *parsed.get("verifier-ca");
  options.agent = parsed.get("agent");
  options.without_agent = parsed.has("no-agent");
  options.agent_config = parsed.get("agent-config");
  options.initramfs_overlay = parsed.get("initramfs-overlay");
  if (auto platform = parsed.get("agent-platform")) {
    if (*platform == "tsi") options.agent_platform = AgentPlatform::tsi;
    else if (*platform == "sim") options.agent_platform = AgentPlatform::sim;
    else return report_error("build", Error{Errc::invalid_argument, "--agent-platform: expected tsi or sim"});
  }
  options.recovery_passphrase_file = parsed.get("recovery-passphrase-file");
  options.reference_in = parsed.get("reference-in");
  options.kernel_cmdline = parsed.get("kernel-cmdline");
  options.kernel_version = parsed.get("kernel-version");
  options.work_dir = parsed.get("work-dir");
  options.bundle_path = parsed.get("bundle").value_or(options.output + ".enrollment.json");
  options.reference_path = parsed.get("reference-out").value_or(options.output + ".reference.json");
  auto input_format = format_option(parsed, "input-format");
  auto output_format = format_option(parsed, "output-format");
  auto rims = hex_list(parsed, "rim");
  auto grub = hex_list(parsed, "grub-efi-digest");
  for (const auto* result : {&input_format, &output_format})
    if (!*result) return report_error("build", result->error());
  for (const auto* result : {&rims, &grub})
    if (!*result) return report_error("build", result->error());
  options.input_format = *input_format;
  options.output_format = output_format->value_or(ImageFormat::qcow2);
  options.firmware_rims = *rims;
  options.grub_efi_digests = *grub;
  try {
    if (auto n = parsed.get("root-partition")) options.root_partition = static_cast<std::uint32_t>(std::stoul(*n));
    if (auto n = parsed.get("sector-size")) options.sector_size = static_cast<std::uint32_t>(std::stoul(*n));
  } catch (const std::exception&) {
    return report_error("build", Error{Errc::invalid_argument, "--root-partition/--sector-size: not a number"});
  }
  Progress progress(parsed.has("quiet") ? nullptr : stderr);
  auto report = build_image(options, progress);
  if (!report) return report_error("build", report.error());
  for (const auto& warning : report->warnings) std::fprintf(stderr, "warning: %s\n", warning.c_str());
  std::printf("wrote %s (root partition %u: LUKS2 %s, filesystem %s, %s encrypted)\n", options.output.c_str(),
              report->root_partition, report->luks_uuid.c_str(), report->filesystem_uuid.c_str(),
              format_bytes(report->encrypted_bytes).c_str());
  for (const auto& path : report->grub_cfgs_written)
    std::printf("wrote grub.cfg (kernel %s) to %s\n", report->kernel_version.c_str(), path.c_str());
  for (const auto& path : report->initramfs_changed)
    std::printf(options.agent ? "added the agent, its configuration and the verifier CA to %s\n"
                              : "added the agent's configuration and the verifier CA (no agent binary: --no-agent) to %s\n",
                path.c_str());
  std::printf("wrote %s (reference values)\nwrote %s (enrollment bundle, mode 0600: import it with "
              "`fde-admin enroll` and then delete it; it holds the only copy of the disk key)\n",
              options.reference_path.c_str(), options.bundle_path.c_str());
  return 0;
}

int run_inspect(const ParsedOptions& parsed) {
  if (parsed.positional().size() != 1) {
    std::fprintf(stderr, "fde-image inspect: expected one IMAGE argument\n");
    return exit_usage;
  }
  auto format = format_option(parsed, "input-format");
  if (!format) return report_error("inspect", format.error());
  auto text = inspect_image(parsed.positional()[0], *format, parsed.get("work-dir"));
  if (!text) return report_error("inspect", text.error());
  std::fputs(text->c_str(), stdout);
  return 0;
}

int run_measure(const ParsedOptions& parsed) {
  if (parsed.positional().size() != 1) {
    std::fprintf(stderr, "fde-image measure: expected one IMAGE argument\n");
    return exit_usage;
  }
  MeasureRequest request;
  request.image = parsed.positional()[0];
  auto format = format_option(parsed, "input-format");
  auto rims = hex_list(parsed, "rim");
  auto grub = hex_list(parsed, "grub-efi-digest");
  if (!format) return report_error("measure", format.error());
  if (!rims) return report_error("measure", rims.error());
  if (!grub) return report_error("measure", grub.error());
  request.format = *format;
  request.firmware_rims = *rims;
  request.grub_efi_digests = *grub;
  request.work_dir = parsed.get("work-dir");
  request.image_id = parsed.get("image-id").value_or("");
  request.reference_in = parsed.get("reference-in");
  auto values = measure_image(request);
  if (!values) return report_error("measure", values.error());
  if (request.image_id.empty()) values->image_id.reset();
  auto json = reference::serialize_reference_values(*values);
  if (!json) return report_error("measure", json.error());
  if (auto path = parsed.get("output")) {
    if (auto ok = write_file_atomic(*path, ByteView(reinterpret_cast<const std::uint8_t*>(json->data()), json->size()), 0644);
        !ok)
      return report_error("measure", ok.error());
  } else {
    std::fputs(json->c_str(), stdout);
  }
  return 0;
}

std::string joined(const std::vector<std::string>& items) {
  std::string text;
  for (const auto& item : items) text += (text.empty() ? "" : ", ") + item;
  return text;
}

int run_rebind(const ParsedOptions& parsed) {
  if (parsed.positional().size() != 1) {
    std::fprintf(stderr, "fde-image rebind: expected one IMAGE argument\n");
    return exit_usage;
  }
  if (!parsed.has("rim")) {
    std::fprintf(stderr, "fde-image rebind: --rim is required (see --help)\n");
    return exit_usage;
  }
  RebindOptions options;
  options.input = parsed.positional()[0];
  options.output = parsed.get("output").value_or("");
  options.in_place = parsed.has("in-place");
  options.verifiers = parsed.get_all("verifier");
  options.verifier_ca = parsed.get("verifier-ca");
  options.reference_in = parsed.get("reference-in");
  options.work_dir = parsed.get("work-dir");
  options.reference_path = parsed.get("reference-out").value_or(
      options.in_place ? options.input + ".rebind.reference.json" : options.output + ".reference.json");
  auto format = format_option(parsed, "input-format");
  auto rims = hex_list(parsed, "rim");
  auto grub = hex_list(parsed, "grub-efi-digest");
  if (!format) return report_error("rebind", format.error());
  if (!rims) return report_error("rebind", rims.error());
  if (!grub) return report_error("rebind", grub.error());
  options.input_format = *format;
  options.firmware_rims = *rims;
  options.grub_efi_digests = *grub;
  Progress progress(parsed.has("quiet") ? nullptr : stderr);
  auto report = rebind_image(options, progress);
  if (!report) return report_error("rebind", report.error());
  for (const auto& warning : report->warnings) std::fprintf(stderr, "warning: %s\n", warning.c_str());
  const std::string& written = options.in_place ? options.input : options.output;
  std::printf("wrote %s: the agent configuration in %s now names verifier%s %s%s\n", written.c_str(),
              report->initramfs.c_str(), report->new_verifiers.size() == 1 ? "" : "s",
              joined(report->new_verifiers).c_str(),
              report->ca_replaced ? " and the new verifier CA" : " (verifier CA unchanged)");
  if (report->new_verifiers != report->old_verifiers)
    std::printf("  (it named %s before)\n", joined(report->old_verifiers).c_str());
  std::printf("the LUKS2 header, the encrypted root and the disk key are unchanged: the enrollment of image %s "
              "(LUKS2 %s) stays valid, no re-enrollment is needed\n",
              report->image_id.c_str(), report->luks_uuid.c_str());
  std::printf("wrote %s (reference values: set %s; the image measured as set %s before)\n",
              options.reference_path.c_str(), report->new_set.c_str(), report->old_set.c_str());
  std::printf("next, on each verifier that serves %s (the new one holds the enrollment: moved with `fde-admin "
              "backup` or enrolled from the original bundle):\n"
              "  fde-admin add-reference %s --file %s --replace %s\n"
              "(without --replace the old set stays, for VMs still booting the old image; retire it later with\n"
              "`fde-admin retire-reference %s --set %s`). Until the new set is added, boots of the rebound image\n"
              "are denied.\n",
              report->image_id.c_str(), report->image_id.c_str(), options.reference_path.c_str(),
              report->old_set.c_str(), report->image_id.c_str(), report->old_set.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  fde::keep_secrets_out_of_core_dumps();  // the process holds the disk key
  struct sigaction action {};
  action.sa_handler = on_signal;
  ::sigaction(SIGINT, &action, nullptr);
  ::sigaction(SIGTERM, &action, nullptr);
  ::sigaction(SIGHUP, &action, nullptr);

  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty() || args[0] == "--help" || args[0] == "-h" || args[0] == "help") {
    usage(args.empty() ? stderr : stdout);
    return args.empty() ? exit_usage : 0;
  }
  if (args[0] == "--version") {
    std::printf("fde-image %s\n", FDE_VERSION);
    return 0;
  }
  const std::string command = args[0];
  args.erase(args.begin());
  const auto specs = command == "build"     ? build_specs()
                     : command == "measure" ? measure_specs()
                     : command == "rebind"  ? rebind_specs()
                                            : common_specs;
  if (command != "build" && command != "inspect" && command != "measure" && command != "rebind") {
    std::fprintf(stderr, "fde-image: unknown command \"%s\" (build, inspect, measure, rebind; see --help)\n",
                 command.c_str());
    return exit_usage;
  }
  auto parsed = parse_options(args, specs);
  if (!parsed) return report_error(command, parsed.error());
  if (parsed->has("help")) {
    usage(stdout);
    return 0;
  }
  if (command == "build") return run_build(*parsed);
  if (command == "inspect") return run_inspect(*parsed);
  if (command == "rebind") return run_rebind(*parsed);
  return run_measure(*parsed);
}
