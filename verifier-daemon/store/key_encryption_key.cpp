// The key-encryption key: loading from a private file or systemd credential, AES-256-GCM wrap/unwrap.
#include "verifier-daemon/store/key_encryption_key.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>

#include <openssl/evp.h>

#include "common/crypto/mac.hpp"
#include "common/crypto/random.hpp"

namespace fde::verifier {

namespace {

constexpr std::size_t gcm_nonce_size = 12;
constexpr std::size_t gcm_tag_size = 16;
constexpr std::size_t hex_key_size = 2 * KeyEncryptionKey::key_size;

using CipherCtx = std::unique_ptr<EVP_CIPHER_CTX, decltype(&EVP_CIPHER_CTX_free)>;

int hex_value(std::uint8_t c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Decodes straight into a SecretBytes so that no unwiped std::vector ever holds the key
// (fde::hex_decode returns Bytes).
Result<SecretBytes> decode_key_text(ByteView content) {
  if (content.size() == KeyEncryptionKey::key_size) return SecretBytes::copy_of(content);
  if (content.size() == hex_key_size + 1 && content.back() == '\n') content = content.first(hex_key_size);
  if (content.size() != hex_key_size)
    return fail(Errc::invalid_argument, "expected 32 raw bytes or 64 hex digits, found " +
                                            std::to_string(content.size()) + " bytes");
  SecretBytes key(KeyEncryptionKey::key_size);
  for (std::size_t i = 0; i < KeyEncryptionKey::key_size; ++i) {
    int high = hex_value(content[2 * i]);
    int low = hex_value(content[2 * i + 1]);
    if (high < 0 || low < 0) return fail(Errc::invalid_argument, "64 bytes that are not all hex digits");
    key.data()[i] = static_cast<std::uint8_t>((high << 4) | low);
  }
  return key;
}

}  // namespace

Result<KeyEncryptionKey> KeyEncryptionKey::load_file(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY);
  if (fd < 0) return fail(Errc::io, "key-encryption key " + path + ": " + std::strerror(errno));
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  struct stat st {};
  if (::fstat(fd, &st) != 0) return fail(Errc::io, "key-encryption key " + path + ": " + std::strerror(errno));
  if (!S_ISREG(st.st_mode)) return fail(Errc::invalid_argument, "key-encryption key " + path + ": not a regular file");
  // Checked on the opened file, not the path, so a swap between check and read is harmless.
  if ((st.st_mode & 077) != 0) {
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
    return fail(Errc::invalid_argument, "key-encryption key " + path + ": mode " + mode +
                                            " gives group or others access; chmod 600 (or 400) it");
  }
  // One byte more than the largest valid file, so "too long" is seen without reading it all.
  std::array<std::uint8_t, hex_key_size + 2> buffer{};
  struct Wiper {
    std::span<std::uint8_t> bytes;
    ~Wiper() { wipe_bytes(bytes); }
  } wiper{buffer};
  std::size_t length = 0;
  while (length < buffer.size()) {
    ssize_t n = ::read(fd, buffer.data() + length, buffer.size() - length);
    if (n < 0) {
      if (errno == EINTR) continue;
      return fail(Errc::io, "key-encryption key " + path + ": " + std::strerror(errno));
    }
    if (n == 0) break;
    length += static_cast<std::size_t>(n);
  }
  auto key = decode_key_text(ByteView(buffer.data(), length));
  if (!key) return fail_with_context("key-encryption key " + path, key.error());
  KeyEncryptionKey out;
  out.key_ = std::move(*key);
  return out;
}

Result<KeyEncryptionKey> KeyEncryptionKey::load_credential(std::string_view name) {
  const char* directory = std::getenv("CREDENTIALS_DIRECTORY");
  if (directory == nullptr || *directory == '\0')
    return fail(Errc::not_found, "key-encryption key credential " + std::string(name) +
                                     ": CREDENTIALS_DIRECTORY is not set (no LoadCredential= in the unit?)");
  // A credential name is one path component; anything else would read outside the directory.
  if (name.empty() || name == "." || name == ".." || name.find('/') != std::string_view::npos ||
      name.find('\0') != std::string_view::npos)
    return fail(Errc::invalid_argument, "key-encryption key credential: invalid name '" + std::string(name) + "'");
  return load_file(std::string(directory) + "/" + std::string(name));
}

Result<KeyEncryptionKey> KeyEncryptionKey::from_bytes(ByteView key) {
  if (key.size() != key_size)
    return fail(Errc::invalid_argument, "key-encryption key: expected " + std::to_string(key_size) + " bytes, found " +
                                            std::to_string(key.size()));
  KeyEncryptionKey out;
  out.key_ = SecretBytes::copy_of(key);
  return out;
}

Bytes KeyEncryptionKey::wrap(std::string_view image_id, const SecretBytes& disk_key) const {
  // A default-constructed KEK is a programming error (open_sqlite_store refuses one); wrapping
  // under a missing key must not silently produce something.
  if (!loaded()) std::abort();
  Bytes out(gcm_nonce_size + disk_key.size() + gcm_tag_size);
  Bytes nonce = crypto::random_bytes(gcm_nonce_size);
  std::copy(nonce.begin(), nonce.end(), out.begin());
  CipherCtx ctx(EVP_CIPHER_CTX_new(), EVP_CIPHER_CTX_free);
  int n = 0;
  // These calls fail only on allocation failure; a half-wrapped key must never be stored.
  if (!ctx || EVP_EncryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, key_.data(), nonce.data()) != 1 ||
      EVP_EncryptUpdate(ctx.get(), nullptr, &n, reinterpret_cast<const unsigned char*>(image_id.data()),
                        static_cast<int>(image_id.size())) != 1 ||
      EVP_EncryptUpdate(ctx.get(), out.data() + gcm_nonce_size, &n, disk_key.data(),
                        static_cast<int>(disk_key.size())) != 1 ||
      static_cast<std::size_t>(n) != disk_key.size())
    std::abort();
  int final_length = 0;
  if (EVP_EncryptFinal_ex(ctx.get(), out.data() + gcm_nonce_size + disk_key.size(), &final_length) != 1 ||
      final_length != 0 ||
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_GET_TAG, static_cast<int>(gcm_tag_size),
                          out.data() + gcm_nonce_size + disk_key.size()) != 1)
    std::abort();
  return out;
}

