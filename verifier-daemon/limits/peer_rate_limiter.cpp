// Token buckets per source address (or IPv6 /64).
#include "verifier-daemon/limits/peer_rate_limiter.hpp"

#include <arpa/inet.h>

#include <algorithm>
#include <cmath>

namespace fde::verifier {

namespace {

// The key that stands for every new address while the table is full.
constexpr std::string_view overflow_key = "(overflow)";

// The host part of "HOST:PORT" / "[HOST]:PORT".
std::string_view host_of(std::string_view peer) {
  if (!peer.empty() && peer.front() == '[') {
    const auto close = peer.find(']');
    return close == std::string_view::npos ? peer : peer.substr(1, close - 1);
  }
  const auto colon = peer.rfind(':');
  return colon == std::string_view::npos ? peer : peer.substr(0, colon);
}

}  // namespace

std::string PeerRateLimiter::bucket_key(std::string_view peer) {
  const std::string host(host_of(peer));
  in6_addr v6{};
  if (::inet_pton(AF_INET6, host.c_str(), &v6) == 1) {
    // An IPv4-mapped address is the IPv4 peer it maps (the transport normally shows it so).
    static constexpr unsigned char mapped_prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (std::equal(std::begin(mapped_prefix), std::end(mapped_prefix), v6.s6_addr)) {
      char text[INET_ADDRSTRLEN] = {};
      if (::inet_ntop(AF_INET, v6.s6_addr + 12, text, sizeof text) != nullptr) return text;
    }
    std::fill(v6.s6_addr + 8, v6.s6_addr + 16, 0);
    char text[INET6_ADDRSTRLEN] = {};
    if (::inet_ntop(AF_INET6, &v6, text, sizeof text) != nullptr) return std::string(text) + "/64";
  }
  return host;
}

void PeerRateLimiter::refill(Bucket& bucket, SteadyClock::time_point now) const {
  if (now <= bucket.updated) return;
  const double elapsed = std::chrono::duration<double>(now - bucket.updated).count();
  bucket.tokens = std::min<double>(limit_.burst, bucket.tokens + elapsed * limit_.per_minute / 60.0);
  bucket.updated = now;
}

void PeerRateLimiter::drop_full_buckets(SteadyClock::time_point now) {
  for (auto it = buckets_.begin(); it != buckets_.end();) {
    refill(it->second, now);
    if (it->second.tokens >= limit_.burst)
      it = buckets_.erase(it);
    else
      ++it;
  }
}

std::optional<std::chrono::seconds> PeerRateLimiter::admit(std::string_view peer, SteadyClock::time_point now) {
  if (!enabled()) return std::nullopt;
  std::string key = bucket_key(peer);
  std::lock_guard lock(mutex_);
  auto found = buckets_.find(key);
  if (found == buckets_.end()) {
    if (buckets_.size() >= max_tracked_peers) drop_full_buckets(now);
    if (buckets_.size() >= max_tracked_peers) key = std::string(overflow_key);
    found = buckets_.try_emplace(std::move(key), Bucket{static_cast<double>(limit_.burst), now}).first;
  }
  Bucket& bucket = found->second;
  refill(bucket, now);
  if (bucket.tokens >= 1.0) {
    bucket.tokens -= 1.0;
    return std::nullopt;
  }
  const double wait = (1.0 - bucket.tokens) * 60.0 / limit_.per_minute;
  return std::chrono::seconds(std::max<long long>(1, static_cast<long long>(std::ceil(wait))));
}

std::size_t PeerRateLimiter::tracked_peers() const {
  std::lock_guard lock(mutex_);
  return buckets_.size();
}

}  // namespace fde::verifier
