// Writing a file that holds a secret (the enrollment bundle): owner-only mode, fsynced.
#include "image-builder/assembly/secret_file.hpp"

#include <sys/stat.h>

#include <cerrno>
#include <cstring>

namespace fde::image {

Result<void> write_secret_file(RawFile& file, const SecretBytes& content) {
  struct stat st {};
  if (::fstat(file.fd(), &st) != 0) return fail(Errc::io, "cannot stat " + file.path() + ": " + std::strerror(errno));
  if ((st.st_mode & 077) != 0)
    return fail(Errc::internal, file.path() + " is readable by others; the secret is not written to it");
  if (auto ok = file.write_at(0, ByteView(content.data(), content.size())); !ok) return ok;
  return file.sync();
}

}  // namespace fde::image
