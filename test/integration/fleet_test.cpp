// Fleet mode: three fde-verifierd replicas on loopback sharing one PostgreSQL database that
// the test starts itself (test/support/postgres_server.hpp). Challenges from one replica are
// accepted by another, guests spread over the replicas all get their keys, a revoke through
// one replica denies on the others at once, the database going away gives 503s and every
// replica recovers when it returns, and the audit chain is one intact chain at the end.
#include <catch2/catch.hpp>

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "common/crypto/random.hpp"
#include "test/integration/fleet_support.hpp"

using namespace fde;
using namespace fde::itest;

namespace {

void expect_release(const Exchange& exchange, const SecretBytes& key) {
  REQUIRE(exchange.challenge.status == 200);
  REQUIRE(exchange.attest);
  INFO(exchange.attest->body);
  REQUIRE(exchange.attest->status == 200);
  REQUIRE(exchange.key);
  CHECK(equal_constant_time(exchange.key->view(), key.view()));
}

int attest_status(const Exchange& exchange) {
  return exchange.attest ? exchange.attest->status : exchange.challenge.status;
}

}  // namespace

TEST_CASE("three replicas on one PostgreSQL act as one verifier") {
  Fleet fleet(3);
  const std::string image = "fleet-image";
  const SecretBytes key = SecretBytes::copy_of(crypto::random_bytes(64));
  auto enrolled = fleet[0].enroll(image, key);
  INFO(enrolled.output);
  REQUIRE(enrolled.status == 0);
  // The image is enrolled once, whichever replica is asked.
  CHECK(fleet[2].enroll(image, key).status != 0);
  for (std::size_t i = 0; i < 3; ++i) CHECK(fleet[i].admin({"list"}).output.find(image) != std::string::npos);

  SECTION("a challenge from one replica is accepted by another, and guests spread over them all unlock") {
    for (std::size_t i = 0; i < 3; ++i)
      for (std::size_t j = 0; j < 3; ++j) {
        INFO("challenge from replica " << i << ", attest to replica " << j);
        expect_release(attest_across(fleet[i], fleet[j], {image}), key);
      }
    // Concurrently: six guests, each on another pair of replicas.
    std::atomic<int> released{0};
    std::vector<std::thread> guests;
    for (std::size_t g = 0; g < 6; ++g)
      guests.emplace_back([&, g] {
        auto exchange = attest_across(fleet[g % 3], fleet[(g + 1) % 3], {image});
        if (exchange.attest && exchange.attest->status == 200 && exchange.key &&
            equal_constant_time(exchange.key->view(), key.view()))
          ++released;
      });
    for (auto& g : guests) g.join();
    CHECK(released == 6);
  }

  SECTION("a revoke through one replica denies on the others at once; a reinstate through another releases again") {
    expect_release(attest_across(fleet[1], fleet[1], {image}), key);
    auto revoked = fleet[0].admin({"revoke", image});
    INFO(revoked.output);
    REQUIRE(revoked.status == 0);
    for (std::size_t i = 0; i < 3; ++i) {
      auto exchange = attest_across(fleet[(i + 1) % 3], fleet[i], {image});
      CHECK(attest_status(exchange) == 403);
      CHECK_FALSE(exchange.key);
    }
    REQUIRE(fleet[2].admin({"reinstate", image}).status == 0);
    expect_release(attest_across(fleet[0], fleet[1], {image}), key);
  }

  SECTION("the database stopped: 503 from every replica; started again: every replica recovers") {
    fleet.database.stop();
    for (std::size_t i = 0; i < 3; ++i) {
      auto exchange = attest_across(fleet[i], fleet[i], {image});
      INFO("replica " << i << ": " << exchange.challenge.body);
      CHECK(attest_status(exchange) == 503);
      CHECK_FALSE(exchange.key);
    }
    fleet.database.start();
    for (std::size_t i = 0; i < 3; ++i) {
      INFO("replica " << i);
      expect_release(attest_across(fleet[(i + 2) % 3], fleet[i], {image}), key);
    }
  }

  // Every section ends with one chain, intact, as seen from every replica.
  for (std::size_t i = 0; i < 3; ++i) {
    auto verified = fleet[i].admin({"audit", "--verify"});
    INFO(verified.output);
    CHECK(verified.status == 0);
    CHECK(verified.output.find("audit chain intact") != std::string::npos);
  }
}

