// Reliability runs against the real fde-verifierd on loopback (docs/reliability.md): honest
// agents (the real protocol client, simulated tokens, fde-agent's RetrySchedule) while
//   - the daemon is killed with SIGKILL twice in the middle of their attestations and
//     restarted on the same port: every agent gets its key, every enrolled image is still
//     there and the audit chain verifies;
//   - the store is locked by another process's SQLite write transaction: attestations get
//     503 {"error":"unavailable"} (never a 500, never a key without its audit record), and
//     succeed again once the lock is gone;
//   - the TLS certificate is replaced and reloaded (fde-admin reload) while they run: no
//     agent fails, and new connections get the new certificate.
// Bounded: at most 30 agents, deadlines of 40 s, the daemon stopped on every path.
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <signal.h>
#include <sqlite3.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <iostream>
#include <mutex>

#include <catch2/catch.hpp>

#include "test/integration/retrying_agent.hpp"

using namespace fde;
using namespace fde::itest;

namespace {

struct Fleet {
  std::vector<std::string> images;
  std::vector<SecretBytes> keys;
};

Fleet enroll(const Daemon& daemon, int count, const std::string& prefix) {
  Fleet fleet;
  for (int i = 0; i < count; ++i) {
    fleet.images.push_back(prefix + std::to_string(i));
    fleet.keys.push_back(crypto::random_secret(64));
    auto result = daemon.enroll(fleet.images.back(), fleet.keys.back());
    if (result.status != 0) throw std::runtime_error("enroll failed: " + result.output);
  }
  return fleet;
}

// `agents` honest agents, `spacing` apart, for the images of `fleet` in turn; `during` runs
// on the test's thread meanwhile. Returns their outcomes.
template <class During>
std::vector<HonestOutcome> run_agents(const Daemon& daemon, const Fleet& fleet, int agents,
                                      std::chrono::milliseconds spacing, During during) {
  agent::RetrySettings settings = load_test_retry_settings();
  settings.overall_timeout = 40s;
  std::vector<HonestOutcome> outcomes(static_cast<std::size_t>(agents));
  std::vector<std::thread> threads;
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < agents; ++i) {
    threads.emplace_back([&, i] {
      std::this_thread::sleep_until(start + spacing * i);
      const std::size_t which = static_cast<std::size_t>(i) % fleet.images.size();
      outcomes[static_cast<std::size_t>(i)] = honest_agent(daemon, fleet.images[which], fleet.keys[which], settings);
    });
  }
  during();
  for (auto& thread : threads) thread.join();
  return outcomes;
}

struct Summary {
  int released = 0;
  int attempts = 0;
  std::map<unsigned, int> statuses;
  double slowest = 0;
};

Summary summarize(const std::string& name, const std::vector<HonestOutcome>& outcomes) {
  Summary summary;
  for (const auto& outcome : outcomes) {
    summary.released += outcome.released ? 1 : 0;
    summary.attempts += outcome.attempts;
    summary.slowest = std::max(summary.slowest, outcome.seconds);
    for (const auto& [status, count] : outcome.statuses) summary.statuses[status] += count;
    if (!outcome.released) std::cout << name << ": an agent failed: " << outcome.last_error << "\n";
  }
  std::cout << name << ": " << summary.released << "/" << outcomes.size() << " agents got their key, "
            << summary.attempts << " attempts, the slowest after " << summary.slowest << " s; answers:";
  for (const auto& [status, count] : summary.statuses)
    std::cout << " " << (status == 0 ? std::string("none") : std::to_string(status)) << ":" << count;
  std::cout << std::endl;
  return summary;
}

