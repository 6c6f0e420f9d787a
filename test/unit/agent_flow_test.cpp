// The agent's boot flow with a fake clock, network, device and verifiers: retries until a
// verifier answers, the failure policies, the deadlines and one status line per attempt.
#include <catch2/catch.hpp>
#include <deque>
#include <sstream>

#include "common/crypto/key_check.hpp"
#include "guest-agent/flow/unlock_flow.hpp"

using namespace fde;
using namespace fde::agent;
using namespace std::chrono_literals;

namespace {

// The volume key of the enrolled volume, and the kernel's view of its mapping.
Bytes genuine_volume_key() { return Bytes(64, 0x77); }
CryptMapping genuine_mapping() {
  CryptMapping mapping{"aes-xts-plain64",
                       "CRYPT-LUKS2-0f1e2d3c4b5a69788796a5b4c3d2e1f0-luks-0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"};
  mapping.key = MappedKey::in_table;
  mapping.volume_key_check = crypto::key_check_value(crypto::KeyCheckKind::volume_key, genuine_volume_key());
  return mapping;
}

struct FakeClock final : Clock {
  TimePoint current = TimePoint() + 1000h;
  TimePoint now() override { return current; }
  void sleep_until(TimePoint when) override { current = std::max(current, when); }
};

struct FakeNetwork final : NetworkProbe {
  FakeClock& clock;
  TimePoint up_at;
  bool has_route(const VerifierUrl&) override { return clock.current >= up_at; }
  FakeNetwork(FakeClock& c, TimePoint up) : clock(c), up_at(up) {}
};

struct FakeDevice final : DeviceLocator {
  FakeClock& clock;
  TimePoint appears_at;
  bool unlocked_already = false;
  // What the kernel says about the mapping that already exists.
  Result<CryptMapping> mapping = genuine_mapping();
  FakeDevice(FakeClock& c, TimePoint at) : clock(c), appears_at(at) {}
  Result<std::string> locate() override {
    if (clock.current < appears_at) return fail(Errc::not_found, "no block device holds it");
    return std::string("/dev/vda2");
  }
  bool already_unlocked() override { return unlocked_already; }
  Result<CryptMapping> existing_mapping() override { return mapping; }
};

struct FakeUnlocker final : VolumeUnlocker {
  Bytes* received;
  bool succeed;
  bool leave_mapping_open;  // a failed unlock leaves a mapping it could not close
  bool left_open = false;
  FakeUnlocker(Bytes* r, bool s, bool open) : received(r), succeed(s), leave_mapping_open(open) {}
  std::string describe() const override { return "fake unlock"; }
  std::string done() const override { return "unlocked /dev/vda2 as /dev/mapper/luks-0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"; }
  Result<void> unlock(const SecretBytes& key) override {
    *received = to_bytes(key.view());
    if (leave_mapping_open) {
      left_open = true;
      return fail(Errc::verification_failed,
                  "/dev/mapper/luks-x uses 'cipher_null-ecb', expected 'aes-xts-plain64'; closing it failed (exit 4)");
    }
    if (!succeed) return fail(Errc::verification_failed, "the released key opens no keyslot of the volume");
    return {};
  }
  bool unverified_mapping_open() const override { return left_open; }
};

// Scripted verifier answers; each attempt takes `duration` of fake time.
struct Harness {
  AgentConfig config;
  FakeClock clock;
  std::ostringstream console;
  StatusReporter status{console};
  FakeNetwork network{clock, clock.current};
  FakeDevice device{clock, clock.current};
  std::deque<AttemptStatus> script;  // what the next attempts answer; empty: retry forever
  Milliseconds duration = 100ms;
  std::vector<std::string> tried;
  Bytes unlocked_with;
  bool unlock_succeeds = true;
  bool unlock_leaves_mapping_open = false;
  Bytes key = Bytes(32, 0x5a);  // the enrolled machine key, released by default
  std::deque<Bytes> released_keys;  // what the next releases carry instead; empty: key

  Harness() {
    config.image_id = "web-01";
    config.verifiers = {*parse_verifier_url("https://127.0.0.1:8443"), *parse_verifier_url("https://127.0.0.2:8443")};
    config.ca_file = "/ca.pem";
    config.luks_uuid = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0";
    config.attempt_timeout = 5s;
    config.overall_timeout = 60s;
    config.backoff_initial = 1s;
    config.backoff_max = 8s;
    config.released_key_check = crypto::key_check_value(crypto::KeyCheckKind::released_key, key);
    config.volume_key_check = crypto::key_check_value(crypto::KeyCheckKind::volume_key, genuine_volume_key());
  }

