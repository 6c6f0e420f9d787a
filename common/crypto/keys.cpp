// Public/private key handling on OpenSSL 3 (EVP_PKEY with provider parameters).
#include "common/crypto/keys.hpp"

#include <openssl/core_names.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>

#include "common/crypto/openssl_util.hpp"

namespace fde::crypto {

using namespace detail;

namespace {

KeyType classify(EVP_PKEY* key) {
  if (key == nullptr) return KeyType::other;
  if (EVP_PKEY_is_a(key, "RSA")) return KeyType::rsa;
  if (EVP_PKEY_is_a(key, "SM2")) return KeyType::sm2;
  if (EVP_PKEY_is_a(key, "EC")) {
    char group[64] = {};
    std::size_t len = 0;
    if (EVP_PKEY_get_utf8_string_param(key, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof group, &len) != 1)
      return KeyType::other;
    std::string_view name(group, len);
    if (name == "prime256v1" || name == "P-256") return KeyType::ec_p256;
    if (name == "secp384r1" || name == "P-384") return KeyType::ec_p384;
    if (name == "secp521r1" || name == "P-521") return KeyType::ec_p521;
    if (name == "SM2") return KeyType::sm2;
  }
  return KeyType::other;
}

const char* curve_name(KeyType type) {
  switch (type) {
    case KeyType::ec_p256: return "P-256";
    case KeyType::ec_p384: return "P-384";
    case KeyType::ec_p521: return "P-521";
    default: return nullptr;
  }
}

std::size_t field_bytes(KeyType type) {
  switch (type) {
    case KeyType::ec_p256: return 32;
    case KeyType::ec_p384: return 48;
    case KeyType::ec_p521: return 66;
    default: return 0;
  }
}

}  // namespace

std::string_view key_type_name(KeyType type) {
  switch (type) {
    case KeyType::rsa: return "RSA";
    case KeyType::ec_p256: return "EC P-256";
    case KeyType::ec_p384: return "EC P-384";
    case KeyType::ec_p521: return "EC P-521";
    case KeyType::sm2: return "SM2";
    case KeyType::other: return "unsupported key type";
  }
  return "unsupported key type";
}

PublicKey::PublicKey(std::shared_ptr<EVP_PKEY> key) : key_(std::move(key)), type_(classify(key_.get())) {}

Result<PublicKey> PublicKey::from_spki_der(ByteView der) {
  const unsigned char* p = der.data();
  EVP_PKEY* key = d2i_PUBKEY(nullptr, &p, static_cast<long>(der.size()));
  if (key == nullptr) return fail(Errc::malformed, "not a DER SubjectPublicKeyInfo: " + last_openssl_error());
  PublicKey out(share_pkey(key));
  if (p != der.data() + der.size()) return fail(Errc::malformed, "trailing bytes after SubjectPublicKeyInfo");
  return out;
}

Result<PublicKey> PublicKey::from_ec_point(KeyType curve, ByteView point) {
  const char* name = curve_name(curve);
  if (name == nullptr) return fail(Errc::unsupported, "not a supported EC curve");
  std::size_t expected = 1 + 2 * field_bytes(curve);
  if (point.size() != expected || point[0] != 0x04)
    return fail(Errc::malformed, std::string("expected an uncompressed ") + name + " point of " +
                                     std::to_string(expected) + " bytes, found " + std::to_string(point.size()));
  OSSL_PARAM params[] = {
      OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, const_cast<char*>(name), 0),
      OSSL_PARAM_construct_octet_string(OSSL_PKEY_PARAM_PUB_KEY, const_cast<std::uint8_t*>(point.data()),
                                        point.size()),
      OSSL_PARAM_construct_end()};
  PkeyCtxPtr ctx(EVP_PKEY_CTX_new_from_name(nullptr, "EC", nullptr));
  EVP_PKEY* key = nullptr;
  // Decoding the point checks that it lies on the curve.
  if (!ctx || EVP_PKEY_fromdata_init(ctx.get()) != 1 ||
      EVP_PKEY_fromdata(ctx.get(), &key, EVP_PKEY_PUBLIC_KEY, params) != 1 || key == nullptr)
    return fail(Errc::malformed, std::string("not a valid ") + name + " point: " + last_openssl_error());
  return PublicKey(share_pkey(key));
}

