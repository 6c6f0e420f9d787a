// Prometheus text exposition of the daemon's counters.
#include "verifier-daemon/metrics/metrics.hpp"

#include <openssl/crypto.h>

#include <cstdio>

namespace fde::verifier {

namespace {

// Label values are escaped as the exposition format requires (\\, \", \n).
std::string label_value(std::string_view value) {
  std::string out;
  for (char c : value) {
    if (c == '\\' || c == '"') {
      out += '\\';
      out += c;
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

std::string number(double value) {
  char buffer[64];
  std::snprintf(buffer, sizeof buffer, "%.9g", value);
  return buffer;
}

void header(std::string& out, std::string_view name, std::string_view type, std::string_view help) {
  out += "# HELP " + std::string(name) + " " + std::string(help) + "\n";
  out += "# TYPE " + std::string(name) + " " + std::string(type) + "\n";
}

void sample(std::string& out, std::string_view name, std::string_view labels, std::string_view value) {
  out += name;
  if (!labels.empty()) out += "{" + std::string(labels) + "}";
  out += " ";
  out += value;
  out += "\n";
}

}  // namespace

std::string_view Metrics::endpoint_label(std::string_view target) {
  for (std::string_view known : {"/v1/challenge", "/v1/attest"})
    if (target == known) return known;
  return "other";
}

void Metrics::request_started() {
  std::lock_guard lock(mutex_);
  ++in_flight_;
}

void Metrics::request_finished(std::string_view endpoint, unsigned status, std::chrono::nanoseconds duration) {
  const double seconds = std::chrono::duration<double>(duration).count();
  std::lock_guard lock(mutex_);
  --in_flight_;
  ++requests_[{std::string(endpoint), status}];
  Histogram& histogram = durations_[std::string(endpoint)];
  for (std::size_t i = 0; i < latency_buckets.size(); ++i)
    if (seconds <= latency_buckets[i]) {
      ++histogram.buckets[i];
      break;
    }
  ++histogram.count;
  histogram.sum += seconds;
}

void Metrics::released() {
  std::lock_guard lock(mutex_);
  ++releases_;
}

void Metrics::denied(std::string_view reason) {
  std::lock_guard lock(mutex_);
  ++denials_[std::string(reason)];
}

void Metrics::refused(std::string_view reason) {
  std::lock_guard lock(mutex_);
  ++refusals_[std::string(reason)];
}

void Metrics::set_transport_stats(std::function<TransportStats()> source) {
  std::lock_guard lock(mutex_);
  transport_ = std::move(source);
}

void Metrics::set_store_stats(std::function<StoreStats()> source) {
  std::lock_guard lock(mutex_);
  store_ = std::move(source);
}

void Metrics::set_tls_certificate_expiry(std::int64_t not_after) {
  std::lock_guard lock(mutex_);
  tls_not_after_ = not_after;
}

void Metrics::set_reload_result(bool applied) {
  std::lock_guard lock(mutex_);
  last_reload_applied_ = applied;
}

std::string Metrics::render() const {
  std::function<TransportStats()> transport;
  std::function<StoreStats()> store;
  std::string out;
  {
    std::lock_guard lock(mutex_);
    transport = transport_;
    store = store_;

    header(out, "fde_requests_total", "counter", "HTTP requests handled, by endpoint and status code.");
    for (const auto& [key, count] : requests_)
      sample(out, "fde_requests_total",
             "endpoint=\"" + label_value(key.first) + "\",code=\"" + std::to_string(key.second) + "\"",
             std::to_string(count));

    header(out, "fde_releases_total", "counter", "Disk keys released to attested VMs.");
    sample(out, "fde_releases_total", "", std::to_string(releases_));

    header(out, "fde_denials_total", "counter", "Attestation requests denied, by the first failed check.");
    for (const auto& [reason, count] : denials_)
      sample(out, "fde_denials_total", "reason=\"" + label_value(reason) + "\"", std::to_string(count));

    header(out, "fde_attest_refused_total", "counter",
           "Attest requests refused before any check, without an audit record, by reason.");
    for (const auto& [reason, count] : refusals_)
      sample(out, "fde_attest_refused_total", "reason=\"" + label_value(reason) + "\"", std::to_string(count));

    header(out, "fde_request_duration_seconds", "histogram", "Time from request to response, by endpoint.");
    for (const auto& [endpoint, histogram] : durations_) {
      const std::string endpoint_label_text = "endpoint=\"" + label_value(endpoint) + "\"";
      std::uint64_t cumulative = 0;
      for (std::size_t i = 0; i < latency_buckets.size(); ++i) {
        cumulative += histogram.buckets[i];
        sample(out, "fde_request_duration_seconds_bucket",
               endpoint_label_text + ",le=\"" + number(latency_buckets[i]) + "\"", std::to_string(cumulative));
      }
      sample(out, "fde_request_duration_seconds_bucket", endpoint_label_text + ",le=\"+Inf\"",
             std::to_string(histogram.count));
      sample(out, "fde_request_duration_seconds_sum", endpoint_label_text, number(histogram.sum));
      sample(out, "fde_request_duration_seconds_count", endpoint_label_text, std::to_string(histogram.count));
    }

    header(out, "fde_requests_in_flight", "gauge", "Requests being handled by the application.");
    sample(out, "fde_requests_in_flight", "", std::to_string(in_flight_));
    if (CRYPTO_secure_malloc_initialized()) {
      header(out, "fde_locked_arena_bytes_used", "gauge",
             "Bytes of the locked secret arena in use (secrets of the daemon and of OpenSSL).");
      sample(out, "fde_locked_arena_bytes_used", "", std::to_string(CRYPTO_secure_used()));
    }

    if (tls_not_after_) {
      header(out, "fde_tls_certificate_expiry_timestamp_seconds", "gauge",
             "When the attestation port's TLS certificate expires (notAfter, Unix time).");
      sample(out, "fde_tls_certificate_expiry_timestamp_seconds", "", std::to_string(*tls_not_after_));
    }
    if (last_reload_applied_) {
      header(out, "fde_config_last_reload_successful", "gauge",
             "1 if the last reload applied the new configuration, 0 if it kept the previous one.");
      sample(out, "fde_config_last_reload_successful", "", *last_reload_applied_ ? "1" : "0");
    }
  }

  // Outside the lock: the store and the transport take their own.
  if (store) {
    const StoreStats stats = store();
    header(out, "fde_store_lock_held_seconds_total", "counter",
           "Time the store's lock was held (divided by elapsed time: the share of time the store is serialised).");
    char held[64];
    std::snprintf(held, sizeof held, "%.6f", stats.lock_held_seconds);
    sample(out, "fde_store_lock_held_seconds_total", "", held);
    header(out, "fde_store_commits_total", "counter", "Write transactions committed to the store.");
    sample(out, "fde_store_commits_total", "", std::to_string(stats.commits));
    header(out, "fde_store_syncs_total", "counter",
           "fdatasync calls that made commits durable (concurrent commits share one).");
    sample(out, "fde_store_syncs_total", "", std::to_string(stats.syncs));
  }
  if (transport) {
    const TransportStats stats = transport();
    struct Counter {
      const char* name;
      std::uint64_t value;
      const char* help;
    };
    const Counter counters[] = {
        {"fde_transport_connections_accepted_total", stats.connections_accepted, "TLS connections accepted."},
        {"fde_transport_connections_refused_total", stats.connections_refused,
         "Connections closed at once: every slot (in total or of that peer) was answering a request."},
        {"fde_transport_connections_shed_total", stats.connections_shed,
         "Unfinished or idle connections closed to make room for newer ones (slots or body memory)."},
        {"fde_transport_handshake_failures_total", stats.handshake_failures, "TLS handshakes that failed."},
        {"fde_transport_timeouts_total", stats.timeouts, "Connections closed by a handshake, read or write deadline."},
        {"fde_transport_oversized_requests_total", stats.oversized_requests,
         "Requests refused because a header or body exceeded its limit."},
        {"fde_transport_bodies_refused_total", stats.bodies_refused,
         "Requests answered 503 because max_buffered_body_bytes had no room for their body."},
        {"fde_transport_connections_queued_total", stats.connections_queued,
         "Connections that waited (in arrival order) for an active slot before their TLS handshake."},
        {"fde_transport_queue_timeouts_total", stats.queue_timeouts,
         "Connections closed without a handshake after waiting queue_timeout_ms for an active slot."},
        {"fde_transport_clients_gone_total", stats.clients_gone,
         "Connections whose client had closed before its handshake or request was worked on."},
    };
    for (const Counter& counter : counters) {
      header(out, counter.name, "counter", counter.help);
      sample(out, counter.name, "", std::to_string(counter.value));
    }
    header(out, "fde_transport_connections_open", "gauge", "TLS connections open now.");
    sample(out, "fde_transport_connections_open", "", std::to_string(stats.connections_open));
    header(out, "fde_transport_connections_waiting", "gauge", "Connections waiting for an active slot now.");
    sample(out, "fde_transport_connections_waiting", "", std::to_string(stats.connections_waiting));
    header(out, "fde_transport_connections_active", "gauge",
           "Connections holding an active slot (handshake through answer) now.");
    sample(out, "fde_transport_connections_active", "", std::to_string(stats.connections_active));
    header(out, "fde_transport_requests_in_flight", "gauge", "Requests read and not yet answered by the transport.");
    sample(out, "fde_transport_requests_in_flight", "", std::to_string(stats.requests_in_flight));
    header(out, "fde_transport_body_bytes_buffered", "gauge", "Request-body bytes held in memory now.");
    sample(out, "fde_transport_body_bytes_buffered", "", std::to_string(stats.body_bytes_buffered));
  }
  return out;
}

}  // namespace fde::verifier
