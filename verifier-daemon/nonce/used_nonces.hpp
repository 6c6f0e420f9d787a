// Nonces that have already been spent on an attestation, so that a second request with the
// same nonce is refused cheaply instead of running every check and writing another audit
// record. The nonces themselves stay stateless (nonce_service.hpp); this is a per-process
// memory of the ones used, each kept only until it expires. Replicas do not share it: a
// nonce replayed to another replica is caught only by that replica's own rate limit.
//
// A replay gains an attacker nothing beyond load: the token's challenge binds the nonce to
// one ephemeral key, and a key is only ever sealed to that key. The memory is bounded
// (max_entries); when full, the entries that expire soonest are forgotten first.
#pragma once

#include <cstddef>
#include <mutex>
#include <set>
#include <string>
#include <unordered_map>
#include <utility>

#include "common/util/bytes.hpp"
#include "verifier-daemon/nonce/nonce_service.hpp"

namespace fde::verifier {

class UsedNonces {
 public:
  static constexpr std::size_t default_max_entries = 100'000;
  explicit UsedNonces(std::size_t max_entries = default_max_entries) : max_entries_(max_entries) {}

  // Records `nonce` (one check() found valid, so `expires_at` is authentic) as used. True
  // the first time; false if it was used before and has not expired since.
  bool first_use(ByteView nonce, Clock::time_point expires_at, Clock::time_point now);

  std::size_t size() const;

 private:
  void forget_expired(Clock::time_point now);

  std::size_t max_entries_;
  mutable std::mutex mutex_;
  std::unordered_map<std::string, Clock::time_point> used_;
  std::set<std::pair<Clock::time_point, std::string>> by_expiry_;
};

}  // namespace fde::verifier
