// SecretBytes implementation: OPENSSL_cleanse on release, mlock while alive.
#include "common/util/secret_bytes.hpp"

#include <sys/mman.h>

#include <cstring>
#include <new>
#include <utility>

#include <openssl/crypto.h>

namespace fde {

SecretBytes::SecretBytes(std::size_t size) : size_(size) {
  if (size_ == 0) return;
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
      locked_(std::exchange(other.locked_, false)) {}

SecretBytes& SecretBytes::operator=(SecretBytes&& other) noexcept {
  if (this != &other) {
    release();
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
    locked_ = std::exchange(other.locked_, false);
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
  delete[] data_;
  data_ = nullptr;
  size_ = 0;
  locked_ = false;
}

void wipe_bytes(std::span<std::uint8_t> bytes) {
  if (!bytes.empty()) OPENSSL_cleanse(bytes.data(), bytes.size());
}

}  // namespace fde
