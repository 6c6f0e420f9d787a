// Enrollment bundle serialization; the key is base64-encoded straight into secret memory.
#include "image-builder/build/enrollment_bundle.hpp"

#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace fde::image {
namespace {

std::string json_string(std::string_view text) {
  std::string out = "\"";
  for (char c : text) {
    if (c == '"' || c == '\\') {
      out.push_back('\\');
      out.push_back(c);
    } else if (static_cast<unsigned char>(c) < 0x20) {
      char escaped[8];
      std::snprintf(escaped, sizeof escaped, "\\u%04x", static_cast<unsigned>(c));
      out += escaped;
    } else {
      out.push_back(c);
    }
  }
  return out + "\"";
}

}  // namespace

Result<SecretBytes> serialize_enrollment_bundle(const std::string& image_id, const std::string& luks_uuid,
                                                const SecretBytes& disk_key,
                                                const reference::ReferenceValues& reference) {
  auto reference_json = reference::serialize_reference_values(reference);
  if (!reference_json) return fail_with_context("reference values", reference_json.error());
  // Indent the nested document by two spaces so the bundle stays readable.
  std::string nested;
  for (char c : *reference_json) {
    nested.push_back(c);
    if (c == '\n') nested += "  ";
  }
  while (!nested.empty() && (nested.back() == ' ' || nested.back() == '\n')) nested.pop_back();
  const std::string head = "{\n  \"format\": " + json_string(enrollment_bundle_format) +
                           ",\n  \"image_id\": " + json_string(image_id) + ",\n  \"luks_uuid\": " +
                           json_string(luks_uuid) + ",\n  \"disk_key\": \"";
  const std::string tail = "\",\n  \"reference\": " + nested + "\n}\n";
  const std::size_t encoded = 4 * ((disk_key.size() + 2) / 3);
  SecretBytes out(head.size() + encoded + 1 + tail.size());
  std::memcpy(out.data(), head.data(), head.size());
  const int n = EVP_EncodeBlock(out.data() + head.size(), disk_key.data(), static_cast<int>(disk_key.size()));
  if (n != static_cast<int>(encoded)) return fail(Errc::internal, "base64 encoding failed");
  std::memcpy(out.data() + head.size() + encoded, tail.data(), tail.size());
  // EVP_EncodeBlock wrote a NUL where the tail now starts; the final byte is spare.
  SecretBytes exact = SecretBytes::copy_of(out.view().first(out.size() - 1));
  return exact;
}

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
