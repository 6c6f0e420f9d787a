// Finding the LUKS volume by UUID without blkid or udev's database: /dev/disk/by-uuid when
// udev made it, otherwise a scan of the block devices the kernel lists in /sys/class/block
// for a LUKS header with that UUID (the initramfs may lack both blkid and the udev rules).
#pragma once

#include <optional>
#include <string>

#include "common/util/bytes.hpp"
#include "common/util/error.hpp"

namespace fde::agent {

// The LUKS1/LUKS2 binary header (the first 512 bytes of the volume): magic "LUKS\xba\xbe"
// at 0, a big-endian version at 6, the UUID as NUL-terminated text at 168 in both versions.
inline constexpr std::size_t luks_header_read_size = 512;
inline constexpr std::size_t luks_uuid_offset = 168;
inline constexpr std::size_t luks_uuid_field_size = 40;

struct LuksHeaderInfo {
  int version = 0;   // 1 or 2
  std::string uuid;  // lowercase
};
// nullopt: not a LUKS header.
std::optional<LuksHeaderInfo> parse_luks_header(ByteView header);
// Reads the header of a device or image file.
Result<LuksHeaderInfo> read_luks_header(const std::string& path);

struct DeviceSearch {
  std::string by_uuid_directory = "/dev/disk/by-uuid";
  std::string sys_block_directory = "/sys/class/block";
  std::string dev_directory = "/dev";
};

// The block device holding LUKS volume `uuid` (lowercase), or Errc::not_found.
Result<std::string> find_luks_device(const std::string& uuid, const DeviceSearch& search = {});

}  // namespace fde::agent
