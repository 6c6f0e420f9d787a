// The EFI applications on an image's EFI System Partition that the firmware may start, and
// their Authenticode digests: the `grub` reference values when the admin gives none
// (docs/reference-values.md; docs/virtcca-platform.md d.4).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/util/bytes.hpp"
#include "image-builder/disk/gpt.hpp"
#include "image-builder/fs/fat_filesystem.hpp"

namespace fde::image {

struct EfiBinary {
  std::string path;  // on the ESP, as stored: "/EFI/BOOT/BOOTX64.EFI"
  std::uint64_t size = 0;
  std::uint16_t machine = 0;
  bool has_signature = false;  // an attribute certificate table is present (not verified)
  Bytes digest;                // Authenticode SHA-256
};

// Which files: /EFI/BOOT/BOOTAA64.EFI and /EFI/BOOT/BOOTX64.EFI (the removable-media
// default paths), and grub{aa64,x64}.efi and shim{aa64,x64}.efi in every /EFI/<dir>/
// (boot entries and shim's second stage), names compared case-insensitively. A file that is
// not a well-formed PE image is an error: its digest is needed and cannot be computed.
Result<std::vector<EfiBinary>> find_efi_binaries(const FatFilesystem& esp);

struct EspScan {
  std::uint32_t partition = 0;  // GPT entry number
  int fat_bits = 0;
  std::vector<EfiBinary> binaries;
};

// Every EFI System Partition (GPT type C12A7328-..., MBR type 0xEF) of the image, and
// every other FAT partition that holds one of the binaries above, scanned.
Result<std::vector<EspScan>> scan_esps(const std::shared_ptr<const DiskReader>& disk, const GptTable& table);

// The distinct digests of all ESPs' EFI binaries, in order of discovery; fails with
// Errc::not_found (saying which options would do instead) when there is no ESP or no binary.
Result<std::vector<Bytes>> efi_application_digests(const std::shared_ptr<const DiskReader>& disk,
                                                   const GptTable& table);

}  // namespace fde::image
