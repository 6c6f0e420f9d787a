// One fetch per algorithm per process (thread-safe static initialisation); a missing
// algorithm is a broken installation, so it aborts rather than return null to callers that
// would fail obscurely later.
#include "common/crypto/algorithms.hpp"

#include <cstdlib>

namespace fde::crypto::algorithms {

namespace {
template <class T>
T* must(T* fetched) {
  if (fetched == nullptr) std::abort();
  return fetched;
}
}  // namespace

const EVP_MD* md(HashAlg alg) {
  static const EVP_MD* const sha256 = must(EVP_MD_fetch(nullptr, "SHA256", nullptr));
  static const EVP_MD* const sha384 = must(EVP_MD_fetch(nullptr, "SHA384", nullptr));
  static const EVP_MD* const sha512 = must(EVP_MD_fetch(nullptr, "SHA512", nullptr));
  switch (alg) {
    case HashAlg::sha256: return sha256;
    case HashAlg::sha384: return sha384;
    case HashAlg::sha512: return sha512;
  }
  return sha256;
}

EVP_MAC* hmac() {
  static EVP_MAC* const fetched = must(EVP_MAC_fetch(nullptr, "HMAC", nullptr));
  return fetched;
}

EVP_KDF* hkdf() {
  static EVP_KDF* const fetched = must(EVP_KDF_fetch(nullptr, "HKDF", nullptr));
  return fetched;
}

const EVP_CIPHER* aes_gcm(bool aes256) {
  static const EVP_CIPHER* const aes128 = must(EVP_CIPHER_fetch(nullptr, "AES-128-GCM", nullptr));
  static const EVP_CIPHER* const aes256_gcm = must(EVP_CIPHER_fetch(nullptr, "AES-256-GCM", nullptr));
  return aes256 ? aes256_gcm : aes128;
}

}  // namespace fde::crypto::algorithms
