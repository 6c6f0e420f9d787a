// A token bucket per source address, for POST /v1/attest: each request takes one token,
// tokens come back at a steady rate up to a burst. Addresses, not connections: a client
// gains nothing by opening more connections. IPv6 peers are counted per /64, since one host
// is routinely given a whole /64 and could otherwise rotate addresses at will.
//
// Memory is bounded: at most max_tracked_peers buckets. When the table is full, buckets that
// have refilled completely (indistinguishable from a new peer) are dropped; if none has,
// every further new address shares one overflow bucket until some refill.
#pragma once

#include <chrono>
#include <cstddef>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

namespace fde::verifier {

struct RateLimit {
  unsigned per_minute = 60;  // tokens returned per minute and peer; 0 = no limit
  unsigned burst = 30;       // the bucket's size: requests a quiet peer may make at once
};

class PeerRateLimiter {
 public:
  using SteadyClock = std::chrono::steady_clock;
  static constexpr std::size_t max_tracked_peers = 65536;

  explicit PeerRateLimiter(RateLimit limit) : limit_(limit) {}

  // Takes a token for `peer` ("192.0.2.1:40000", "[2001:db8::1]:40000", as the transport
  // writes HttpRequest::peer). nullopt: admitted. Otherwise refused, with the whole seconds
  // until a token is back (at least 1), for Retry-After.
  std::optional<std::chrono::seconds> admit(std::string_view peer, SteadyClock::time_point now);

  // The bucket a peer counts against: "192.0.2.1", "2001:db8:1:2::/64"; an unparseable
  // peer text counts as itself without its port.
  static std::string bucket_key(std::string_view peer);

  std::size_t tracked_peers() const;
  bool enabled() const { return limit_.per_minute != 0; }

 private:
  struct Bucket {
    double tokens = 0;
    SteadyClock::time_point updated;
  };
  void refill(Bucket& bucket, SteadyClock::time_point now) const;
  void drop_full_buckets(SteadyClock::time_point now);

  RateLimit limit_;
  mutable std::mutex mutex_;
  std::unordered_map<std::string, Bucket> buckets_;
};

}  // namespace fde::verifier
