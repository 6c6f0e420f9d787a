// build_image: the input (qcow2 read by Qcow2Reader, or raw) -> a sparse work copy of
// everything but the root partition's data, with the root partition grown by the LUKS2 header
// area, header from libcryptsetup, our cpio appended to the initramfs; the root filesystem's
// live blocks are read, encrypted and written straight into the output (Qcow2Writer, or the
// raw output), then the work copy's data joins them. inspect_image and measure_image.
#include "image-builder/assembly/image_builder.hpp"

#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <sstream>

#include "common/crypto/certificate.hpp"
#include "common/crypto/key_check.hpp"
#include "common/crypto/random.hpp"
#include "common/util/file.hpp"
#include "image-builder/assembly/boot_files.hpp"
#include "image-builder/assembly/efi_binaries.hpp"
#include "image-builder/assembly/image_files.hpp"
#include "common/protocol/enrollment_bundle.hpp"
#include "common/protocol/messages.hpp"
#include "image-builder/assembly/secret_file.hpp"
#include "image-builder/disk/background_writer.hpp"
#include "image-builder/disk/gpt.hpp"
#include "image-builder/disk/subprocess.hpp"
#include "image-builder/disk/qcow2_image.hpp"
#include "image-builder/disk/raw_file.hpp"
#include "image-builder/disk/staged_files.hpp"
#include "image-builder/fs/ext_filesystem.hpp"
#include "image-builder/fs/fat_filesystem.hpp"
#include "image-builder/initramfs/agent_config_file.hpp"
#include "image-builder/initramfs/agent_runtime_files.hpp"
#include "image-builder/initramfs/cpio_writer.hpp"
#include "image-builder/luks/luks_volume.hpp"
#include "image-builder/luks/xts_encryptor.hpp"
#include "image-builder/pe/authenticode.hpp"

