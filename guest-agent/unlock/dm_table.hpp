// What an opened volume really is: the live device-mapper table, read from the kernel with
// DM_TABLE_STATUS on /dev/mapper/control. `cryptsetup status` is no substitute: for a LUKS2
// mapping it reports the cipher from the LUKS header on the data device, which the host
// controls, not from the kernel's table. No dmsetup or libdevmapper is needed.
#pragma once

#include <string>
#include <string_view>

#include "common/util/bytes.hpp"
#include "common/util/error.hpp"

namespace fde::agent {

inline constexpr const char* device_mapper_control = "/dev/mapper/control";

// Where the mapping's volume key is, as its table shows it.
enum class MappedKey {
  in_table,    // the key in hex: its check value is computed (the key itself is not kept)
  in_keyring,  // ":<size>:<type>:<description>": the kernel keyring holds it, unreadable here
  none,        // "-" or empty: no key
};

// What the kernel says about one crypt mapping.
struct CryptMapping {
  std::string cipher;   // "aes-xts-plain64"
  std::string dm_uuid;  // "CRYPT-LUKS2-<uuid without dashes>-<name>" when cryptsetup made it
  MappedKey key = MappedKey::none;
  Bytes volume_key_check;   // in_table: crypto::key_check_value(volume_key, key in the table)
  std::string keyring_key;  // in_keyring: the reference as the table shows it (a name, not a key)
};

// The cipher, device-mapper UUID and key of mapping `name`, which must have exactly one
// target, of type crypt (one DM_TABLE_STATUS with DM_SECURE_DATA_FLAG, which also reports
// the UUID). The table's key field is decoded only into wiped memory to compute its check
// value; the ioctl buffer is wiped.
Result<CryptMapping> read_crypt_mapping(const std::string& name, const std::string& control = device_mapper_control);

// A mapping is accepted as the configured volume only when its cipher is `expected_cipher`,
// its UUID is the one cryptsetup gives a LUKS2 mapping of volume `luks_uuid`
// ("CRYPT-LUKS2-<luks_uuid without dashes>-", either case), and the key in its table has the
// check value `volume_key_check`, whichever program opened it. A key in the kernel keyring
// cannot be read, so it is refused (the agent and fde-unlock open with --disable-keyring).
Result<void> check_luks2_mapping(const CryptMapping& mapping, std::string_view luks_uuid,
                                 std::string_view expected_cipher, ByteView volume_key_check);

// Only the key: in the table and with check value `volume_key_check`.
Result<void> check_mapped_key(const CryptMapping& mapping, ByteView volume_key_check);

// A dm-crypt table line ("<cipher> <key> <iv_offset> <device> <offset> [<#opt_params>
// <opt_params>]"), checked to be one crypt target: its cipher and what its key field holds.
Result<CryptMapping> crypt_mapping_from_table(unsigned target_count, std::string_view target_type,
                                              std::string_view params);

}  // namespace fde::agent
