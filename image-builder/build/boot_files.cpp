// Boot file discovery and measurement.
#include "image-builder/build/boot_files.hpp"

#include <zlib.h>

#include <algorithm>
#include <array>
#include <sstream>

#include "common/crypto/hash.hpp"

namespace fde::image {
namespace {

constexpr std::uint64_t max_boot_file = 512ull << 20;   // kernel or initramfs
constexpr std::uint64_t max_kernel_unpacked = 1ull << 30;
constexpr std::uint64_t max_grub_cfg = 4ull << 20;

bool starts_with(std::string_view s, std::string_view p) { return s.substr(0, p.size()) == p; }

std::string base_name(const std::string& path) {
  const auto slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

// grub's word splitting, enough for linux lines: whitespace separates, quotes group.
std::vector<std::string> split_words(std::string_view line) {
  std::vector<std::string> words;
  std::string word;
  bool in_word = false;
  char quote = 0;
  for (char c : line) {
    if (quote) {
      if (c == quote) quote = 0;
      else word.push_back(c);
      continue;
    }
    if (c == '"' || c == '\'') {
      quote = c;
      in_word = true;
      continue;
    }
    if (c == ' ' || c == '\t') {
      if (in_word) words.push_back(word);
      word.clear();
      in_word = false;
      continue;
    }
    word.push_back(c);
    in_word = true;
  }
  if (in_word) words.push_back(word);
  return words;
}

// Kernel arguments that hand the console a shell, or run something other than the image's
// init, in the initramfs or the booted system. The host owns the console, so a reference
// set that allowed them would release the key to a boot that gives the host the open volume.
constexpr std::array<std::string_view, 9> shell_arguments = {
    "rd.break", "rd.shell", "rdshell", "init", "rdinit", "rd.systemd.unit", "systemd.unit", "systemd.debug_shell",
    "rd.emergency"};

}  // namespace

Result<void> check_kernel_cmdline(std::string_view cmdline) {
  std::size_t pos = 0;
  while (pos < cmdline.size()) {
    const std::size_t end = std::min(cmdline.find(' ', pos), cmdline.size());
    const std::string_view word = cmdline.substr(pos, end - pos);
    pos = end + 1;
    const std::string_view name = word.substr(0, word.find('='));
    const std::string_view value = name.size() < word.size() ? word.substr(name.size() + 1) : std::string_view{};
    if (std::find(shell_arguments.begin(), shell_arguments.end(), name) == shell_arguments.end()) continue;
    // rd.shell=0 and rd.emergency=poweroff (what the agent's files set) are safe values.
    if (name == "rd.shell" && (value == "0" || value == "no")) continue;
    if (name == "rd.emergency" && (value == "poweroff" || value == "halt" || value == "reboot")) continue;
    return fail(Errc::invalid_argument, "the kernel command line has '" + std::string(word) +
                                            "', which gives the host's console a shell or another init once the "
                                            "volume is open; remove it from grub.cfg (or --kernel-cmdline)");
  }
  return {};
}

std::map<std::string, std::string> parse_grub_cmdlines(std::string_view grub_cfg, std::vector<std::string>& warnings) {
  std::map<std::string, std::string> result;
  std::istringstream in{std::string(grub_cfg)};
  std::string line;
  while (std::getline(in, line)) {
    auto words = split_words(line);
    if (words.size() < 2 || (words[0] != "linux" && words[0] != "linuxefi")) continue;
    // grub_create_loader_cmdline joins the kernel path and its arguments with spaces.
    std::string cmdline;
    for (std::size_t i = 1; i < words.size(); ++i) {
      if (i > 1) cmdline.push_back(' ');
      cmdline += words[i];
    }
    if (cmdline.find('$') != std::string::npos)
      warnings.push_back("grub.cfg line \"" + line + "\" uses a variable; its measured command line may differ");
    const std::string file = base_name(words[1]);
    if (!result.count(file)) result[file] = cmdline;  // the first menu entry is the default
  }
  return result;
}

Result<BootLayout> discover_boot_files(const ExtFilesystem& fs) {
  BootLayout layout;
  std::vector<ExtDirEntry> entries;
  for (std::string prefix : {"", "/boot"}) {
    auto listed = fs.list_directory(prefix.empty() ? "/" : prefix);
    if (!listed) {
      if (listed.error().code == Errc::not_found) continue;
      return tl::unexpected(listed.error());
    }
    if (std::any_of(listed->begin(), listed->end(),
                    [](const ExtDirEntry& e) { return e.is_regular && starts_with(e.name, "vmlinuz-"); })) {
      layout.prefix = prefix;
      entries = std::move(*listed);
      break;
    }
  }
  if (entries.empty()) return layout;
  auto has = [&](const std::string& name) {
    return std::any_of(entries.begin(), entries.end(), [&](const ExtDirEntry& e) { return e.is_regular && e.name == name; });
  };
  for (const auto& entry : entries) {
    if (!entry.is_regular || !starts_with(entry.name, "vmlinuz-")) continue;
    BootKernel kernel;
    kernel.version = entry.name.substr(8);
    kernel.kernel_path = layout.prefix + "/" + entry.name;
    for (const std::string& candidate : {"initramfs-" + kernel.version + ".img", "initrd.img-" + kernel.version})
      if (has(candidate)) {
        kernel.initramfs_path = layout.prefix + "/" + candidate;
        break;
      }
    layout.kernels.push_back(std::move(kernel));
  }
  std::vector<std::string> cfgs = {layout.prefix + "/grub/grub.cfg", layout.prefix + "/grub2/grub.cfg"};
  if (auto efi = fs.list_directory(layout.prefix + "/efi/EFI"))
    for (const auto& vendor : *efi)
      if (vendor.is_directory) cfgs.push_back(layout.prefix + "/efi/EFI/" + vendor.name + "/grub.cfg");
  for (const auto& cfg : cfgs) {
    auto found = fs.exists(cfg);
    if (!found) return tl::unexpected(found.error());
    if (*found) {
      layout.grub_cfg_path = cfg;
      break;
    }
  }
  if (layout.grub_cfg_path) {
    auto text = fs.read_file(*layout.grub_cfg_path, max_grub_cfg);
    if (!text) return tl::unexpected(text.error());
    auto cmdlines = parse_grub_cmdlines(std::string_view(reinterpret_cast<const char*>(text->data()), text->size()),
                                        layout.warnings);
    for (auto& kernel : layout.kernels)
      if (auto it = cmdlines.find(base_name(kernel.kernel_path)); it != cmdlines.end()) kernel.cmdline = it->second;
  }
  return layout;
}

Result<Bytes> measure_kernel(ByteView kernel) {
  if (kernel.size() < 2 || kernel[0] != 0x1f || kernel[1] != 0x8b) return crypto::sha256(kernel);
  z_stream stream{};
  if (inflateInit2(&stream, 16 + MAX_WBITS) != Z_OK) return fail(Errc::internal, "zlib init failed");
  stream.next_in = const_cast<Bytef*>(kernel.data());
  stream.avail_in = static_cast<uInt>(kernel.size());
  Bytes out;
  Bytes chunk(1 << 20);
  int rc = Z_OK;
  while (rc != Z_STREAM_END) {
    stream.next_out = chunk.data();
    stream.avail_out = static_cast<uInt>(chunk.size());
    rc = inflate(&stream, Z_NO_FLUSH);
    if (rc != Z_OK && rc != Z_STREAM_END) {
      inflateEnd(&stream);
      return fail(Errc::malformed, "kernel: corrupt gzip data");
    }
    out.insert(out.end(), chunk.begin(), chunk.end() - stream.avail_out);
    if (out.size() > max_kernel_unpacked) {
      inflateEnd(&stream);
      return fail(Errc::too_large, "kernel: decompresses to more than 1 GiB");
    }
    if (rc == Z_OK && stream.avail_in == 0 && stream.avail_out != 0) {
      inflateEnd(&stream);
      return fail(Errc::malformed, "kernel: truncated gzip data");
    }
  }
  inflateEnd(&stream);
  return crypto::sha256(out);
}

Result<reference::ReferenceValues> measure_boot(const ExtFilesystem& fs, const BootLayout& layout,
                                                const MeasureOptions& options) {
  reference::ReferenceValues values;
  values.image_id = options.image_id;
  values.firmware_rims = options.firmware_rims;
  std::vector<Bytes> grub = options.grub_efi_digests;
  std::vector<Bytes> grub_cfgs;
  if (layout.grub_cfg_path) {
    auto cfg = fs.read_file(*layout.grub_cfg_path, max_grub_cfg);
    if (!cfg) return tl::unexpected(cfg.error());
    grub_cfgs.push_back(crypto::sha256(*cfg));
  }
  std::map<std::string, Bytes> imported_kernels;
  if (options.reference_in_json) {
    reference::ImageReferenceImport import;
    import.firmware_rims = options.firmware_rims;
    import.image_id = options.image_id;
    // The importer wants a command line for each of its kernels; ours come from grub.cfg,
    // so give it placeholders and keep only grub, grub.cfg and the kernel digests.
    for (const auto& kernel : layout.kernels) import.kernel_cmdlines[kernel.version] = "placeholder";
    auto imported = reference::import_image_reference_measurement(*options.reference_in_json, import);
    if (!imported) return fail_with_context("--reference-in", imported.error());
    for (const auto& set : imported->sets) {
      for (const auto& digest : set.grub.efi_applications)
        if (std::find(grub.begin(), grub.end(), digest) == grub.end()) grub.push_back(digest);
      if (grub_cfgs.empty())
        for (const auto& digest : set.grub.grub_cfgs) grub_cfgs.push_back(digest);
      if (set.kernel_version) imported_kernels[*set.kernel_version] = set.grub.kernel;
    }
  }
  if (grub.empty())
    return fail(Errc::invalid_argument,
                "grub's Authenticode digest is needed for the reference values: pass --grub-efi-digest, or a "
                "--reference-in (image_reference_measurement.json) that has \"grub\", or neither to compute it "
                "from the image's EFI System Partition");
  if (grub_cfgs.empty()) return fail(Errc::not_found, "no grub.cfg on the boot filesystem and none in --reference-in");
  for (const auto& kernel : layout.kernels) {
    reference::ReferenceSet set;
    set.name = "kernel-" + kernel.version;
    set.kernel_version = kernel.version;
    set.boot = reference::BootMode::grub;
    set.grub.efi_applications = grub;
    set.grub.grub_cfgs = grub_cfgs;
    auto image = fs.read_file(kernel.kernel_path, max_boot_file);
    if (!image) return tl::unexpected(image.error());
    auto digest = measure_kernel(*image);
    if (!digest) return fail_with_context(kernel.kernel_path, digest.error());
    if (auto it = imported_kernels.find(kernel.version); it != imported_kernels.end() && it->second != *digest)
      return fail(Errc::verification_failed, "--reference-in: kernel " + kernel.version +
                                                 " has a different digest than the image's: wrong reference file?");
    set.grub.kernel = std::move(*digest);
    if (kernel.initramfs_path) {
      auto initramfs = fs.read_file(*kernel.initramfs_path, max_boot_file);
      if (!initramfs) return tl::unexpected(initramfs.error());
      set.grub.initramfs = crypto::sha256(*initramfs);
    }
    set.grub.kernel_cmdline = options.cmdline_override ? options.cmdline_override : kernel.cmdline;
    if (!set.grub.kernel_cmdline)
      return fail(Errc::not_found, "no command line for kernel " + kernel.version +
                                       " in grub.cfg: pass --kernel-cmdline");
    if (auto ok = check_kernel_cmdline(*set.grub.kernel_cmdline); !ok)
      return fail_with_context("kernel " + kernel.version, ok.error());
    values.sets.push_back(std::move(set));
  }
  if (values.sets.empty()) return fail(Errc::not_found, "no kernel on the boot filesystem");
  if (auto ok = reference::validate_reference_values(values); !ok) return fail_with_context("reference values", ok.error());
  return values;
}

}  // namespace fde::image
