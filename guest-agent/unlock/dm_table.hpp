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

// The cipher of mapping `name` ("aes-xts-plain64"), which must have exactly one target, of
// type crypt. The table's key field (the volume key in hex, or a keyring reference) is never
// copied out of the ioctl buffer, which is wiped.
Result<std::string> read_mapping_cipher(const std::string& name, const std::string& control = device_mapper_control);

// The cipher field of a dm-crypt table line ("<cipher> <key> <iv_offset> <device> <offset>
// [<#opt_params> <opt_params>]"), checked to be one crypt target.
Result<std::string> crypt_cipher_from_table(unsigned target_count, std::string_view target_type,
                                            std::string_view params);

}  // namespace fde::agent
