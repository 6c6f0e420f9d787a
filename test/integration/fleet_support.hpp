// A fleet of fde-verifierd replicas on loopback sharing one PostgreSQL database that is
// started for it (test/support/postgres_server.hpp), for the fleet test and attest_bench:
// one KEK and one nonce secret for all replicas, each trusting every replica's simulated
// device CA. The replicas and the database are stopped by the destructor.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "test/integration/daemon_support.hpp"
#include "test/support/postgres_server.hpp"

namespace fde::itest {

struct Fleet {
  testing::PostgresServer database;
  std::string directory;  // the password file
  std::vector<std::unique_ptr<Daemon>> replicas;

  explicit Fleet(int count, DaemonOptions options = {}) {
    const std::string name = database.create_database();
    char pattern[] = "/tmp/fde-fleet-XXXXXX";
    if (::mkdtemp(pattern) == nullptr) throw std::runtime_error("mkdtemp failed");
    directory = pattern;
    write_text(directory + "/db-password", std::string(testing::PostgresServer::password) + "\n", 0600);
    options.store_settings = "backend = \"postgresql\"\nconninfo = \"" + database.conninfo(name) +
                             "\"\npassword_file = \"" + directory + "/db-password\"\npool_size = 3\n";
    for (int i = 0; i < count; ++i) replicas.push_back(std::make_unique<Daemon>(options));
    // One KEK and one nonce secret for the fleet, as an operator deploys them; every replica
    // trusts every replica's simulated device CA (the guests below use several devices).
    const std::string kek = read_text(replicas[0]->root + "/kek");
    const std::string nonce_secret = read_text(replicas[0]->root + "/nonce-secret");
    std::string roots;
    for (int i = 0; i < count; ++i) roots += std::string(i == 0 ? "" : ", ") + "\"ca-" + std::to_string(i) + ".pem\"";
    for (auto& replica : replicas) {
      write_text(replica->root + "/kek", kek, 0600);
      write_text(replica->root + "/nonce-secret", nonce_secret, 0600);
      for (int i = 0; i < count; ++i)
        write_text(replica->root + "/ca-" + std::to_string(i) + ".pem", read_text(replicas[static_cast<std::size_t>(i)]->root + "/sim-ca.pem"));
      std::string toml = read_text(replica->root + "/verifier.toml");
      const std::string one_root = "trusted_roots = [\"sim-ca.pem\"]";
      toml.replace(toml.find(one_root), one_root.size(), "trusted_roots = [" + roots + "]");
      write_text(replica->root + "/verifier.toml", toml);
    }
    for (auto& replica : replicas) replica->start();
  }
  ~Fleet() {
    replicas.clear();
    std::error_code ignored;
    fs::remove_all(directory, ignored);
  }
  Daemon& operator[](std::size_t i) { return *replicas[i]; }
};


}  // namespace fde::itest
