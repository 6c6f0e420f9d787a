// Loading secrets from files and systemd credentials: the nonce MAC secret (and any other
// secret that is not the KEK, which store/key_encryption_key.hpp loads itself).
#pragma once

#include <string>
#include <string_view>

#include "common/util/error.hpp"
#include "common/util/secret_bytes.hpp"

namespace fde::verifier {

// Where a secret comes from: exactly one of a file path or a systemd credential name.
struct SecretSource {
  std::string file;
  std::string credential;  // $CREDENTIALS_DIRECTORY/<name> (LoadCredential=)

  bool empty() const { return file.empty() && credential.empty(); }
  // "file /etc/x" or "credential nonce-secret", for messages.
  std::string describe() const;
};

// $CREDENTIALS_DIRECTORY/<name>; fails if the variable is unset or the name is not a plain
// file name.
Result<std::string> credential_path(std::string_view name);

// Reads a regular file that nobody but its owner can read or write (mode & 077 == 0). If the
// file is hex text (hex digits and an optional final newline) it is decoded; otherwise its
// bytes are the secret. The result must be min_size..max_size bytes. The content is read
// straight into SecretBytes; errors never quote it.
Result<SecretBytes> load_secret_file(const std::string& path, std::size_t min_size, std::size_t max_size);
Result<SecretBytes> load_secret(const SecretSource& source, std::size_t min_size, std::size_t max_size);
// A secret that is text used as is (a database password): the same file checks, one line of
// 1..max_size bytes without NUL, a final newline dropped; never hex-decoded.
Result<SecretBytes> load_secret_text(const SecretSource& source, std::size_t max_size);

}  // namespace fde::verifier
