// HMAC-SHA-256 (RFC 2104) and HKDF-SHA-256 (RFC 5869) for keys the verifier derives and the
// records it authenticates; everything OpenSSL-specific stays in the .cpp.
#pragma once

#include <cstddef>

#include "common/util/bytes.hpp"
#include "common/util/error.hpp"
#include "common/util/secret_bytes.hpp"

namespace fde::crypto {

constexpr std::size_t hmac_sha256_size = 32;

// HMAC-SHA-256(key, data). Fails only if OpenSSL cannot allocate.
Result<Bytes> hmac_sha256(ByteView key, ByteView data);

// HKDF-SHA-256 extract-then-expand: `length` bytes (at most 255 * 32) derived from `ikm`
// under `info`; an empty salt means HashLen zero bytes, as RFC 5869 section 2.2 says.
Result<SecretBytes> hkdf_sha256(ByteView ikm, ByteView salt, ByteView info, std::size_t length);

}  // namespace fde::crypto