Result<SecretBytes> KeyEncryptionKey::unwrap(std::string_view image_id, ByteView wrapped) const {
  if (!loaded()) return fail(Errc::invalid_argument, "key-encryption key: not loaded");
  if (wrapped.size() < gcm_nonce_size + gcm_tag_size)
    return fail(Errc::malformed, "wrapped disk key: " + std::to_string(wrapped.size()) + " bytes is too short");
  ByteView nonce = wrapped.first(gcm_nonce_size);
  ByteView ciphertext = wrapped.subspan(gcm_nonce_size, wrapped.size() - gcm_nonce_size - gcm_tag_size);
  ByteView tag = wrapped.last(gcm_tag_size);
  // EVP_CTRL_GCM_SET_TAG takes a non-const pointer; copy the (public) tag.
  std::array<std::uint8_t, gcm_tag_size> tag_copy{};
  std::copy(tag.begin(), tag.end(), tag_copy.begin());
  SecretBytes plaintext(ciphertext.size());
  CipherCtx ctx(EVP_CIPHER_CTX_new(), EVP_CIPHER_CTX_free);
  int n = 0;
  if (!ctx || EVP_DecryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, key_.data(), nonce.data()) != 1 ||
      EVP_DecryptUpdate(ctx.get(), nullptr, &n, reinterpret_cast<const unsigned char*>(image_id.data()),
                        static_cast<int>(image_id.size())) != 1 ||
      EVP_DecryptUpdate(ctx.get(), plaintext.data(), &n, ciphertext.data(), static_cast<int>(ciphertext.size())) != 1 ||
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_TAG, static_cast<int>(gcm_tag_size), tag_copy.data()) != 1)
    return fail(Errc::internal, "wrapped disk key: AES-256-GCM setup failed");
  int final_length = 0;
  // On a bad tag the plaintext buffer (already filled by DecryptUpdate) is wiped when
  // `plaintext` goes out of scope; nothing unauthenticated is returned.
  if (EVP_DecryptFinal_ex(ctx.get(), plaintext.data() + ciphertext.size(), &final_length) != 1)
    return fail(Errc::verification_failed,
                "wrapped disk key does not unwrap for image " + std::string(image_id) +
                    " (wrong key-encryption key, a corrupted row, or a key copied from another image)");
  return plaintext;
}

Result<SecretBytes> KeyEncryptionKey::derive_key(std::string_view label) const {
  if (!loaded()) return fail(Errc::invalid_argument, "key-encryption key: not loaded");
  if (label.empty()) return fail(Errc::invalid_argument, "key-encryption key: a derived key needs a label");
  return crypto::hkdf_sha256(key_.view(), {}, as_bytes(label), key_size);
}

}  // namespace fde::verifier
