// libFuzzer target: the builder's PE/COFF parser and Authenticode digest (EFI binaries come
// from the host's ESP). Every hashed range must lie inside the file.
#include <cstddef>
#include <cstdint>

#include "image-builder/pe/authenticode.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  fde::ByteView file(data, size);
  if (auto layout = fde::image::parse_pe_image(file)) {
    for (const auto& range : layout->hashed)
      if (range.offset > size || range.length > size - range.offset) __builtin_trap();
    (void)fde::image::pe_machine_name(layout->machine);
  }
  (void)fde::image::authenticode_sha256(file);
  return 0;
}