namespace fde::image {
namespace {

namespace fs = std::filesystem;

constexpr std::size_t max_agent_size = 128u << 20;
constexpr std::size_t max_small_file = 1u << 20;
constexpr std::uint64_t io_chunk = 4u << 20;

bool is_root_type(const Guid& type) { return type == gpt_type::root_x86_64 || type == gpt_type::root_aarch64; }

struct PartitionRoles {
  const GptPartition* root = nullptr;
  const GptPartition* boot = nullptr;
  bool root_is_ext = false;
  bool boot_is_fat = false;
};

Result<PartitionRoles> find_partitions(const GptTable& table, const Disk& image,
                                       std::optional<std::uint32_t> wanted_root) {
  PartitionRoles roles;
  std::vector<const GptPartition*> ext_partitions;
  for (const auto& p : table.partitions) {
    auto ext = has_ext_magic(*image, p.offset());
    if (!ext) return tl::unexpected(ext.error());
    if (*ext) ext_partitions.push_back(&p);
  }
  auto is_ext = [&](const GptPartition* p) {
    return std::find(ext_partitions.begin(), ext_partitions.end(), p) != ext_partitions.end();
  };
  if (wanted_root) {
    roles.root = table.find(*wanted_root);
    if (!roles.root) return fail(Errc::not_found, "partition " + std::to_string(*wanted_root) + " does not exist");
  } else {
    std::vector<const GptPartition*> candidates;
    for (const auto& p : table.partitions)
      if (is_root_type(p.type)) candidates.push_back(&p);
    if (candidates.empty())
      for (const auto* p : ext_partitions) {
        auto fsys = ExtFilesystem::open(image, p->offset());
        if (!fsys) continue;
        auto etc = fsys->exists("/etc");
        if (etc && *etc) candidates.push_back(p);
      }
    if (candidates.size() != 1)
      return fail(Errc::not_found,
                  candidates.empty()
                      ? "no root partition found (no root partition type and no ext filesystem with /etc); "
                        "pass --root-partition N"
                      : "several root partition candidates; pass --root-partition N");
    roles.root = candidates.front();
  }
  roles.root_is_ext = is_ext(roles.root);
  for (const auto& p : table.partitions) {
    if (&p == roles.root) continue;
    auto volume = open_boot_volume(image, p.offset(), p.size());
    if (!volume) continue;
    auto layout = discover_boot_files(**volume);
    if (layout && !layout->kernels.empty()) {
      roles.boot = &p;
      roles.boot_is_fat = (*volume)->is_fat();
      break;
    }
  }
  if (!roles.boot) {
    if (roles.root_is_ext)
      if (auto volume = open_boot_volume(image, roles.root->offset(), roles.root->size()))
        if (auto layout = discover_boot_files(**volume); layout && !layout->kernels.empty())
          return fail(Errc::unsupported,
                      "the kernels live on the root filesystem; encrypting it would make the image unbootable "
                      "(a separate /boot partition is needed)");
    return fail(Errc::not_found, "no boot partition with a kernel (vmlinuz-*) found on an ext or FAT filesystem");
  }
  return roles;
}

// What build writes for the boot: decided from the input image, before any heavy work.
struct BootPlan {
  BootKernel kernel;
  GrubConfig config;
  std::vector<std::string> boot_cfgs;  // on the boot filesystem
  std::vector<std::pair<const GptPartition*, std::vector<std::string>>> esp_cfgs;  // other FAT partitions
};

Result<BootPlan> plan_boot(const BuildOptions& options, const GptTable& table, const Disk& image,
                           const GptPartition& boot) {
  auto volume = open_boot_volume(image, boot.offset(), boot.size());
  if (!volume) return fail_with_context("boot partition " + std::to_string(boot.index), volume.error());
  auto layout = discover_boot_files(**volume);
  if (!layout) return fail_with_context("boot filesystem", layout.error());
  auto kernel = choose_kernel(*layout, options.kernel_version);
  if (!kernel) return tl::unexpected(kernel.error());
  BootPlan plan;
  plan.kernel = *kernel;
  plan.boot_cfgs = layout->grub_cfg_paths;
  std::string arguments;
  if (options.kernel_cmdline) {
    arguments = *options.kernel_cmdline;
  } else {
    if (!kernel->cmdline)
      return fail(Errc::not_found, "no grub.cfg on the boot filesystem gives kernel " + kernel->version +
                                       " its arguments: pass --kernel-cmdline");
    const auto space = kernel->cmdline->find(' ');
    arguments = space == std::string::npos ? "" : kernel->cmdline->substr(space + 1);
    if (arguments.find('$') != std::string::npos)
      return fail(Errc::unsupported, "grub.cfg gives kernel " + kernel->version + " arguments with a variable (" +
                                         arguments + "): pass the arguments with --kernel-cmdline");
  }
  auto prepared = prepare_kernel_arguments(arguments);
  if (!prepared) return fail_with_context(options.kernel_cmdline ? "--kernel-cmdline" : "grub.cfg", prepared.error());

  // The ESPs' grub.cfg (a vendor directory's config, or a stub that chains to /boot).
  for (const auto& p : table.partitions) {
    if (&p == &boot) continue;
    auto fat = FatFilesystem::open(image, p.offset(), p.size());
    if (!fat) continue;
    auto efi = fat->list_directory("/EFI");
    if (!efi) continue;
    std::vector<std::string> cfgs;
    for (const auto& dir : *efi) {
      if (!dir.is_directory) continue;
      auto files = fat->list_directory("/EFI/" + dir.name);
      if (!files) return fail_with_context("partition " + std::to_string(p.index), files.error());
      for (const auto& file : *files)
        if (!file.is_directory && file.name == "grub.cfg") cfgs.push_back("/EFI/" + dir.name + "/grub.cfg");
    }
    for (const auto& cfg : cfgs)
      if (auto ok = check_mtools_path(cfg); !ok) return fail_with_context("partition " + std::to_string(p.index), ok.error());
    if (!cfgs.empty()) plan.esp_cfgs.emplace_back(&p, std::move(cfgs));
  }
  if (plan.boot_cfgs.empty() && plan.esp_cfgs.empty())
    return fail(Errc::not_found, "no grub.cfg on the boot filesystem or an EFI System Partition: fde-image replaces "
                                 "the image's grub.cfg files and creates none");
  if ((*volume)->is_fat()) {
    for (const auto& path : plan.boot_cfgs)
      if (auto ok = check_mtools_path(path); !ok) return fail_with_context("boot filesystem", ok.error());
    if (auto ok = check_mtools_path(kernel->initramfs_path.value_or("/")); !ok)
      return fail_with_context("boot filesystem", ok.error());
  }

  GrubConfigRequest request;
  auto hash = unusable_grub_password_hash();
  if (!hash) return tl::unexpected(hash.error());
  request.password_hash = std::move(*hash);
  request.fs_uuid = (*volume)->uuid();
  if (request.fs_uuid.empty())
    return fail(Errc::unsupported, "the boot filesystem has no UUID (a FAT volume without a serial number): grub "
                                   "could not find it by UUID");
  request.kernel_path = kernel->kernel_path;
  request.kernel_arguments = *prepared;
  request.initramfs_path = kernel->initramfs_path;
  auto config = make_grub_config(request);
  if (!config) return tl::unexpected(config.error());
  plan.config = std::move(*config);
  return plan;
}

// What the agent's configuration says about the volume fde-image made: its LUKS2 UUID and
// the check values (common/crypto/key_check.hpp, in hex) of the machine key the verifier
// releases and of the volume key.
struct VolumeFacts {
  std::string luks_uuid;
  std::string released_key_check;
  std::string volume_key_check;
};

// Placeholders of the right shape, for the trial archive built before the keys exist.
VolumeFacts placeholder_facts() {
  return {"00000000-0000-0000-0000-000000000000", std::string(2 * crypto::key_check_size, '0'),
          std::string(2 * crypto::key_check_size, '0')};
}

std::string key_check_lines(const VolumeFacts& facts) {
  return "# check values of the released key and of the LUKS volume key (docs/fde-agent.md)\n"
         "released_key_check = " +
         facts.released_key_check + "\nvolume_key_check = " + facts.volume_key_check + "\n";
}

std::string agent_config_text(const BuildOptions& options, const VolumeFacts& facts) {
  std::string text = "# fde-agent configuration, written by fde-image (measured as part of the initramfs)\n";
  text += "image_id = " + options.image_id + "\n";
  text += verifier_config_lines(options.verifiers);
  text += "ca_file = " + std::string(verifier_ca_path) + "\n";  // key names: docs/fde-agent.md
  text += "luks_uuid = " + facts.luks_uuid + "\n";
  if (options.agent_platform == AgentPlatform::sim) text += "platform = sim\n";
  return text + key_check_lines(facts);
}

// --agent-config FILE with fde-image's check values appended. The file must not set them
// itself: only fde-image knows the keys, and the agent refuses a repeated key.
Result<Bytes> supplied_agent_config(const std::string& path, const VolumeFacts& facts) {
  auto loaded = read_file(path, max_small_file);
  if (!loaded) return fail_with_context("--agent-config", loaded.error());
  std::string text(loaded->begin(), loaded->end());
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);) {
    const auto start = line.find_first_not_of(" \t");
    if (start == std::string::npos || line[start] == '#') continue;
    const std::string key = line.substr(start, line.find_first_of(" \t=", start) - start);
    if (key == "released_key_check" || key == "volume_key_check")
      return fail(Errc::invalid_argument, "--agent-config " + path + ": sets " + key +
                                              ", which fde-image writes itself (it alone knows the keys)");
  }
  if (!text.empty() && text.back() != '\n') text += '\n';
  text += key_check_lines(facts);
  return Bytes(text.begin(), text.end());
}

