// Writing a file that holds a secret (the enrollment bundle): new file only, mode 0600, fsynced.
#include "image-builder/build/secret_file.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace fde::image {

Result<void> write_secret_file(const std::string& path, const SecretBytes& content) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) return fail(Errc::io, "cannot create " + path + ": " + std::strerror(errno));
  std::size_t done = 0;
  int err = 0;
  if (::fchmod(fd, 0600) != 0) err = errno;  // whatever the umask said
  while (!err && done < content.size()) {
    const ssize_t n = ::write(fd, content.data() + done, content.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      err = errno;
      break;
    }
    done += static_cast<std::size_t>(n);
  }
  if (!err && ::fsync(fd) != 0) err = errno;
  ::close(fd);
  if (err) {
    ::unlink(path.c_str());
    return fail(Errc::io, "cannot write " + path + ": " + std::strerror(err));
  }
  return {};
}

}  // namespace fde::image