  FlowResult run() {
    FlowServices services{
        clock,
        status,
        network,
        device,
        [this](const VerifierUrl& verifier, TimePoint deadline) {
          tried.push_back(verifier.text);
          AttemptResult result;
          result.status = AttemptStatus::retry;
          if (!script.empty()) {
            result.status = script.front();
            script.pop_front();
          }
          result.step = result.status == AttemptStatus::retry ? "challenge" : "attest";
          result.message = result.status == AttemptStatus::retry ? "cannot connect: connection refused"
                                                                 : "HTTP 403 attestation_failed";
          if (result.status == AttemptStatus::fatal) result.message = "/dev/tsi does not exist";
          if (result.status == AttemptStatus::released) {
            result.key = SecretBytes::copy_of(released_keys.empty() ? key : released_keys.front());
            if (!released_keys.empty()) released_keys.pop_front();
          }
          clock.current = std::min(deadline, clock.current + duration);
          return result;
        },
        [this](const std::string&) {
          return std::make_unique<FakeUnlocker>(&unlocked_with, unlock_succeeds, unlock_leaves_mapping_open);
        },
        [] { return 0.0; },
    };
    return run_unlock_flow(config, services);
  }

  std::vector<std::string> lines() const {
    std::vector<std::string> out;
    std::istringstream in(console.str());
    for (std::string line; std::getline(in, line);) out.push_back(line);
    return out;
  }
  std::size_t lines_containing(const std::string& text) const {
    std::size_t n = 0;
    for (const auto& line : lines()) n += line.find(text) != std::string::npos;
    return n;
  }
};

}  // namespace

TEST_CASE("verifiers that are down and then up: the agent retries in order and unlocks") {
  Harness h;
  h.script = {AttemptStatus::retry, AttemptStatus::retry, AttemptStatus::retry, AttemptStatus::released};
  CHECK(h.run() == FlowResult::unlocked);
  CHECK(h.tried == std::vector<std::string>{"https://127.0.0.1:8443", "https://127.0.0.2:8443", "https://127.0.0.1:8443",
                                            "https://127.0.0.2:8443"});
  CHECK(h.unlocked_with == h.key);
  // One line per failed attempt saying what was tried, what happened and what comes next.
  CHECK(h.lines_containing("attempt 1 https://127.0.0.1:8443: failed: challenge: cannot connect: connection refused; "
                           "next: https://127.0.0.2:8443 now (gives up in ") == 1);
  CHECK(h.lines_containing("attempt 2 https://127.0.0.2:8443: failed: ") == 1);
  CHECK(h.lines_containing("next: https://127.0.0.1:8443 in 1s") == 1);
  CHECK(h.lines_containing("attempt 4 https://127.0.0.2:8443: key released; unlocking with fake unlock") == 1);
  CHECK(h.lines_containing("unlocked /dev/vda2 as /dev/mapper/luks-0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0") == 1);
}

TEST_CASE("a denial applies the failure policy at once") {
  SECTION("poweroff") {
    Harness h;
    h.script = {AttemptStatus::denied};
    CHECK(h.run() == FlowResult::give_up_poweroff);
    CHECK(h.tried.size() == 1);
    CHECK(h.lines_containing("refused: attest: HTTP 403 attestation_failed; failure policy 'poweroff': the VM will power off") == 1);
  }
  SECTION("passphrase") {
    Harness h;
    h.config.failure_policy = FailurePolicy::passphrase;
    h.script = {AttemptStatus::retry, AttemptStatus::denied};
    CHECK(h.run() == FlowResult::give_up_passphrase);
    CHECK(h.tried.size() == 2);
    CHECK(h.lines_containing("falling back to the LUKS passphrase prompt") == 1);
  }
  SECTION("wait keeps asking until the verifier releases the key") {
    Harness h;
    h.config.failure_policy = FailurePolicy::wait;
    h.script = {AttemptStatus::denied, AttemptStatus::denied, AttemptStatus::denied, AttemptStatus::released};
    CHECK(h.run() == FlowResult::unlocked);
    CHECK(h.tried.size() == 4);
    CHECK(h.lines_containing("(failure policy 'wait': no deadline)") == 3);
  }
}

TEST_CASE("when the overall deadline passes the agent gives up with the failure policy") {
  Harness h;
  h.config.failure_policy = FailurePolicy::passphrase;
  const TimePoint start = h.clock.current;
  CHECK(h.run() == FlowResult::give_up_passphrase);
  CHECK(h.clock.current <= start + 60s);
  CHECK(h.lines_containing("giving up: overall deadline of 60s reached; failure policy 'passphrase'") == 1);
  // The backoff is bounded: rounds at 0, 1, 2, 4, 8, 8, ... seconds.
  CHECK(h.tried.size() > 10);
}

