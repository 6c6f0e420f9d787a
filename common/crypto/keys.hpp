// Public and private keys behind a small API, so nothing outside crypto/ touches EVP_PKEY.
#pragma once

#include <memory>
#include <string>

#include "common/util/bytes.hpp"
#include "common/util/error.hpp"
#include "common/util/secret_bytes.hpp"

typedef struct evp_pkey_st EVP_PKEY;

namespace fde::crypto {

enum class KeyType { rsa, ec_p256, ec_p384, ec_p521, sm2, other };
std::string_view key_type_name(KeyType type);

class PublicKey {
 public:
  // DER SubjectPublicKeyInfo (the legacy virtCCA RAK encoding, 550 bytes for RSA-4096).
  static Result<PublicKey> from_spki_der(ByteView der);
  // Uncompressed SEC1 point 0x04||X||Y on the given curve (the new virtCCA RAK encoding,
  // 133 bytes for P-521; Arm CCA uses 97 bytes for P-384).
  static Result<PublicKey> from_ec_point(KeyType curve, ByteView point);
  // PEM "PUBLIC KEY", or the public half of a PEM private key.
  static Result<PublicKey> from_pem(std::string_view pem);

  KeyType type() const { return type_; }
  int bits() const;
  Bytes spki_der() const;
  // 0x04||X||Y for EC keys; empty for others.
  Bytes ec_point() const;
  bool equals(const PublicKey& other) const;
  // "RSA-4096", "EC P-521"
  std::string description() const;

  EVP_PKEY* native() const { return key_.get(); }
  explicit PublicKey(std::shared_ptr<EVP_PKEY> key);

 private:
  std::shared_ptr<EVP_PKEY> key_;
  KeyType type_ = KeyType::other;
};

// A private key; used by the simulated platform and tests (never by the verifier).
class PrivateKey {
 public:
  static Result<PrivateKey> generate(KeyType type, int rsa_bits = 4096);
  static Result<PrivateKey> from_pem(std::string_view pem);
  // Unencrypted PKCS#8 PEM, as a secret so the text is wiped when dropped. Empty if
  // OpenSSL cannot encode the key.
  SecretBytes to_pem() const;

  KeyType type() const { return type_; }
  PublicKey public_key() const;
  EVP_PKEY* native() const { return key_.get(); }
  explicit PrivateKey(std::shared_ptr<EVP_PKEY> key);

 private:
  std::shared_ptr<EVP_PKEY> key_;
  KeyType type_ = KeyType::other;
};

}  // namespace fde::crypto
