// What lives on the boot filesystem (ext or FAT): kernels, their initramfs, grub.cfg and the
// kernel arguments grub.cfg gives them; the straight-line grub.cfg fde-image writes in its
// place; and the measurements of that boot (docs/virtcca-platform.md d.4).
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/reference/reference_values.hpp"
#include "image-builder/fs/ext_filesystem.hpp"
#include "image-builder/fs/fat_filesystem.hpp"

namespace fde::image {

struct BootDirEntry {
  std::string name;
  bool is_directory = false;
  bool is_regular = false;
};

// Read access to the filesystem that holds the kernels: ext through libext2fs, FAT through
// the project's reader. Paths are absolute on that filesystem ("/vmlinuz-6.6.0").
class BootVolume {
 public:
  virtual ~BootVolume() = default;
  virtual bool is_fat() const = 0;
  // The UUID grub's `search --fs-uuid` finds the filesystem by ("1a2b-3c4d" on FAT).
  virtual std::string uuid() const = 0;
  virtual Result<std::vector<BootDirEntry>> list_directory(const std::string& path) const = 0;
  virtual Result<bool> exists(const std::string& path) const = 0;
  virtual Result<Bytes> read_file(const std::string& path, std::uint64_t max_size) const = 0;
};

// The filesystem at `offset` (`size` bytes) of a disk image: ext if it has the ext magic,
// else FAT; Errc::not_found when it is neither. Read-only; the volume keeps `disk`.
Result<std::unique_ptr<BootVolume>> open_boot_volume(std::shared_ptr<const DiskReader> disk, std::uint64_t offset,
                                                     std::uint64_t size);
// The same in a raw image file.
Result<std::unique_ptr<BootVolume>> open_boot_volume(const std::string& image_path, std::uint64_t offset,
                                                     std::uint64_t size);

struct BootKernel {
  std::string version;                   // "6.6.0-28.0.0.34.oe2403.aarch64"
  std::string kernel_path;               // "/vmlinuz-<version>" on the boot filesystem
  std::optional<std::string> initramfs_path;
  std::optional<std::string> cmdline;    // grub.cfg's `linux` line: "/vmlinuz-<v> root=... ro"
};

struct BootLayout {
  std::string prefix;  // "" for a separate /boot partition, "/boot" when inside another fs
  std::vector<BootKernel> kernels;
  // Every grub.cfg grub may read on this filesystem: grub/, grub2/, efi/EFI/*/ and, on FAT
  // (which the firmware can read), EFI/*/. The first one is the one measure reads.
  std::vector<std::string> grub_cfg_paths;
  std::vector<std::string> warnings;
};

// Finds kernels (vmlinuz-*), initramfs (initramfs-<v>.img, initrd.img-<v>) and grub.cfg.
// An empty kernel list means "no kernels here".
Result<BootLayout> discover_boot_files(const BootVolume& fs);

// Command lines from grub.cfg's `linux`/`linuxefi` lines, by kernel file name.
std::map<std::string, std::string> parse_grub_cmdlines(std::string_view grub_cfg, std::vector<std::string>& warnings);

// The kernel to boot: `wanted` (a version), else the newest by version ("6.6.10" > "6.6.9").
Result<BootKernel> choose_kernel(const BootLayout& layout, const std::optional<std::string>& wanted);
// Orders versions as `sort -V` does: digit runs by value, everything else by character.
int compare_versions(std::string_view a, std::string_view b);

// sha256 of the kernel as grub measures it (gunzipped when gzip-compressed, d.4).
Result<Bytes> measure_kernel(ByteView kernel);
// The kernel gunzipped, or nullopt when it is not gzip-compressed.
Result<std::optional<Bytes>> decompress_kernel(ByteView kernel);

// Refuses a kernel command line with an argument that gives the console (the host's) a shell
// or another init: rd.break, rd.shell (unless off), init=, rdinit=, systemd.unit=,
// systemd.debug_shell, runlevel words (emergency, rescue, single, s, S, 1, -s, -b), ...;
// names match with '-' and '_' alike, as the kernel and systemd read them.
Result<void> check_kernel_cmdline(std::string_view cmdline);

// The kernel arguments fde-image writes: `arguments` with single spaces, checked by
// check_kernel_cmdline, made only of characters grub's script reader takes literally (no
// quotes, `$`, `\`, `;`, wildcards, ...), with ima_rot=tpm added unless present. Any other
// ima_rot value is refused: IMA's virtCCA root of trust extends REM[0] during kernel start,
// so the token's REM[0] would no longer match the event log.
Result<std::string> prepare_kernel_arguments(std::string_view arguments);

// The straight-line grub.cfg: no menu, no variables but the ones it sets, no modules read.
struct GrubConfig {
  std::string text;                      // the file's content
  std::vector<std::string> commands;     // what grub measures for it, one entry per command
  std::string kernel_path;
  std::string kernel_cmdline;            // as grub measures it: "<kernel path> <arguments>"
  std::optional<std::string> initramfs_path;
};

struct GrubConfigRequest {
  std::string superuser = "fde";
  std::string password_hash;  // grub_password_hash()
  std::string fs_uuid;        // of the filesystem holding kernel and initramfs
  std::string kernel_path;
  std::string kernel_arguments;  // prepare_kernel_arguments()
  std::optional<std::string> initramfs_path;
};
Result<GrubConfig> make_grub_config(const GrubConfigRequest& request);

// Reads back a grub.cfg in the straight-line form make_grub_config writes; anything else
// (a menu, variables, quotes, other commands) is refused, as its commands cannot be known.
Result<GrubConfig> parse_grub_config(std::string_view text);

// "grub.pbkdf2.sha512.<iterations>.<salt hex>.<hash hex>", as grub-mkpasswd-pbkdf2 prints it.
Result<std::string> grub_password_hash(ByteView password, ByteView salt, unsigned iterations);
// The hash of a random password that is discarded at once: nobody can unlock grub's shell.
Result<std::string> unusable_grub_password_hash();

struct MeasureOptions {
  std::optional<std::string> image_id;
  std::vector<Bytes> firmware_rims;
  std::vector<Bytes> grub_efi_digests;          // Authenticode of grub (from --reference-in or given)
  std::optional<std::string> reference_in_json; // the SDK's image_reference_measurement.json
};

// Reference values of the boot that the volume's (fde-image's) grub.cfg runs, as it is now.
Result<reference::ReferenceValues> measure_boot(const BootVolume& fs, const BootLayout& layout,
                                                const MeasureOptions& options, std::vector<std::string>& warnings);

}  // namespace fde::image