TEST_CASE("with failure policy wait the agent keeps trying past the overall deadline") {
  Harness h;
  h.config.failure_policy = FailurePolicy::wait;
  h.script = std::deque<AttemptStatus>(60, AttemptStatus::retry);
  h.script.push_back(AttemptStatus::released);
  const TimePoint start = h.clock.current;
  CHECK(h.run() == FlowResult::unlocked);
  CHECK(h.clock.current > start + 120s);
}

TEST_CASE("a machine that cannot attest gives up at once, even with failure policy wait") {
  Harness h;
  h.config.failure_policy = FailurePolicy::wait;
  h.script = {AttemptStatus::fatal};
  CHECK(h.run() == FlowResult::give_up_poweroff);
  CHECK(h.lines_containing("cannot attest: attest: /dev/tsi does not exist; failure policy 'wait' cannot help") == 1);
}

TEST_CASE("the agent waits for the network with a deadline instead of failing on the first error") {
  SECTION("the network comes up in time") {
    Harness h;
    h.network.up_at = h.clock.current + 3s;
    h.script = {AttemptStatus::released};
    CHECK(h.run() == FlowResult::unlocked);
    CHECK(h.lines_containing("waiting for the network: no route to any verifier yet (up to 60s)") == 1);
    CHECK(h.lines_containing("network is up after 3s") == 1);
  }
  SECTION("no route within network_timeout: the verifiers are tried anyway") {
    Harness h;
    h.config.network_timeout = 5s;
    h.network.up_at = h.clock.current + 1h;
    h.script = {AttemptStatus::released};
    CHECK(h.run() == FlowResult::unlocked);
    CHECK(h.lines_containing("still no route to any verifier after 5s; trying the verifiers anyway") == 1);
  }
}

TEST_CASE("the agent waits for the LUKS device and gives up when it never appears") {
  SECTION("it appears") {
    Harness h;
    h.device.appears_at = h.clock.current + 2s;
    h.script = {AttemptStatus::released};
    CHECK(h.run() == FlowResult::unlocked);
    CHECK(h.lines_containing("LUKS volume UUID=0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0 appeared as /dev/vda2") == 1);
  }
  SECTION("it does not") {
    Harness h;
    h.config.device_timeout = 5s;
    h.device.appears_at = h.clock.current + 1h;
    CHECK(h.run() == FlowResult::give_up_poweroff);
    CHECK(h.tried.empty());
    CHECK(h.lines_containing("did not appear within 5s") == 1);
  }
}

TEST_CASE("an already unlocked volume needs nothing once the kernel shows it is the configured volume") {
  Harness h;
  h.device.unlocked_already = true;
  CHECK(h.run() == FlowResult::already_unlocked);
  CHECK(h.tried.empty());
  CHECK(h.lines_containing("already exists and is LUKS2 volume 0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0 with cipher "
                           "aes-xts-plain64 and the enrolled volume key: the volume is unlocked; nothing to do") == 1);
}

TEST_CASE("an already open mapping that is not the configured volume powers off whatever the failure policy") {
  for (auto policy : {FailurePolicy::poweroff, FailurePolicy::passphrase, FailurePolicy::wait}) {
    INFO(failure_policy_name(policy));
    auto run_with = [policy](Result<CryptMapping> mapping) {
      Harness h;
      h.config.failure_policy = policy;
      h.device.unlocked_already = true;
      h.device.mapping = std::move(mapping);
      h.script = {AttemptStatus::released};
      CHECK(h.run() == FlowResult::fatal_poweroff);
      CHECK(h.tried.empty());  // no key is asked for while it exists
      CHECK(h.lines_containing("the VM will power off whatever the failure policy") == 1);
      return h.console.str();
    };
    CHECK(run_with(CryptMapping{"cipher_null-ecb", "CRYPT-LUKS2-0f1e2d3c4b5a69788796a5b4c3d2e1f0-x"})
              .find("already exists, but it uses 'cipher_null-ecb', expected 'aes-xts-plain64' (luks_cipher)") !=
          std::string::npos);
    CHECK(run_with(CryptMapping{"aes-xts-plain64", "CRYPT-LUKS2-11111111222233334444555555555555-x"})
              .find("already exists, but its device-mapper UUID is 'CRYPT-LUKS2-11111111222233334444555555555555-x'") !=
          std::string::npos);
    CHECK(run_with(CryptMapping{"aes-xts-plain64", "CRYPT-PLAIN-x"}).find("its device-mapper UUID is 'CRYPT-PLAIN-x'") !=
          std::string::npos);
    // A volume the host made with the genuine UUID and cipher (opened before the agent, e.g.
    // by a passphrase prompt): only its key tells it apart.
    CryptMapping host_volume = genuine_mapping();
    host_volume.volume_key_check = crypto::key_check_value(crypto::KeyCheckKind::volume_key, Bytes(64, 0x66));
    CHECK(run_with(host_volume).find("already exists, but its volume key does not match volume_key_check") !=
          std::string::npos);
    CryptMapping in_keyring = genuine_mapping();
    in_keyring.key = MappedKey::in_keyring;
    in_keyring.keyring_key = ":64:logon:cryptsetup:0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0-d0";
    CHECK(run_with(in_keyring).find("its volume key is in the kernel keyring (:64:logon:cryptsetup:") !=
          std::string::npos);
    CHECK(run_with(fail(Errc::unsupported, "/dev/mapper/x: its target is of type 'linear', expected 'crypt'"))
              .find("already exists, but /dev/mapper/x: its target is of type 'linear'") != std::string::npos);
  }
}

