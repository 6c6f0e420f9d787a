// OpenSSL algorithm implementations fetched once per process and shared. OpenSSL 3 otherwise
// fetches one implicitly on every use of EVP_sha256(), EVP_aes_256_gcm() or a name (a locked
// lookup in the provider store each time); fetched objects are immutable and safe to share
// between threads. They come from the default library context, the only one used here.
#pragma once

#include <openssl/evp.h>
#include <openssl/kdf.h>

#include "common/crypto/hash.hpp"

namespace fde::crypto::algorithms {

const EVP_MD* md(HashAlg alg);
EVP_MAC* hmac();
EVP_KDF* hkdf();
const EVP_CIPHER* aes_gcm(bool aes256);

}  // namespace fde::crypto::algorithms
