// Attestation throughput and latency of the real fde-verifierd on loopback: the daemon is
// started like the integration test's fixture (test/integration/daemon_support.hpp), one
// image enrolled through fde-admin, then C client threads each run challenge -> simulated
// token (issued in the client thread) -> attest -> HPKE open until N attestations are done.
//
// With --store postgresql, --replicas R daemons share one PostgreSQL started for the run
// (test/integration/fleet_support.hpp) and client threads spread over them: each
// attestation takes its challenge from one replica and attests to the next.
//
//   attest_bench [--count N] [--concurrency C] [--threads T] [--blocking-threads B]
//                [--store sqlite|postgresql] [--replicas R]
#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <mutex>

#include "test/integration/fleet_support.hpp"

using namespace fde;
using namespace fde::itest;

namespace {

double percentile_ms(std::vector<std::chrono::nanoseconds> values, double p) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  std::size_t index = static_cast<std::size_t>(p * static_cast<double>(values.size() - 1) + 0.5);
  return std::chrono::duration<double, std::milli>(values[std::min(index, values.size() - 1)]).count();
}

int parse_int(const char* text, const char* name) {
  char* end = nullptr;
  long value = std::strtol(text, &end, 10);
  if (end == text || *end != 0 || value <= 0 || value > 1'000'000) {
    std::cerr << "attest_bench: bad " << name << ": " << text << "\n";
    std::exit(2);
  }
  return static_cast<int>(value);
}

}  // namespace

int main(int argc, char** argv) {
  int count = 400;
  int concurrency = 16;
  int replica_count = 1;
  std::string store = "sqlite";
  DaemonOptions options;
  options.threads = 2;
  options.blocking_threads = 4;
  // Every request comes from 127.0.0.1: the per-address limit would measure itself.
  options.attest_per_minute = 0;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (i + 1 >= argc) {
      std::cerr << "attest_bench: " << arg << " needs a value\n";
      return 2;
    }
    if (arg == "--count") count = parse_int(argv[++i], "count");
    else if (arg == "--concurrency") concurrency = parse_int(argv[++i], "concurrency");
    else if (arg == "--threads") options.threads = parse_int(argv[++i], "threads");
    else if (arg == "--blocking-threads") options.blocking_threads = parse_int(argv[++i], "blocking threads");
    else if (arg == "--replicas") replica_count = parse_int(argv[++i], "replicas");
    else if (arg == "--store") store = argv[++i];
    else {
      std::cerr << "usage: attest_bench [--count N] [--concurrency C] [--threads T] [--blocking-threads B]\n"
                   "                    [--store sqlite|postgresql] [--replicas R]\n";
      return 2;
    }
  }
  if ((store != "sqlite" && store != "postgresql") || (store == "sqlite" && replica_count != 1)) {
    std::cerr << "attest_bench: --store is sqlite (one daemon) or postgresql (--replicas R)\n";
    return 2;
  }

  try {
    std::unique_ptr<Daemon> single;
    std::unique_ptr<Fleet> fleet;
    std::vector<Daemon*> replicas;
    if (store == "sqlite") {
      single = std::make_unique<Daemon>(options);
      single->start();
      replicas.push_back(single.get());
    } else {
      fleet = std::make_unique<Fleet>(replica_count, options);
      for (auto& replica : fleet->replicas) replicas.push_back(replica.get());
    }
    Daemon& daemon = *replicas.front();
    const SecretBytes key = crypto::random_secret(32);
    const std::string image = "bench-image-01";
    if (auto enrolled = daemon.enroll(image, key); enrolled.status != 0) {
      std::cerr << "attest_bench: enroll failed: " << enrolled.output << "\n";
      return 1;
    }
    // One warm-up exchange (also checks the key round trip).
    if (auto warm = attest(daemon, {image}); !warm.key) {
      std::cerr << "attest_bench: warm-up attestation failed: " << (warm.attest ? warm.attest->body : "") << "\n"
                << daemon.log();
      return 1;
    }

    std::atomic<int> next{0};
    std::atomic<int> failures{0};
    std::mutex mutex;
    std::vector<std::chrono::nanoseconds> attest_times;
    std::vector<std::chrono::nanoseconds> total_times;
    std::string first_failure;
    const auto start = std::chrono::steady_clock::now();
    std::vector<std::thread> threads;
    for (int t = 0; t < concurrency; ++t)
      threads.emplace_back([&] {
        for (int n = next.fetch_add(1); n < count; n = next.fetch_add(1)) {
          try {
            const std::size_t r = static_cast<std::size_t>(n) % replicas.size();
            auto exchange = attest_across(*replicas[r], *replicas[(r + 1) % replicas.size()], {image});
            const bool ok = exchange.key && exchange.key->view().size() == key.view().size() &&
                            std::equal(exchange.key->view().begin(), exchange.key->view().end(), key.view().begin());
            std::lock_guard lock(mutex);
            if (!ok) {
              ++failures;
              if (first_failure.empty()) first_failure = exchange.attest ? exchange.attest->body : exchange.challenge.body;
              continue;
            }
            attest_times.push_back(exchange.attest_time);
            total_times.push_back(exchange.total_time);
          } catch (const std::exception& error) {
            std::lock_guard lock(mutex);
            ++failures;
            if (first_failure.empty()) first_failure = error.what();
          }
        }
      });
    for (auto& thread : threads) thread.join();
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

    std::printf("attest_bench: %d attestations, %d concurrent clients, store %s, %zu replica(s), daemon threads=%d "
                "blocking_threads=%d\n",
                count, concurrency, store.c_str(), replicas.size(), options.threads, options.blocking_threads);
    std::printf("  released: %zu, failed: %d%s%s\n", attest_times.size(), failures.load(),
                first_failure.empty() ? "" : " (first: ", first_failure.empty() ? "" : (first_failure + ")").c_str());
    std::printf("  throughput: %.1f attestations/s (%.2f s wall, client token issuing included)\n",
                static_cast<double>(attest_times.size()) / seconds, seconds);
    std::printf("  POST /v1/attest latency:        p50 %.2f ms  p99 %.2f ms\n", percentile_ms(attest_times, 0.50),
                percentile_ms(attest_times, 0.99));
    std::printf("  challenge+token+attest latency: p50 %.2f ms  p99 %.2f ms\n", percentile_ms(total_times, 0.50),
                percentile_ms(total_times, 0.99));
    bool stopped = true;
    for (Daemon* replica : replicas) stopped = replica->stop() == 0 && stopped;
    return failures.load() == 0 && stopped ? 0 : 1;
  } catch (const std::exception& error) {
    std::cerr << "attest_bench: " << error.what() << "\n";
    return 1;
  }
}
