// Secret files and systemd credentials, read without leaving copies behind.
#include "verifier-daemon/config/secret_file.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace fde::verifier {

namespace {

int hex_value(std::uint8_t c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Hex text: an even number of hex digits, then at most one newline.
bool is_hex_text(ByteView content) {
  std::size_t digits = content.size();
  if (digits > 0 && content[digits - 1] == '\n') --digits;
  if (digits == 0 || digits % 2 != 0) return false;
  for (std::size_t i = 0; i < digits; ++i)
    if (hex_value(content[i]) < 0) return false;
  return true;
}

std::string octal_mode(mode_t mode) {
  char buffer[8];
  std::snprintf(buffer, sizeof buffer, "%04o", static_cast<unsigned>(mode & 07777));
  return buffer;
}

}  // namespace

std::string SecretSource::describe() const {
  return file.empty() ? "credential " + credential : "file " + file;
}

Result<std::string> credential_path(std::string_view name) {
  if (name.empty() || name.find('/') != std::string_view::npos || name == "." || name == "..")
    return fail(Errc::invalid_argument, "credential name \"" + std::string(name) + "\" is not a plain file name");
  const char* directory = std::getenv("CREDENTIALS_DIRECTORY");
  if (directory == nullptr || *directory == '\0')
    return fail(Errc::not_found, "credential " + std::string(name) +
                                     ": $CREDENTIALS_DIRECTORY is not set (the unit needs LoadCredential=" +
                                     std::string(name) + ":...)");
  return std::string(directory) + "/" + std::string(name);
}

// Reads a regular file of at most max_file bytes that only its owner may read or write.
static Result<SecretBytes> read_private_file(const std::string& path, std::size_t max_file, std::size_t max_size) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY);
  if (fd < 0) return fail(Errc::io, path + ": " + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return fail(Errc::invalid_argument, path + ": not a regular file");
  }
  if ((st.st_mode & 077) != 0) {
    ::close(fd);
    return fail(Errc::invalid_argument, path + ": mode " + octal_mode(st.st_mode) +
                                            " lets group or others read or write a secret; chmod 0600 it");
  }
  if (static_cast<std::size_t>(st.st_size) > max_file) {
    ::close(fd);
    return fail(Errc::too_large, path + ": " + std::to_string(st.st_size) + " bytes, more than a secret of at most " +
                                     std::to_string(max_size) + " bytes takes");
  }
  SecretBytes content(static_cast<std::size_t>(st.st_size));
  std::size_t got = 0;
  while (got < content.size()) {
    const ssize_t n = ::read(fd, content.data() + got, content.size() - got);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int saved = errno;
      ::close(fd);
      return fail(Errc::io, path + ": " + std::strerror(saved));
    }
    if (n == 0) break;
    got += static_cast<std::size_t>(n);
  }
  ::close(fd);
  if (got == content.size()) return content;
  return SecretBytes::copy_of(content.view().first(got));
}

Result<SecretBytes> load_secret_file(const std::string& path, std::size_t min_size, std::size_t max_size) {
  // Hex text may be twice the size plus a newline.
  auto content = read_private_file(path, 2 * max_size + 1, max_size);
  if (!content) return tl::unexpected(content.error());
  ByteView bytes = content->view();

  SecretBytes secret;
  if (is_hex_text(bytes)) {
    const std::size_t digits = bytes.back() == '\n' ? bytes.size() - 1 : bytes.size();
    secret = SecretBytes(digits / 2);
    for (std::size_t i = 0; i < secret.size(); ++i)
      secret.data()[i] = static_cast<std::uint8_t>(hex_value(bytes[2 * i]) << 4 | hex_value(bytes[2 * i + 1]));
  } else {
    secret = SecretBytes::copy_of(bytes);
  }
  if (secret.size() < min_size || secret.size() > max_size)
    return fail(Errc::invalid_argument, path + ": the secret has " + std::to_string(secret.size()) +
                                            " bytes; it needs " + std::to_string(min_size) + ".." +
                                            std::to_string(max_size) + " (raw, or as hex text)");
  return secret;
}

Result<SecretBytes> load_secret(const SecretSource& source, std::size_t min_size, std::size_t max_size) {
  if (!source.file.empty() && !source.credential.empty())
    return fail(Errc::invalid_argument, "give a secret file or a credential, not both");
  if (!source.file.empty()) return load_secret_file(source.file, min_size, max_size);
  if (source.credential.empty()) return fail(Errc::invalid_argument, "no secret file or credential configured");
  auto path = credential_path(source.credential);
  if (!path) return tl::unexpected(path.error());
  return load_secret_file(*path, min_size, max_size);
}

Result<SecretBytes> load_secret_text(const SecretSource& source, std::size_t max_size) {
  std::string path = source.file;
  if (path.empty()) {
    auto credential = credential_path(source.credential);
    if (!credential) return tl::unexpected(credential.error());
    path = *credential;
  }
  auto content = read_private_file(path, max_size + 1, max_size);
  if (!content) return tl::unexpected(content.error());
  ByteView bytes = content->view();
  if (!bytes.empty() && bytes.back() == '\n') bytes = bytes.first(bytes.size() - 1);
  if (bytes.empty() || bytes.size() > max_size)
    return fail(Errc::invalid_argument, path + ": the secret must be 1.." + std::to_string(max_size) + " bytes of text");
  for (std::uint8_t c : bytes)
    if (c == '\0' || c == '\n' || c == '\r')
      return fail(Errc::invalid_argument, path + ": the secret must be one line of text without NUL bytes");
  return SecretBytes::copy_of(bytes);
}

}  // namespace fde::verifier
