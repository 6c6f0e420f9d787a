// libFuzzer target: the enrollment bundle parser (a file an admin imports) and its
// serializer, which must accept everything the parser accepts.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "common/protocol/enrollment_bundle.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto bundle = fde::protocol::parse_enrollment_bundle(text);
  if (bundle) {
    auto written = fde::protocol::serialize_enrollment_bundle(*bundle);
    if (!written) std::abort();
    auto again = fde::protocol::parse_enrollment_bundle(fde::as_text(written->view()));
    if (!again || again->image_id != bundle->image_id || again->luks_uuid != bundle->luks_uuid ||
        !fde::equal_constant_time(again->disk_key.view(), bundle->disk_key.view()))
      std::abort();
  }
  return 0;
}