TEST_CASE("an unlock that leaves an unverified mapping open powers off whatever the failure policy") {
  for (auto policy : {FailurePolicy::poweroff, FailurePolicy::passphrase, FailurePolicy::wait}) {
    INFO(failure_policy_name(policy));
    Harness h;
    h.config.failure_policy = policy;
    h.unlock_leaves_mapping_open = true;
    h.script = {AttemptStatus::released, AttemptStatus::released};
    CHECK(h.run() == FlowResult::fatal_poweroff);
    CHECK(h.tried.size() == 1);  // "wait" does not ask again either
    CHECK(h.lines_containing("unlock failed: /dev/mapper/luks-x uses 'cipher_null-ecb', expected 'aes-xts-plain64'; "
                             "closing it failed (exit 4); the VM will power off whatever the failure policy") == 1);
    CHECK(h.lines_containing("falling back to the LUKS passphrase prompt") == 0);
  }
}

TEST_CASE("a released key that does not open the volume applies the failure policy") {
  Harness h;
  h.unlock_succeeds = false;
  h.script = {AttemptStatus::released};
  CHECK(h.run() == FlowResult::give_up_poweroff);
  CHECK(h.lines_containing("unlock failed: the released key opens no keyslot of the volume") == 1);
}

TEST_CASE("a released key that does not match released_key_check never reaches cryptsetup") {
  // A verifier that is not ours (behind a mis-issued TLS certificate) seals a key of its
  // choosing, one that opens a volume it made with the genuine UUID.
  const Bytes chosen(32, 0x42);
  for (auto policy : {FailurePolicy::poweroff, FailurePolicy::passphrase}) {
    INFO(failure_policy_name(policy));
    Harness h;
    h.config.failure_policy = policy;
    h.released_keys = {chosen};
    h.script = {AttemptStatus::released};
    CHECK(h.run() == (policy == FailurePolicy::poweroff ? FlowResult::give_up_poweroff : FlowResult::give_up_passphrase));
    CHECK(h.unlocked_with.empty());  // the unlocker never saw it
    CHECK(h.lines_containing("attempt 1 https://127.0.0.1:8443: refused: the released key does not match "
                             "released_key_check in the measured configuration") == 1);
    CHECK(h.console.str().find(hex_encode(chosen)) == std::string::npos);
  }
  SECTION("with failure policy wait the agent keeps asking, and the enrolled key then unlocks") {
    Harness h;
    h.config.failure_policy = FailurePolicy::wait;
    h.released_keys = {chosen};
    h.script = {AttemptStatus::released, AttemptStatus::released};
    CHECK(h.run() == FlowResult::unlocked);
    CHECK(h.unlocked_with == h.key);
    CHECK(h.lines_containing("refused: key check: the released key does not match released_key_check") == 1);
  }
  SECTION("a configuration without a check value matches no key") {
    Harness h;
    h.config.released_key_check.clear();
    h.script = {AttemptStatus::released};
    CHECK(h.run() == FlowResult::give_up_poweroff);
    CHECK(h.unlocked_with.empty());
  }
}

TEST_CASE("status lines never contain the key") {
  Harness h;
  h.script = {AttemptStatus::retry, AttemptStatus::released};
  h.run();
  const std::string console = h.console.str();
  CHECK(console.find(hex_encode(h.key)) == std::string::npos);
  CHECK(console.find(base64_encode(h.key)) == std::string::npos);
  CHECK(console.find(std::string(as_text(h.key))) == std::string::npos);
}
