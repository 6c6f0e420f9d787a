// libFuzzer target: the builder's partition table reader (GPT with its backup, protective
// and plain MBR) on a disk image whose first bytes are the input (the rest reads as zeros up
// to 1 MiB, so that the backup header's LBA exists).
#include <cstddef>
#include <cstdint>

#include "image-builder/disk/gpt.hpp"
#include "test/fuzz/fuzz_support.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  fde::fuzz::MemFile file(data, size);
  if (size < 1024 * 1024 && ::ftruncate(file.fd(), 1024 * 1024) != 0) __builtin_trap();
  auto disk = fde::image::RawFile::open(file.path(), fde::image::RawFile::Mode::read_only);
  if (!disk) __builtin_trap();
  auto table = fde::image::read_partition_table(*disk);
  if (table) {
    for (const auto& partition : table->partitions) {
      if (partition.last_lba < partition.first_lba) __builtin_trap();
      (void)fde::image::guid_to_string(partition.type);
    }
  }
  (void)fde::image::read_gpt(*disk);
  return 0;
}
