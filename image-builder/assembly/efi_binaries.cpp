// EFI binaries on the ESP: FAT reader + Authenticode digest.
#include "image-builder/assembly/efi_binaries.hpp"

#include <algorithm>

#include "image-builder/pe/authenticode.hpp"

namespace fde::image {
namespace {

bool equal_ignoring_case(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           auto lower = [](char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; };
           return lower(x) == lower(y);
         });
}

bool is_one_of(std::string_view name, std::initializer_list<std::string_view> names) {
  return std::any_of(names.begin(), names.end(), [&](std::string_view n) { return equal_ignoring_case(name, n); });
}

}  // namespace

Result<std::vector<EfiBinary>> find_efi_binaries(const FatFilesystem& esp) {
  std::vector<EfiBinary> found;
  auto efi = esp.list_directory("/EFI");
  if (!efi) {
    if (efi.error().code == Errc::not_found) return found;
    return tl::unexpected(efi.error());
  }
  for (const auto& dir : *efi) {
    if (!dir.is_directory) continue;
    auto files = esp.list_directory("/EFI/" + dir.name);
    if (!files) return fail_with_context("/EFI/" + dir.name, files.error());
    const bool removable_path = equal_ignoring_case(dir.name, "BOOT");
    for (const auto& file : *files) {
      if (file.is_directory) continue;
      const bool wanted = is_one_of(file.name, {"grubaa64.efi", "grubx64.efi", "shimaa64.efi", "shimx64.efi"}) ||
                          (removable_path && is_one_of(file.name, {"BOOTAA64.EFI", "BOOTX64.EFI"}));
      if (!wanted) continue;
      EfiBinary binary;
      binary.path = "/EFI/" + dir.name + "/" + file.name;
      auto content = esp.read_file(binary.path, max_pe_file_size);
      if (!content) return fail_with_context(binary.path, content.error());
      auto layout = parse_pe_image(*content);
      if (!layout) return fail_with_context(binary.path, layout.error());
      auto digest = authenticode_sha256(*content);
      if (!digest) return fail_with_context(binary.path, digest.error());
      binary.size = content->size();
      binary.machine = layout->machine;
      binary.has_signature = layout->certificate_size != 0;
      binary.digest = std::move(*digest);
      found.push_back(std::move(binary));
    }
  }
  return found;
}

Result<std::vector<EspScan>> scan_esps(const std::shared_ptr<const DiskReader>& disk, const GptTable& table) {
  std::vector<EspScan> scans;
  for (const auto& partition : table.partitions) {
    // The firmware reads any FAT filesystem, so on an MBR disk (or with a FAT /boot) the
    // applications may live on a partition of another type: those count when they hold one.
    const bool esp_type = partition.type == gpt_type::efi_system;
    const std::string where = "EFI System Partition " + std::to_string(partition.index);
    auto esp = FatFilesystem::open(disk, partition.offset(), partition.size());
    if (!esp) {
      if (!esp_type) continue;
      return fail_with_context(where, esp.error());
    }
    auto binaries = find_efi_binaries(*esp);
    if (!binaries) return fail_with_context(where, binaries.error());
    if (!esp_type && binaries->empty()) continue;
    scans.push_back({partition.index, esp->fat_bits(), std::move(*binaries)});
  }
  return scans;
}

Result<std::vector<Bytes>> efi_application_digests(const std::shared_ptr<const DiskReader>& disk,
                                                   const GptTable& table) {
  auto scans = scan_esps(disk, table);
  if (!scans) return tl::unexpected(scans.error());
  constexpr const char* instead = ": pass --grub-efi-digest or --reference-in (image_reference_measurement.json)";
  if (scans->empty())
    return fail(Errc::not_found, std::string("grub's Authenticode digest is needed for the reference values and the "
                                             "image has no EFI System Partition") + instead);
  std::vector<Bytes> digests;
  for (const auto& scan : *scans)
    for (const auto& binary : scan.binaries)
      if (std::find(digests.begin(), digests.end(), binary.digest) == digests.end()) digests.push_back(binary.digest);
  if (digests.empty())
    return fail(Errc::not_found, std::string("grub's Authenticode digest is needed for the reference values and the "
                                             "EFI System Partition holds no EFI/BOOT/BOOT{AA64,X64}.EFI nor "
                                             "EFI/*/{grub,shim}{aa64,x64}.efi") + instead);
  return digests;
}

}  // namespace fde::image
