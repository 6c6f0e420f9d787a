// The LUKS2 header the agent opens the volume with. The host controls the disk: it can
// present a volume with the expected UUID whose keyslot uses cipher_null (any passphrase
// opens it) or whose data segment is cipher_null or another cipher, and it can change the
// header between any check and cryptsetup's own read. So the agent copies the whole header
// area (both binary headers, both JSON areas, the keyslot area: everything before the data
// segment) into a private file, checks that copy, and opens with `--header COPY`: cryptsetup
// then uses exactly the bytes that were checked (docs/fde-agent.md, "The LUKS2 header").
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "common/util/error.hpp"

namespace fde::agent {

// LUKS2 on-disk format (cryptsetup's docs/on-disk-format-luks2.pdf) section 2: the binary
// header is 4096 bytes, hdr_size (big-endian at byte 8) is binary header + JSON area, one of
// 16 KiB .. 4 MiB in powers of two; the secondary header follows at byte hdr_size.
inline constexpr std::uint64_t luks2_binary_header_size = 4096;
inline constexpr std::size_t luks2_hdr_size_offset = 8;
inline constexpr std::size_t luks2_hdr_offset_offset = 256;
inline constexpr std::uint64_t luks2_min_hdr_size = 16 * 1024;
inline constexpr std::uint64_t luks2_max_hdr_size = 4 * 1024 * 1024;
// The header area copied to the private directory: cryptsetup's default is 16 MiB; a larger
// one is refused (it would be copied into RAM).
inline constexpr std::uint64_t max_luks2_header_area = 64 * 1024 * 1024;
// `cryptsetup luksDump --dump-json-metadata` pretty-prints at most a 4 MiB JSON area.
inline constexpr std::size_t max_luks_dump_output = 16 * 1024 * 1024;

// Where the primary header says the data begins: the size of the area to copy.
struct Luks2HeaderArea {
  std::uint64_t header_size = 0;  // hdr_size
  std::uint64_t data_offset = 0;  // the lowest data segment offset
};
// Reads the primary binary header and its JSON area from `fd` (a block device or image file).
Result<Luks2HeaderArea> read_luks2_header_area(int fd);

// The copy of one device's header area in a private directory, removed on destruction.
class HeaderCopy {
 public:
  HeaderCopy() = default;
  HeaderCopy(std::string path, std::uint64_t size, std::string created_directory)
      : path_(std::move(path)), size_(size), created_directory_(std::move(created_directory)) {}
  ~HeaderCopy() { remove(); }
  HeaderCopy(HeaderCopy&& other) noexcept;
  HeaderCopy& operator=(HeaderCopy&& other) noexcept;
  HeaderCopy(const HeaderCopy&) = delete;
  HeaderCopy& operator=(const HeaderCopy&) = delete;

  const std::string& path() const { return path_; }
  std::uint64_t size() const { return size_; }
  void remove();

 private:
  friend Result<HeaderCopy> copy_luks2_header(const std::string& device, const std::string& directory,
                                              const std::string& name);
  std::string path_;
  std::uint64_t size_ = 0;
  std::string created_directory_;  // removed too (when empty) if this copy created it
};

// Copies the header area of `device` to `directory`/`name`.luks2-header. The directory is
// created 0700 (and its parent 0700 when missing); an existing one must be a directory, not
// a symbolic link, owned by this user and closed to others, and its parent must not be
// writable by others. The file is created O_EXCL|O_NOFOLLOW, mode 0600.
Result<HeaderCopy> copy_luks2_header(const std::string& device, const std::string& directory, const std::string& name);

// True for a cipher that ignores its key (cipher_null, capi:ecb(cipher_null), ...).
bool is_null_cipher(std::string_view cipher);

// Checks the metadata of the copy as `cryptsetup luksDump --dump-json-metadata` prints it:
// exactly one data segment, of type crypt, encrypted with `expected_cipher` and starting
// where the copied area ends; no segment and no keyslot with a null or missing cipher; at
// least one keyslot; no keyslot kdf or af hash and no digest hash that is empty or null; no
// tokens, no persistent flags (config.flags) and no requirements (config.requirements),
// none of which fde-image writes. The message names what is wrong ("keyslot 0 uses
// cipher_null ...").
Result<void> check_luks2_metadata(std::string_view dump_json, std::string_view expected_cipher,
                                  std::uint64_t header_area_size);

}  // namespace fde::agent
