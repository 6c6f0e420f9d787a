// HPKE (RFC 9180) base mode with DHKEM(X25519, HKDF-SHA256) and HKDF-SHA256, built on
// OpenSSL 3.0 primitives (Debian 12's OpenSSL has no HPKE API). Seals the disk key to the
// agent's ephemeral key (docs/protocol.md, "HPKE").
#pragma once

#include <openssl/types.h>

#include <cstdint>
#include <memory>

#include "common/util/bytes.hpp"
#include "common/util/secret_bytes.hpp"

namespace fde::crypto::hpke {

constexpr std::uint16_t kem_x25519_sha256 = 0x0020;
constexpr std::uint16_t kdf_hkdf_sha256 = 0x0001;
constexpr std::size_t x25519_key_size = 32;
constexpr std::size_t tag_size = 16;

// The protocol uses AES-256-GCM; AES-128-GCM is here for the RFC 9180 A.1 test vector.
enum class Aead : std::uint16_t { aes128_gcm = 0x0001, aes256_gcm = 0x0002 };

class X25519KeyPair {
 public:
  static X25519KeyPair generate();
  static Result<X25519KeyPair> from_private(ByteView private_key);
  const Bytes& public_key() const { return public_key_; }
  const SecretBytes& private_key() const { return private_key_; }
  // The OpenSSL key made once from private_key(): making it computes the public key (one
  // X25519 multiplication), so the key agreement reuses it instead of making another.
  const std::shared_ptr<EVP_PKEY>& openssl_key() const { return key_; }

 private:
  SecretBytes private_key_;
  Bytes public_key_;
  std::shared_ptr<EVP_PKEY> key_;
};

struct Sealed {
  Bytes enc;         // the encapsulated key (the sender's ephemeral public key), 32 bytes
  Bytes ciphertext;  // AEAD ciphertext || 16-byte tag
};

// SealBase(pkR, info, aad, pt) with a fresh ephemeral key (sequence number 0).
Result<Sealed> seal(ByteView recipient_public_key, ByteView info, ByteView aad, ByteView plaintext,
                    Aead aead = Aead::aes256_gcm);
// The same with a given ephemeral key, for the deterministic RFC test vectors.
Result<Sealed> seal_with_ephemeral(const X25519KeyPair& ephemeral, ByteView recipient_public_key, ByteView info,
                                   ByteView aad, ByteView plaintext, Aead aead = Aead::aes256_gcm);
// OpenBase(enc, skR, info, aad, ct); fails with verification_failed if the tag does not verify.
Result<SecretBytes> open(const X25519KeyPair& recipient, ByteView enc, ByteView info, ByteView aad,
                         ByteView ciphertext, Aead aead = Aead::aes256_gcm);

// Exposed for the test vectors: the KEM shared secret and the key schedule's key/nonce.
struct KeySchedule {
  SecretBytes key;
  Bytes base_nonce;
};
Result<SecretBytes> encap_shared_secret(const X25519KeyPair& ephemeral, ByteView recipient_public_key);
Result<KeySchedule> key_schedule(const SecretBytes& shared_secret, ByteView info, Aead aead);

}  // namespace fde::crypto::hpke
