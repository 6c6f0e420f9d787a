// rebind_image: the input read through open_disk (Qcow2Reader or raw); the archive fde-image
// appended to the booted initramfs found through the grub.cfg build wrote, agent.conf and the
// CA in it exchanged; the boot partition copied into a sparse raw work file and its
// filesystem edited there; then a new image (qcow2 through Qcow2Writer, or raw) written from
// the input's allocated data with only the boot partition's bytes taken from the work file,
// read back and measured again. The LUKS2 partition is copied verbatim and never opened for
// writing.
#include "image-builder/assembly/rebind.hpp"

#include <sys/stat.h>

#include <algorithm>
#include <cstring>
#include <map>

#include "common/crypto/hash.hpp"
#include "common/util/file.hpp"
#include "image-builder/assembly/boot_files.hpp"
#include "image-builder/assembly/efi_binaries.hpp"
#include "image-builder/assembly/image_files.hpp"
#include "image-builder/disk/qcow2_image.hpp"
#include "image-builder/disk/staged_files.hpp"
#include "image-builder/fs/ext_filesystem.hpp"
#include "image-builder/initramfs/agent_config_file.hpp"
#include "image-builder/initramfs/cpio_writer.hpp"
#include "image-builder/luks/luks_volume.hpp"

namespace fde::image {
namespace {

constexpr std::uint64_t max_initramfs = 512ull << 20;  // as build reads it
constexpr std::size_t max_grub_cfg = 1u << 20;

Result<void> check_rebind_options(const RebindOptions& options) {
  if (options.in_place && !options.output.empty())
    return fail(Errc::invalid_argument, "--output and --in-place contradict each other");
  if (!options.in_place && options.output.empty())
    return fail(Errc::invalid_argument, "--output OUT.qcow2 is required (or --in-place to replace the image)");
  if (options.verifiers.empty() && !options.verifier_ca)
    return fail(Errc::invalid_argument, "nothing to change: give --verifier URL (repeatable) and/or --verifier-ca");
  if (!options.verifiers.empty())
    if (auto ok = check_verifier_urls(options.verifiers); !ok) return ok;
  if (options.verifier_ca)
    if (auto ca = load_verifier_ca(*options.verifier_ca); !ca) return tl::unexpected(ca.error());
  if (options.firmware_rims.empty())
    return fail(Errc::invalid_argument, "at least one --rim is required (the firmware RIM the CVM boots with)");
  for (const auto& rim : options.firmware_rims)
    if (rim.size() != 32) return fail(Errc::invalid_argument, "--rim: expected 64 hex digits (a SHA-256 RIM)");
  for (const auto& digest : options.grub_efi_digests)
    if (digest.size() != 32) return fail(Errc::invalid_argument, "--grub-efi-digest: expected 64 hex digits");
  if (options.reference_path.empty()) return fail(Errc::invalid_argument, "--reference-out FILE is required");
  struct stat st {};
  if (::lstat(options.input.c_str(), &st) != 0)
    return fail(Errc::not_found, options.input + ": " + std::strerror(errno));
  if (options.in_place && !S_ISREG(st.st_mode))
    return fail(Errc::invalid_argument, options.input + " is not a regular file (a symlink?): --in-place replaces only a "
                                                        "regular file; give its real path");
  std::vector<std::string> outputs = {options.reference_path};
  if (!options.in_place) outputs.push_back(options.output);
  for (const auto& path : outputs)
    if (path_exists(path)) return fail(Errc::invalid_argument, path + " already exists; remove it first");
  return {};
}

const CpioEntry* find_entry(const AppendedCpio& archive, const std::string& path) {
  for (const auto& entry : archive.entries)
    if (entry.path == path) return &entry;
  return nullptr;
}

// The UUID of a LUKS2 header at `offset` (binary header: magic, version 2, UUID at byte 168),
// or nullopt.
std::optional<std::string> luks2_uuid_at(const DiskReader& disk, std::uint64_t offset) {
  std::array<std::uint8_t, 512> header{};
  if (!disk.read_at(offset, header)) return std::nullopt;
  if (std::memcmp(header.data(), "LUKS\xba\xbe", 6) != 0 || header[6] != 0 || header[7] != 2) return std::nullopt;
  const char* uuid = reinterpret_cast<const char*>(header.data() + 168);
  return std::string(uuid, strnlen(uuid, 40));
}

Result<Bytes> digest_range(const DiskReader& disk, std::uint64_t offset, std::uint64_t length) {
  Bytes data(static_cast<std::size_t>(length));
  if (auto ok = disk.read_at(offset, data); !ok) return tl::unexpected(ok.error());
  return crypto::sha256(data);
}

// The boot filesystem with kernels, its layout and the straight-line grub.cfg build wrote.
struct BootState {
  const GptPartition* partition = nullptr;
  std::unique_ptr<BootVolume> volume;
  BootLayout layout;
  GrubConfig config;
};

Result<BootState> read_boot_state(const GptTable& table, const Disk& disk, const std::string& name) {
  BootState state;
  for (const auto& p : table.partitions) {
    auto volume = open_boot_volume(disk, p.offset(), p.size());
    if (!volume) continue;
    auto layout = discover_boot_files(**volume);
    if (!layout || layout->kernels.empty()) continue;
    state.partition = &p;
    state.volume = std::move(*volume);
    state.layout = std::move(*layout);
    break;
  }
  const std::string refusal = ": rebind changes only images that fde-image build made";
  if (!state.partition) return fail(Errc::not_found, name + ": no boot partition with a kernel" + refusal);
  if (state.layout.grub_cfg_paths.empty()) return fail(Errc::not_found, name + ": no grub.cfg" + refusal);
  auto cfg = state.volume->read_file(state.layout.grub_cfg_paths.front(), max_grub_cfg);
  if (!cfg) return fail_with_context(state.layout.grub_cfg_paths.front(), cfg.error());
  auto config = parse_grub_config(as_text(*cfg));
  if (!config)
    return fail(Errc::unsupported, name + ": " + state.layout.grub_cfg_paths.front() +
                                       " is not the grub.cfg fde-image build writes (" + config.error().message + ")" +
                                       refusal);
  if (!config->initramfs_path)
    return fail(Errc::not_found, name + ": grub.cfg boots no initramfs, so there is no agent configuration" + refusal);
  state.config = std::move(*config);
  return state;
}

}  // namespace

Result<RebindReport> rebind_image(const RebindOptions& options, Progress& progress) {
  if (auto ok = check_rebind_options(options); !ok) return tl::unexpected(ok.error());
  std::optional<Bytes> new_ca;
  if (options.verifier_ca) {
    auto ca = load_verifier_ca(*options.verifier_ca);
    if (!ca) return tl::unexpected(ca.error());
    new_ca = std::move(*ca);
  }
  std::optional<std::string> reference_in;
  if (options.reference_in) {
    auto loaded = read_file(*options.reference_in, reference::max_document_size);
    if (!loaded) return fail_with_context("--reference-in", loaded.error());
    reference_in = std::string(loaded->begin(), loaded->end());
  }
  const std::string& name = options.input;
  const std::string destination = options.in_place ? options.input : options.output;
  auto work = WorkDir::create(options.work_dir.value_or(directory_of(destination)));
  if (!work) return tl::unexpected(work.error());

  // The input (a qcow2 one with neither backing nor data file), then the outputs, new.
  auto input_file = RawFile::open(options.input, RawFile::Mode::read_only);
  if (!input_file) return tl::unexpected(input_file.error());
  // A second descriptor of the input: the in-place publish checks the name still means it.
  auto input_again = RawFile::open(input_file->fd_path(), RawFile::Mode::read_only);
  if (!input_again) return tl::unexpected(input_again.error());
  auto input = open_disk(std::move(*input_file), name, options.input_format, true);
  if (!input) return tl::unexpected(input.error());
  const ImageFormat format = disk_format(**input);
  StagedFiles staging;
  auto reference_file = staging.create(options.reference_path, 0644);
  if (!reference_file) return tl::unexpected(reference_file.error());
  Result<RawFile*> image_file;
  if (options.in_place) {
    struct stat st {};
    if (::fstat(input_again->fd(), &st) != 0) return fail(Errc::io, name + ": " + std::strerror(errno));
    image_file = staging.create_replacing(options.input, st.st_mode & 0777, input_again->fd());
  } else {
    image_file = staging.create(options.output, 0644);
  }
  if (!image_file) return tl::unexpected(image_file.error());

  auto disk_size = (*input)->size();
  if (!disk_size) return tl::unexpected(disk_size.error());
  auto table = read_partition_table(**input);
  if (!table) return fail_with_context(name, table.error());
  auto boot = read_boot_state(*table, *input, name);
  if (!boot) return tl::unexpected(boot.error());
  const GptPartition boot_partition = *boot->partition;
  if (boot_partition.offset() + boot_partition.size() > *disk_size)
    return fail(Errc::malformed, name + ": partition " + std::to_string(boot_partition.index) + " ends past the disk");
  const std::string initramfs_path = *boot->config.initramfs_path;
  auto initramfs = boot->volume->read_file(initramfs_path, max_initramfs);
  if (!initramfs) return fail_with_context(initramfs_path, initramfs.error());
  auto archive = find_appended_cpio(*initramfs);
  const CpioEntry* conf = archive ? find_entry(*archive, agent_conf_path) : nullptr;
  const CpioEntry* ca = archive ? find_entry(*archive, verifier_ca_path) : nullptr;
  if (!conf || !ca)
    return fail(Errc::not_found, name + ": the initramfs " + initramfs_path + " holds no fde-image agent configuration (" +
                                     (conf ? verifier_ca_path : agent_conf_path) +
                                     "): rebind changes only images that fde-image build made");
  const std::string old_conf(as_text(cpio_entry_content(*initramfs, *conf)));
  auto summary = read_agent_config_summary(old_conf);
  if (!summary) return fail_with_context(initramfs_path + ": " + agent_conf_path, summary.error());
  if (new_ca && summary->ca_file != verifier_ca_path)
    return fail(Errc::unsupported, name + ": agent.conf reads its CA from " + summary->ca_file + ", not from " +
                                       verifier_ca_path + " where fde-image puts it; --verifier-ca cannot change it");
  if (!options.verifiers.empty() && boot->config.kernel_cmdline.find("rd.fde.verifier") != std::string::npos)
    return fail(Errc::unsupported, name + ": the kernel command line sets rd.fde.verifier, which overrides agent.conf's "
                                       "verifiers; rebind cannot change it");

  // The LUKS2 volume the configuration names; its header area is checked unchanged at the end.
  const GptPartition* luks = nullptr;
  for (const auto& p : table->partitions)
    if (luks2_uuid_at(**input, p.offset()) == summary->luks_uuid) luks = &p;
  if (!luks)
    return fail(Errc::not_found, name + ": agent.conf names LUKS2 volume " + summary->luks_uuid +
                                     ", which is not on this image");
  const std::uint64_t header_area = std::min(luks->size(), luks_data_offset);
  auto header_before = digest_range(**input, luks->offset(), header_area);
  if (!header_before) return tl::unexpected(header_before.error());

  RebindReport report;
  report.image_id = summary->image_id;
  report.luks_uuid = summary->luks_uuid;
  report.initramfs = initramfs_path + " (partition " + std::to_string(boot_partition.index) + ")";
  report.old_verifiers = summary->verifiers;
  report.new_verifiers = options.verifiers.empty() ? summary->verifiers : options.verifiers;
  report.ca_replaced = new_ca.has_value();

  MeasureOptions measure;
  measure.image_id = summary->image_id;
  measure.firmware_rims = options.firmware_rims;
  measure.grub_efi_digests = options.grub_efi_digests;
  measure.reference_in_json = reference_in;
  if (measure.grub_efi_digests.empty() && !reference_in) {
    auto digests = efi_application_digests(*input, *table);
    if (!digests) return fail_with_context(name, digests.error());
    measure.grub_efi_digests = std::move(*digests);
  }
  std::vector<std::string> same_warnings;  // the measurement after the rewrite repeats them
  auto before = measure_boot(*boot->volume, boot->layout, measure, same_warnings);
  if (!before) return fail_with_context(name + " as it is", before.error());
  report.old_set = before->sets.front().name;

  // The new archive: the same entries, agent.conf and the CA exchanged.
  std::map<std::string, Bytes> replacements;
  std::string new_conf = old_conf;
  if (!options.verifiers.empty()) {
    auto rewritten = replace_verifier_lines(old_conf, options.verifiers);
    if (!rewritten) return fail_with_context(agent_conf_path, rewritten.error());
    new_conf = std::move(*rewritten);
  }
  auto new_summary = read_agent_config_summary(new_conf);
  if (!new_summary) return fail_with_context("the rewritten agent.conf", new_summary.error());
  if (new_summary->image_id != summary->image_id || new_summary->luks_uuid != summary->luks_uuid ||
      new_summary->released_key_check != summary->released_key_check ||
      new_summary->volume_key_check != summary->volume_key_check || new_summary->verifiers != report.new_verifiers)
    return fail(Errc::internal, "the rewritten agent.conf does not say what it should");
  replacements[agent_conf_path] = Bytes(new_conf.begin(), new_conf.end());
  if (new_ca) replacements[verifier_ca_path] = *new_ca;
  auto new_initramfs = rewrite_appended_cpio(*initramfs, *archive, replacements);
  if (!new_initramfs) return fail_with_context(name + ": " + initramfs_path, new_initramfs.error());
  const bool boot_is_fat = boot->volume->is_fat();
  boot->volume.reset();

  // The boot partition, alone, in a sparse work file of the disk's size, edited there: the
  // output takes only that partition's range from it, so a write the filesystem's own fields
  // send elsewhere reaches nothing.
  auto created = RawFile::create(work->file("boot.raw"), 0600);
  if (!created) return tl::unexpected(created.error());
  RawFile edited = std::move(*created);
  if (auto ok = edited.resize(*disk_size); !ok) return tl::unexpected(ok.error());
  auto none = [](std::uint64_t) -> Result<void> { return {}; };
  if (auto ok = copy_disk_range(**input, edited, boot_partition.offset(), boot_partition.size(), none); !ok)
    return tl::unexpected(ok.error());
  progress.note("writing " + initramfs_path + " (new agent configuration) on partition " +
                std::to_string(boot_partition.index));
  if (boot_is_fat) {
    if (auto ok = check_mtools_path(initramfs_path); !ok) return fail_with_context("boot filesystem", ok.error());
    if (auto ok = write_fat_files(edited, boot_partition, *work, {{initramfs_path, ByteView(*new_initramfs)}}); !ok)
      return fail_with_context("boot filesystem", ok.error());
  } else {
    auto boot_fs = ExtFilesystem::open(edited.fd_path(), boot_partition.offset(), true);
    if (!boot_fs) return fail_with_context("boot filesystem", boot_fs.error());
    // libext2fs writes where the filesystem's own fields say: refuse one that claims more
    // than its partition.
    if (boot_fs->size_bytes() > boot_partition.size())
      return fail(Errc::malformed, name + ": the boot filesystem is larger than its partition");
    if (auto ok = boot_fs->replace_file(initramfs_path, *new_initramfs); !ok) return tl::unexpected(ok.error());
    if (auto ok = boot_fs->close(); !ok) return tl::unexpected(ok.error());
  }

  // The new image: the input's data (allocated clusters or data extents only) with the boot
  // partition's range from the work file; in the input's format.
  std::unique_ptr<Qcow2Writer> qcow2;
  DiskWriter* writer = *image_file;
  if (format == ImageFormat::qcow2) {
    auto created_writer = Qcow2Writer::create(**image_file, *disk_size);
    if (!created_writer) return tl::unexpected(created_writer.error());
    qcow2 = std::move(*created_writer);
    writer = qcow2.get();
  } else if (auto ok = (*image_file)->resize(*disk_size); !ok) {
    return tl::unexpected(ok.error());
  }
  progress.begin("writing " + destination, *disk_size);
  auto count = [&](std::uint64_t n) { return progress.advance(n); };
  const std::uint64_t boot_end = boot_partition.offset() + boot_partition.size();
  if (auto ok = copy_disk_range(**input, *writer, 0, boot_partition.offset(), count); !ok)
    return tl::unexpected(ok.error());
  if (auto ok = copy_disk_range(edited, *writer, boot_partition.offset(), boot_partition.size(), count); !ok)
    return tl::unexpected(ok.error());
  if (auto ok = copy_disk_range(**input, *writer, boot_end, *disk_size - boot_end, count); !ok)
    return tl::unexpected(ok.error());
  if (qcow2)
    if (auto ok = qcow2->finish(); !ok) return tl::unexpected(ok.error());
  progress.end();
  edited.close();
  ::unlink(work->file("boot.raw").c_str());

  // The new image read back as the guest will see it: only the initramfs may have changed in
  // its boot, and the LUKS2 header not at all.
  auto written_file = RawFile::open((*image_file)->fd_path(), RawFile::Mode::read_only);
  if (!written_file) return tl::unexpected(written_file.error());
  auto written = open_disk(std::move(*written_file), destination, format, false);
  if (!written) return fail_with_context("the new image", written.error());
  auto after_boot = read_boot_state(*table, *written, name);
  if (!after_boot) return tl::unexpected(after_boot.error());
  auto after = measure_boot(*after_boot->volume, after_boot->layout, measure, report.warnings);
  if (!after) return tl::unexpected(after.error());
  const auto& old_set = before->sets.front().grub;
  const auto& new_set = after->sets.front().grub;
  if (after->sets.size() != 1 || new_set.grub_commands != old_set.grub_commands || new_set.kernel != old_set.kernel ||
      new_set.grub_cfgs != old_set.grub_cfgs || new_set.initramfs != crypto::sha256(*new_initramfs))
    return fail(Errc::internal, "the rewritten image does not measure as planned");
  auto header_after = digest_range(**written, luks->offset(), header_area);
  if (!header_after) return tl::unexpected(header_after.error());
  if (*header_after != *header_before) return fail(Errc::internal, "the LUKS2 header changed; nothing is written");
  report.new_set = after->sets.front().name;
  auto reference_json = reference::serialize_reference_values(*after);
  if (!reference_json) return tl::unexpected(reference_json.error());
  if (auto ok = (*reference_file)->write_at(0, as_bytes(*reference_json)); !ok) return tl::unexpected(ok.error());
  report.values = std::move(*after);

  if (cancel_requested()) return fail(Errc::io, "interrupted");
  if (auto ok = staging.publish(); !ok) return tl::unexpected(ok.error());
  return report;
}

}  // namespace fde::image
