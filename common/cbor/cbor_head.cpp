// One CBOR head, read by hand (see cbor_head.hpp for why this is not a parser).
#include "common/cbor/cbor_head.hpp"

namespace fde::cbor {

Result<Head> read_head(ByteView input) {
  if (input.empty()) return fail(Errc::malformed, "CBOR: input ends before a head");
  Head head;
  head.major_type = static_cast<std::uint8_t>(input[0] >> 5);
  const std::uint8_t info = input[0] & 0x1f;
  if (info < 24) {
    head.argument = info;
    head.size = 1;
    return head;
  }
  if (info > 27) return fail(Errc::malformed, "CBOR: indefinite length or reserved head");
  const std::size_t extra = std::size_t{1} << (info - 24);
  if (input.size() < 1 + extra) return fail(Errc::malformed, "CBOR: input ends inside a head");
  for (std::size_t i = 0; i < extra; ++i) head.argument = (head.argument << 8) | input[1 + i];
  head.size = 1 + extra;
  return head;
}

}  // namespace fde::cbor
