// HMAC-SHA-256 and HKDF-SHA-256 through OpenSSL 3's EVP_MAC and EVP_KDF interfaces.
#include "common/crypto/mac.hpp"

#include <openssl/core_names.h>
#include <openssl/kdf.h>

#include "common/crypto/algorithms.hpp"
#include "common/crypto/openssl_util.hpp"

namespace fde::crypto {

using namespace detail;

namespace {

// OpenSSL wants a non-null pointer even for a zero-length octet string.
std::uint8_t* octets(ByteView bytes) {
  static std::uint8_t empty = 0;
  return const_cast<std::uint8_t*>(bytes.empty() ? &empty : bytes.data());
}

}  // namespace

Result<Bytes> hmac_sha256(ByteView key, ByteView data) {
  std::unique_ptr<EVP_MAC_CTX, Deleter<EVP_MAC_CTX_free>> ctx(EVP_MAC_CTX_new(algorithms::hmac()));
  if (!ctx) return fail(Errc::internal, "HMAC unavailable");
  char digest[] = "SHA256";
  OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0), OSSL_PARAM_construct_end()};
  Bytes out(hmac_sha256_size);
  std::size_t written = 0;
  if (EVP_MAC_init(ctx.get(), octets(key), key.size(), params) != 1 ||
      EVP_MAC_update(ctx.get(), octets(data), data.size()) != 1 ||
      EVP_MAC_final(ctx.get(), out.data(), &written, out.size()) != 1 || written != out.size())
    return fail(Errc::internal, "HMAC-SHA-256 failed: " + last_openssl_error());
  return out;
}

Result<SecretBytes> hkdf_sha256(ByteView ikm, ByteView salt, ByteView info, std::size_t length) {
  if (length == 0 || length > 255 * hmac_sha256_size)
    return fail(Errc::invalid_argument, "HKDF-SHA-256: cannot derive " + std::to_string(length) + " bytes");
  std::unique_ptr<EVP_KDF_CTX, Deleter<EVP_KDF_CTX_free>> ctx(EVP_KDF_CTX_new(algorithms::hkdf()));
  if (!ctx) return fail(Errc::internal, "HKDF unavailable");
  int mode = EVP_KDF_HKDF_MODE_EXTRACT_AND_EXPAND;
  char digest[] = "SHA256";
  OSSL_PARAM params[6];
  std::size_t n = 0;
  params[n++] = OSSL_PARAM_construct_int(OSSL_KDF_PARAM_MODE, &mode);
  params[n++] = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, digest, 0);
  params[n++] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, octets(ikm), ikm.size());
  if (!salt.empty()) params[n++] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, octets(salt), salt.size());
  params[n++] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, octets(info), info.size());
  params[n] = OSSL_PARAM_construct_end();
  SecretBytes out(length);
  if (EVP_KDF_derive(ctx.get(), out.data(), out.size(), params) != 1)
    return fail(Errc::internal, "HKDF-SHA-256 failed: " + last_openssl_error());
  return out;
}

}  // namespace fde::crypto
