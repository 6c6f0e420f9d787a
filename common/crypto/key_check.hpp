// Check values of the disk's keys (docs/fde-image.md, "Key check values"): fde-image writes
// them into the agent's configuration, which is part of the measured initramfs, and the agent
// compares a released key, and the key in the kernel's table of the opened root, with them.
// A check value is SHA-256(label || key), the label an ASCII string without terminator:
//   released_key_check = SHA-256("virtcca-fde released-key check v1" || machine key)
//   volume_key_check   = SHA-256("virtcca-fde volume-key check v1"   || LUKS volume key)
// Both keys are full-entropy random (256 and 512 bits), so the hash reveals nothing usable,
// and the two labels keep the values of the two keys apart.
#pragma once

#include <string_view>

#include "common/util/bytes.hpp"
#include "common/util/error.hpp"

namespace fde::crypto {

enum class KeyCheckKind { released_key, volume_key };

inline constexpr std::string_view released_key_check_label = "virtcca-fde released-key check v1";
inline constexpr std::string_view volume_key_check_label = "virtcca-fde volume-key check v1";
inline constexpr std::size_t key_check_size = 32;

std::string_view key_check_label(KeyCheckKind kind);

// SHA-256(label || key).
Bytes key_check_value(KeyCheckKind kind, ByteView key);

// Whether `key` has the check value `expected` (compared in constant time). An `expected`
// that is not 32 bytes never matches.
bool key_matches_check(KeyCheckKind kind, ByteView key, ByteView expected);

// 64 hex digits (either case) to the 32-byte value; anything else is an error.
Result<Bytes> parse_key_check(std::string_view text);

}  // namespace fde::crypto
