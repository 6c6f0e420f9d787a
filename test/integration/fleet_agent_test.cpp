// The real fde-agent against a fleet: three fde-verifierd replicas on one PostgreSQL that the
// test starts (fleet_support.hpp), each agent configured with all three replicas' URLs as an
// operator would write them (`verifier =` lines, one pinned CA file holding the replicas'
// CAs). The agents run as the other integration tests run them: the host build with
// --platform sim (a simulated device and RIM), --test-passphrase on a real LUKS2 file. One
// replica is SIGKILLed while agents attest, and the database is stopped and started again
// while agents attest: every agent still gets its key by failing over or retrying, and the
// audit chain is intact at the end. About 30 s on an idle machine.
#include <catch2/catch.hpp>

#include <memory>
#include <string>
#include <vector>

#include "common/crypto/key_check.hpp"
#include "common/crypto/random.hpp"
#include "guest-agent/unlock/volume_unlocker.hpp"
#include "test/integration/fleet_support.hpp"

using namespace fde;
using namespace fde::itest;

namespace {

constexpr const char* fleet_image = "fleet-agent-image";

// The guests' shared world: the simulated device (the one replica 0 was created with, whose
// CA every replica trusts), its RIM, one LUKS2 volume enrolled through replica 0, and the
// pinned CA file holding every replica's TLS CA.
struct Guests {
  Fleet& fleet;
  std::string root;
  std::string rim_hex = hex_encode(crypto::random_bytes(32));
  SecretBytes disk_key = crypto::random_secret(32);
  SecretBytes volume_key = crypto::random_secret(64);  // aes-xts-plain64, 512-bit key
  std::string luks_uuid;
  int next_agent = 0;

  explicit Guests(Fleet& f) : fleet(f) {
    char pattern[] = "/tmp/fde-fleet-agents-XXXXXX";
    if (::mkdtemp(pattern) == nullptr) throw std::runtime_error("mkdtemp failed");
    root = pattern;
    if (auto saved = fleet[0].device->save(root + "/sim"); !saved)
      throw std::runtime_error("save the simulated device: " + saved.error().describe());
    write_text(root + "/sim/rim", rim_hex + "\n");
    std::string cas;
    for (std::size_t i = 0; i < fleet.replicas.size(); ++i) cas += fleet[i].ca_pem;
    write_text(root + "/verifier-ca.pem", cas);
    format_volume();
    enroll();
  }
  ~Guests() {
    std::error_code ignored;
    fs::remove_all(root, ignored);
  }
  Guests(const Guests&) = delete;
  Guests& operator=(const Guests&) = delete;

  // cryptsetup luksFormat with a volume key of our choosing, so the test knows the volume
  // key check value fde-image would have written. The key files are removed at once.
  void format_volume() {
    const std::string disk = root + "/disk.luks";
    { std::ofstream(disk).close(); }
    fs::resize_file(disk, 17 * 1024 * 1024);  // the LUKS2 header area is 16 MiB
    write_text(root + "/key", as_text(disk_key.view()), 0600);
    write_text(root + "/volume-key", as_text(volume_key.view()), 0600);
    const std::string cryptsetup = need(agent::find_cryptsetup(), "cryptsetup");
    Process format({cryptsetup, "luksFormat", "-q", "--type", "luks2", "--pbkdf", "pbkdf2",
                    "--pbkdf-force-iterations", "1000", "--key-file", root + "/key", "--volume-key-file",
                    root + "/volume-key", "--key-size", "512", "--uuid", "5b0f6a7e-1c2d-4e3f-8a9b-0c1d2e3f4a5b", disk},
                   root, root + "/luksformat.log");
    const auto status = format.wait(60s);
    fs::remove(root + "/key");
    fs::remove(root + "/volume-key");
    if (status != 0) throw std::runtime_error("cryptsetup luksFormat failed: " + read_text(root + "/luksformat.log"));
    luks_uuid = "5b0f6a7e-1c2d-4e3f-8a9b-0c1d2e3f4a5b";
  }

