// SecretBytes: key material that cannot be copied by accident, is wiped on destruction,
// is locked in memory where possible and never prints its contents.
#pragma once

#include <cstddef>
#include <cstdint>
#include <ostream>
#include <span>

#include "common/util/bytes.hpp"

namespace fde {

class SecretBytes {
 public:
  SecretBytes() = default;
  explicit SecretBytes(std::size_t size);
  // Copies the bytes in; the caller remains responsible for wiping its source.
  static SecretBytes copy_of(ByteView bytes);
  ~SecretBytes();

  SecretBytes(const SecretBytes&) = delete;
  SecretBytes& operator=(const SecretBytes&) = delete;
  SecretBytes(SecretBytes&& other) noexcept;
  SecretBytes& operator=(SecretBytes&& other) noexcept;

  std::uint8_t* data() { return data_; }
  const std::uint8_t* data() const { return data_; }
  std::size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  ByteView view() const { return {data_, size_}; }
  std::span<std::uint8_t> writable() { return {data_, size_}; }

  // Explicit, greppable duplication for the rare place that needs two owners.
  SecretBytes clone() const { return copy_of(view()); }
  void wipe();

  // True when the bytes are in the locked arena of init_locked_arena().
  bool in_locked_arena() const { return in_arena_; }

 private:
  void release();
  std::uint8_t* data_ = nullptr;
  std::size_t size_ = 0;
  bool locked_ = false;        // mlock'd on its own
  bool in_arena_ = false;      // in OpenSSL's secure heap
};

// Sets up one locked arena of `bytes` (a power of two) for every SecretBytes made afterwards:
// OpenSSL's secure heap (mmap'd, mlock'd, excluded from core dumps, guard pages around it),
// instead of an mlock and munlock system call pair per secret. For long-running processes
// that make secrets per request (fde-verifierd); call it once, before the first secret.
// `refused`: the kernel would not lock it (RLIMIT_MEMLOCK), so there is no arena and every
// secret is locked on its own, as without one. `unlocked`: the arena exists unlocked (it
// could not be taken down again). `failed`: no arena.
enum class LockedArena { locked, refused, unlocked, failed };
LockedArena init_locked_arena(std::size_t bytes);

inline std::ostream& operator<<(std::ostream& out, const SecretBytes&) { return out << "<redacted>"; }

// Wipes a buffer that held secret material (for the few third-party APIs that need one).
void wipe_bytes(std::span<std::uint8_t> bytes);

}  // namespace fde
