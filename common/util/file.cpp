// Bounded file reading and atomic file writing.
#include "common/util/file.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace fde {

Result<Bytes> read_file(const std::string& path, std::size_t max_size) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return fail(Errc::io, path + ": " + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || S_ISDIR(st.st_mode)) {
    ::close(fd);
    return fail(Errc::io, path + ": not a readable file");
  }
  if (st.st_size > 0 && static_cast<std::size_t>(st.st_size) > max_size) {
    ::close(fd);
    return fail(Errc::too_large, path + ": " + std::to_string(st.st_size) + " bytes exceeds the limit of " +
                                     std::to_string(max_size));
  }
  Bytes out;
  std::uint8_t buffer[16384];
  for (;;) {
    ssize_t n = ::read(fd, buffer, sizeof buffer);
    if (n < 0) {
      if (errno == EINTR) continue;
      int saved = errno;
      ::close(fd);
      return fail(Errc::io, path + ": " + std::strerror(saved));
    }
    if (n == 0) break;
    if (out.size() + static_cast<std::size_t>(n) > max_size) {
      ::close(fd);
      return fail(Errc::too_large, path + ": exceeds the limit of " + std::to_string(max_size) + " bytes");
    }
    out.insert(out.end(), buffer, buffer + n);
  }
  ::close(fd);
  return out;
}

Result<Bytes> read_binary_or_hex_file(const std::string& path, std::size_t max_binary_size) {
  // Hex text is twice as long as the binary plus line breaks; allow for that in the read.
  auto raw = read_file(path, max_binary_size * 2 + 4096);
  if (!raw) return tl::unexpected(raw.error());
  bool all_hex = !raw->empty();
  for (auto c : *raw) {
    bool hex = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
    bool space = c == ' ' || c == '\n' || c == '\r' || c == '\t';
    if (!hex && !space) {
      all_hex = false;
      break;
    }
  }
  Bytes bytes;
  if (all_hex) {
    auto decoded = hex_decode(as_text(*raw));
    if (!decoded) return fail_with_context(path, decoded.error());
    bytes = std::move(*decoded);
  } else {
    bytes = std::move(*raw);
  }
  if (bytes.size() > max_binary_size)
    return fail(Errc::too_large, path + ": " + std::to_string(bytes.size()) + " bytes exceeds the limit of " +
                                     std::to_string(max_binary_size));
  return bytes;
}

Result<void> write_file_atomic(const std::string& path, ByteView data, mode_t mode) {
  // Write beside the target and rename, so a reader never sees half a key or token and an
  // existing file with looser permissions is replaced rather than reused.
  std::string temporary = path + ".tmp." + std::to_string(::getpid());
  int fd = ::open(temporary.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode);
  if (fd < 0) return fail(Errc::io, path + ": " + std::strerror(errno));
  auto failed = [&](int saved) {
    ::close(fd);
    ::unlink(temporary.c_str());
    return fail(Errc::io, path + ": " + std::strerror(saved));
  };
  // open() applied the umask; set the exact mode so key files are 0600 whatever it is.
  if (::fchmod(fd, mode) != 0) return failed(errno);
  std::size_t written = 0;
  while (written < data.size()) {
    ssize_t n = ::write(fd, data.data() + written, data.size() - written);
    if (n < 0) {
      if (errno == EINTR) continue;
      return failed(errno);
    }
    written += static_cast<std::size_t>(n);
  }
  if (::fsync(fd) != 0) return failed(errno);
  if (::close(fd) != 0) {
    int saved = errno;
    ::unlink(temporary.c_str());
    return fail(Errc::io, path + ": " + std::strerror(saved));
  }
  if (::rename(temporary.c_str(), path.c_str()) != 0) {
    int saved = errno;
    ::unlink(temporary.c_str());
    return fail(Errc::io, path + ": " + std::strerror(saved));
  }
  return {};
}

}  // namespace fde