TEST_CASE("a replica killed during load: guests that fail over to another replica all get their keys, the chain stays whole") {
  Fleet fleet(3);
  const std::string image = "failover-image";
  const SecretBytes key = SecretBytes::copy_of(crypto::random_bytes(64));
  REQUIRE(fleet[0].enroll(image, key).status == 0);
  // Each guest starts on its own replica and, as the agent does with several `verifier =`
  // lines, moves on to the next one when a replica does not answer or answers 5xx.
  std::atomic<int> released{0};
  std::atomic<int> lost{0};
  std::atomic<bool> killed{false};
  std::vector<std::thread> guests;
  for (std::size_t g = 0; g < 6; ++g)
    guests.emplace_back([&, g] {
      for (int round = 0; round < 5; ++round) {
        bool done = false;
        for (std::size_t attempt = 0; attempt < 6 && !done; ++attempt) {
          Daemon& replica = fleet[(g + attempt) % 3];
          try {
            auto exchange = attest_across(replica, replica, {image});
            done = exchange.attest && exchange.attest->status == 200 && exchange.key &&
                   equal_constant_time(exchange.key->view(), key.view());
          } catch (const std::exception&) {
            // connection refused or reset by the killed replica: try the next one
          }
        }
        (done ? released : lost)++;
        if (g == 0 && round == 1) {
          fleet[1].kill();
          killed = true;
        }
      }
    });
  for (auto& g : guests) g.join();
  CHECK(killed);
  CHECK(lost == 0);
  CHECK(released == 30);
  auto verified = fleet[2].admin({"audit", "--verify"});
  INFO(verified.output);
  CHECK(verified.status == 0);
  CHECK(verified.output.find("audit chain intact") != std::string::npos);
  // The killed replica comes back on the same database.
  fleet[1].start();
  expect_release(attest_across(fleet[1], fleet[0], {image}), key);
}

namespace {

Daemon::AdminResult migrate_store(const Daemon& daemon, const std::string& from, const std::string& to) {
  const std::string log = daemon.root + "/migrate.log";
  fs::remove(log);
  Process process({FDE_ADMIN, "migrate-store", "--from", from, "--to", to}, daemon.root, log);
  auto status = process.wait(60s);
  return Daemon::AdminResult{status.value_or(-1), read_text(log)};
}

}  // namespace

TEST_CASE("fde-admin migrate-store moves a daemon's SQLite store into PostgreSQL and back, every key still released") {
  testing::PostgresServer database;
  const std::string name = database.create_database();
  Daemon daemon;
  const std::string image = "migrated-image";
  const SecretBytes key = SecretBytes::copy_of(crypto::random_bytes(64));
  daemon.start();
  REQUIRE(daemon.enroll(image, key).status == 0);
  expect_release(attest(daemon, {image}), key);
  REQUIRE(daemon.admin({"revoke", image}).status == 0);
  REQUIRE(daemon.admin({"reinstate", image}).status == 0);
  daemon.stop();

  const std::string sqlite_toml = read_text(daemon.root + "/verifier.toml");
  const std::string sqlite_store = "database = \"verifier.db\"\n";
  REQUIRE(sqlite_toml.find(sqlite_store) != std::string::npos);
  auto with_store = [&](const std::string& store) {
    std::string toml = sqlite_toml;
    toml.replace(toml.find(sqlite_store), sqlite_store.size(), store);
    return toml;
  };
  write_text(daemon.root + "/db-password", std::string(testing::PostgresServer::password) + "\n", 0600);
  write_text(daemon.root + "/sqlite.toml", sqlite_toml);
  write_text(daemon.root + "/pg.toml", with_store("backend = \"postgresql\"\nconninfo = \"" + database.conninfo(name) +
                                                   "\"\npassword_file = \"db-password\"\n"));
  write_text(daemon.root + "/back.toml", with_store("database = \"back.db\"\n"));

  auto there = migrate_store(daemon, daemon.root + "/sqlite.toml", daemon.root + "/pg.toml");
  INFO(there.output);
  REQUIRE(there.status == 0);
  CHECK(there.output.find("copied 1 images and 4 audit records") != std::string::npos);  // enroll, release, revoke, reinstate
  CHECK(there.output.find("(1 checked)") != std::string::npos);
  // Copying again into the now non-empty target is refused.
  CHECK(migrate_store(daemon, daemon.root + "/sqlite.toml", daemon.root + "/pg.toml").status == 1);

  // The daemon on the PostgreSQL copy releases the same key and chains on.
  write_text(daemon.root + "/verifier.toml", read_text(daemon.root + "/pg.toml"));
  daemon.start();
  expect_release(attest(daemon, {image}), key);
  daemon.stop();

  auto back = migrate_store(daemon, daemon.root + "/pg.toml", daemon.root + "/back.toml");
  INFO(back.output);
  REQUIRE(back.status == 0);
  CHECK(back.output.find("copied 1 images and 5 audit records") != std::string::npos);
  write_text(daemon.root + "/verifier.toml", read_text(daemon.root + "/back.toml"));
  daemon.start();
  expect_release(attest(daemon, {image}), key);
  auto verified = daemon.admin({"audit", "--verify"});
  INFO(verified.output);
  CHECK(verified.status == 0);
  CHECK(verified.output.find("audit chain intact: 6 records") != std::string::npos);
}

