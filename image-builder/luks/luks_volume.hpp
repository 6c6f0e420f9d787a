// LUKS2 header creation with libcryptsetup on a plain file (no device-mapper, no root):
// the header is formatted on a sparse file the size of the output partition and its first
// data_offset bytes are then copied into the disk image (docs/fde-image.md, "build").
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "common/util/secret_bytes.hpp"

namespace fde::image {

constexpr std::size_t volume_key_size = 64;   // aes-xts-plain64 with AES-256: 512-bit key
constexpr std::size_t machine_key_size = 32;  // released by the verifier: 256 random bits
constexpr std::uint64_t luks_data_offset = 16 * 1024 * 1024;  // LUKS2 default header area
constexpr std::uint32_t machine_keyslot_pbkdf2_iterations = 1000;

struct LuksFormatRequest {
  std::string header_file;          // created here, `partition_size` bytes, sparse
  std::uint64_t partition_size = 0;
  std::uint32_t sector_size = 4096;
  const SecretBytes* volume_key = nullptr;
  const SecretBytes* machine_key = nullptr;
  const SecretBytes* recovery_passphrase = nullptr;  // optional
  std::optional<std::string> label;
};

struct LuksVolumeInfo {
  std::string uuid;
  std::uint64_t data_offset = 0;  // bytes
  int machine_keyslot = -1;
  int recovery_keyslot = -1;
};

Result<LuksVolumeInfo> format_luks_volume(const LuksFormatRequest& request);

// What `inspect` shows: read from a file holding the partition (header first).
struct LuksSummary {
  std::string uuid;
  std::string cipher;  // "aes-xts-plain64"
  std::uint32_t volume_key_bits = 0;
  std::uint32_t sector_size = 0;
  std::uint64_t data_offset = 0;
  std::string label;
  std::vector<std::string> keyslots;  // "0: pbkdf2", "1: argon2id"
};
Result<LuksSummary> read_luks_summary(const std::string& path);

}  // namespace fde::image
