// libFuzzer target: the reference-values JSON parser and the reference-implementation importer.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "common/reference/reference_values.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto document = fde::reference::parse_reference_values(text);
  if (document) (void)fde::reference::serialize_reference_values(*document);
  (void)fde::reference::import_image_reference_measurement(text, {});
  return 0;
}
