// Connection-slot and memory exhaustion against the real fde-verifierd on loopback: 2,000
// hostile connections (idle sockets, unfinished TLS handshakes, dribbled headers, trickled
// large bodies; from 171 source addresses, 300 of them from one) are held open and reopened
// a second after the daemon drops them, while 50 honest agents, starting 50 ms apart, run
// the whole protocol with the real client and simulated tokens and retry as fde-agent does
// (its RetrySchedule, with a 25 s overall deadline instead of minutes). Every honest agent
// must get its key.
//
// The daemon's handshake and request deadlines are 30 s here, longer than the agents'
// deadline: the slots must be won back by the admission policy, not by waiting for the
// hostile connections to time out (which is all the transport did before it had one).
// Bounded: the hostile clients stop and the daemon is killed on every path.
#include <sys/resource.h>
#include <unistd.h>

#include <atomic>
#include <iostream>
#include <mutex>
#include <thread>

#include <catch2/catch.hpp>

#include "common/util/process.hpp"
#include "test/integration/daemon_support.hpp"
#include "test/integration/hostile_clients.hpp"
#include "test/integration/retrying_agent.hpp"

using namespace fde;
using namespace fde::itest;

namespace {

constexpr const char* image = "it-flood-01";

}  // namespace

TEST_CASE("50 honest agents get their keys while 2,000 hostile connections are held against the daemon",
          "[daemon][integration][flood]") {
  constexpr int hostile_total = 2000;
  constexpr int honest_agents = 50;
  // The test process holds every hostile socket plus the honest ones; the daemon (a child)
  // inherits the raised limit too.
  REQUIRE(raise_open_files_limit() >= hostile_total + 512);

  // The daemon's own defaults for every limit under test; deadlines outlast the agents.
  // Every client here is 127.0.0.1, one address: the per-address rate limit is off.
  Daemon daemon({.request_timeout_ms = 30'000, .handshake_timeout_ms = 30'000, .threads = 2, .attest_per_minute = 0});
  daemon.start();
  const SecretBytes key = crypto::random_secret(32);
  {
    auto enrolled = daemon.enroll(image, key);
    INFO(enrolled.output);
    REQUIRE(enrolled.status == 0);
  }

  HostileMix mix;
  mix.idle_tcp = hostile_total / 4;
  mix.partial_handshakes = hostile_total / 4;
  mix.slow_headers = hostile_total / 4;
  mix.trickled_bodies = hostile_total / 4;
  // 1,700 connections spread over 170 addresses (10 each), 300 from a single one.
  for (int i = 0; i < 300; ++i) mix.sources.push_back("127.0.2.1");
  for (int i = 1; i <= 170; ++i)
    for (int j = 0; j < 10; ++j) mix.sources.push_back("127.0.1." + std::to_string(i));
  // Bodies: 128 KiB at once (500 of them fill the daemon's 64 MiB budget), then 4 KiB every
  // half second.
  mix.reconnect_delay = 1s;
  mix.body_first_burst = 128 * 1024;
  HostileClients hostile(daemon.port, mix);
  const auto flood_start = std::chrono::steady_clock::now();
  hostile.start();

  // Every hostile connection has reached the daemon at least once before the agents start.
  REQUIRE(wait_until([&] { return hostile.stats().connects >= hostile_total; }, 20s));
  std::this_thread::sleep_for(1500ms);  // bodies sent, handshakes and timers under way
  const auto before = hostile.stats();
  std::cout << "flood: " << before.connects << " hostile connections made in " << seconds_since(flood_start)
            << " s; open " << before.open << ", dropped " << before.dropped << ", body bytes sent "
            << before.body_bytes_sent << "\n";

  std::vector<HonestOutcome> outcomes(honest_agents);
  std::atomic<long> hostile_open_min{hostile_total};
  std::atomic<bool> agents_done{false};
  std::thread sampler([&] {
    while (!agents_done) {
      hostile_open_min = std::min(hostile_open_min.load(), hostile.stats().open);
      std::this_thread::sleep_for(20ms);
    }
  });
  const auto honest_start = std::chrono::steady_clock::now();
  std::vector<std::thread> agents;
  for (int i = 0; i < honest_agents; ++i)
    agents.emplace_back([&, i] {
      // The agents' own work (building tokens) must not starve the hostile clients' thread
      // on a small machine: they run at a lower priority, which only makes their case harder.
      ::setpriority(PRIO_PROCESS, static_cast<id_t>(::gettid()), 10);
      std::this_thread::sleep_for(50ms * i);  // boots arrive over 2.5 s
      outcomes[static_cast<std::size_t>(i)] = honest_agent(daemon, image, key);
    });
  for (auto& agent : agents) agent.join();
  agents_done = true;
  sampler.join();
  const double honest_seconds = seconds_since(honest_start);
  const auto after = hostile.stats();
  hostile.stop();

  int released = 0;
  int attempts = 0;
  std::vector<double> durations;
  for (std::size_t i = 0; i < outcomes.size(); ++i) {
    released += outcomes[i].released ? 1 : 0;
    attempts += outcomes[i].attempts;
    durations.push_back(outcomes[i].seconds);
    if (!outcomes[i].released)
      UNSCOPED_INFO("agent " << i << ": no key after " << outcomes[i].attempts << " attempts: " << outcomes[i].last_error);
  }
  std::sort(durations.begin(), durations.end());
  std::cout << "flood: " << released << "/" << honest_agents << " honest agents got their key in " << honest_seconds
            << " s, " << attempts << " attempts in all (slowest agent " << durations.back() << " s, median "
            << durations[durations.size() / 2] << " s); hostile connections made " << after.connects
            << ", open at least " << hostile_open_min << " during the agents' run, dropped by the daemon "
            << after.dropped << ", connect failures " << after.connect_failures << ", TLS handshakes " << after.handshakes << ", body bytes sent " << after.body_bytes_sent
            << "\n";
  INFO(daemon.log().substr(0, 4000));
  CHECK(released == honest_agents);
  // The pressure was real: the hostile side kept most of the daemon's 1,024 slots busy
  // throughout, and lost connections to the daemon while the agents were let in.
  CHECK(hostile_open_min >= 600);
  CHECK(after.dropped > before.dropped);
  CHECK(after.handshakes > 0);

  // Afterwards the daemon serves normally and stops cleanly.
  auto exchange = attest(daemon, {image});
  CHECK(exchange.key);
  CHECK(daemon.stop() == std::optional<int>(0));
}
