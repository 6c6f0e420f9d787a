// Cryptographically secure random bytes (OpenSSL's DRBG).
#pragma once

#include "common/util/bytes.hpp"
#include "common/util/secret_bytes.hpp"

namespace fde::crypto {

Bytes random_bytes(std::size_t count);
SecretBytes random_secret(std::size_t count);

}  // namespace fde::crypto
