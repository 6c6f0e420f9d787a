// What an opened volume really is: the live device-mapper table, read from the kernel with
// DM_TABLE_STATUS on /dev/mapper/control. `cryptsetup status` is no substitute: for a LUKS2
// mapping it reports the cipher from the LUKS header on the data device, which the host
// controls, not from the kernel's table. No dmsetup or libdevmapper is needed.
#pragma once

#include <string>
#include <string_view>

#include "common/util/error.hpp"

namespace fde::agent {

inline constexpr const char* device_mapper_control = "/dev/mapper/control";

// What the kernel says about one crypt mapping.
struct CryptMapping {
  std::string cipher;   // "aes-xts-plain64"
  std::string dm_uuid;  // "CRYPT-LUKS2-<uuid without dashes>-<name>" when cryptsetup made it
};

// The cipher and device-mapper UUID of mapping `name`, which must have exactly one target,
// of type crypt (one DM_TABLE_STATUS, which also reports the UUID). The table's key field
// (the volume key in hex, or a keyring reference) is never copied out of the ioctl buffer,
// which is wiped.
Result<CryptMapping> read_crypt_mapping(const std::string& name, const std::string& control = device_mapper_control);
// Only the cipher.
Result<std::string> read_mapping_cipher(const std::string& name, const std::string& control = device_mapper_control);

// A mapping that was already open when the agent started is accepted only as the configured
// volume: its cipher is `expected_cipher` and its UUID is the one cryptsetup gives a LUKS2
// mapping of volume `luks_uuid` ("CRYPT-LUKS2-<luks_uuid without dashes>-", either case).
Result<void> check_luks2_mapping(const CryptMapping& mapping, std::string_view luks_uuid,
                                 std::string_view expected_cipher);

// The cipher field of a dm-crypt table line ("<cipher> <key> <iv_offset> <device> <offset>
// [<#opt_params> <opt_params>]"), checked to be one crypt target.
Result<std::string> crypt_cipher_from_table(unsigned target_count, std::string_view target_type,
                                            std::string_view params);

}  // namespace fde::agent
