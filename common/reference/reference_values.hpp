// Reference values: the accepted measurement sets of one image (docs/reference-values.md).
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/crypto/hash.hpp"
#include "common/util/bytes.hpp"

namespace fde::reference {

// Document limits. A real document holds a handful of sets; the caps keep a hostile or
// corrupted file from costing more than a bounded amount of memory and time.
constexpr std::size_t max_document_size = 1024 * 1024;
constexpr std::int64_t format_version = 1;
constexpr std::size_t max_sets = 256;
constexpr std::size_t max_list_entries = 256;   // digests in one list (RIMs, grub, RPVs...)
constexpr std::size_t max_text_size = 4096;     // names, descriptions, command lines
constexpr std::size_t max_grub_commands = 4096;
constexpr std::size_t rpv_size = 64;            // docs/virtcca-platform.md b.2, claim 44235
constexpr std::size_t rem_count = 4;

enum class BootMode {
  grub,    // UEFI + grub: the RIM covers firmware + DTB; the rest is in the CCEL log (c.2, d)
  direct,  // QEMU loads kernel + initramfs + DTB: the RIM covers them (docs/virtcca-platform.md c.2)
};
std::string_view boot_mode_name(BootMode mode);

// What a grub-boot set expects to find in the event log (section d.4).
struct GrubBootValues {
  // JSON "grub": Authenticode digests of the EFI applications allowed to run
  // (EV_EFI_BOOT_SERVICES_APPLICATION); every such event must be one of them.
  std::vector<Bytes> efi_applications;
  // JSON "grub_cfg": digests of the grub.cfg files grub may read; every grub.cfg event
  // must be one of them (a list because some layouts chain an ESP stub config).
  std::vector<Bytes> grub_cfgs;
  Bytes kernel;                    // digest of the decompressed kernel image grub loads
  // JSON "kernel_alternatives": other digests accepted for the kernel file event, e.g. the
  // digest of the compressed file where it is not known whether grub measures before or
  // after decompression (upstream grub 2.12 measures before, the SDK assumes after).
  std::vector<Bytes> kernel_alternatives;
  // JSON "kernel_efi": Authenticode digests of the kernel as an EFI application. grub on
  // arm64 starts the kernel through the firmware's LoadImage, and shim measures it when
  // grub asks it to verify the kernel; either way the firmware log carries it as an
  // EV_EFI_BOOT_SERVICES_APPLICATION, which this set then explains.
  std::vector<Bytes> kernel_efi;
  std::optional<Bytes> initramfs;  // nullopt (JSON null): the set expects no initramfs event
  // Exact text of the kernel command line grub measures. May be omitted only when rems[2]
  // is pinned, which covers it.
  std::optional<std::string> kernel_cmdline;
  // Exact, ordered list of the grub commands run from the first grub.cfg on ("grub_cmd: "
  // events, prefix removed). Required unless rems[2] is pinned: with the allow-list every
  // command grub runs must be explained.
  std::optional<std::vector<std::string>> grub_commands;
};

struct ReferenceSet {
  std::string name;  // unique within the document; reported in the verdict
  std::optional<std::string> description;
  std::optional<std::string> kernel_version;
  BootMode boot = BootMode::grub;
  GrubBootValues grub;     // boot == grub only
  std::vector<Bytes> rims; // boot == direct only: RIMs computed as in section c.2
  // Optional golden REM values (REM[0..3]); a pinned REM must equal the token's. With an
  // event log, an unpinned REM[3] must be all zero (firmware never extends MR 4, d.3).
  std::array<std::optional<Bytes>, rem_count> rems;
};

struct ReferenceValues {
  std::optional<std::string> image_id;
  crypto::HashAlg hash_alg = crypto::HashAlg::sha256;  // the CVM hash algorithm (claim 44236)
  // RIMs of firmware + DTB + vCPU configuration accepted together with grub-boot sets.
  std::vector<Bytes> firmware_rims;
  // Authenticode digests of EFI drivers the platform's firmware is known to load (a device's
  // option ROM, say). Every EV_EFI_BOOT_SERVICES_DRIVER / EV_EFI_RUNTIME_SERVICES_DRIVER
  // event must be one of them; empty (the default) denies every driver the log shows.
  std::vector<Bytes> firmware_drivers;
  // Golden REM[0] values (firmware configuration: Secure Boot variables, boot options). Empty:
  // REM[0] is judged event by event (configuration events only); non-empty: the token's
  // REM[0] must also be one of these.
  std::vector<Bytes> firmware_rem0;
  std::vector<Bytes> allowed_rpvs;  // empty: any RPV is accepted
  std::vector<ReferenceSet> sets;   // at least one; a kernel update adds a set

  const ReferenceSet* find_set(std::string_view name) const;
};

// Strict parser: size <= max_document_size, unknown or duplicate fields refused, digests in
// hex (either case) of exactly the document's hash size. Errors name the JSON path, e.g.
// "reference values: sets[1].kernel: expected 64 hex digits (sha-256), found 63".
Result<ReferenceValues> parse_reference_values(std::string_view json);

// The semantic rules the parser enforces, for documents built in code.
Result<void> validate_reference_values(const ReferenceValues& values);

// Canonical JSON (lowercase hex, fixed key order, 2-space indent). Refuses a document that
// validate_reference_values() refuses, so nothing written can fail to load.
Result<std::string> serialize_reference_values(const ReferenceValues& values);

// Kernel update workflow: add the new set, later retire the old one. Both leave `values`
// unchanged on error (duplicate name, invalid set, unknown name, retiring the last set).
Result<void> add_reference_set(ReferenceValues& values, ReferenceSet set);
Result<void> retire_reference_set(ReferenceValues& values, std::string_view name);

// Importer for the reference implementation's image_reference_measurement.json (d.4):
// {"grub": hex, "grub.cfg": hex, "kernels": [{"version", "kernel", "initramfs": hex |
// "NOT_FOUND"}], "hash_alg": "sha-256"}. That file has no RIM and no command line, so
// both come from here; every kernels[] version needs a command line.
struct ImageReferenceImport {
  std::vector<Bytes> firmware_rims;
  std::map<std::string, std::string> kernel_cmdlines;  // kernels[].version -> command line
  // kernels[].version -> the grub commands its boot runs (the file does not record them)
  std::map<std::string, std::vector<std::string>> grub_commands;
  std::optional<std::string> image_id;
};
// One grub-boot set per kernels[] entry, named "kernel-<version>", sharing grub and grub.cfg.
Result<ReferenceValues> import_image_reference_measurement(std::string_view json,
                                                           const ImageReferenceImport& options);

}  // namespace fde::reference
