// The cheap defences in front of the attestation checks: the per-address token bucket, the
// memory of spent nonces and the log throttle. Pure arithmetic on clocks the tests move.
#include <catch2/catch.hpp>

#include "common/crypto/random.hpp"
#include "verifier-daemon/limits/peer_rate_limiter.hpp"
#include "verifier-daemon/log/logger.hpp"
#include "verifier-daemon/nonce/used_nonces.hpp"

using namespace fde;
using namespace fde::verifier;
using namespace std::chrono_literals;

TEST_CASE("the rate limiter lets a burst through, then one request per refill period") {
  PeerRateLimiter limiter(RateLimit{30, 4});  // a token every 2 s, four at once
  auto t = std::chrono::steady_clock::time_point{} + 1h;
  for (int i = 0; i < 4; ++i) CHECK_FALSE(limiter.admit("192.0.2.1:1000", t));
  auto refused = limiter.admit("192.0.2.1:1001", t);
  REQUIRE(refused);
  CHECK(*refused == 2s);
  t += 1s;
  refused = limiter.admit("192.0.2.1:1002", t);
  REQUIRE(refused);
  CHECK(*refused == 1s);  // half a token back: one more second
  t += 1s;
  CHECK_FALSE(limiter.admit("192.0.2.1:1003", t));
  CHECK(limiter.admit("192.0.2.1:1004", t));
  // A long quiet spell refills to the burst, never beyond it.
  t += 1h;
  for (int i = 0; i < 4; ++i) CHECK_FALSE(limiter.admit("192.0.2.1:1005", t));
  CHECK(limiter.admit("192.0.2.1:1006", t));
  // Refused requests take nothing: the refill is the same however often a client retries.
  for (int i = 0; i < 100; ++i) (void)limiter.admit("192.0.2.1:1007", t);
  t += 2s;
  CHECK_FALSE(limiter.admit("192.0.2.1:1008", t));
}

TEST_CASE("rate limiter buckets: per IPv4 address, per IPv6 /64, off when the rate is 0") {
  CHECK(PeerRateLimiter::bucket_key("192.0.2.1:1000") == "192.0.2.1");
  CHECK(PeerRateLimiter::bucket_key("[2001:db8:1:2:3:4:5:6]:443") == "2001:db8:1:2::/64");
  CHECK(PeerRateLimiter::bucket_key("[2001:db8:1:2::9]:1") == "2001:db8:1:2::/64");
  CHECK(PeerRateLimiter::bucket_key("[::ffff:192.0.2.1]:1") == "192.0.2.1");
  CHECK(PeerRateLimiter::bucket_key("unknown") == "unknown");

  const auto t = std::chrono::steady_clock::time_point{} + 1h;
  PeerRateLimiter limiter(RateLimit{60, 1});
  CHECK_FALSE(limiter.admit("192.0.2.1:1", t));
  CHECK(limiter.admit("192.0.2.1:2", t));
  CHECK_FALSE(limiter.admit("192.0.2.2:1", t));
  CHECK_FALSE(limiter.admit("[2001:db8::1]:1", t));
  CHECK(limiter.admit("[2001:db8::2]:1", t));

  PeerRateLimiter off(RateLimit{0, 1});
  CHECK_FALSE(off.enabled());
  for (int i = 0; i < 1000; ++i) CHECK_FALSE(off.admit("192.0.2.1:1", t));
  CHECK(off.tracked_peers() == 0);
}

TEST_CASE("the rate limiter's memory is bounded: refilled buckets go, new addresses share an overflow bucket") {
  PeerRateLimiter limiter(RateLimit{60, 2});
  auto t = std::chrono::steady_clock::time_point{} + 1h;
  auto address = [](std::size_t i) {
    return "10." + std::to_string((i >> 16) & 255) + "." + std::to_string((i >> 8) & 255) + "." +
           std::to_string(i & 255) + ":1";
  };
  for (std::size_t i = 0; i < PeerRateLimiter::max_tracked_peers; ++i) CHECK_FALSE(limiter.admit(address(i), t));
  CHECK(limiter.tracked_peers() == PeerRateLimiter::max_tracked_peers);
  // Full table, nobody refilled: new addresses share one bucket of the same size.
  CHECK_FALSE(limiter.admit("192.0.2.1:1", t));
  CHECK_FALSE(limiter.admit("192.0.2.2:1", t));
  CHECK(limiter.admit("192.0.2.3:1", t));
  CHECK(limiter.tracked_peers() == PeerRateLimiter::max_tracked_peers + 1);
  // Once the old buckets have refilled, they are forgotten and new addresses get their own.
  t += 1min;
  CHECK_FALSE(limiter.admit("192.0.2.4:1", t));
  CHECK(limiter.tracked_peers() <= 2);
}

TEST_CASE("a nonce is used once; the memory forgets it when it expires and stays bounded") {
  const auto now = Clock::now();
  UsedNonces used(3);
  const Bytes a = crypto::random_bytes(64);
  const Bytes b = crypto::random_bytes(64);
  CHECK(used.first_use(a, now + 60s, now));
  CHECK_FALSE(used.first_use(a, now + 60s, now + 1s));
  CHECK(used.first_use(b, now + 30s, now));
  // Expired entries are forgotten (the nonce check refuses an expired nonce before this).
  CHECK(used.first_use(b, now + 90s, now + 31s));
  CHECK(used.size() == 2);
  // Full: the entry that expires soonest makes room.
  const Bytes c = crypto::random_bytes(64);
  const Bytes d = crypto::random_bytes(64);
  CHECK(used.first_use(c, now + 120s, now + 31s));
  CHECK(used.first_use(d, now + 120s, now + 31s));
  CHECK(used.size() == 3);
  CHECK(used.first_use(a, now + 60s, now + 32s));  // a (expiring first) was dropped
  CHECK_FALSE(used.first_use(d, now + 120s, now + 32s));
}

TEST_CASE("the log throttle writes one line per kind and interval and counts the rest") {
  LogThrottle throttle(10s);
  auto t = std::chrono::steady_clock::time_point{} + 1h;
  REQUIRE(throttle.admit("nonce_forged", t));
  CHECK(*throttle.admit("nonce_expired", t) == 0);  // kinds are independent
  for (int i = 0; i < 500; ++i) CHECK_FALSE(throttle.admit("nonce_forged", t + 5s));
  auto next = throttle.admit("nonce_forged", t + 10s);
  REQUIRE(next);
  CHECK(*next == 500);
  CHECK(*throttle.admit("nonce_forged", t + 25s) == 0);
}