  // Direct boot with the simulated RIM, enrolled once for the whole fleet.
  void enroll() {
    const std::string bundle = root + "/bundle.json";
    write_text(bundle,
               std::string(R"({"format": "virtcca-fde-enrollment/v1", "image_id": ")") + fleet_image +
                   R"(", "luks_uuid": ")" + luks_uuid + R"(", "disk_key": ")" + base64_encode(disk_key.view()) +
                   R"(", "reference": {"version": 1, "image_id": ")" + fleet_image +
                   R"(", "hash_alg": "sha-256", "sets": [{"name": "direct", "boot": "direct", "rims": [")" + rim_hex +
                   R"("]}]}})",
               0600);
    auto enrolled = fleet[0].admin({"enroll", "--bundle", bundle});
    fs::remove(bundle);
    if (enrolled.status != 0) throw std::runtime_error("enroll failed: " + enrolled.output);
  }

  // One guest: its own copy of the volume and its own configuration, the replicas listed
  // starting at `first` (so the guests' first tries spread over the fleet).
  struct Agent {
    std::string dir;
    std::unique_ptr<Process> process;
    std::optional<int> status;
    std::string log() const { return read_text(dir + "/agent.log"); }
  };
  std::unique_ptr<Agent> start_agent(std::size_t first) {
    auto agent = std::make_unique<Agent>();
    agent->dir = root + "/agent-" + std::to_string(next_agent++);
    fs::create_directory(agent->dir);
    fs::copy_file(root + "/disk.luks", agent->dir + "/disk.luks");
    std::string conf = "image_id = " + std::string(fleet_image) + "\n";
    for (std::size_t i = 0; i < fleet.replicas.size(); ++i)
      conf += "verifier = https://127.0.0.1:" + std::to_string(fleet[(first + i) % fleet.replicas.size()].port) + "\n";
    conf += "ca_file = " + root + "/verifier-ca.pem\nluks_uuid = " + luks_uuid + "\nsim_dir = " + root +
            "/sim\nfailure_policy = poweroff\nnetwork_timeout = 2s\ndevice_timeout = 2s\nattempt_timeout = 5s\n"
            "overall_timeout = 60s\nbackoff_initial = 200ms\nbackoff_max = 1s\n"
            "released_key_check = " +
            hex_encode(crypto::key_check_value(crypto::KeyCheckKind::released_key, disk_key.view())) +
            "\nvolume_key_check = " +
            hex_encode(crypto::key_check_value(crypto::KeyCheckKind::volume_key, volume_key.view())) + "\n";
    write_text(agent->dir + "/agent.conf", conf);
    agent->process = std::make_unique<Process>(
        std::vector<std::string>{FDE_AGENT_BINARY, "--platform", "sim", "--config", agent->dir + "/agent.conf",
                                 "--cmdline", "/dev/null", "--device", agent->dir + "/disk.luks", "--header-dir",
                                 agent->dir + "/luks-header", "--test-passphrase"},
        agent->dir, agent->dir + "/agent.log");
    return agent;
  }
};

std::size_t lines_containing(const std::string& text, const std::string& what) {
  std::size_t n = 0;
  for (std::size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

// Every agent ends with exit status 0 (unlocked) and exactly one released key it used.
void expect_all_unlocked(std::vector<std::unique_ptr<Guests::Agent>>& agents) {
  for (auto& agent : agents) {
    agent->status = agent->process->wait(90s);
    INFO(agent->dir + ":\n" + agent->log());
    CHECK(agent->status == 0);
    CHECK(lines_containing(agent->log(), "key released") == 1);
    CHECK(lines_containing(agent->log(), "the released key opens a keyslot") == 1);
  }
}

void expect_chain_intact(Daemon& replica) {
  auto verified = replica.admin({"audit", "--verify"});
  INFO(verified.output);
  CHECK(verified.status == 0);
  CHECK(verified.output.find("audit chain intact") != std::string::npos);
}

// Release records in the chain (one per key handed out; an agent whose response was lost
// with a killed replica may have one more).
std::size_t releases_recorded(Daemon& replica) {
  auto listed = replica.admin({"audit", "--decision", "release", "--limit", "1000"});
  return lines_containing(listed.output, fleet_image);  // one table row per record
}

}  // namespace

TEST_CASE("fde-agent with three replicas' URLs: a replica SIGKILLed during load, every agent fails over and unlocks",
          "[fleet][agent]") {
  Fleet fleet(3);
  Guests guests(fleet);
  const std::string dead_port = std::to_string(fleet[1].port);
  // Nine agents at once, three starting on each replica; replica 1 is killed while they run.
  std::vector<std::unique_ptr<Guests::Agent>> agents;
  for (std::size_t g = 0; g < 9; ++g) agents.push_back(guests.start_agent(g % 3));
  std::this_thread::sleep_for(300ms);
  fleet[1].kill();
  // Three more that start on the dead replica: their first try is refused, the next replica answers.
  std::vector<std::unique_ptr<Guests::Agent>> late;
  for (int g = 0; g < 3; ++g) late.push_back(guests.start_agent(1));
  expect_all_unlocked(agents);
  expect_all_unlocked(late);
  for (auto& agent : late) {
    INFO(agent->log());
    CHECK(lines_containing(agent->log(), "failed: challenge: cannot connect to 127.0.0.1:" + dead_port) >= 1);
  }
  CHECK(releases_recorded(fleet[0]) >= 12);
  expect_chain_intact(fleet[0]);
  expect_chain_intact(fleet[2]);
}

TEST_CASE("fde-agent during a database outage: 503s, retries, and every agent unlocks once PostgreSQL is back",
          "[fleet][agent]") {
  Fleet fleet(3);
  Guests guests(fleet);
  std::vector<std::unique_ptr<Guests::Agent>> agents;
  for (std::size_t g = 0; g < 3; ++g) agents.push_back(guests.start_agent(g));
  fleet.database.stop();
  // These start while the database is down: every replica answers 503 until it returns.
  std::vector<std::unique_ptr<Guests::Agent>> during;
  for (std::size_t g = 0; g < 3; ++g) during.push_back(guests.start_agent(g));
  std::this_thread::sleep_for(3s);
  for (auto& agent : during) CHECK(agent->process->running());  // still retrying, not given up
  fleet.database.start();
  expect_all_unlocked(agents);
  expect_all_unlocked(during);
  for (auto& agent : during) {
    INFO(agent->log());
    CHECK(lines_containing(agent->log(), "HTTP 503 unavailable") >= 1);
  }
  // Each replica logged why it answered 503 (its store could not be reached).
  for (std::size_t i = 0; i < 3; ++i) {
    const std::string log = fleet[i].log();
    INFO("replica " << i);
    CHECK((log.find("store_failed") != std::string::npos || log.find("release_failed") != std::string::npos ||
           log.find("audit_failed") != std::string::npos));
  }
  CHECK(releases_recorded(fleet[1]) >= 6);
  expect_chain_intact(fleet[1]);
}