// The PEM of the certificate a new TLS connection to the attestation port gets.
std::string served_certificate(const Daemon& daemon) {
  namespace asio = boost::asio;
  asio::io_context io;
  asio::ssl::context tls(asio::ssl::context::tls_client);
  tls.set_verify_mode(asio::ssl::verify_none);
  asio::ssl::stream<asio::ip::tcp::socket> stream(io, tls);
  stream.next_layer().connect({asio::ip::make_address("127.0.0.1"), daemon.port});
  stream.handshake(asio::ssl::stream_base::client);
  X509* peer = SSL_get1_peer_certificate(stream.native_handle());
  if (peer == nullptr) throw std::runtime_error("no peer certificate");
  BIO* bio = BIO_new(BIO_s_mem());
  PEM_write_bio_X509(bio, peer);
  char* data = nullptr;
  const long size = BIO_get_mem_data(bio, &data);
  std::string pem(data, static_cast<std::size_t>(size));
  BIO_free(bio);
  X509_free(peer);
  boost::system::error_code ignored;
  stream.shutdown(ignored);
  return pem;
}

void check_audit_chain(const Daemon& daemon) {
  auto verify = daemon.admin({"audit", "--verify"});
  INFO(verify.output);
  CHECK(verify.status == 0);
}

}  // namespace

TEST_CASE("agents all unlock across two SIGKILLs of the daemon; nothing enrolled is lost, the audit chain holds",
          "[reliability][kill]") {
  DaemonOptions options;
  options.attest_per_minute = 0;  // every agent is 127.0.0.1
  Daemon daemon(options);
  daemon.start();
  daemon.listen = "127.0.0.1:" + std::to_string(daemon.port);  // restarts keep the agents' port
  const Fleet fleet = enroll(daemon, 5, "rel-kill-");

  int kills = 0;
  auto outcomes = run_agents(daemon, fleet, 30, 40ms, [&] {
    // In the middle of the agents' attestations (they start over 1.2 s): kill, stay down a
    // while, restart; twice.
    for (auto down : {600ms, 1500ms}) {
      std::this_thread::sleep_for(400ms);
      daemon.kill();
      ++kills;
      std::this_thread::sleep_for(down);
      daemon.start();
    }
  });
  Summary summary = summarize("kill", outcomes);
  CHECK(kills == 2);
  CHECK(summary.released == 30);
  // The kills were felt: some attempts found no daemon or lost their connection.
  CHECK(summary.statuses[0] > 0);
  CHECK(summary.statuses[500] == 0);

  // Every enrollment survived both kills, and the chain of audit records is intact.
  auto list = daemon.admin({"list"});
  INFO(list.output);
  for (const auto& image : fleet.images) CHECK(list.output.find(image) != std::string::npos);
  check_audit_chain(daemon);
  CHECK(daemon.stop() == 0);
}

TEST_CASE("a store locked by another process gets 503 unavailable, never a 500 or an unaudited key, then recovers",
          "[reliability][store]") {
  DaemonOptions options;
  options.attest_per_minute = 0;
  Daemon daemon(options);
  daemon.start();
  const Fleet fleet = enroll(daemon, 1, "rel-lock-");

  // Another connection takes SQLite's write lock and holds it.
  sqlite3* other = nullptr;
  REQUIRE(sqlite3_open((daemon.root + "/verifier.db").c_str(), &other) == SQLITE_OK);
  REQUIRE(sqlite3_exec(other, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr) == SQLITE_OK);

  const auto start = std::chrono::steady_clock::now();
  auto locked = attest(daemon, {fleet.images[0]});
  const double waited = seconds_since(start);
  REQUIRE(locked.challenge.status == 200);
  REQUIRE(locked.attest);
  std::cout << "store locked: attest answered " << locked.attest->status << " " << locked.attest->body << " after "
            << waited << " s" << std::endl;
  CHECK(locked.attest->status == 503);
  CHECK(!locked.key);
  auto error = protocol::parse_error_response(locked.attest->body);
  REQUIRE(error);
  CHECK(error->error == protocol::ErrorCode::unavailable);
  // Agents that start while it is locked retry the 503s and get their keys once the lock
  // is gone: released 8 s after they start, when each has had a 503 after the store's 5 s
  // busy timeout and is waiting in its retry.
  auto outcomes = run_agents(daemon, fleet, 3, 100ms, [&] {
    std::this_thread::sleep_for(8s);
    REQUIRE(sqlite3_exec(other, "ROLLBACK", nullptr, nullptr, nullptr) == SQLITE_OK);
    sqlite3_close(other);
    other = nullptr;
  });
  if (other != nullptr) sqlite3_close(other);
  Summary summary = summarize("store locked", outcomes);
  CHECK(summary.released == 3);
  CHECK(summary.statuses[503] > 0);
  CHECK(summary.statuses[500] == 0);

  auto recovered = attest(daemon, {fleet.images[0]});
  REQUIRE(recovered.attest);
  CHECK(recovered.attest->status == 200);
  REQUIRE(recovered.key);
  CHECK(std::equal(recovered.key->view().begin(), recovered.key->view().end(), fleet.keys[0].view().begin(),
                   fleet.keys[0].view().end()));
  check_audit_chain(daemon);
  CHECK(daemon.stop() == 0);
}

