// libFuzzer target: the builder's FAT12/16/32 reader and the EFI binary scan it serves (the
// ESP of the input image is the host's): open, list, read, find the EFI binaries and hash
// them as PE images.
#include <cstddef>
#include <cstdint>

#include "image-builder/assembly/efi_binaries.hpp"
#include "image-builder/fs/fat_filesystem.hpp"
#include "test/fuzz/fuzz_support.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  fde::fuzz::MemFile file(data, size);
  auto fat = fde::image::FatFilesystem::open(file.path(), 0, size);
  if (!fat) return 0;
  (void)fat->uuid();
  if (auto root = fat->list_directory("/")) {
    for (const auto& entry : *root) {
      const std::string path = "/" + entry.name;
      if (entry.is_directory) (void)fat->list_directory(path);
      else (void)fat->read_file(path, 1024 * 1024);
    }
  }
  (void)fat->list_directory("/EFI/BOOT");
  (void)fde::image::find_efi_binaries(*fat);
  return 0;
}
