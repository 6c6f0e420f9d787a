// Builds TCG2 crypto-agile CCEL event logs the way virtCCA's UEFI firmware and grub do.
#include "common/sim/event_log_builder.hpp"

#include <algorithm>

#include "common/eventlog/ccel.hpp"
#include "common/eventlog/event_types.hpp"

namespace fde::sim {

namespace {

// Section d.2: the Spec ID event's fixed fields.
constexpr std::string_view spec_id_signature{"Spec ID Event03\0", 16};
constexpr std::uint8_t spec_version_major = 2;
constexpr std::uint8_t spec_version_minor = 0;
constexpr std::uint8_t spec_errata = 0;
constexpr std::uint8_t uintn_size_64bit = 2;  // UINTN is 64 bits on aarch64
constexpr std::size_t sha1_digest_size = 20;  // the Spec ID record uses the TPM 1.2 layout

// UEFI device path nodes (UEFI spec 10.3): media / file path, and the end node.
constexpr std::uint8_t device_path_media = 0x04;
constexpr std::uint8_t device_path_file_path = 0x04;
constexpr std::uint8_t device_path_end = 0x7F;
constexpr std::uint8_t device_path_end_entire = 0xFF;
// Plausible placement of grub in the CVM's memory; verifiers do not look at these.
constexpr std::uint64_t grub_image_address = 0xBF5F'0000;
constexpr std::uint64_t grub_image_length = 0x001A'0000;

// TCG PC Client: EV_EFI_ACTION (not among the types the parser names).
constexpr std::uint32_t ev_efi_action = 0x80000007;

constexpr std::string_view efi_calling_application = "Calling EFI Application from Boot Option";

Bytes with_nul(std::string_view text) {
  Bytes out(text.begin(), text.end());
  out.push_back(0);
  return out;
}

// A media file-path node with a UCS-2 path, then the end node.
// An empty path gives only the end node: what shim logs for the kernel it verifies.
Bytes file_path_device_path(std::string_view path) {
  Bytes node;
  if (path.empty()) {
    node.push_back(device_path_end);
    node.push_back(device_path_end_entire);
    append_le16(node, 4);
    return node;
  }
  node.push_back(device_path_media);
  node.push_back(device_path_file_path);
  append_le16(node, static_cast<std::uint16_t>(4 + (path.size() + 1) * 2));
  for (char c : path) append_le16(node, static_cast<std::uint8_t>(c));
  append_le16(node, 0);
  node.push_back(device_path_end);
  node.push_back(device_path_end_entire);
  append_le16(node, 4);
  return node;
}

// A hardware MemoryMapped node (UEFI 10.3.2.3: type 1, subtype 3: memory type, start, end),
// then the end node: how grub names a kernel image it hands to LoadImage from memory.
Bytes memory_mapped_device_path(std::uint64_t start, std::uint64_t end) {
  constexpr std::uint32_t efi_loader_data = 2;
  Bytes node{0x01, 0x03};
  append_le16(node, 24);
  append_le32(node, efi_loader_data);
  append_le64(node, start);
  append_le64(node, end);
  node.push_back(device_path_end);
  node.push_back(device_path_end_entire);
  append_le16(node, 4);
  return node;
}

// Plausible placement of a kernel grub loaded; verifiers do not look at it.
constexpr std::uint64_t kernel_image_address = 0x6ACF'5000;

constexpr std::string_view stub_load_options_tag = "LOADED_IMAGE::LoadOptions";

}  // namespace

Measurement Measurement::of_digest(crypto::HashAlg alg, Bytes digest) {
  Measurement measurement;
  measurement.digests.emplace_back(alg, std::move(digest));
  return measurement;
}

Measurement Measurement::of_content(ByteView content, std::span<const crypto::HashAlg> algs) {
  Measurement measurement;
  for (auto alg : algs) measurement.digests.emplace_back(alg, crypto::digest(alg, content));
  return measurement;
}

Measurement& Measurement::and_digest(crypto::HashAlg alg, Bytes digest) {
  digests.emplace_back(alg, std::move(digest));
  return *this;
}

const Bytes* Measurement::digest_for(crypto::HashAlg alg) const {
  for (const auto& [a, digest] : digests)
    if (a == alg) return &digest;
  return nullptr;
}

EventLogBuilder::EventLogBuilder(std::vector<crypto::HashAlg> banks) {
  // A log without banks cannot carry a digest; duplicates would repeat a bank per record.
  for (auto alg : banks)
    if (std::find(banks_.begin(), banks_.end(), alg) == banks_.end()) banks_.push_back(alg);
  if (banks_.empty()) banks_.push_back(crypto::HashAlg::sha256);
  for (auto alg : banks_) {
    std::array<Bytes, 4> zeros;
    zeros.fill(Bytes(crypto::digest_size(alg), 0));
    rems_.push_back(std::move(zeros));
  }
}

Measurement EventLogBuilder::measure(ByteView content) const { return Measurement::of_content(content, banks_); }

Result<void> EventLogBuilder::add_event(std::uint32_t mr_index, std::uint32_t event_type, ByteView data,
                                        const Measurement& measurement) {
  if (mr_index > 4)
    return fail(Errc::invalid_argument, "MR index " + std::to_string(mr_index) + " is not 0..4 (RIM, REM[0..3])");
  if (data.size() > 0xFFFF'FFFFu) return fail(Errc::too_large, "event data over 4 GiB");
  std::vector<const Bytes*> digests;
  for (auto alg : banks_) {
    const Bytes* digest = measurement.digest_for(alg);
    if (digest == nullptr)
      return fail(Errc::invalid_argument, "no " + std::string(crypto::hash_alg_name(alg)) + " digest for the event");
    if (digest->size() != crypto::digest_size(alg))
      return fail(Errc::invalid_argument, std::string(crypto::hash_alg_name(alg)) + " digest of " +
                                              std::to_string(digest->size()) + " bytes");
    digests.push_back(digest);
  }

  append_le32(records_, mr_index);
  append_le32(records_, event_type);
  append_le32(records_, static_cast<std::uint32_t>(banks_.size()));
  for (std::size_t i = 0; i < banks_.size(); ++i) {
    append_le16(records_, eventlog::tpm_alg_id(banks_[i]));
    records_.insert(records_.end(), digests[i]->begin(), digests[i]->end());
  }
  append_le32(records_, static_cast<std::uint32_t>(data.size()));
  records_.insert(records_.end(), data.begin(), data.end());

  // Section d.3: MR m extends REM[m-1]; MR 0 is the RIM, and EV_NO_ACTION is never extended.
  if (mr_index >= 1 && event_type != eventlog::ev_no_action) {
    for (std::size_t i = 0; i < banks_.size(); ++i) {
      Bytes& rem = rems_[i][mr_index - 1];
      rem = crypto::digest_parts(banks_[i], {rem, *digests[i]});
    }
  }
  return {};
}

void EventLogBuilder::add_efi_separator() {
  const Bytes separator(4, 0);
  // Cannot fail: MR 1 and a digest for every bank.
  (void)add_event(1, eventlog::ev_separator, separator, measure(separator));
}

void EventLogBuilder::add_efi_action(std::string_view action) {
  // EV_EFI_ACTION data is the bare string, without NUL, and the digest covers exactly it.
  (void)add_event(2, ev_efi_action, as_bytes(action), measure(as_bytes(action)));
}

Result<void> EventLogBuilder::add_efi_boot_application(const Measurement& authenticode, std::string_view efi_path) {
  // UEFI_IMAGE_LOAD_EVENT: location, length, link-time address, device path length, path.
  Bytes device_path = file_path_device_path(efi_path);
  Bytes data;
  append_le64(data, grub_image_address);
  append_le64(data, grub_image_length);
  append_le64(data, 0);
  append_le64(data, device_path.size());
  data.insert(data.end(), device_path.begin(), device_path.end());
  return add_event(2, eventlog::ev_efi_boot_services_application, data, authenticode);
}

Result<void> EventLogBuilder::add_grub_file(std::string_view path, const Measurement& contents) {
  return add_event(3, eventlog::ev_ipl, with_nul(path), contents);
}

void EventLogBuilder::add_grub_command(std::string_view command) {
  std::string description = std::string(grub_command_prefix) + std::string(command);
  (void)add_event(3, eventlog::ev_ipl, with_nul(description), measure(as_bytes(command)));
}

void EventLogBuilder::add_kernel_cmdline(std::string_view cmdline) {
  std::string description = std::string(grub_kernel_cmdline_prefix) + std::string(cmdline);
  (void)add_event(3, eventlog::ev_ipl, with_nul(description), measure(as_bytes(cmdline)));
}

Result<void> EventLogBuilder::add_loaded_kernel(const Measurement& authenticode, std::uint64_t size) {
  Bytes device_path = memory_mapped_device_path(kernel_image_address, kernel_image_address + size - 1);
  Bytes data;
  append_le64(data, kernel_image_address);
  append_le64(data, size);
  append_le64(data, 0);
  append_le64(data, device_path.size());
  data.insert(data.end(), device_path.begin(), device_path.end());
  return add_event(2, eventlog::ev_efi_boot_services_application, data, authenticode);
}

void EventLogBuilder::add_stub_load_options(std::string_view options) {
  // TCG_PCClientTaggedEvent: taggedEventID, taggedEventDataSize, the tag's text with its NUL.
  Bytes data;
  append_le32(data, eventlog::linux_tag_load_options);
  append_le32(data, static_cast<std::uint32_t>(stub_load_options_tag.size() + 1));
  data.insert(data.end(), stub_load_options_tag.begin(), stub_load_options_tag.end());
  data.push_back(0);
  Bytes utf16;
  for (unsigned char c : options) {
    utf16.push_back(c);
    utf16.push_back(0);
  }
  (void)add_event(3, eventlog::ev_event_tag, data, measure(utf16));
}

Result<std::array<Bytes, 4>> EventLogBuilder::rems(crypto::HashAlg alg) const {
  for (std::size_t i = 0; i < banks_.size(); ++i)
    if (banks_[i] == alg) return rems_[i];
  return fail(Errc::invalid_argument, "the log has no " + std::string(crypto::hash_alg_name(alg)) + " bank");
}

Bytes EventLogBuilder::spec_id_event() const {
  Bytes spec;
  spec.insert(spec.end(), spec_id_signature.begin(), spec_id_signature.end());
  append_le32(spec, 0);  // platformClass: client
  spec.push_back(spec_version_minor);
  spec.push_back(spec_version_major);
  spec.push_back(spec_errata);
  spec.push_back(uintn_size_64bit);
  append_le32(spec, static_cast<std::uint32_t>(banks_.size()));
  for (auto alg : banks_) {
    append_le16(spec, eventlog::tpm_alg_id(alg));
    append_le16(spec, static_cast<std::uint16_t>(crypto::digest_size(alg)));
  }
  spec.push_back(0);  // vendorInfoSize

  Bytes record;
  append_le32(record, 0);  // MR 0
  append_le32(record, eventlog::ev_no_action);
  record.insert(record.end(), sha1_digest_size, 0);
  append_le32(record, static_cast<std::uint32_t>(spec.size()));
  record.insert(record.end(), spec.begin(), spec.end());
  return record;
}

Bytes EventLogBuilder::log() const {
  Bytes out = spec_id_event();
  out.insert(out.end(), records_.begin(), records_.end());
  return out;
}

Result<Bytes> EventLogBuilder::log_area(std::size_t area_size) const {
  Bytes out = log();
  if (out.size() > area_size)
    return fail(Errc::too_large, "event log of " + std::to_string(out.size()) + " bytes does not fit a " +
                                     std::to_string(area_size) + "-byte log area");
  // Unused log area reads as 0xFF, which parsers take as the end of the log (section d.2).
  out.resize(area_size, 0xFF);
  return out;
}

Bytes build_ccel(std::uint64_t log_area_size, std::uint64_t log_area_address) {
  eventlog::CcelTable table;
  table.revision = 1;
  table.oem_id = "FDESIM";
  table.cc_type = simulated_cc_type;
  table.cc_subtype = 0;
  table.log_area_length = log_area_size;
  table.log_area_address = log_area_address;
  return eventlog::build_ccel_table(table);
}

std::string grub_kernel_cmdline(const GrubBoot& boot) {
  if (boot.kernel_arguments.empty()) return boot.kernel_path;
  return boot.kernel_path + " " + boot.kernel_arguments;
}

std::vector<std::string> grub_boot_commands(const GrubBoot& boot) {
  if (boot.script) return *boot.script;
  std::vector<std::string> out = boot.grub_commands;
  out.push_back("linux " + grub_kernel_cmdline(boot));
  if (!boot.initramfs.digests.empty()) out.push_back("initrd " + boot.initramfs_path);
  return out;
}

namespace {

// The kernel as an EFI application when shim verifies it: right after the kernel file.
Result<void> add_kernel_efi_by_shim(EventLogBuilder& builder, const GrubBoot& boot) {
  if (!boot.kernel_efi || boot.kernel_efi_by != KernelEfiMeasurer::shim) return {};
  if (auto ok = builder.add_efi_boot_application(*boot.kernel_efi, ""); !ok)
    return fail_with_context("kernel EFI application", ok.error());
  return {};
}

// The kernel as an EFI application when grub hands it to LoadImage at `boot` (after every
// grub event), then the kernel's EFI stub measuring the load options grub gave it.
Result<void> add_kernel_efi_by_load_image(EventLogBuilder& builder, const GrubBoot& boot, std::string_view cmdline) {
  if (!boot.kernel_efi || boot.kernel_efi_by != KernelEfiMeasurer::load_image) return {};
  // The image's size is not known here; any plausible one (verifiers do not look at it).
  constexpr std::uint64_t kernel_image_size = 0x01F7'0000;
  if (auto ok = builder.add_loaded_kernel(*boot.kernel_efi, kernel_image_size); !ok)
    return fail_with_context("kernel EFI application", ok.error());
  builder.add_stub_load_options("BOOT_IMAGE=" + std::string(cmdline));
  return {};
}

}  // namespace

Result<EventLogBuilder> build_grub_boot_log(const GrubBoot& boot, std::vector<crypto::HashAlg> banks) {
  EventLogBuilder builder(std::move(banks));
  // UEFI (CcaTcg2Dxe, the TDX mapping of section d.3): configuration and separators into
  // MR1, the boot attempt and grub's image into MR2.
  builder.add_efi_separator();
  builder.add_efi_action(efi_calling_application);
  builder.add_efi_separator();
  if (auto ok = builder.add_efi_boot_application(boot.grub_authenticode); !ok)
    return fail_with_context("grub boot application", ok.error());

  // grub (grub-core/commands/tpm.c): files into PCR 9, strings into PCR 8, both MR3, in the
  // order grub's linux loader measures them: the file is read before its command line is.
  if (auto ok = builder.add_grub_file(boot.grub_cfg_path, boot.grub_cfg); !ok)
    return fail_with_context("grub.cfg", ok.error());
  if (boot.script) {
    std::string cmdline;
    for (const auto& command : *boot.script) {
      builder.add_grub_command(command);
      const auto space = command.find(' ');
      const std::string name = command.substr(0, space);
      const std::string rest = space == std::string::npos ? "" : command.substr(space + 1);
      const std::string path = rest.substr(0, rest.find(' '));
      if (name == "linux" && !path.empty()) {
        if (auto ok = builder.add_grub_file(path, boot.kernel); !ok) return fail_with_context("kernel", ok.error());
        if (auto ok = add_kernel_efi_by_shim(builder, boot); !ok) return tl::unexpected(ok.error());
        builder.add_kernel_cmdline(rest);
        cmdline = rest;
      } else if (name == "initrd" && !path.empty() && !boot.initramfs.digests.empty()) {
        if (auto ok = builder.add_grub_file(path, boot.initramfs); !ok) return fail_with_context("initramfs", ok.error());
      }
    }
    if (auto ok = add_kernel_efi_by_load_image(builder, boot, cmdline); !ok) return tl::unexpected(ok.error());
    return builder;
  }
  const std::vector<std::string> commands = grub_boot_commands(boot);
  const std::size_t before_linux = boot.grub_commands.size();
  for (std::size_t i = 0; i < before_linux; ++i) builder.add_grub_command(commands[i]);
  std::string cmdline = grub_kernel_cmdline(boot);
  builder.add_grub_command(commands[before_linux]);
  if (auto ok = builder.add_grub_file(boot.kernel_path, boot.kernel); !ok) return fail_with_context("kernel", ok.error());
  if (auto ok = add_kernel_efi_by_shim(builder, boot); !ok) return tl::unexpected(ok.error());
  builder.add_kernel_cmdline(cmdline);
  if (!boot.initramfs.digests.empty()) {
    builder.add_grub_command(commands[before_linux + 1]);
    if (auto ok = builder.add_grub_file(boot.initramfs_path, boot.initramfs); !ok)
      return fail_with_context("initramfs", ok.error());
  }
  if (auto ok = add_kernel_efi_by_load_image(builder, boot, cmdline); !ok) return tl::unexpected(ok.error());
  return builder;
}

}  // namespace fde::sim
