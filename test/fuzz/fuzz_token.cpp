// libFuzzer target: token parser and verifier on arbitrary bytes (must never crash).
#include <cstddef>
#include <cstdint>

#include "common/token/token.hpp"
#include "common/token/token_verifier.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  fde::ByteView input(data, size);
  auto token = fde::token::parse_token(input);
  if (!token) return 0;
  // No roots and no device certificate: exercises every check's failure path, including
  // signature verification with whatever RAK the input carries.
  fde::token::TokenPolicy policy;
  policy.allow_legacy = true;
  policy.expected_challenge = fde::Bytes(64, 0);
  auto verdict = fde::token::verify_token(*token, {}, policy);
  // Nothing unauthenticated can pass.
  if (verdict.passed()) __builtin_trap();
  return 0;
}