namespace {

// fde-verifierd run to its end with `args` (e.g. --check-config) on a replica's configuration.
Daemon::AdminResult run_verifierd(const Daemon& daemon, const std::vector<std::string>& args) {
  const std::string log = daemon.root + "/verifierd-run.log";
  fs::remove(log);
  std::vector<std::string> argv{FDE_VERIFIERD, "--config", daemon.root + "/verifier.toml", "--listen", "127.0.0.1:0"};
  argv.insert(argv.end(), args.begin(), args.end());
  Process process(argv, daemon.root, log);
  auto status = process.wait(60s);
  return Daemon::AdminResult{status.value_or(-1), read_text(log)};
}

}  // namespace

TEST_CASE("a replica whose KEK is not the store's: --check-config fails and the start is refused, exit status 2") {
  Fleet fleet(2);
  const SecretBytes key = SecretBytes::copy_of(crypto::random_bytes(64));
  REQUIRE(fleet[0].enroll("kek-image", key).status == 0);
  CHECK(run_verifierd(fleet[1], {"--check-config"}).status == 0);
  fleet[1].stop();
  write_text(fleet[1].root + "/kek", hex_encode(crypto::random_bytes(32)) + "\n", 0600);
  auto checked = run_verifierd(fleet[1], {"--check-config"});
  INFO(checked.output);
  CHECK(checked.status == 2);
  CHECK(checked.output.find("the key-encryption key does not open it (its KEK check value differs)") != std::string::npos);
  auto started = run_verifierd(fleet[1], {});
  INFO(started.output);
  CHECK(started.status == 2);
  CHECK(started.output.find("the key-encryption key does not open this store") != std::string::npos);
  // The replica with the right KEK serves on, and the refused one wrote nothing.
  expect_release(attest(fleet[0], {"kek-image"}), key);
  auto verified = fleet[0].admin({"audit", "--verify"});
  INFO(verified.output);
  CHECK(verified.output.find("audit chain intact: 2 records") != std::string::npos);
}

TEST_CASE("fde-admin rotate-kek through one replica: the others answer 503 until restarted with the new KEK; backup and restore from any replica") {
  Fleet fleet(3);
  const std::string image = "rotated-image";
  const SecretBytes key = SecretBytes::copy_of(crypto::random_bytes(64));
  REQUIRE(fleet[0].enroll(image, key).status == 0);
  expect_release(attest(fleet[1], {image}), key);

  const std::string new_kek = hex_encode(crypto::random_bytes(32)) + "\n";
  write_text(fleet[0].root + "/kek.new", new_kek, 0600);
  auto rotated = fleet[0].admin({"rotate-kek", "--new-kek", fleet[0].root + "/kek.new"});
  INFO(rotated.output);
  REQUIRE(rotated.status == 0);
  CHECK(rotated.output.find("KEK rotated: 1 disk keys re-wrapped, audit chain key epoch 1") != std::string::npos);
  // The rotating replica releases at once; the others still hold the old KEK and refuse to
  // write under it: a clear 503 (the agent moves on to another replica), nothing in the chain.
  expect_release(attest(fleet[0], {image}), key);
  for (std::size_t i : {std::size_t{1}, std::size_t{2}}) {
    auto exchange = attest(fleet[i], {image});
    INFO("replica " << i << ": " << (exchange.attest ? exchange.attest->body : exchange.challenge.body));
    CHECK(attest_status(exchange) == 503);
    CHECK_FALSE(exchange.key);
    CHECK(fleet[i].log().find("KEK rotated through another replica") != std::string::npos);
  }
  // The new KEK installed on every replica, each restarted in turn: all release again.
  for (std::size_t i : {std::size_t{1}, std::size_t{2}}) {
    fleet[i].stop();
    write_text(fleet[i].root + "/kek", new_kek, 0600);
    CHECK(run_verifierd(fleet[i], {"--check-config"}).status == 0);
    fleet[i].start();
    expect_release(attest(fleet[i], {image}), key);
  }
  for (std::size_t i = 0; i < 3; ++i) {
    auto verified = fleet[i].admin({"audit", "--verify"});
    INFO(verified.output);
    CHECK(verified.output.find("audit chain intact: 6 records") != std::string::npos);  // enroll, 2 releases, rotate, 2 releases
  }

  // A backup through any replica: a consistent SQLite copy that the current KEK opens; it
  // goes back into an empty PostgreSQL database with migrate-store, every key releasable.
  const std::string backup = fleet[2].root + "/backup.db";
  auto written = fleet[2].admin({"backup", "--output", backup});
  INFO(written.output);
  REQUIRE(written.status == 0);
  CHECK(written.output.find("1 images") != std::string::npos);
  write_text(fleet[2].root + "/kek", new_kek, 0600);
  const std::string toml = read_text(fleet[2].root + "/verifier.toml");
  const std::string store_start = toml.substr(toml.find("[store]\n"));
  const std::string store_section = store_start.substr(0, store_start.find("kek_file"));
  std::string from = toml;
  from.replace(from.find(store_section), store_section.size(), "[store]\ndatabase = \"backup.db\"\n");
  write_text(fleet[2].root + "/from-backup.toml", from);
  const std::string restored_name = fleet.database.create_database();
  std::string to = toml;
  to.replace(to.find(store_section), store_section.size(),
             "[store]\nbackend = \"postgresql\"\nconninfo = \"" + fleet.database.conninfo(restored_name) +
                 "\"\npassword_file = \"" + fleet.directory + "/db-password\"\n");
  write_text(fleet[2].root + "/restored.toml", to);
  auto restore = migrate_store(fleet[2], fleet[2].root + "/from-backup.toml", fleet[2].root + "/restored.toml");
  INFO(restore.output);
  REQUIRE(restore.status == 0);
  CHECK(restore.output.find("copied 1 images and 6 audit records") != std::string::npos);
  CHECK(restore.output.find("(1 checked)") != std::string::npos);
}

