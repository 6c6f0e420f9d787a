// DM_TABLE_STATUS (linux/dm-ioctl.h) for one mapping.
#include "guest-agent/unlock/dm_table.hpp"

#include <fcntl.h>
#include <linux/dm-ioctl.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <vector>

#include "common/util/secret_bytes.hpp"

namespace fde::agent {

namespace {

// A crypt table is one line of a few hundred bytes; 16 KiB leaves room for many targets.
constexpr std::size_t table_buffer_size = 16 * 1024;

// Wipes the ioctl buffer (it can hold the volume key in hex) on every path.
struct WipedBuffer {
  std::vector<std::uint64_t> words = std::vector<std::uint64_t>(table_buffer_size / sizeof(std::uint64_t));
  ~WipedBuffer() { wipe_bytes(bytes()); }
  std::span<std::uint8_t> bytes() { return {reinterpret_cast<std::uint8_t*>(words.data()), table_buffer_size}; }
};

}  // namespace

Result<std::string> crypt_cipher_from_table(unsigned target_count, std::string_view target_type,
                                            std::string_view params) {
  if (target_count != 1)
    return fail(Errc::unsupported, "it has " + std::to_string(target_count) + " targets, expected one crypt target");
  if (target_type != "crypt")
    return fail(Errc::unsupported, "its target is of type '" + std::string(target_type) + "', expected 'crypt'");
  const std::size_t end = params.find(' ');
  std::string_view cipher = params.substr(0, end);
  if (cipher.empty()) return fail(Errc::malformed, "its crypt table has no cipher");
  return std::string(cipher);
}

Result<CryptMapping> read_crypt_mapping(const std::string& name, const std::string& control) {
  if (name.empty() || name.size() >= DM_NAME_LEN) return fail(Errc::invalid_argument, "bad mapping name '" + name + "'");
  const int fd = ::open(control.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) return fail(Errc::io, "cannot open " + control + ": " + std::strerror(errno));
  WipedBuffer buffer;
  auto* io = reinterpret_cast<dm_ioctl*>(buffer.words.data());
  io->version[0] = DM_VERSION_MAJOR;
  io->data_size = static_cast<std::uint32_t>(table_buffer_size);
  io->data_start = sizeof(dm_ioctl);
  // The table, not the status; secure data: the kernel wipes its own copy of the buffer.
  io->flags = DM_STATUS_TABLE_FLAG | DM_SECURE_DATA_FLAG;
  std::memcpy(io->name, name.data(), name.size());
  int rc = 0;
  do {
    rc = ::ioctl(fd, DM_TABLE_STATUS, io);
  } while (rc < 0 && errno == EINTR);
  const int error = errno;
  ::close(fd);
  if (rc < 0) return fail(Errc::io, "device-mapper table of " + name + ": " + std::strerror(error));
  if ((io->flags & DM_BUFFER_FULL_FLAG) != 0)
    return fail(Errc::too_large, "the device-mapper table of " + name + " is larger than " +
                                     std::to_string(table_buffer_size) + " bytes");
  const std::span<std::uint8_t> bytes = buffer.bytes();
  const std::size_t limit = std::min<std::size_t>(io->data_size, bytes.size());
  std::string_view target_type, params;
  if (io->target_count > 0) {
    if (io->data_start > limit || limit - io->data_start < sizeof(dm_target_spec))
      return fail(Errc::malformed, "the kernel's table of " + name + " is truncated");
    dm_target_spec spec{};
    std::memcpy(&spec, bytes.data() + io->data_start, sizeof spec);
    target_type = std::string_view(spec.target_type, strnlen(spec.target_type, sizeof spec.target_type));
    const char* text = reinterpret_cast<const char*>(bytes.data() + io->data_start + sizeof spec);
    const std::size_t room = limit - io->data_start - sizeof spec;
    const std::size_t length = strnlen(text, room);
    if (length == room) return fail(Errc::malformed, "the kernel's table of " + name + " is not terminated");
    params = std::string_view(text, length);
  }
  auto cipher = crypt_cipher_from_table(io->target_count, target_type, params);
  if (!cipher) return fail_with_context("/dev/mapper/" + name, cipher.error());
  // The kernel writes the mapping's name and UUID back into the header it answers with.
  return CryptMapping{std::move(*cipher), std::string(io->uuid, strnlen(io->uuid, sizeof io->uuid))};
}

Result<std::string> read_mapping_cipher(const std::string& name, const std::string& control) {
  auto mapping = read_crypt_mapping(name, control);
  if (!mapping) return tl::unexpected(mapping.error());
  return std::move(mapping->cipher);
}

Result<void> check_luks2_mapping(const CryptMapping& mapping, std::string_view luks_uuid,
                                 std::string_view expected_cipher) {
  // cryptsetup names a LUKS2 mapping "CRYPT-LUKS2-" + the header's UUID without dashes + "-"
  // + the mapping name (lib/libdevmapper.c, dm_prepare_uuid); the UUID keeps the header's case.
  constexpr std::string_view luks2_prefix = "CRYPT-LUKS2-";
  std::string expected(luks2_prefix);
  for (char c : luks_uuid)
    if (c != '-') expected += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  expected += '-';
  std::string found = mapping.dm_uuid.substr(0, expected.size());
  for (std::size_t i = luks2_prefix.size(); i < found.size(); ++i)
    found[i] = static_cast<char>(std::tolower(static_cast<unsigned char>(found[i])));
  if (found != expected)
    return fail(Errc::verification_failed, "its device-mapper UUID is '" + mapping.dm_uuid + "', not " + expected +
                                               "<name>: it is not a LUKS2 mapping of volume " + std::string(luks_uuid));
  if (mapping.cipher != expected_cipher)
    return fail(Errc::verification_failed, "it uses '" + mapping.cipher + "', expected '" +
                                               std::string(expected_cipher) + "' (luks_cipher)");
  return {};
}

}  // namespace fde::agent
