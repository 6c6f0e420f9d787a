// A boot storm against the real fde-verifierd on loopback: many agents that start at nearly
// the same moment, each running the agent's own boot flow (guest-agent/flow/unlock_flow:
// the retry schedule with its backoff and jitter on 503/429/refused connections, the
// attestation client, the HTTPS transport, the simulated platform issuing a token per
// challenge, the released-key check). Only the LUKS device and cryptsetup are stand-ins: the
// device is "there" at once and "unlocking" records the moment the checked key is in hand.
//
// Three phases against one daemon:
//   capacity   C agents at a time, back to back, until M have unlocked: the throughput
//   half load  agents arriving at random (Poisson) at half that throughput for S seconds:
//              start-to-key latency p50/p99 (goal: p99 under 50 ms)
//   storm      N agents whose start times are spread uniformly over W ms (default 1,000 in
//              1 s): all must unlock; the time from the first start to the last key is
//              checked against 1.5 x N / throughput; start-to-key p50/p99
// and the daemon's peak RSS (VmHWM) at the end.
//
//   storm_bench [--agents N] [--window-ms W] [--capacity-agents M] [--capacity-clients C]
//               [--half-seconds S] [--threads T] [--blocking-threads B] [--max-connections K]
//               [--max-connections-per-peer P] [--attest-per-minute R] [--attest-burst B]
//               [--backoff-initial D] [--backoff-max D] [--handshake-timeout-ms T] [--request-timeout-ms T]
//               [--label NAME]
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <atomic>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <map>
#include <mutex>
#include <random>

#include "bench/bench_proc.hpp"
#include "common/crypto/key_check.hpp"
#include "guest-agent/client/attestation_client.hpp"
#include "guest-agent/client/transport.hpp"
#include "guest-agent/config/agent_config.hpp"
#include "guest-agent/flow/unlock_flow.hpp"
#include "guest-agent/platform/platform_factory.hpp"
#include "test/integration/daemon_support.hpp"

using namespace fde;
using namespace fde::itest;
using Clock = std::chrono::steady_clock;

namespace {

[[noreturn]] void usage() {
  std::cerr << "usage: storm_bench [--agents N] [--window-ms W] [--capacity-agents M] [--capacity-clients C]\n"
               "                   [--half-seconds S] [--threads T] [--blocking-threads B] [--max-connections K]\n"
               "                   [--max-connections-per-peer P] [--attest-per-minute R] [--attest-burst B]\n"
               "                   [--backoff-initial DURATION] [--backoff-max DURATION] [--handshake-timeout-ms T]\n"
               "                   [--request-timeout-ms T] [--label NAME]\n";
  std::exit(2);
}

long parse_number(const std::string& text, const char* name, long min, long max) {
  char* end = nullptr;
  long value = std::strtol(text.c_str(), &end, 10);
  if (text.empty() || *end != 0 || value < min || value > max) {
    std::cerr << "storm_bench: bad " << name << ": " << text << "\n";
    std::exit(2);
  }
  return value;
}

// What one agent did.
struct AgentRun {
  Clock::time_point start;
  std::optional<Clock::time_point> key_in_hand;
  int attempts = 0;
  std::string last_failure;  // the last attempt that did not release, "step: message"
  std::vector<std::string> retry_reasons;  // every attempt that did not release
};

// The device node is there at once and nothing is open yet.
class PresentDevice final : public agent::DeviceLocator {
 public:
  Result<std::string> locate() override { return std::string("/dev/storm-bench"); }
  bool already_unlocked() override { return false; }
  Result<agent::CryptMapping> existing_mapping() override { return fail(Errc::not_found, "no mapping"); }
};

// Stands in for cryptsetup: the key got here only after the flow's released-key check.
class RecordingUnlocker final : public agent::VolumeUnlocker {
 public:
  explicit RecordingUnlocker(AgentRun& run) : run_(run) {}
  std::string describe() const override { return "the storm bench's recorder"; }
  Result<void> unlock(const SecretBytes& key) override {
    if (key.view().size() < agent::min_disk_key_size) return fail(Errc::invalid_argument, "short key");
    run_.key_in_hand = Clock::now();
    return {};
  }
  std::string done() const override { return "key in hand"; }

