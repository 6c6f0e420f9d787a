// The key-encryption key that wraps disk keys at rest (docs/fde-verifierd.md; docs/threat-model.md). It is loaded
// from a 0600 file or a systemd credential and never stored in the database.
#pragma once

#include <string>
#include <string_view>

#include "common/util/bytes.hpp"
#include "common/util/secret_bytes.hpp"

namespace fde::verifier {

class KeyEncryptionKey {
 public:
  static constexpr std::size_t key_size = 32;  // AES-256-GCM
  // A file holding 32 raw bytes or 64 hex digits (plus an optional newline). Refuses a file
  // readable or writable by group or others, and anything of the wrong size.
  static Result<KeyEncryptionKey> load_file(const std::string& path);
  // $CREDENTIALS_DIRECTORY/<name> (systemd LoadCredential=), same format.
  static Result<KeyEncryptionKey> load_credential(std::string_view name);
  static Result<KeyEncryptionKey> from_bytes(ByteView key);

  // AES-256-GCM with a random 96-bit nonce; the image id is the AAD, so a wrapped key
  // copied to another image's row does not unwrap. Output: nonce || ciphertext || tag.
  Bytes wrap(std::string_view image_id, const SecretBytes& disk_key) const;
  Result<SecretBytes> unwrap(std::string_view image_id, ByteView wrapped) const;

  // A 32-byte key for another purpose, HKDF-SHA-256(KEK, info = label): each label gives an
  // independent key, and none of them reveals the KEK (the audit chain's MAC key is one).
  Result<SecretBytes> derive_key(std::string_view label) const;

  // The raw key, only for `fde-admin rotate-kek`, which hands a new KEK to the daemon over the
  // admin socket. Never log or store it.
  ByteView bytes() const { return key_.view(); }

  // False for a default-constructed (moved-from) object, which can wrap nothing.
  bool loaded() const { return key_.size() == key_size; }

 private:
  SecretBytes key_;
};

}  // namespace fde::verifier
