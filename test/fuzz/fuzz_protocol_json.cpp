// libFuzzer target: the protocol v1 JSON bodies (docs/protocol.md), both directions. The
// verifier parses the guest's challenge and attest requests; the agent parses the verifier's
// challenge response, attest response (the sealed key) and error body. Whatever parses must
// serialize and parse again to the same message (the parsers are strict, so no lossy
// round trip may slip through).
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "common/protocol/messages.hpp"

namespace {

template <class Message, class Parse>
void round_trip(std::string_view body, Parse parse) {
  auto parsed = parse(body);
  if (!parsed) return;
  const std::string again = fde::protocol::serialize(*parsed);
  auto reparsed = parse(again);
  if (!reparsed) __builtin_trap();
  if (fde::protocol::serialize(*reparsed) != again) __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view body(reinterpret_cast<const char*>(data), size);
  using namespace fde::protocol;
  round_trip<ChallengeRequest>(body, [](std::string_view b) { return parse_challenge_request(b); });
  round_trip<AttestRequest>(body, [](std::string_view b) { return parse_attest_request(b); });
  round_trip<ChallengeResponse>(body, [](std::string_view b) { return parse_challenge_response(b); });
  round_trip<AttestResponse>(body, [](std::string_view b) { return parse_attest_response(b); });
  round_trip<ErrorResponse>(body, [](std::string_view b) { return parse_error_response(b); });
  return 0;
}
