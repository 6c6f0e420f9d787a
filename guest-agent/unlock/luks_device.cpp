// LUKS volume lookup by UUID.
#include "guest-agent/unlock/luks_device.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <filesystem>

namespace fde::agent {

namespace {
constexpr std::uint8_t luks_magic[] = {'L', 'U', 'K', 'S', 0xba, 0xbe};
}

std::optional<LuksHeaderInfo> parse_luks_header(ByteView header) {
  if (header.size() < luks_uuid_offset + luks_uuid_field_size) return std::nullopt;
  if (!std::equal(std::begin(luks_magic), std::end(luks_magic), header.begin())) return std::nullopt;
  int version = (header[6] << 8) | header[7];
  if (version != 1 && version != 2) return std::nullopt;
  const auto* field = header.data() + luks_uuid_offset;
  std::size_t length = 0;
  while (length < luks_uuid_field_size && field[length] != 0) ++length;
  LuksHeaderInfo info;
  info.version = version;
  info.uuid.assign(reinterpret_cast<const char*>(field), length);
  for (auto& c : info.uuid) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return info;
}

Result<LuksHeaderInfo> read_luks_header(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return fail(Errc::io, path + ": " + std::strerror(errno));
  std::uint8_t header[luks_header_read_size];
  std::size_t got = 0;
  while (got < sizeof header) {
    ssize_t n = ::pread(fd, header + got, sizeof header - got, static_cast<off_t>(got));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    got += static_cast<std::size_t>(n);
  }
  ::close(fd);
  auto info = parse_luks_header(ByteView(header, got));
  if (!info) return fail(Errc::not_found, path + " does not start with a LUKS header");
  return *info;
}

Result<std::string> find_luks_device(const std::string& uuid, const DeviceSearch& search) {
  namespace fs = std::filesystem;
  std::error_code error;
  fs::path link = fs::path(search.by_uuid_directory) / uuid;
  if (fs::exists(link, error)) {
    fs::path target = fs::canonical(link, error);
    if (!error) return target.string();
  }
  // No udev link: look at every block device the kernel knows. Partitions are listed in
  // /sys/class/block too, so this finds a LUKS partition as well as a whole LUKS disk.
  std::vector<std::string> names;
  for (fs::directory_iterator it(search.sys_block_directory, error), end; !error && it != end; it.increment(error))
    names.push_back(it->path().filename().string());
  std::sort(names.begin(), names.end());
  for (const auto& name : names) {
    // Device-mapper nodes (an already opened volume shows the plaintext) and RAM disks
    // never hold the encrypted volume.
    if (name.rfind("dm-", 0) == 0 || name.rfind("ram", 0) == 0) continue;
    std::string node = (fs::path(search.dev_directory) / name).string();
    struct stat st {};
    if (::stat(node.c_str(), &st) != 0 || !S_ISBLK(st.st_mode)) continue;
    auto header = read_luks_header(node);
    if (header && header->uuid == uuid) return node;
  }
  return fail(Errc::not_found, "no block device holds LUKS volume UUID=" + uuid);
}

}  // namespace fde::agent