// The files of --initramfs-overlay DIR at the same paths, in sorted order (reproducible
// archive, reproducible digest). Each directory becomes a directory entry, so CpioWriter
// refuses an overlay with lib/, bin/, sbin/, ... (usr-merge symlinks in the base initramfs).
Result<void> add_overlay(CpioWriter& cpio, const std::string& overlay) {
  std::error_code ec;
  if (!fs::is_directory(overlay, ec))
    return fail(Errc::invalid_argument, overlay + ": not a directory");
  std::vector<fs::path> paths;
  for (auto it = fs::recursive_directory_iterator(overlay, ec); !ec && it != fs::end(it); it.increment(ec))
    paths.push_back(it->path());
  if (ec) return fail(Errc::io, overlay + ": " + ec.message());
  std::sort(paths.begin(), paths.end());
  for (const auto& path : paths) {
    const std::string inside = "/" + fs::relative(path, overlay).string();
    const auto status = fs::symlink_status(path);
    const auto mode = static_cast<std::uint32_t>(status.permissions()) & 07777;
    Result<void> added;
    if (fs::is_symlink(status)) {
      added = cpio.add_symlink(inside, fs::read_symlink(path).string());
    } else if (fs::is_directory(status)) {
      added = cpio.add_directory(inside, mode);
    } else if (fs::is_regular_file(status)) {
      auto content = read_file(path.string(), max_agent_size);
      if (!content) return tl::unexpected(content.error());
      added = cpio.add_file(inside, *content, mode);
    } else {
      added = fail(Errc::unsupported, path.string() + ": not a file, directory or symlink");
    }
    if (!added) return added;
  }
  return {};
}

Result<Bytes> build_initramfs_addition(const BuildOptions& options, const VolumeFacts& facts) {
  CpioWriter cpio;
  if (options.agent) {
    auto agent = read_file(*options.agent, max_agent_size);
    if (!agent) return fail_with_context("--agent", agent.error());
    // No parent entry: dracut creates /usr/sbin in every image, as a symlink to bin where the
    // host has one (Fedora 42 and later), which a directory entry would replace.
    if (auto ok = cpio.add_file("/usr/sbin/fde-agent", *agent, 0755, Parents::assume_present); !ok)
      return tl::unexpected(ok.error());
  }
  Bytes config;
  if (options.agent_config) {
    auto supplied = supplied_agent_config(*options.agent_config, facts);
    if (!supplied) return tl::unexpected(supplied.error());
    config = std::move(*supplied);
  } else {
    const std::string text = agent_config_text(options, facts);
    config.assign(text.begin(), text.end());
  }
  if (auto ok = cpio.add_file(agent_conf_path, config, 0644); !ok) return tl::unexpected(ok.error());
  auto ca = load_verifier_ca(options.verifier_ca);
  if (!ca) return tl::unexpected(ca.error());
  if (auto ok = cpio.add_file(verifier_ca_path, *ca, 0644); !ok) return tl::unexpected(ok.error());
  if (auto ok = add_agent_runtime_files(cpio); !ok) return fail_with_context("agent runtime files", ok.error());
  if (options.initramfs_overlay)
    if (auto ok = add_overlay(cpio, *options.initramfs_overlay); !ok)
      return fail_with_context("--initramfs-overlay " + *options.initramfs_overlay, ok.error());
  return cpio.finish();
}