 private:
  AgentRun& run_;
};

class NullBuffer final : public std::streambuf {
 protected:
  int overflow(int c) override { return c; }
};

// One agent's boot: the platform loaded at its start, then the real flow.
agent::FlowResult run_agent(const agent::AgentConfig& config, const std::string& ca_pem, AgentRun& run) {
  run.start = Clock::now();
  NullBuffer null_buffer;
  std::ostream quiet(&null_buffer);
  agent::StatusReporter status(quiet);
  auto platform = agent::create_platform(config);
  if (!platform) {
    run.last_failure = "platform: " + platform.error().message;
    return agent::FlowResult::give_up_poweroff;
  }
  agent::HttpsTransport transport(ca_pem, config.server_name);
  agent::AttestationClient client(**platform, transport, config.image_id);
  agent::SystemClock clock;
  agent::RoutingTableProbe network;
  PresentDevice device;
  agent::FlowServices services{
      clock,
      status,
      network,
      device,
      [&](const agent::VerifierUrl& verifier, agent::TimePoint deadline) {
        ++run.attempts;
        auto result = client.attempt(verifier, deadline);
        if (result.status != agent::AttemptStatus::released) {
          run.last_failure = result.step + ": " + result.message;
          run.retry_reasons.push_back(run.last_failure);
        }
        return result;
      },
      [&](const std::string&) -> std::unique_ptr<agent::VolumeUnlocker> {
        return std::make_unique<RecordingUnlocker>(run);
      },
      {},
  };
  return agent::run_unlock_flow(config, services);
}

struct Summary {
  std::size_t unlocked = 0;
  std::size_t failed = 0;
  std::size_t retried = 0;
  int max_attempts = 0;
  std::string first_failure;
  std::vector<std::chrono::nanoseconds> latencies;  // start to key in hand
  std::optional<Clock::time_point> last_key;
  std::map<std::string, int> reasons;  // why attempts did not release, with how often
};

Summary summarize(const std::vector<AgentRun>& runs, const std::vector<agent::FlowResult>& results) {
  Summary summary;
  for (std::size_t i = 0; i < runs.size(); ++i) {
    const AgentRun& run = runs[i];
    summary.max_attempts = std::max(summary.max_attempts, run.attempts);
    for (const auto& reason : run.retry_reasons) {
      // Counted by kind: ports and durations become N.
      std::string kind;
      for (char c : reason)
        if (!std::isdigit(static_cast<unsigned char>(c))) kind += c;
        else if (kind.empty() || kind.back() != 'N') kind += 'N';
      ++summary.reasons[kind];
    }
    if (run.attempts > 1) ++summary.retried;
    if (results[i] == agent::FlowResult::unlocked && run.key_in_hand) {
      ++summary.unlocked;
      summary.latencies.push_back(*run.key_in_hand - run.start);
      if (!summary.last_key || *run.key_in_hand > *summary.last_key) summary.last_key = run.key_in_hand;
    } else {
      ++summary.failed;
      if (summary.first_failure.empty()) summary.first_failure = run.last_failure.empty() ? "gave up" : run.last_failure;
    }
  }
  return summary;
}

// Starts one thread per agent at the given offsets from `origin` and waits for all.
void run_agents(const agent::AgentConfig& config, const std::string& ca_pem, Clock::time_point origin,
                const std::vector<std::chrono::nanoseconds>& offsets, std::vector<AgentRun>& runs,
                std::vector<agent::FlowResult>& results) {
  runs.assign(offsets.size(), AgentRun{});
  results.assign(offsets.size(), agent::FlowResult::give_up_poweroff);
  std::vector<std::thread> threads;
  threads.reserve(offsets.size());
  for (std::size_t i = 0; i < offsets.size(); ++i)
    threads.emplace_back([&, i] {
      std::this_thread::sleep_until(origin + offsets[i]);
      results[i] = run_agent(config, ca_pem, runs[i]);
    });
  for (auto& thread : threads) thread.join();
}

const char* yes_no(bool value) { return value ? "yes" : "no"; }

// The daemon's transport counters (fde_transport_*) from its operator listener's /metrics:
// what it shed, refused or timed out during the storm.
std::string transport_counters(std::uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return {};
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(port);
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::string reply;
  const std::string request = "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
  timeval timeout{5, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0 &&
      ::send(fd, request.data(), request.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(request.size())) {
    char buffer[4096];
    for (ssize_t n; (n = ::recv(fd, buffer, sizeof buffer, 0)) > 0 && reply.size() < (1 << 20);)
      reply.append(buffer, static_cast<std::size_t>(n));
  }
  ::close(fd);
  std::string lines;
  std::istringstream in(reply);
  for (std::string line; std::getline(in, line);)
    if (line.rfind("fde_transport_", 0) == 0) lines += "  " + line + "\n";
  return lines;
}

}  // namespace

int main(int argc, char** argv) {
  int agents = 1000;
  int window_ms = 1000;
  int capacity_agents = 600;
  int capacity_clients = 64;
  int half_seconds = 10;
  std::string label = "storm";
  std::string backoff_initial = "1s";  // the agent's defaults (docs/fde-agent.md)
  std::string backoff_max = "30s";
  DaemonOptions options;
  options.threads = 2;
  options.blocking_threads = 4;
  options.handshake_timeout_ms = 5000;  // the daemon's defaults, not the test fixture's
  options.request_timeout_ms = 15000;
  // The settings of docs/benchmarks.md "Boot storms": every agent of this bench is 127.0.0.1,
  // so the per-address caps would make one address of a thousand VMs.
  long max_connections = 1024;
  long per_peer = 0;
  options.attest_per_minute = 0;
  for (int i = 1; i < argc; i += 2) {
    const std::string arg = argv[i];
    if (i + 1 >= argc) usage();
    const std::string value = argv[i + 1];
    if (arg == "--agents") agents = static_cast<int>(parse_number(value, "agents", 1, 20000));
    else if (arg == "--window-ms") window_ms = static_cast<int>(parse_number(value, "window", 0, 600000));
    else if (arg == "--capacity-agents") capacity_agents = static_cast<int>(parse_number(value, "agents", 1, 100000));
    else if (arg == "--capacity-clients") capacity_clients = static_cast<int>(parse_number(value, "clients", 1, 1024));
    else if (arg == "--half-seconds") half_seconds = static_cast<int>(parse_number(value, "seconds", 1, 3600));
    else if (arg == "--threads") options.threads = static_cast<int>(parse_number(value, "threads", 1, 64));
    else if (arg == "--blocking-threads")
      options.blocking_threads = static_cast<int>(parse_number(value, "threads", 1, 64));
    else if (arg == "--max-connections") max_connections = parse_number(value, "max connections", 1, 1 << 20);
    else if (arg == "--max-connections-per-peer") per_peer = parse_number(value, "per-peer cap", 0, 1 << 20);
    else if (arg == "--attest-per-minute")
      options.attest_per_minute = static_cast<unsigned>(parse_number(value, "rate", 0, 1 << 30));
    else if (arg == "--attest-burst") options.attest_burst = static_cast<unsigned>(parse_number(value, "burst", 1, 1 << 30));
    else if (arg == "--backoff-initial") backoff_initial = value;
    else if (arg == "--backoff-max") backoff_max = value;
    else if (arg == "--label") label = value;
    else if (arg == "--request-timeout-ms")
      options.request_timeout_ms = static_cast<int>(parse_number(value, "request timeout", 100, 600000));
    else if (arg == "--handshake-timeout-ms")
      options.handshake_timeout_ms = static_cast<int>(parse_number(value, "handshake timeout", 100, 600000));
    else usage();
  }
  options.server_settings = "max_connections = " + std::to_string(max_connections) +
                            "\nmax_connections_per_peer = " + std::to_string(per_peer) + "\n";

  try {
    Daemon daemon(options);
    daemon.start();
    const std::string image = "storm-image-01";
    const SecretBytes key = crypto::random_secret(32);
    if (auto enrolled = daemon.enroll(image, key); enrolled.status != 0)
      throw std::runtime_error("enroll failed: " + enrolled.output);
    const long idle_rss = bench::process_status_kib(daemon.pid(), "VmRSS");

    // The simulated platform's inputs: the daemon's trusted device, the firmware RIM and the
    // grub boot's CCEL log that the enrolled reference values describe.
    const std::string sim_dir = daemon.root + "/storm-sim";
    if (auto saved = daemon.device->save(sim_dir); !saved)
      throw std::runtime_error("save the simulated device: " + saved.error().describe());
    write_text(sim_dir + "/rim", hex_encode(firmware_rim()) + "\n");
    auto boot_log = need(sim::build_grub_boot_log(grub_boot()), "boot log");
    const Bytes log = boot_log.log();
    write_text(sim_dir + "/event-log", as_text(log));
    write_text(daemon.root + "/storm-ca.pem", daemon.ca_pem);
    const std::string config_path = daemon.root + "/storm-agent.conf";
    write_text(config_path,
               "image_id = " + image + "\nverifier = https://127.0.0.1:" + std::to_string(daemon.port) +
                   "\nca_file = " + daemon.root + "/storm-ca.pem\nluks_uuid = 0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0\n"
                   "platform = sim\nsim_dir = " + sim_dir + "\nfailure_policy = poweroff\n"
                   "backoff_initial = " + backoff_initial + "\nbackoff_max = " + backoff_max + "\n"
                   "released_key_check = " +
                   hex_encode(crypto::key_check_value(crypto::KeyCheckKind::released_key, key.view())) +
                   "\nvolume_key_check = " + hex_encode(crypto::random_bytes(32)) + "\n");
    const agent::AgentConfig config = need(agent::load_config(config_path, std::nullopt), "agent configuration");

    std::vector<AgentRun> runs;
    std::vector<agent::FlowResult> results;

    // 1. Capacity: closed loop, capacity_clients agents at a time.
    double capacity = 0;
    {
      std::atomic<int> next{0};
      std::vector<AgentRun> capacity_runs(static_cast<std::size_t>(capacity_agents));
      std::vector<agent::FlowResult> capacity_results(capacity_runs.size(), agent::FlowResult::give_up_poweroff);
      const double cpu_before = bench::process_cpu_seconds(daemon.pid());
      const auto start = Clock::now();
      std::vector<std::thread> threads;
      for (int t = 0; t < capacity_clients; ++t)
        threads.emplace_back([&] {
          for (int i = next.fetch_add(1); i < capacity_agents; i = next.fetch_add(1))
            capacity_results[static_cast<std::size_t>(i)] =
                run_agent(config, daemon.ca_pem, capacity_runs[static_cast<std::size_t>(i)]);
        });
      for (auto& thread : threads) thread.join();
      const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
      const double cpu = bench::process_cpu_seconds(daemon.pid()) - cpu_before;
      Summary summary = summarize(capacity_runs, capacity_results);
      capacity = static_cast<double>(summary.unlocked) / seconds;
      std::printf("capacity: %d agents, %d at a time: %zu unlocked, %zu failed, %.1f unlocks/s, server CPU %.2f ms "
                  "per unlock\n",
                  capacity_agents, capacity_clients, summary.unlocked, summary.failed, capacity,
                  summary.unlocked ? 1000.0 * cpu / static_cast<double>(summary.unlocked) : 0.0);
      if (summary.failed > 0 || capacity <= 0) {
        std::printf("  first failure: %s\n", summary.first_failure.c_str());
        std::cerr << daemon.log();
        return 1;
      }
    }

    // 2. Half the capacity, Poisson arrivals.
    Summary half;
    const double half_rate = capacity / 2;
    {
      std::mt19937_64 random(std::random_device{}());
      std::exponential_distribution<double> gap(half_rate);
      std::vector<std::chrono::nanoseconds> offsets;
      for (double at = gap(random); at < half_seconds; at += gap(random))
        offsets.push_back(std::chrono::nanoseconds(static_cast<long long>(at * 1e9)));
      run_agents(config, daemon.ca_pem, Clock::now() + 50ms, offsets, runs, results);
      half = summarize(runs, results);
      const double p99 = bench::percentile_ms(half.latencies, 0.99);
      std::printf("half load: %.1f arrivals/s (Poisson) for %d s: %zu agents, %zu unlocked, %zu failed; start to key "
                  "p50 %.1f ms, p99 %.1f ms (goal p99 < 50 ms: %s)\n",
                  half_rate, half_seconds, runs.size(), half.unlocked, half.failed,
                  bench::percentile_ms(half.latencies, 0.50), p99, yes_no(half.failed == 0 && p99 < 50));
    }

    // 3. The storm.
    std::mt19937_64 random(std::random_device{}());
    std::uniform_int_distribution<long long> spread(0, static_cast<long long>(window_ms) * 1'000'000);
    std::vector<std::chrono::nanoseconds> offsets(static_cast<std::size_t>(agents));
    for (auto& offset : offsets) offset = std::chrono::nanoseconds(spread(random));
    const auto origin = Clock::now() + 200ms;  // time to create the threads
    run_agents(config, daemon.ca_pem, origin, offsets, runs, results);
    Summary storm = summarize(runs, results);
    Clock::time_point first_start = runs.front().start;
    for (const auto& run : runs) first_start = std::min(first_start, run.start);
    const double last_key_s =
        storm.last_key ? std::chrono::duration<double>(*storm.last_key - first_start).count() : 0.0;
    const double bound_s = 1.5 * agents / capacity;
    const bool all = storm.failed == 0 && storm.unlocked == static_cast<std::size_t>(agents);
    const long hwm = bench::process_status_kib(daemon.pid(), "VmHWM");
    std::printf("storm: %d agents starting within %d ms: all unlocked %s, failed %zu, retried %zu (most attempts by "
                "one agent: %d)\n",
                agents, window_ms, yes_no(all), storm.failed, storm.retried, storm.max_attempts);
    if (!storm.first_failure.empty()) std::printf("  first failure: %s\n", storm.first_failure.c_str());
    std::vector<std::pair<int, std::string>> reasons;
    for (const auto& [reason, times] : storm.reasons) reasons.emplace_back(times, reason);
    std::sort(reasons.rbegin(), reasons.rend());
    for (std::size_t i = 0; i < std::min<std::size_t>(reasons.size(), 3); ++i)
      std::printf("  attempts that did not release: %d x %s\n", reasons[i].first, reasons[i].second.c_str());
    std::printf("  time to the last key %.2f s; bound 1.5 x %d / %.1f per s = %.2f s: within %s\n", last_key_s, agents,
                capacity, bound_s, yes_no(all && last_key_s <= bound_s));
    std::printf("  start to key: p50 %.0f ms, p99 %.0f ms\n", bench::percentile_ms(storm.latencies, 0.50),
                bench::percentile_ms(storm.latencies, 0.99));
    std::printf("daemon transport counters after the storm:\n%s", transport_counters(daemon.operator_port).c_str());
    std::printf("daemon RSS: idle %.1f MiB, peak (VmHWM) %.1f MiB\n", idle_rss / 1024.0, hwm / 1024.0);
    std::printf("result-storm label=%s agents=%d window_ms=%d capacity=%.1f half_rate=%.1f half_p50_ms=%.2f half_p99_ms=%.2f "
                "half_failed=%zu all_unlocked=%s failed=%zu retried=%zu last_key_s=%.3f bound_s=%.3f within=%s "
                "storm_p50_ms=%.1f storm_p99_ms=%.1f idle_rss_kib=%ld hwm_kib=%ld\n",
                label.c_str(), agents, window_ms, capacity, half_rate, bench::percentile_ms(half.latencies, 0.50),
                bench::percentile_ms(half.latencies, 0.99), half.failed, yes_no(all), storm.failed, storm.retried,
                last_key_s, bound_s, yes_no(all && last_key_s <= bound_s), bench::percentile_ms(storm.latencies, 0.50),
                bench::percentile_ms(storm.latencies, 0.99), idle_rss, hwm);
    const bool stopped = daemon.stop() == 0;
    return all && stopped ? 0 : 1;
  } catch (const std::exception& error) {
    std::cerr << "storm_bench: " << error.what() << "\n";
    return 1;
  }
}
