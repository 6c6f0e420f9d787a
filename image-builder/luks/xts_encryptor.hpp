// User-space aes-xts-plain64 exactly as dm-crypt computes it for this LUKS2 volume: one
// XTS unit per encryption sector, tweak = the sector's byte offset in the data segment
// divided by 512, 16 bytes little-endian (docs/fde-image.md: no large-sector IVs).
#pragma once

#include <cstdint>
#include <memory>
#include <span>

#include "common/util/secret_bytes.hpp"

namespace fde::image {

class XtsEncryptor {
 public:
  enum class Direction { encrypt, decrypt };
  ~XtsEncryptor();
  XtsEncryptor(XtsEncryptor&&) noexcept;
  XtsEncryptor& operator=(XtsEncryptor&&) noexcept;

  // `key` is the 64-byte volume key (two AES-256 keys).
  static Result<XtsEncryptor> create(const SecretBytes& key, std::uint32_t sector_size, Direction direction);

  // In place. `offset` (bytes from the start of the data segment) and data.size() must be
  // multiples of the sector size.
  Result<void> process(std::span<std::uint8_t> data, std::uint64_t offset);

 private:
  struct State;
  explicit XtsEncryptor(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

}  // namespace fde::image
