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

#include "common/crypto/key_check.hpp"
#include "common/util/secret_bytes.hpp"

namespace fde::agent {

namespace {

// A crypt table is one line of a few hundred bytes; 16 KiB leaves room for many targets.
constexpr std::size_t table_buffer_size = 16 * 1024;

// dm-crypt keys are at most a few hundred bytes (aes-xts with 512 bits: 64).
constexpr std::size_t max_table_key_size = 1024;

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Wipes the ioctl buffer (it can hold the volume key in hex) on every path.
struct WipedBuffer {
  std::vector<std::uint64_t> words = std::vector<std::uint64_t>(table_buffer_size / sizeof(std::uint64_t));
  ~WipedBuffer() { wipe_bytes(bytes()); }
  std::span<std::uint8_t> bytes() { return {reinterpret_cast<std::uint8_t*>(words.data()), table_buffer_size}; }
};

}  // namespace

Result<CryptMapping> crypt_mapping_from_table(unsigned target_count, std::string_view target_type,
                                              std::string_view params) {
  if (target_count != 1)
    return fail(Errc::unsupported, "it has " + std::to_string(target_count) + " targets, expected one crypt target");
  if (target_type != "crypt")
    return fail(Errc::unsupported, "its target is of type '" + std::string(target_type) + "', expected 'crypt'");
  const std::size_t cipher_end = params.find(' ');
  CryptMapping mapping;
  mapping.cipher = std::string(params.substr(0, cipher_end));
  if (mapping.cipher.empty()) return fail(Errc::malformed, "its crypt table has no cipher");
  std::string_view key;
  if (cipher_end != std::string_view::npos) {
    key = params.substr(cipher_end + 1);
    key = key.substr(0, key.find(' '));
  }
  if (key.empty() || key == "-") return mapping;  // no key (dm-crypt's "-" for an empty key)
  if (key.front() == ':') {
    mapping.key = MappedKey::in_keyring;
    mapping.keyring_key = std::string(key);
    return mapping;
  }
  // The key in hex, decoded only into memory that is wiped.
  if (key.size() % 2 != 0 || key.size() > 2 * max_table_key_size)
    return fail(Errc::malformed, "its crypt table's key field is not a key in hex");
  SecretBytes raw(key.size() / 2);
  for (std::size_t i = 0; i < raw.size(); ++i) {
    const int high = hex_digit(key[2 * i]), low = hex_digit(key[2 * i + 1]);
    if (high < 0 || low < 0) return fail(Errc::malformed, "its crypt table's key field is not a key in hex");
    raw.data()[i] = static_cast<std::uint8_t>((high << 4) | low);
  }
  mapping.key = MappedKey::in_table;
  mapping.volume_key_check = crypto::key_check_value(crypto::KeyCheckKind::volume_key, raw.view());
  return mapping;
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
  auto mapping = crypt_mapping_from_table(io->target_count, target_type, params);
  if (!mapping) return fail_with_context("/dev/mapper/" + name, mapping.error());
  // The kernel writes the mapping's name and UUID back into the header it answers with.
  mapping->dm_uuid = std::string(io->uuid, strnlen(io->uuid, sizeof io->uuid));
  return mapping;
}

Result<void> check_mapped_key(const CryptMapping& mapping, ByteView volume_key_check) {
  switch (mapping.key) {
    case MappedKey::none: return fail(Errc::verification_failed, "its table holds no volume key");
    case MappedKey::in_keyring:
      return fail(Errc::verification_failed,
                  "its volume key is in the kernel keyring (" + mapping.keyring_key +
                      "), not in its table, so it cannot be compared with volume_key_check (fde-agent and "
                      "fde-unlock open the volume with --disable-keyring: something else opened it)");
    case MappedKey::in_table: break;
  }
  if (volume_key_check.size() != crypto::key_check_size ||
      !equal_constant_time(mapping.volume_key_check, volume_key_check))
    return fail(Errc::verification_failed,
                "its volume key does not match volume_key_check: it is not the enrolled volume (a volume made by "
                "someone else, with the same UUID?)");
  return {};
}

Result<void> check_luks2_mapping(const CryptMapping& mapping, std::string_view luks_uuid,
                                 std::string_view expected_cipher, ByteView volume_key_check) {
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
  return check_mapped_key(mapping, volume_key_check);
}

}  // namespace fde::agent
