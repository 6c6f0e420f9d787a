// libFuzzer target: the agent's LUKS2 header checks. The host writes the disk, so both the
// binary header the agent reads to find the header area and the JSON metadata cryptsetup
// prints from it are hostile. The input is tried as the start of a device and as the
// `luksDump --dump-json-metadata` output.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "guest-agent/unlock/luks2_header.hpp"
#include "test/fuzz/fuzz_support.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  fde::fuzz::MemFile device(data, size);
  if (auto area = fde::agent::read_luks2_header_area(device.fd())) {
    // What the agent relies on before copying: a bounded area that holds both headers.
    if (area->data_offset > fde::agent::max_luks2_header_area || area->header_size < fde::agent::luks2_min_hdr_size ||
        area->header_size > fde::agent::luks2_max_hdr_size)
      __builtin_trap();
  }
  const std::string_view json(reinterpret_cast<const char*>(data), size);
  (void)fde::agent::check_luks2_metadata(json, "aes-xts-plain64", 16 * 1024 * 1024);
  (void)fde::agent::is_null_cipher(json);
  return 0;
}