// Every argument is checked here, before the input is read or a byte encrypted: what
// the reference values and the enrollment bundle will refuse at the end is refused now.
Result<void> check_options(const BuildOptions& options) {
  if (options.image_id.empty()) return fail(Errc::invalid_argument, "--image-id is required");
  if (auto ok = protocol::validate_image_id(options.image_id); !ok)
    return fail(Errc::invalid_argument, "--image-id " + options.image_id + ": " + ok.error().message);
  if (auto ok = check_verifier_urls(options.verifiers); !ok) return ok;
  if (!options.agent && !options.without_agent)
    return fail(Errc::invalid_argument,
                "--agent PATH is required: the image needs fde-agent in its initramfs to unlock its root (give "
                "--no-agent if the base initramfs already holds /usr/sbin/fde-agent)");
  if (options.agent && options.without_agent)
    return fail(Errc::invalid_argument, "--agent and --no-agent contradict each other");
  // The grub.cfg fde-image writes makes a grub-boot reference set, which needs a firmware RIM.
  if (options.firmware_rims.empty())
    return fail(Errc::invalid_argument, "at least one --rim is required (the firmware RIM the CVM boots with)");
  for (const auto& rim : options.firmware_rims)
    if (rim.size() != 32) return fail(Errc::invalid_argument, "--rim: expected 64 hex digits (a SHA-256 RIM)");
  for (const auto& digest : options.grub_efi_digests)
    if (digest.size() != 32) return fail(Errc::invalid_argument, "--grub-efi-digest: expected 64 hex digits");
  if (options.agent_config && options.agent_platform)
    return fail(Errc::invalid_argument,
                "--agent-platform sets the platform of the generated agent.conf; with --agent-config, set "
                "`platform` in that file");
  if (options.sector_size != 512 && options.sector_size != 4096)
    return fail(Errc::invalid_argument, "--sector-size must be 512 or 4096");
  if (options.kernel_cmdline)
    if (auto ok = prepare_kernel_arguments(*options.kernel_cmdline); !ok) return fail_with_context("--kernel-cmdline", ok.error());
  if (options.kernel_version) {
    const std::string& v = *options.kernel_version;
    const bool plain = !v.empty() && v.size() <= 200 && std::all_of(v.begin(), v.end(), [](char c) {
      return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '-' ||
             c == '_' || c == '+';
    });
    if (!plain) return fail(Errc::invalid_argument, "--kernel-version: expected a version such as 6.6.0-28.oe2403.aarch64");
  }
  for (const auto& path : {options.output, options.bundle_path, options.reference_path})
    if (path_exists(path)) return fail(Errc::invalid_argument, path + " already exists; remove it first");
  if (auto ca = load_verifier_ca(options.verifier_ca); !ca) return tl::unexpected(ca.error());
  // The archive as it will be but for the LUKS UUID, so that a refused overlay or an
  // unreadable agent fails now rather than after the encryption.
  if (auto trial = build_initramfs_addition(options, placeholder_facts()); !trial)
    return tl::unexpected(trial.error());
  return {};
}

Result<SecretBytes> read_recovery_passphrase(const std::string& path) {
  auto content = read_file(path, 4096);
  if (!content) return fail_with_context("--recovery-passphrase-file", content.error());
  std::size_t length = content->size();
  while (length > 0 && ((*content)[length - 1] == '\n' || (*content)[length - 1] == '\r')) --length;
  SecretBytes passphrase = SecretBytes::copy_of(ByteView(content->data(), length));
  wipe_bytes(*content);
  if (passphrase.size() < 8) return fail(Errc::invalid_argument, "the recovery passphrase is shorter than 8 characters");
  return passphrase;
}

// inspect's view of an ESP: the EFI applications firmware may start and their digests.
void describe_esp(std::ostringstream& out, const Disk& image, const GptPartition& partition) {
  auto esp = FatFilesystem::open(image, partition.offset(), partition.size());
  if (!esp) {
    out << "  EFI System Partition, unreadable: " << esp.error().describe() << "\n";
    return;
  }
  out << "  EFI System Partition, FAT" << esp->fat_bits() << "\n";
  auto binaries = find_efi_binaries(*esp);
  if (!binaries) {
    out << "    EFI binaries unreadable: " << binaries.error().describe() << "\n";
    return;
  }
  if (binaries->empty()) out << "    no EFI/BOOT/BOOT{AA64,X64}.EFI nor EFI/*/{grub,shim}{aa64,x64}.efi\n";
  for (const auto& binary : *binaries)
    out << "    " << binary.path << ": " << pe_machine_name(binary.machine) << ", " << binary.size << " bytes, "
        << (binary.has_signature ? "signed" : "unsigned") << ", Authenticode sha256 " << hex_encode(binary.digest)
        << "\n";
}

}  // namespace