Result<PublicKey> PublicKey::from_pem(std::string_view pem) {
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  if (!bio) return fail(Errc::internal, "BIO_new_mem_buf failed");
  if (EVP_PKEY* key = PEM_read_bio_PUBKEY(bio.get(), nullptr, nullptr, nullptr)) return PublicKey(share_pkey(key));
  ERR_clear_error();
  auto priv = PrivateKey::from_pem(pem);
  if (!priv) return fail(Errc::malformed, "no PEM public or private key found");
  return priv->public_key();
}

int PublicKey::bits() const { return EVP_PKEY_get_bits(key_.get()); }

Bytes PublicKey::spki_der() const {
  unsigned char* der = nullptr;
  int len = i2d_PUBKEY(key_.get(), &der);
  if (len <= 0) return {};
  Bytes out(der, der + len);
  OPENSSL_free(der);
  return out;
}

Bytes PublicKey::ec_point() const {
  if (field_bytes(type_) == 0) return {};
  std::size_t len = 0;
  if (EVP_PKEY_get_octet_string_param(key_.get(), OSSL_PKEY_PARAM_PUB_KEY, nullptr, 0, &len) != 1) return {};
  Bytes out(len);
  if (EVP_PKEY_get_octet_string_param(key_.get(), OSSL_PKEY_PARAM_PUB_KEY, out.data(), out.size(), &len) != 1)
    return {};
  out.resize(len);
  return out;
}

bool PublicKey::equals(const PublicKey& other) const { return EVP_PKEY_eq(key_.get(), other.key_.get()) == 1; }

std::string PublicKey::description() const {
  if (type_ == KeyType::rsa) return "RSA-" + std::to_string(bits());
  return std::string(key_type_name(type_));
}

PrivateKey::PrivateKey(std::shared_ptr<EVP_PKEY> key) : key_(std::move(key)), type_(classify(key_.get())) {}

Result<PrivateKey> PrivateKey::generate(KeyType type, int rsa_bits) {
  EVP_PKEY* key = nullptr;
  if (type == KeyType::rsa) {
    key = EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", static_cast<std::size_t>(rsa_bits));
  } else if (const char* name = curve_name(type)) {
    key = EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", name);
  } else {
    return fail(Errc::unsupported, "cannot generate keys of this type");
  }
  if (key == nullptr) return fail(Errc::internal, "key generation failed: " + last_openssl_error());
  return PrivateKey(share_pkey(key));
}

Result<PrivateKey> PrivateKey::from_pem(std::string_view pem) {
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  if (!bio) return fail(Errc::internal, "BIO_new_mem_buf failed");
  EVP_PKEY* key = PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr);
  if (key == nullptr) {
    ERR_clear_error();
    return fail(Errc::malformed, "no unencrypted PEM private key found");
  }
  return PrivateKey(share_pkey(key));
}

SecretBytes PrivateKey::to_pem() const {
  // A secure-memory BIO clears its buffer when freed, so the only copy that outlives this
  // call is the SecretBytes.
  BioPtr bio(BIO_new(BIO_s_secmem()));
  if (!bio || PEM_write_bio_PrivateKey(bio.get(), key_.get(), nullptr, nullptr, 0, nullptr, nullptr) != 1) return {};
  char* data = nullptr;
  long len = BIO_get_mem_data(bio.get(), &data);
  if (len <= 0) return {};
  return SecretBytes::copy_of({reinterpret_cast<const std::uint8_t*>(data), static_cast<std::size_t>(len)});
}

PublicKey PrivateKey::public_key() const {
  unsigned char* der = nullptr;
  int len = i2d_PUBKEY(key_.get(), &der);
  const unsigned char* p = der;
  EVP_PKEY* pub = len > 0 ? d2i_PUBKEY(nullptr, &p, len) : nullptr;
  OPENSSL_free(der);
  return PublicKey(share_pkey(pub));
}

}  // namespace fde::crypto
