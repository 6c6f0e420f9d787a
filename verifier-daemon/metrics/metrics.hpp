// Counters and a latency histogram for GET /metrics (served on the operator listener, never
// on the attestation port), in the Prometheus text exposition format (version 0.0.4).
// Thread-safe: handlers on the blocking pool update it concurrently.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

#include "verifier-daemon/server/https_server.hpp"
#include "verifier-daemon/store/store.hpp"

namespace fde::verifier {

class Metrics {
 public:
  // Upper bounds of the latency buckets, in seconds (+Inf is implicit).
  static constexpr std::array<double, 12> latency_buckets = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                                             0.05,   0.1,   0.25,   0.5,   1.0,  5.0};

  // Endpoint labels are the attestation port's two paths or "other", so a scanner cannot
  // grow the label set.
  static std::string_view endpoint_label(std::string_view target);

  void request_started();
  void request_finished(std::string_view endpoint, unsigned status, std::chrono::nanoseconds duration);
  void released();
  // `reason` is the first failed check's name (a fixed vocabulary).
  void denied(std::string_view reason);
  // An attest request answered without a decision and without an audit record (rate limited,
  // malformed, a nonce that is not valid or already used). `reason` is a fixed word.
  void refused(std::string_view reason);

  // Where transport counters come from (set once, before the server starts).
  void set_transport_stats(std::function<TransportStats()> source);
  // Where the store's counters come from (set once, before the server starts).
  void set_store_stats(std::function<StoreStats()> source);
  // The serving TLS certificate's notAfter (seconds since the epoch), set at start and reload.
  void set_tls_certificate_expiry(std::int64_t not_after);
  // Whether the last reload applied its configuration (1) or kept the previous one (0).
  void set_reload_result(bool applied);

  std::string render() const;

 private:
  struct Histogram {
    std::array<std::uint64_t, latency_buckets.size()> buckets{};  // non-cumulative
    std::uint64_t count = 0;
    double sum = 0;
  };
  mutable std::mutex mutex_;
  std::map<std::pair<std::string, unsigned>, std::uint64_t> requests_;
  std::map<std::string, Histogram> durations_;
  std::map<std::string, std::uint64_t> denials_;
  std::map<std::string, std::uint64_t> refusals_;
  std::uint64_t releases_ = 0;
  std::int64_t in_flight_ = 0;
  std::optional<std::int64_t> tls_not_after_;
  std::optional<bool> last_reload_applied_;
  std::function<TransportStats()> transport_;
  std::function<StoreStats()> store_;
};

}  // namespace fde::verifier