Result<BuildReport> build_image(const BuildOptions& options, Progress& progress) {
  if (auto ok = check_options(options); !ok) return tl::unexpected(ok.error());
  std::optional<SecretBytes> recovery;
  if (options.recovery_passphrase_file) {
    auto loaded = read_recovery_passphrase(*options.recovery_passphrase_file);
    if (!loaded) return tl::unexpected(loaded.error());
    recovery = std::move(*loaded);
  }
  std::optional<std::string> reference_in;
  if (options.reference_in) {
    auto loaded = read_file(*options.reference_in, reference::max_document_size);
    if (!loaded) return fail_with_context("--reference-in", loaded.error());
    reference_in = std::string(loaded->begin(), loaded->end());
  }
  BuildReport report;
  auto work = WorkDir::create(options.work_dir.value_or(directory_of(options.output)));
  if (!work) return tl::unexpected(work.error());

  // The input (a qcow2 one with neither backing nor data file), then every output file, new,
  // before any heavy work.
  auto input = open_disk(options.input, options.input_format, true);
  if (!input) return tl::unexpected(input.error());
  StagedFiles staging;
  auto bundle_file = staging.create(options.bundle_path, 0600);
  if (!bundle_file) return tl::unexpected(bundle_file.error());
  auto reference_file = staging.create(options.reference_path, 0644);
  if (!reference_file) return tl::unexpected(reference_file.error());
  auto image_file = staging.create(options.output, 0644);
  if (!image_file) return tl::unexpected(image_file.error());

  auto input_size = (*input)->size();
  if (!input_size) return tl::unexpected(input_size.error());
  auto table = read_partition_table(**input);
  if (!table) return fail_with_context(options.input, table.error());
  auto roles = find_partitions(*table, *input, options.root_partition);
  if (!roles) return fail_with_context(options.input, roles.error());
  const GptPartition root = *roles->root;
  const GptPartition boot = *roles->boot;
  report.root_partition = root.index;
  // The boot configuration fde-image will write: kernel, arguments and where grub.cfg goes.
  auto plan = plan_boot(options, *table, *input, *roles->boot);
  if (!plan) return fail_with_context(options.input, plan.error());
  report.kernel_version = plan->kernel.version;
  // Without --grub-efi-digest or --reference-in, the EFI applications' digests come from the
  // ESP, which is copied unchanged; reading it now fails early, before any encryption.
  std::vector<Bytes> grub_efi_digests = options.grub_efi_digests;
  if (grub_efi_digests.empty() && !reference_in) {
    progress.note("computing the Authenticode digests of the EFI System Partition's boot applications");
    auto digests = efi_application_digests(*input, *table);
    if (!digests) return fail_with_context(options.input, digests.error());
    grub_efi_digests = std::move(*digests);
  }

  // The LUKS2 header needs 16 MiB in front of the filesystem. Rather than shrinking the
  // filesystem, the partition grows by 16 MiB into free space after it (the disk grows
  // if it must); a partition in the way is an error.
  const std::uint64_t grow_sectors = luks_data_offset / gpt_sector_size;
  GptPartition new_root = root;
  new_root.last_lba = root.last_lba + grow_sectors;
  for (const auto& p : table->partitions)
    if (p.index != root.index && p.first_lba > root.last_lba && p.first_lba <= new_root.last_lba)
      return fail(Errc::unsupported, "partition " + std::to_string(p.index) + " follows the root partition too closely: "
                                     "the root partition needs 16 MiB more for the LUKS2 header");
  // GPT keeps a backup header and entry array at the end of the disk; MBR has nothing there.
  const std::uint64_t array_sectors = table->mbr ? 0 : gpt_entry_array_sectors(*table) + 1;
  const std::uint64_t output_size =
      std::max(*input_size / gpt_sector_size * gpt_sector_size, (new_root.last_lba + 1 + array_sectors) * gpt_sector_size);
  if (table->mbr && new_root.last_lba >= 0xFFFFFFFFull)
    return fail(Errc::unsupported, "the grown root partition would end past the 2 TiB an MBR can address");
  std::uint32_t sector_size = options.sector_size;
  if (root.size() % sector_size != 0) {
    report.warnings.push_back("root partition size is not a multiple of 4096 bytes: using 512-byte LUKS sectors");
    sector_size = 512;
  }

  std::optional<ExtFilesystem> root_fs;
  std::vector<ByteExtent> extents;
  if (roles->root_is_ext) {
    auto opened = ExtFilesystem::open(*input, root.offset());
    if (!opened) return fail_with_context("root filesystem", opened.error());
    root_fs = std::move(*opened);
    if (root_fs->needs_recovery())
      return fail(Errc::unsupported, "the root filesystem's journal needs recovery; run e2fsck on the image first");
    if (root_fs->size_bytes() > root.size())
      return fail(Errc::malformed, "the root filesystem is larger than its partition");
    report.filesystem_uuid = root_fs->uuid();
    report.filesystem_bytes = root_fs->size_bytes();
    auto used = root_fs->live_extents(sector_size);
    if (!used) return fail_with_context("root filesystem", used.error());
    extents = std::move(*used);
    if (!extents.empty() && extents.back().offset + extents.back().length > root.size())
      return fail(Errc::malformed, "the root filesystem's last block lies past its partition");
  } else {
    report.warnings.push_back("root partition " + std::to_string(root.index) +
                              " holds no ext filesystem: encrypting all of it");
    extents.push_back({0, root.size() / sector_size * sector_size});
  }
  for (const auto& e : extents) report.encrypted_bytes += e.length;

  // `output`: the raw disk the partition table, the LUKS2 header and the other partitions
  // are written to, and edited in: the raw output itself, or, for a qcow2 output, a sparse
  // work file whose data joins the encrypted blocks in the qcow2 at the end. It stays open;
  // the libraries below reopen it by its descriptor's name. `encrypted_to` gets the
  // encrypted blocks: the raw output, or the qcow2 writer, directly.
  RawFile work_output;
  RawFile* output = *image_file;
  // The published image is fsynced before it is renamed into place. The encrypted data goes
  // to it directly (O_DIRECT: the chunks are aligned), the rest is written back while the
  // encryption runs; so that fsync finds little to do (without either it was about half the
  // build's time on a 1 GiB image: docs/fde-image.md, "Performance").
  (*image_file)->write_back_every(32ull << 20);
  (void)(*image_file)->write_aligned_directly();
  std::unique_ptr<Qcow2Writer> qcow2;
  DiskWriter* encrypted_to = output;
  if (options.output_format == ImageFormat::qcow2) {
    auto created = RawFile::create(work->file("output.raw"), 0600);
    if (!created) return tl::unexpected(created.error());
    work_output = std::move(*created);
    output = &work_output;
    auto writer = Qcow2Writer::create(**image_file, output_size);
    if (!writer) return tl::unexpected(writer.error());
    qcow2 = std::move(*writer);
    encrypted_to = qcow2.get();
  }
  const std::string output_raw = output->fd_path();
  if (auto ok = output->resize(output_size); !ok) return tl::unexpected(ok.error());

  // Everything but the root partition is copied as it is (sparse), then the table rewritten.
  std::uint64_t copy_total = root.offset();
  for (const auto& p : table->partitions)
    if (p.index != root.index && p.first_lba > root.last_lba) copy_total += p.size();
  progress.begin("copying other partitions", copy_total);
  auto count = [&](std::uint64_t n) { return progress.advance(n); };
  if (auto ok = copy_disk_range(**input, *output, 0, root.offset(), count); !ok) return tl::unexpected(ok.error());
  for (const auto& p : table->partitions)
    if (p.index != root.index && p.first_lba > root.last_lba)
      if (auto ok = copy_disk_range(**input, *output, p.offset(), p.size(), count); !ok)
        return tl::unexpected(ok.error());
  progress.end();
  GptTable new_table = *table;
  for (auto& p : new_table.partitions)
    if (p.index == root.index) p = new_root;
  if (table->mbr) {
    if (auto ok = write_mbr(*output, new_table); !ok) return fail_with_context("output MBR", ok.error());
  } else if (auto ok = write_gpt(*output, output_size, new_table); !ok) {
    return fail_with_context("output GPT", ok.error());
  }

  // Keys: the volume key encrypts the data; the machine key (what the verifier releases)
  // opens keyslot 0. Neither is written anywhere but the LUKS header and the bundle.
  SecretBytes volume_key = crypto::random_secret(volume_key_size);
  SecretBytes machine_key = crypto::random_secret(machine_key_size);
  progress.note("writing the LUKS2 header (aes-xts-plain64, 512-bit key, " + std::to_string(sector_size) +
                "-byte sectors)");
  LuksFormatRequest luks;
  luks.header_file = work->file("luks-header.img");
  luks.partition_size = new_root.size();
  luks.sector_size = sector_size;
  luks.volume_key = &volume_key;
  luks.machine_key = &machine_key;
  luks.recovery_passphrase = recovery ? &*recovery : nullptr;
  auto luks_info = format_luks_volume(luks);
  if (!luks_info) return tl::unexpected(luks_info.error());
  report.luks_uuid = luks_info->uuid;
  {
    auto header = RawFile::open(luks.header_file, RawFile::Mode::read_only);
    if (!header) return tl::unexpected(header.error());
    Bytes buffer(static_cast<std::size_t>(io_chunk));
    for (std::uint64_t at = 0; at < luks_info->data_offset; at += io_chunk) {
      if (auto ok = header->read_at(at, buffer); !ok) return tl::unexpected(ok.error());
      if (auto ok = output->write_sparse_at(new_root.offset() + at, buffer); !ok) return tl::unexpected(ok.error());
    }
  }
  ::unlink(luks.header_file.c_str());

  // The live blocks, encrypted; the others stay holes or unallocated clusters (they decrypt
  // to noise, which the filesystem never reads: ExtFilesystem::live_extents).
  auto encryptor = XtsEncryptor::create(volume_key, sector_size, XtsEncryptor::Direction::encrypt);
  if (!encryptor) return tl::unexpected(encryptor.error());
  progress.begin("encrypting root", report.encrypted_bytes);
  {
    // Reading and encrypting one chunk overlaps with writing the previous one.
    BackgroundWriter writer(*encrypted_to, static_cast<std::size_t>(io_chunk));
    const std::uint64_t data_start = new_root.offset() + luks_info->data_offset;
    for (const auto& extent : extents) {
      for (std::uint64_t at = extent.offset; at < extent.offset + extent.length; at += io_chunk) {
        const std::size_t n = static_cast<std::size_t>(std::min(io_chunk, extent.offset + extent.length - at));
        auto buffer = writer.take_buffer();
        if (!buffer) break;  // a write failed: finish() says why
        std::span<std::uint8_t> part(buffer->data(), n);
        if (auto ok = (*input)->read_at(root.offset() + at, part); !ok) return tl::unexpected(ok.error());
        if (auto ok = encryptor->process(part, at); !ok) return tl::unexpected(ok.error());
        writer.submit(data_start + at, std::move(*buffer), n);
        if (auto ok = progress.advance(n); !ok) return tl::unexpected(ok.error());
      }
    }
    if (auto ok = writer.finish(); !ok) return tl::unexpected(ok.error());
  }
  progress.end();

  // The boot files: grub.cfg everywhere grub may read it, our archive appended to the
  // booted kernel's initramfs.
  progress.note("writing grub.cfg (kernel " + plan->kernel.version + ") and adding " +
                (options.agent ? "the agent" : "the agent's configuration") + " to the initramfs");
  // The keys' check values go into the measured agent configuration; the keys do not.
  const VolumeFacts facts{
      luks_info->uuid,
      hex_encode(crypto::key_check_value(crypto::KeyCheckKind::released_key, machine_key.view())),
      hex_encode(crypto::key_check_value(crypto::KeyCheckKind::volume_key, volume_key.view())),
  };
  auto addition = build_initramfs_addition(options, facts);
  if (!addition) return tl::unexpected(addition.error());
  const ByteView cfg_text = as_bytes(plan->config.text);
  const std::string where_boot = "partition " + std::to_string(boot.index) + ": ";
  if (!plan->kernel.initramfs_path)
    report.warnings.push_back("kernel " + plan->kernel.version + " has no initramfs: it cannot unlock the root");
  if (roles->boot_is_fat) {
    auto disk = RawFile::open(output_raw, RawFile::Mode::read_write);
    if (!disk) return tl::unexpected(disk.error());
    std::vector<std::pair<std::string, ByteView>> files;
    for (const auto& path : plan->boot_cfgs) files.emplace_back(path, cfg_text);
    Bytes initramfs;
    if (plan->kernel.initramfs_path) {
      auto volume = FatFilesystem::open(output_raw, boot.offset(), boot.size());
      if (!volume) return fail_with_context("boot filesystem", volume.error());
      auto current = volume->read_file(*plan->kernel.initramfs_path, 512ull << 20);
      if (!current) return tl::unexpected(current.error());
      initramfs = std::move(*current);
      // The kernel looks for the next archive at a 4-byte boundary and skips zero bytes.
      initramfs.resize(initramfs.size() + (4 - initramfs.size() % 4) % 4, 0);
      initramfs.insert(initramfs.end(), addition->begin(), addition->end());
      files.emplace_back(*plan->kernel.initramfs_path, ByteView(initramfs));
    }
    if (auto ok = write_fat_files(*disk, boot, *work, files); !ok) return fail_with_context("boot filesystem", ok.error());
  } else {
    auto boot_fs = ExtFilesystem::open(output_raw, boot.offset(), true);
    if (!boot_fs) return fail_with_context("boot filesystem", boot_fs.error());
    for (const auto& path : plan->boot_cfgs)
      if (auto ok = boot_fs->replace_file(path, cfg_text); !ok) return tl::unexpected(ok.error());
    if (plan->kernel.initramfs_path) {
      auto current = boot_fs->read_file(*plan->kernel.initramfs_path, 512ull << 20);
      if (!current) return tl::unexpected(current.error());
      Bytes appended((4 - current->size() % 4) % 4, 0);
      appended.insert(appended.end(), addition->begin(), addition->end());
      if (auto ok = boot_fs->append_to_file(*plan->kernel.initramfs_path, appended); !ok)
        return tl::unexpected(ok.error());
    }
    if (auto ok = boot_fs->close(); !ok) return tl::unexpected(ok.error());
  }
  if (plan->kernel.initramfs_path) report.initramfs_changed.push_back(*plan->kernel.initramfs_path);
  for (const auto& path : plan->boot_cfgs) report.grub_cfgs_written.push_back(where_boot + path);
  if (!plan->esp_cfgs.empty()) {
    auto disk = RawFile::open(output_raw, RawFile::Mode::read_write);
    if (!disk) return tl::unexpected(disk.error());
    for (const auto& [partition, paths] : plan->esp_cfgs) {
      std::vector<std::pair<std::string, ByteView>> files;
      for (const auto& path : paths) files.emplace_back(path, cfg_text);
      if (auto ok = write_fat_files(*disk, *partition, *work, files); !ok)
        return fail_with_context("partition " + std::to_string(partition->index), ok.error());
      for (const auto& path : paths)
        report.grub_cfgs_written.push_back("partition " + std::to_string(partition->index) + ": " + path);
    }
  }

  // Reference values of the boot chain as it is now, then the bundle and the image.
  MeasureOptions measure_options;
  measure_options.image_id = options.image_id;
  measure_options.firmware_rims = options.firmware_rims;
  measure_options.grub_efi_digests = grub_efi_digests;
  measure_options.reference_in_json = reference_in;
  reference::ReferenceValues values;
  {
    auto volume = open_boot_volume(output_raw, boot.offset(), boot.size());
    if (!volume) return fail_with_context("boot filesystem", volume.error());
    auto layout = discover_boot_files(**volume);
    if (!layout) return tl::unexpected(layout.error());
    auto measured = measure_boot(**volume, *layout, measure_options, report.warnings);
    if (!measured) return tl::unexpected(measured.error());
    values = std::move(*measured);
  }
  if (values.sets.size() != 1 || values.sets[0].grub.grub_commands != plan->config.commands)
    return fail(Errc::internal, "the written grub.cfg does not measure as planned");
  auto reference_json = reference::serialize_reference_values(values);
  if (!reference_json) return tl::unexpected(reference_json.error());
  auto bundle = protocol::serialize_enrollment_bundle(
      protocol::EnrollmentBundle{options.image_id, luks_info->uuid, machine_key.clone(), values});
  if (!bundle) return tl::unexpected(bundle.error());
  if (auto ok = write_secret_file(**bundle_file, *bundle); !ok) return tl::unexpected(ok.error());
  if (auto ok = (*reference_file)->write_at(0, as_bytes(*reference_json)); !ok) return tl::unexpected(ok.error());

  if (qcow2) {
    progress.note("writing " + options.output + " (qcow2)");
    auto none = [](std::uint64_t) -> Result<void> { return {}; };
    if (auto ok = copy_disk_range(*output, *qcow2, 0, output_size, none); !ok) return tl::unexpected(ok.error());
    if (auto ok = qcow2->finish(); !ok) return tl::unexpected(ok.error());
  }
  if (cancel_requested()) return fail(Errc::io, "interrupted");
  if (auto ok = staging.publish(); !ok) return tl::unexpected(ok.error());
  return report;
}

