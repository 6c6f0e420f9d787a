// SecretBytes implementation: OPENSSL_cleanse on release; the bytes live in OpenSSL's secure
// heap (one locked arena) once init_locked_arena() set it up, else in their own mlock'd
// allocation.
#include "common/util/secret_bytes.hpp"

#include <sys/mman.h>

#include <atomic>
#include <cstring>
#include <new>
#include <utility>

#include <openssl/crypto.h>
#include <openssl/err.h>

namespace fde {

namespace {

// The arena's size once init_locked_arena() set it up (0: no arena).
std::atomic<std::size_t> arena_bytes{0};

// What the arena's buddy allocator takes for `size` bytes: a power of two, 16 at least.
std::size_t arena_block(std::size_t size) {
  std::size_t block = 16;
  while (block < size) block <<= 1;
  return block;
}

// OpenSSL's own secrets (TLS key shares, signing nonces, X25519 keys, DRBG state) come from
// the same arena and fail, not fall back, when it is full; some of those failures end the
// process. So a SecretBytes takes an arena block only while the arena stays at most half
// used, and never more than 1/64 of it (a large secret, such as a parsed admin request, would
// otherwise take a whole power-of-two block: 1.1 MiB takes the entire 2 MiB arena).
bool fits_in_arena(std::size_t size) {
  const std::size_t arena = arena_bytes.load(std::memory_order_relaxed);
  if (arena == 0 || size > arena / 64) return false;
  return CRYPTO_secure_used() + arena_block(size) <= arena / 2;
}

}  // namespace

LockedArena init_locked_arena(std::size_t bytes) {
  if (CRYPTO_secure_malloc_initialized()) return LockedArena::locked;
  // 16-byte minimum blocks: a 32-byte key takes 32 bytes, not a page.
  switch (CRYPTO_secure_malloc_init(bytes, 16)) {
    case 1: arena_bytes.store(bytes); return LockedArena::locked;
    case 2:
      // Mapped but not locked (RLIMIT_MEMLOCK below its size): an unlocked arena would leave
      // every secret swappable, where locking each alone may still succeed under a small
      // limit. Nothing is allocated yet, so it can be taken down again.
      (void)CRYPTO_secure_malloc_done();
      return CRYPTO_secure_malloc_initialized() ? LockedArena::unlocked : LockedArena::refused;
    default: return LockedArena::failed;
  }
}

SecretBytes::SecretBytes(std::size_t size) : size_(size) {
  if (size_ == 0) return;
  if (fits_in_arena(size_)) {
    // One locked arena, no system call per secret. Once the arena exists, OpenSSL 3.0 hands
    // out its blocks or nothing: a full arena (another thread took the room) returns NULL,
    // and the secret gets its own locked allocation below, like every secret without an
    // arena or too large for it.
    data_ = static_cast<std::uint8_t*>(OPENSSL_secure_zalloc(size_));
    if (data_ != nullptr) {
      in_arena_ = true;
      return;
    }
    ERR_clear_error();
  }
  data_ = new std::uint8_t[size_]();
  // Best effort: a locked page cannot be swapped out. Failure (RLIMIT_MEMLOCK) is not fatal.
  locked_ = ::mlock(data_, size_) == 0;
}

SecretBytes SecretBytes::copy_of(ByteView bytes) {
  SecretBytes out(bytes.size());
  if (!bytes.empty()) std::memcpy(out.data_, bytes.data(), bytes.size());
  return out;
}

SecretBytes::~SecretBytes() { release(); }

SecretBytes::SecretBytes(SecretBytes&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)),
      size_(std::exchange(other.size_, 0)),
      locked_(std::exchange(other.locked_, false)),
      in_arena_(std::exchange(other.in_arena_, false)) {}

SecretBytes& SecretBytes::operator=(SecretBytes&& other) noexcept {
  if (this != &other) {
    release();
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
    locked_ = std::exchange(other.locked_, false);
    in_arena_ = std::exchange(other.in_arena_, false);
  }
  return *this;
}

void SecretBytes::wipe() {
  if (data_ != nullptr) OPENSSL_cleanse(data_, size_);
}

void SecretBytes::release() {
  if (data_ == nullptr) return;
  OPENSSL_cleanse(data_, size_);
  if (locked_) ::munlock(data_, size_);
  if (in_arena_)
    OPENSSL_secure_free(data_);
  else
    delete[] data_;
  data_ = nullptr;
  size_ = 0;
  locked_ = false;
  in_arena_ = false;
}

void wipe_bytes(std::span<std::uint8_t> bytes) {
  if (!bytes.empty()) OPENSSL_cleanse(bytes.data(), bytes.size());
}

}  // namespace fde