TEST_CASE("fde-admin migrate-store carries a rotated SQLite store into PostgreSQL and back, audit --verify intact on each") {
  testing::PostgresServer database;
  const std::string name = database.create_database();
  Daemon daemon;
  const std::string image = "rotated-migrated";
  const SecretBytes key = SecretBytes::copy_of(crypto::random_bytes(64));
  daemon.start();
  REQUIRE(daemon.enroll(image, key).status == 0);
  expect_release(attest(daemon, {image}), key);
  const std::string new_kek = hex_encode(crypto::random_bytes(32)) + "\n";
  write_text(daemon.root + "/kek.new", new_kek, 0600);
  auto rotated = daemon.admin({"rotate-kek", "--new-kek", daemon.root + "/kek.new"});
  INFO(rotated.output);
  REQUIRE(rotated.status == 0);
  expect_release(attest(daemon, {image}), key);
  daemon.stop();
  write_text(daemon.root + "/kek", new_kek, 0600);

  const std::string sqlite_toml = read_text(daemon.root + "/verifier.toml");
  const std::string sqlite_store = "database = \"verifier.db\"\n";
  auto with_store = [&](const std::string& store) {
    std::string toml = sqlite_toml;
    toml.replace(toml.find(sqlite_store), sqlite_store.size(), store);
    return toml;
  };
  write_text(daemon.root + "/db-password", std::string(testing::PostgresServer::password) + "\n", 0600);
  write_text(daemon.root + "/sqlite.toml", sqlite_toml);
  write_text(daemon.root + "/pg.toml", with_store("backend = \"postgresql\"\nconninfo = \"" + database.conninfo(name) +
                                                   "\"\npassword_file = \"db-password\"\n"));
  write_text(daemon.root + "/back.toml", with_store("database = \"back.db\"\n"));

  auto there = migrate_store(daemon, daemon.root + "/sqlite.toml", daemon.root + "/pg.toml");
  INFO(there.output);
  REQUIRE(there.status == 0);
  CHECK(there.output.find("copied 1 images and 4 audit records") != std::string::npos);  // enroll, release, rotate, release
  write_text(daemon.root + "/verifier.toml", read_text(daemon.root + "/pg.toml"));
  daemon.start();
  expect_release(attest(daemon, {image}), key);
  auto in_postgres = daemon.admin({"audit", "--verify"});
  INFO(in_postgres.output);
  CHECK(in_postgres.output.find("audit chain intact: 5 records") != std::string::npos);
  daemon.stop();

  auto back = migrate_store(daemon, daemon.root + "/pg.toml", daemon.root + "/back.toml");
  INFO(back.output);
  REQUIRE(back.status == 0);
  write_text(daemon.root + "/verifier.toml", read_text(daemon.root + "/back.toml"));
  daemon.start();
  expect_release(attest(daemon, {image}), key);
  auto verified = daemon.admin({"audit", "--verify"});
  INFO(verified.output);
  CHECK(verified.output.find("audit chain intact: 6 records") != std::string::npos);
}