Result<reference::ReferenceValues> measure_image(const MeasureRequest& request) {
  auto work = WorkDir::create(request.work_dir.value_or(directory_of(request.image)));
  if (!work) return tl::unexpected(work.error());
  auto input = open_disk(request.image, request.format, false);
  if (!input) return tl::unexpected(input.error());
  auto table = read_partition_table(**input);
  if (!table) return fail_with_context(request.image, table.error());
  std::vector<Bytes> grub_efi_digests = request.grub_efi_digests;
  if (grub_efi_digests.empty() && !request.reference_in) {
    auto digests = efi_application_digests(*input, *table);
    if (!digests) return fail_with_context(request.image, digests.error());
    grub_efi_digests = std::move(*digests);
  }
  for (const auto& p : table->partitions) {
    auto volume = open_boot_volume(*input, p.offset(), p.size());
    if (!volume) continue;
    auto layout = discover_boot_files(**volume);
    if (!layout || layout->kernels.empty()) continue;
    MeasureOptions options;
    if (!request.image_id.empty()) options.image_id = request.image_id;  // --image-id is optional
    options.firmware_rims = request.firmware_rims;
    options.grub_efi_digests = grub_efi_digests;
    if (request.reference_in) {
      auto loaded = read_file(*request.reference_in, reference::max_document_size);
      if (!loaded) return fail_with_context("--reference-in", loaded.error());
      options.reference_in_json = std::string(loaded->begin(), loaded->end());
    }
    std::vector<std::string> warnings;
    return measure_boot(**volume, *layout, options, warnings);
  }
  return fail(Errc::not_found, request.image + ": no boot partition with a kernel found");
}

