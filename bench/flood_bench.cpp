// The daemon's resident memory under a connection and body flood: fde-verifierd is started
// as in the integration tests (test/integration/daemon_support.hpp), hostile clients
// (test/integration/hostile_clients.hpp) hold connections that each send most of a large
// body and then stall, and VmRSS of the daemon is read from /proc before, at the peak
// during, and 2 s and 10 s after the flood (the hostile sockets closed). One honest
// attestation (from another address than the hostile ones) is timed during the flood.
//
//   flood_bench [--bodies N] [--idle N] [--partial N] [--slow-headers N] [--seconds S]
//               [--body-first-burst BYTES] [--threads T] [--verifierd PATH]
//
// The defaults are the security review's memory case: 300 connections, each sending all but
// the last byte of a 1.4 MB body (--body-first-burst 1399999) and holding it.
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>

#include "common/util/process.hpp"
#include "test/integration/daemon_support.hpp"
#include "test/integration/hostile_clients.hpp"

using namespace fde;
using namespace fde::itest;

namespace {

long rss_kib(pid_t pid) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(status, line))
    if (line.rfind("VmRSS:", 0) == 0) return std::strtol(line.c_str() + 6, nullptr, 10);
  return -1;
}

long parse_number(const char* text, const char* name) {
  char* end = nullptr;
  const long value = std::strtol(text, &end, 10);
  if (end == text || *end != 0 || value < 0) {
    std::cerr << "flood_bench: bad " << name << ": " << text << "\n";
    std::exit(2);
  }
  return value;
}

double mib(long kib) { return static_cast<double>(kib) / 1024.0; }

}  // namespace

int main(int argc, char** argv) {
  HostileMix mix;
  mix.trickled_bodies = 300;
  mix.body_length = 1'400'000;
  mix.body_first_burst = mix.body_length - 1;
  mix.trickle_interval = std::chrono::milliseconds(1000);
  mix.trickle_bytes = 0;
  long seconds = 8;
  DaemonOptions options;
  options.threads = 2;
  std::string verifierd;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (i + 1 >= argc) {
      std::cerr << "flood_bench: " << arg << " needs a value\n";
      return 2;
    }
    const char* value = argv[++i];
    if (arg == "--bodies") mix.trickled_bodies = static_cast<int>(parse_number(value, "bodies"));
    else if (arg == "--idle") mix.idle_tcp = static_cast<int>(parse_number(value, "idle"));
    else if (arg == "--partial") mix.partial_handshakes = static_cast<int>(parse_number(value, "partial"));
    else if (arg == "--slow-headers") mix.slow_headers = static_cast<int>(parse_number(value, "slow headers"));
    else if (arg == "--seconds") seconds = parse_number(value, "seconds");
    else if (arg == "--body-first-burst") mix.body_first_burst = static_cast<std::size_t>(parse_number(value, "burst"));
    else if (arg == "--threads") options.threads = static_cast<int>(parse_number(value, "threads"));
    else if (arg == "--verifierd") verifierd = value;
    else {
      std::cerr << "usage: flood_bench [--bodies N] [--idle N] [--partial N] [--slow-headers N] [--seconds S]\n"
                   "                   [--body-first-burst BYTES] [--threads T] [--verifierd PATH]\n";
      return 2;
    }
  }
  // Hostile connections come from 127.0.1.1 .. 127.0.1.100, so that the per-peer cap does not
  // turn them away before the body budget is reached, and the honest client (127.0.0.1) is
  // another peer.
  for (int i = 1; i <= 100; ++i) mix.sources.push_back("127.0.1." + std::to_string(i));
  raise_open_files_limit();
  // The request deadline outlasts the flood, as the review's attack assumed (15 s default).
  options.request_timeout_ms = static_cast<int>(std::max<long>(15, seconds + 5) * 1000);

  Daemon daemon(options);
  if (!verifierd.empty()) daemon.verifierd = verifierd;
  daemon.start();
  const SecretBytes key = crypto::random_secret(32);
  if (daemon.enroll("bench-flood-01", key).status != 0) {
    std::cerr << "flood_bench: enroll failed\n" << daemon.log();
    return 1;
  }
  // Warm up: a few attestations, so the baseline includes what serving costs anyway.
  for (int i = 0; i < 5; ++i) (void)attest(daemon, {"bench-flood-01"});
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  const long before = rss_kib(daemon.pid());

  HostileClients hostile(daemon.port, mix);
  hostile.start();
  long peak = before;
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
  double honest_ms = -1;
  bool honest_ok = false;
  std::string honest_detail;
  while (std::chrono::steady_clock::now() < until) {
    peak = std::max(peak, rss_kib(daemon.pid()));
    if (honest_ms < 0 && std::chrono::steady_clock::now() + std::chrono::seconds(seconds / 2) > until) {
      const auto start = std::chrono::steady_clock::now();
      try {
        auto exchange = attest(daemon, {"bench-flood-01"});
        honest_ok = exchange.key.has_value();
        honest_detail = "challenge " + std::to_string(exchange.challenge.status) +
                        (exchange.attest ? ", attest " + std::to_string(exchange.attest->status) : std::string());
      } catch (const std::exception& error) {
        honest_ok = false;
        honest_detail = error.what();
      }
      honest_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  const auto stats = hostile.stats();
  hostile.stop();
  std::this_thread::sleep_for(std::chrono::seconds(2));
  const long after = rss_kib(daemon.pid());
  std::this_thread::sleep_for(std::chrono::seconds(8));
  const long later = rss_kib(daemon.pid());

  std::printf("flood_bench: %d trickled bodies (%zu of %zu bytes at once), %d idle, %d partial handshakes, "
              "%d slow headers, %ld s\n",
              mix.trickled_bodies, mix.body_first_burst, mix.body_length, mix.idle_tcp, mix.partial_handshakes,
              mix.slow_headers, seconds);
  std::printf("  hostile: %ld connections made, %ld dropped by the daemon, %.1f MiB of body sent\n", stats.connects,
              stats.dropped, mib(stats.body_bytes_sent / 1024));
  std::printf("  daemon RSS: before %.1f MiB, peak during %.1f MiB, 2 s after %.1f MiB, 10 s after %.1f MiB\n",
              mib(before), mib(peak), mib(after), mib(later));
  std::printf("  an honest attestation during the flood: %s in %.0f ms (%s)\n", honest_ok ? "key released" : "FAILED",
              honest_ms, honest_detail.c_str());
  return honest_ok ? 0 : 1;
}
