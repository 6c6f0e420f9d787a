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

// The DER of the named-curve OID of a NIST curve (RFC 5480 section 2.1.1.1), tag and length
// included; empty for other key types.
ByteView curve_oid_der(KeyType type) {
  static constexpr std::uint8_t p256[] = {0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07};
  static constexpr std::uint8_t p384[] = {0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22};
  static constexpr std::uint8_t p521[] = {0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x23};
  switch (type) {
    case KeyType::ec_p256: return p256;
    case KeyType::ec_p384: return p384;
    case KeyType::ec_p521: return p521;
    default: return {};
  }
}

// True when the key's curve is encoded by name (RFC 5480 namedCurve), the default; false
// for a key read from explicit curve parameters, which OpenSSL writes back explicitly.
bool has_named_curve_encoding(EVP_PKEY* key) {
  char encoding[32] = {};
  std::size_t len = 0;
  if (EVP_PKEY_get_utf8_string_param(key, OSSL_PKEY_PARAM_EC_ENCODING, encoding, sizeof encoding, &len) != 1) {
    ERR_clear_error();
    return false;
  }
  return std::string_view(encoding, len) == OSSL_PKEY_EC_ENCODING_GROUP;
}

// A DER tag and definite length (short or long form; lengths here stay below 65,536).
void append_der_header(Bytes& out, std::uint8_t tag, std::size_t length) {
  out.push_back(tag);
  if (length < 0x80) {
    out.push_back(static_cast<std::uint8_t>(length));
  } else if (length < 0x100) {
    out.push_back(0x81);
    out.push_back(static_cast<std::uint8_t>(length));
  } else {
    out.push_back(0x82);
    out.push_back(static_cast<std::uint8_t>(length >> 8));
    out.push_back(static_cast<std::uint8_t>(length));
  }
}

std::size_t der_header_size(std::size_t length) { return length < 0x80 ? 2 : length < 0x100 ? 3 : 4; }

// SubjectPublicKeyInfo of an EC key on a named curve (RFC 5480): SEQUENCE { SEQUENCE {
// id-ecPublicKey, the curve's OID }, BIT STRING { 0 unused bits, the point } }.
Bytes ec_spki_der(KeyType type, ByteView point) {
  static constexpr std::uint8_t ec_public_key_oid[] = {0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01};
  const ByteView curve = curve_oid_der(type);
  const std::size_t algorithm = sizeof ec_public_key_oid + curve.size();
  const std::size_t bits = 1 + point.size();
  const std::size_t body = der_header_size(algorithm) + algorithm + der_header_size(bits) + bits;
  Bytes out;
  out.reserve(der_header_size(body) + body);
  append_der_header(out, 0x30, body);
  append_der_header(out, 0x30, algorithm);
  out.insert(out.end(), std::begin(ec_public_key_oid), std::end(ec_public_key_oid));
  out.insert(out.end(), curve.begin(), curve.end());
  append_der_header(out, 0x03, bits);
  out.push_back(0x00);
  out.insert(out.end(), point.begin(), point.end());
  return out;
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
  // NIST curve keys are encoded here: OpenSSL 3.0's i2d_PUBKEY builds an encoder chain on
  // every call (about 50 us for a P-521 key), and the verifier names the token's RAK by its
  // SPKI digest in every attestation. The result is byte-identical (test_crypto checks it):
  // the point comes in the key's own form (compressed if it was read so), and a key read
  // with explicit curve parameters, which i2d_PUBKEY writes back as they were, is left to it.
  if (!curve_oid_der(type_).empty() && has_named_curve_encoding(key_.get())) {
    const Bytes point = ec_point();
    if (!point.empty()) return ec_spki_der(type_, point);
  }
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