Result<std::string> inspect_image(const std::string& path, std::optional<ImageFormat> format,
                                  const std::optional<std::string>& work_dir) {
  auto work = WorkDir::create(work_dir.value_or(directory_of(path)));
  if (!work) return tl::unexpected(work.error());
  auto input = open_disk(path, format, false);
  if (!input) return tl::unexpected(input.error());
  auto table = read_partition_table(**input);
  if (!table) return fail_with_context(path, table.error());
  std::ostringstream out;
  if (table->mbr)
    out << "disk (MBR), " << table->partitions.size() << " partitions\n";
  else
    out << "disk " << guid_to_string(table->disk_guid) << ", " << table->partitions.size() << " partitions\n";
  for (const auto& p : table->partitions) {
    char mbr_type[8];
    std::snprintf(mbr_type, sizeof mbr_type, "0x%02x", static_cast<unsigned>(p.mbr_type));
    out << "partition " << p.index << ": start " << p.first_lba << ", " << format_bytes(p.size()) << ", type "
        << (table->mbr ? std::string(mbr_type) : guid_to_string(p.type))
        << (p.name.empty() ? "" : ", name \"" + p.name + "\"") << "\n";
    std::array<std::uint8_t, 6> magic{};
    if (!(*input)->read_at(p.offset(), magic)) continue;
    if (std::memcmp(magic.data(), "LUKS\xba\xbe", 6) == 0) {
      // libcryptsetup reads a header from a file: give it the partition's header area in a
      // sparse file of the partition's size.
      const std::string header_path = work->file("header-" + std::to_string(p.index));
      auto header = RawFile::open(header_path, RawFile::Mode::create_new);
      if (!header) return tl::unexpected(header.error());
      if (auto ok = header->resize(p.size()); !ok) return tl::unexpected(ok.error());
      Progress none(nullptr);
      const std::uint64_t area = std::min(p.size(), luks_data_offset);
      Bytes buffer(static_cast<std::size_t>(area));
      if (auto ok = (*input)->read_at(p.offset(), buffer); !ok) return tl::unexpected(ok.error());
      if (auto ok = header->write_at(0, buffer); !ok) return tl::unexpected(ok.error());
      header->close();
      auto summary = read_luks_summary(header_path);
      if (!summary) {
        out << "  LUKS header unreadable: " << summary.error().describe() << "\n";
        continue;
      }
      out << "  LUKS2 " << summary->uuid << ", " << summary->cipher << ", " << summary->volume_key_bits
          << "-bit key, " << summary->sector_size << "-byte sectors, data at " << format_bytes(summary->data_offset)
          << "\n";
      for (const auto& slot : summary->keyslots) out << "  keyslot " << slot << "\n";
      continue;
    }
    auto volume = open_boot_volume(*input, p.offset(), p.size());
    if (p.type == gpt_type::efi_system || (volume && (*volume)->is_fat())) describe_esp(out, *input, p);
    if (!volume) continue;
    auto* fsys = volume->get();
    if (!fsys->is_fat())
      if (auto ext = ExtFilesystem::open(*input, p.offset()))
        out << "  ext filesystem " << ext->uuid() << (ext->label().empty() ? "" : " \"" + ext->label() + "\"") << "\n";
    auto layout = discover_boot_files(*fsys);
    if (!layout) continue;
    for (const auto& cfg : layout->grub_cfg_paths) out << "  grub.cfg: " << cfg << "\n";
    for (const auto& kernel : layout->kernels) {
      out << "  kernel " << kernel.version << ": " << kernel.kernel_path << "\n";
      if (!kernel.initramfs_path) continue;
      auto content = fsys->read_file(*kernel.initramfs_path, 512ull << 20);
      if (!content) continue;
      const auto entries = list_appended_cpio(*content);
      const bool ours = std::any_of(entries.begin(), entries.end(),
                                    [](const CpioEntry& e) { return e.path == agent_conf_path; });
      out << "    initramfs " << *kernel.initramfs_path << ": "
          << (ours ? "fde-image archive appended:" : "no fde-image archive") << "\n";
      if (!ours) continue;
      for (const auto& e : entries) {
        const std::uint32_t type = e.mode & 0170000;
        if (type == 0040000) continue;  // directories: implied by the paths
        out << "      " << e.path;
        if (type == 0120000)
          out << " -> " << as_text(cpio_entry_content(*content, e)) << "\n";
        else {
          char mode[8];
          std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(e.mode & 07777));
          out << " (" << e.size << " bytes, mode " << mode << ")\n";
        }
      }
    }
  }
  return out.str();
}

}  // namespace fde::image
