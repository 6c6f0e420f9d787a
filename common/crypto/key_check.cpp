// Domain-separated SHA-256 check values of the disk's keys.
#include "common/crypto/key_check.hpp"

#include "common/crypto/hash.hpp"

namespace fde::crypto {

std::string_view key_check_label(KeyCheckKind kind) {
  return kind == KeyCheckKind::released_key ? released_key_check_label : volume_key_check_label;
}

Bytes key_check_value(KeyCheckKind kind, ByteView key) {
  return digest_parts(HashAlg::sha256, {as_bytes(key_check_label(kind)), key});
}

bool key_matches_check(KeyCheckKind kind, ByteView key, ByteView expected) {
  if (expected.size() != key_check_size) return false;
  return equal_constant_time(key_check_value(kind, key), expected);
}

Result<Bytes> parse_key_check(std::string_view text) {
  if (text.size() != 2 * key_check_size)
    return fail(Errc::invalid_argument, "expected " + std::to_string(2 * key_check_size) + " hex digits (SHA-256), found " +
                                            std::to_string(text.size()) + " characters");
  auto value = hex_decode(text);
  if (!value || value->size() != key_check_size)
    return fail(Errc::invalid_argument, "expected " + std::to_string(2 * key_check_size) + " hex digits (SHA-256)");
  return std::move(*value);
}

}  // namespace fde::crypto
