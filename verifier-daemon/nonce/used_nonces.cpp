// The per-process memory of spent nonces.
#include "verifier-daemon/nonce/used_nonces.hpp"

namespace fde::verifier {

void UsedNonces::forget_expired(Clock::time_point now) {
  while (!by_expiry_.empty() && by_expiry_.begin()->first <= now) {
    used_.erase(by_expiry_.begin()->second);
    by_expiry_.erase(by_expiry_.begin());
  }
}

bool UsedNonces::first_use(ByteView nonce, Clock::time_point expires_at, Clock::time_point now) {
  std::string key(reinterpret_cast<const char*>(nonce.data()), nonce.size());
  std::lock_guard lock(mutex_);
  forget_expired(now);
  if (used_.count(key) != 0) return false;
  while (!by_expiry_.empty() && used_.size() >= max_entries_) {
    used_.erase(by_expiry_.begin()->second);
    by_expiry_.erase(by_expiry_.begin());
  }
  used_.emplace(key, expires_at);
  by_expiry_.emplace(expires_at, std::move(key));
  return true;
}

std::size_t UsedNonces::size() const {
  std::lock_guard lock(mutex_);
  return used_.size();
}

}  // namespace fde::verifier
