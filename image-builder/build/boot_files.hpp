// What lives on the boot filesystem: kernels, their initramfs, grub.cfg and the kernel
// command lines grub.cfg gives them; and their measurements (virtcca-attestation.md d.4).
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "common/reference/reference_values.hpp"
#include "image-builder/fs/ext_filesystem.hpp"

namespace fde::image {

struct BootKernel {
  std::string version;                   // "6.6.0-28.0.0.34.oe2403.aarch64"
  std::string kernel_path;               // "/vmlinuz-<version>" on the boot filesystem
  std::optional<std::string> initramfs_path;
  std::optional<std::string> cmdline;    // as grub measures it: "/vmlinuz-<v> root=... ro"
};

struct BootLayout {
  std::string prefix;  // "" for a separate /boot partition, "/boot" when inside another fs
  std::vector<BootKernel> kernels;
  std::optional<std::string> grub_cfg_path;
  std::vector<std::string> warnings;
};

// Finds kernels (vmlinuz-*), initramfs (initramfs-<v>.img, initrd.img-<v>) and grub.cfg
// (grub/, grub2/, efi/EFI/*/). An empty kernel list means "no kernels here".
Result<BootLayout> discover_boot_files(const ExtFilesystem& fs);

// Command lines from grub.cfg's `linux`/`linuxefi` lines, by kernel file name.
std::map<std::string, std::string> parse_grub_cmdlines(std::string_view grub_cfg, std::vector<std::string>& warnings);

// sha256 of the kernel as grub measures it (gunzipped when gzip-compressed, d.4).
Result<Bytes> measure_kernel(ByteView kernel);

// Refuses a kernel command line with an argument that gives the console (the host's) a shell
// or another init: rd.break, rd.shell (other than =0), init=, rdinit=, systemd.unit=, ...
Result<void> check_kernel_cmdline(std::string_view cmdline);

struct MeasureOptions {
  std::optional<std::string> image_id;
  std::vector<Bytes> firmware_rims;
  std::vector<Bytes> grub_efi_digests;          // Authenticode of grub (from --reference-in or given)
  std::optional<std::string> reference_in_json; // the SDK's image_reference_measurement.json
  std::optional<std::string> cmdline_override;  // replaces what grub.cfg says, for every kernel
};

// Reference values of the boot filesystem as it is now (after our initramfs change).
Result<reference::ReferenceValues> measure_boot(const ExtFilesystem& fs, const BootLayout& layout,
                                                const MeasureOptions& options);

}  // namespace fde::image