TEST_CASE("the TLS certificate is rotated with a reload under load: no agent fails, new connections get the new one",
          "[reliability][tls]") {
  DaemonOptions options;
  options.attest_per_minute = 0;
  Daemon daemon(options);
  daemon.start();
  const Fleet fleet = enroll(daemon, 3, "rel-tls-");
  const std::string old_certificate = read_text(daemon.root + "/server.crt");
  REQUIRE(served_certificate(daemon) == old_certificate);

  bool reloaded = false;
  std::string reload_output;
  auto outcomes = run_agents(daemon, fleet, 30, 60ms, [&] {
    std::this_thread::sleep_for(900ms);  // half of the agents have started
    write_text(daemon.root + "/server.key", daemon.next_server_key_pem, 0600);
    write_text(daemon.root + "/server.crt", daemon.next_server_cert_pem);
    auto reload = daemon.admin({"reload"});
    reloaded = reload.status == 0;
    reload_output = reload.output;
  });
  INFO(reload_output);
  CHECK(reloaded);
  Summary summary = summarize("tls rotation", outcomes);
  CHECK(summary.released == 30);
  // No attempt failed at all: a reload does not drop connections or refuse handshakes.
  CHECK(summary.attempts == 30);
  CHECK(served_certificate(daemon) == daemon.next_server_cert_pem);
  CHECK(daemon.stop() == 0);
}

TEST_CASE("a store the service user cannot write stops the daemon at start with a clear error; fixed, it serves again",
          "[reliability][store][readonly]") {
  if (::geteuid() != 0) {
    WARN("needs root to run the daemon as another user; skipped");
    return;
  }
  constexpr uid_t nobody = 65534;
  DaemonOptions options;
  options.attest_per_minute = 0;
  options.run_as = nobody;
  Daemon daemon(options);
  daemon.start();
  const Fleet fleet = enroll(daemon, 1, "rel-ro-");
  REQUIRE(attest(daemon, {fleet.images[0]}).key);
  REQUIRE(daemon.stop() == 0);
  // As after a restore by root that kept root's ownership: the database and its WAL files
  // are root's (0600), and the daemon runs as another user.
  auto own_database = [&](uid_t uid) {
    for (const auto& entry : fs::directory_iterator(daemon.root))
      if (entry.path().filename().string().rfind("verifier.db", 0) == 0) {
        REQUIRE(::chown(entry.path().c_str(), uid, static_cast<gid_t>(uid)) == 0);
        REQUIRE(::chmod(entry.path().c_str(), 0600) == 0);
      }
  };
  own_database(0);
  std::string refusal;
  try {
    daemon.start();
  } catch (const std::exception& error) {
    refusal = error.what();
  }
  std::cout << "read-only store: " << (refusal.empty() ? std::string("started") : refusal) << std::endl;
  // Not a daemon that runs and then fails every release: it does not start, and says why.
  CHECK(refusal.find("event=store_failed") != std::string::npos);
  CHECK(refusal.find("Permission denied") != std::string::npos);

  own_database(nobody);
  daemon.start();
  auto exchange = attest(daemon, {fleet.images[0]});
  REQUIRE(exchange.attest);
  CHECK(exchange.attest->status == 200);
  CHECK(exchange.key);
  check_audit_chain(daemon);
  CHECK(daemon.stop() == 0);
}
