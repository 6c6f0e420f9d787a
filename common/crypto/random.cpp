// Random bytes from OpenSSL's DRBG; failure to get randomness is fatal.
#include "common/crypto/random.hpp"

#include <cstdlib>

#include <openssl/rand.h>

namespace fde::crypto {

Bytes random_bytes(std::size_t count) {
  Bytes out(count);
  if (count > 0 && RAND_bytes(out.data(), static_cast<int>(count)) != 1) std::abort();
  return out;
}

SecretBytes random_secret(std::size_t count) {
  SecretBytes out(count);
  if (count > 0 && RAND_priv_bytes(out.data(), static_cast<int>(count)) != 1) std::abort();
  return out;
}

}  // namespace fde::crypto
