// fde-agent against the real fde-verifierd on loopback: the real binaries (agent, daemon,
// fde-admin, cryptsetup) on real files. A simulated device and a LUKS2 image file stand in
// for the CVM; the daemon trusts the simulator's CA. Every daemon is stopped on every path,
// and every test ends by checking that no file under its root holds the disk key.
// The LUKS2 header checks run the real cryptsetup on real images that a hostile host could
// present: headers rewritten with valid checksums (cipher_null keyslot or segment, another
// cipher, an oversized header area), truncated or garbage ones, and a header swapped on the
// device between the agent's check and cryptsetup's open.
#include <fcntl.h>
#include <libcryptsetup.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "common/crypto/certificate.hpp"
#include "common/crypto/hash.hpp"
#include "common/crypto/keys.hpp"
#include "common/crypto/key_check.hpp"
#include "common/crypto/random.hpp"
#include "common/sim/sim_device.hpp"
#include "common/util/file.hpp"
#include "guest-agent/unlock/luks2_header.hpp"
#include "guest-agent/unlock/luks_device.hpp"
#include "guest-agent/unlock/volume_unlocker.hpp"

using namespace fde;
namespace fs = std::filesystem;
using namespace std::chrono_literals;

namespace {

constexpr const char* image_id = "it-web-01";

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

void write_text(const std::string& path, std::string_view text, mode_t mode = 0644) {
  REQUIRE(write_file_atomic(path, as_bytes(text), mode));
}

// A child process with stdout and stderr in `log`, and optional bytes on its stdin.
class Process {
 public:
  Process(const std::vector<std::string>& argv, const std::string& cwd, const std::string& log,
          const std::optional<SecretBytes>& input = std::nullopt) {
    int pipe_fds[2] = {-1, -1};
    if (input) REQUIRE(::pipe(pipe_fds) == 0);
    pid_ = ::fork();
    REQUIRE(pid_ >= 0);
    if (pid_ == 0) {
      if (input) {
        ::dup2(pipe_fds[0], STDIN_FILENO);
        ::close(pipe_fds[0]);
        ::close(pipe_fds[1]);
      }
      int out = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
      if (out >= 0) {
        ::dup2(out, STDOUT_FILENO);
        ::dup2(out, STDERR_FILENO);
      }
      if (::chdir(cwd.c_str()) != 0) ::_exit(127);
      // Anything a child might write goes under the test's root, where the key scan looks.
      ::setenv("TMPDIR", cwd.c_str(), 1);
      ::setenv("HOME", cwd.c_str(), 1);
      std::vector<char*> args;
      for (const auto& arg : argv) args.push_back(const_cast<char*>(arg.c_str()));
      args.push_back(nullptr);
      ::execv(args[0], args.data());
      ::_exit(127);
    }
    if (input) {
      ::close(pipe_fds[0]);
      REQUIRE(::write(pipe_fds[1], input->data(), input->size()) == static_cast<ssize_t>(input->size()));
      ::close(pipe_fds[1]);
    }
  }
  ~Process() {
    if (pid_ > 0 && !status_) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  pid_t pid() const { return pid_; }
  // The exit code, or nullopt if it did not end within `timeout` (it is then killed).
  std::optional<int> wait(std::chrono::milliseconds timeout) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (!status_) {
      int status = 0;
      pid_t done = ::waitpid(pid_, &status, WNOHANG);
      if (done == pid_) {
        status_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        break;
      }
      if (std::chrono::steady_clock::now() >= deadline) {
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, nullptr, 0);
        status_ = -1;
        return std::nullopt;
      }
      std::this_thread::sleep_for(20ms);
    }
    return *status_;
  }
  void terminate() {
    if (pid_ > 0 && !status_) ::kill(pid_, SIGTERM);
  }

 private:
  pid_t pid_ = -1;
  std::optional<int> status_;
};

// The agent under test: this build's, or another build's given by FDE_TEST_AGENT, run
// through FDE_TEST_AGENT_EMULATOR if set (scripts/build-agent-aarch64.sh runs the aarch64
// agent under qemu-aarch64-static this way).
std::vector<std::string> agent_command() {
  std::vector<std::string> command;
  if (const char* emulator = std::getenv("FDE_TEST_AGENT_EMULATOR"); emulator != nullptr && *emulator != 0)
    command.push_back(emulator);
  const char* agent = std::getenv("FDE_TEST_AGENT");
  command.push_back(agent != nullptr && *agent != 0 ? agent : FDE_AGENT_BINARY);
  return command;
}

// A loopback port nobody listens on (bound, read and released).
std::uint16_t unused_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  REQUIRE(fd >= 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0);
  socklen_t length = sizeof address;
  REQUIRE(::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) == 0);
  ::close(fd);
  return ntohs(address.sin_port);
}

struct Tls {
  std::string ca_pem;
  std::string server_cert_pem;
  std::string server_key_pem;
};

Tls make_tls(const std::string& name) {
  auto ca_key = crypto::PrivateKey::generate(crypto::KeyType::ec_p256);
  REQUIRE(ca_key);
  crypto::CertificateRequest ca_request;
  ca_request.common_name = name + " CA";
  ca_request.is_ca = true;
  auto ca = crypto::issue_certificate(ca_request, ca_key->public_key(), *ca_key, nullptr);
  REQUIRE(ca);
  auto server_key = crypto::PrivateKey::generate(crypto::KeyType::ec_p256);
  REQUIRE(server_key);
  crypto::CertificateRequest server_request;
  server_request.common_name = name;
  server_request.serial = 2;
  server_request.subject_alt_names = {"IP:127.0.0.1"};
  auto server = crypto::issue_certificate(server_request, server_key->public_key(), *ca_key, &*ca);
  REQUIRE(server);
  SecretBytes key_pem = server_key->to_pem();
  return Tls{ca->pem(), server->pem(), std::string(as_text(key_pem.view()))};
}

// Every file under `root` (recursively) that contains the key in any of its usual spellings.
std::vector<std::string> files_containing_key(const std::string& root, const SecretBytes& key) {
  const std::string raw(as_text(key.view()));
  std::string hex = hex_encode(key.view());
  std::string upper_hex = hex;
  for (auto& c : upper_hex) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  const std::string base64 = base64_encode(key.view());
  std::vector<std::string> found;
  std::error_code error;
  for (fs::recursive_directory_iterator it(root, error), end; !error && it != end; it.increment(error)) {
    if (!it->is_regular_file(error)) continue;
    const std::string content = read_text(it->path().string());
    for (const auto& spelling : {raw, hex, upper_hex, base64})
      if (content.find(spelling) != std::string::npos) {
        found.push_back(it->path().string());
        break;
      }
  }
  return found;
}

// Checks the key against the LUKS2 keyslot with libcryptsetup, without device-mapper
// (activation by passphrase with a NULL name only verifies).
bool key_opens_keyslot(const std::string& image, const SecretBytes& key) {
  struct crypt_device* cd = nullptr;
  if (crypt_init(&cd, image.c_str()) < 0) return false;
  bool opens = crypt_load(cd, CRYPT_LUKS2, nullptr) == 0 &&
               crypt_activate_by_passphrase(cd, nullptr, CRYPT_ANY_SLOT, reinterpret_cast<const char*>(key.data()),
                                            key.size(), 0) >= 0;
  crypt_free(cd);
  return opens;
}

// The volume key of a LUKS2 image, as libcryptsetup decrypts it with `key` from a keyslot.
SecretBytes volume_key_of(const std::string& image, const SecretBytes& key) {
  struct crypt_device* cd = nullptr;
  REQUIRE(crypt_init(&cd, image.c_str()) == 0);
  SecretBytes volume_key(64);
  std::size_t size = volume_key.size();
  const bool read = crypt_load(cd, CRYPT_LUKS2, nullptr) == 0 &&
                    crypt_volume_key_get(cd, CRYPT_ANY_SLOT, reinterpret_cast<char*>(volume_key.data()), &size,
                                         reinterpret_cast<const char*>(key.data()), key.size()) >= 0;
  crypt_free(cd);
  REQUIRE(read);
  REQUIRE(size == volume_key.size());
  return volume_key;
}

// One test's world: a root directory with the simulated device, the verifier's TLS, secrets
// and database, the LUKS2 image, the enrolled key and the agent's configuration.
class World {
 public:
  World() {
    char pattern[] = "/tmp/fde-agent-it-XXXXXX";
    REQUIRE(::mkdtemp(pattern) != nullptr);
    root = pattern;
    sim::DeviceOptions options;
    options.type = sim::DeviceType::p521;
    auto device = sim::SimDevice::create(options);
    REQUIRE(device);
    REQUIRE(device->save(root + "/sim"));
    rim_hex = hex_encode(crypto::random_bytes(32));
    write_text(root + "/sim/rim", rim_hex + "\n");

    Tls tls = make_tls("fde test verifier");
    write_text(root + "/verifier-ca.pem", tls.ca_pem);
    write_text(root + "/server.crt", tls.server_cert_pem);
    write_text(root + "/server.key", tls.server_key_pem, 0600);
    write_text(root + "/other-ca.pem", make_tls("somebody else").ca_pem);
    write_text(root + "/nonce-secret", hex_encode(crypto::random_bytes(32)) + "\n", 0600);
    write_text(root + "/kek", hex_encode(crypto::random_bytes(32)) + "\n", 0600);
    write_text(root + "/verifier.toml", R"([server]
threads = 1
[tls]
certificate = "server.crt"
private_key = "server.key"
[attestation]
trusted_roots = ["sim/ca.pem"]
[nonce]
secret_file = "nonce-secret"
[store]
database = "verifier.db"
kek_file = "kek"
[admin]
socket = "admin.sock"
[operator]
listen = "127.0.0.1:0"
[log]
level = "debug"
)");

    disk_key = crypto::random_secret(32);
    luks_uuid = format_luks(root + "/disk.luks", disk_key);
    // The check values fde-image would write for this volume.
    released_key_check = hex_encode(crypto::key_check_value(crypto::KeyCheckKind::released_key, disk_key.view()));
    volume_key_check = hex_encode(
        crypto::key_check_value(crypto::KeyCheckKind::volume_key, volume_key_of(root + "/disk.luks", disk_key).view()));
    write_agent_config({});
  }
  ~World() {
    daemon.reset();
    std::error_code ignored;
    fs::remove_all(root, ignored);
  }
  World(const World&) = delete;
  World& operator=(const World&) = delete;

  // cryptsetup luksFormat of a sparse file, the key on stdin; returns the volume's UUID.
  // `options` replace the defaults (--type luks2) or add to them (--cipher ...).
  std::string format_luks(const std::string& path, const SecretBytes& key, const std::vector<std::string>& options = {}) {
    { std::ofstream(path).close(); }
    fs::resize_file(path, 17 * 1024 * 1024);  // the LUKS2 header area is 16 MiB
    auto cryptsetup = agent::find_cryptsetup();
    REQUIRE(cryptsetup);
    std::vector<std::string> argv{*cryptsetup, "luksFormat", "-q", "--pbkdf", "pbkdf2", "--pbkdf-force-iterations",
                                  "1000", "--key-file=-"};
    if (std::find(options.begin(), options.end(), "--type") == options.end()) argv.insert(argv.end(), {"--type", "luks2"});
    argv.insert(argv.end(), options.begin(), options.end());
    argv.push_back(path);
    Process format(argv, root, root + "/luksformat.log", key.clone());
    REQUIRE(format.wait(60s) == 0);
    auto header = agent::read_luks_header(path);
    REQUIRE(header);
    return header->uuid;
  }

  // Starts fde-verifierd on `port` (0: any) and waits until it serves.
  void start_daemon(std::uint16_t port = 0) {
    fs::remove(root + "/ready");
    daemon = std::make_unique<Process>(
        std::vector<std::string>{FDE_VERIFIERD_BINARY, "--config", root + "/verifier.toml", "--ready-file",
                                 root + "/ready", "--listen", "127.0.0.1:" + std::to_string(port)},
        root, root + "/daemon.log");
    auto deadline = std::chrono::steady_clock::now() + 20s;
    while (std::chrono::steady_clock::now() < deadline) {
      std::string ready = read_text(root + "/ready");
      if (!ready.empty() && ready.back() == '\n') {
        // The first line is the attestation port; the operator listener's line follows.
        const std::string first = ready.substr(0, ready.find('\n'));
        verifier_port = static_cast<std::uint16_t>(std::stoi(first.substr(first.rfind(':') + 1)));
        return;
      }
      std::this_thread::sleep_for(50ms);
    }
    FAIL("fde-verifierd did not become ready: " << read_text(root + "/daemon.log"));
  }

  int admin(const std::vector<std::string>& args) {
    std::vector<std::string> argv{FDE_ADMIN_BINARY, "--socket", root + "/admin.sock"};
    argv.insert(argv.end(), args.begin(), args.end());
    Process process(argv, root, root + "/admin.log");
    auto status = process.wait(30s);
    REQUIRE(status);
    return *status;
  }

  // Enrolls the image with `rim_hex` as its direct-boot RIM. The bundle holds the key: it is
  // overwritten and deleted once imported, as docs/enrollment-bundle.md asks.
  void enroll(const std::string& id = image_id) {
    const std::string bundle = root + "/bundle.json";
    std::string json = std::string(R"({"format": "virtcca-fde-enrollment/v1", "image_id": ")") + id +
                       R"(", "luks_uuid": ")" + luks_uuid + R"(", "disk_key": ")" + base64_encode(disk_key.view()) +
                       R"(", "reference": {"version": 1, "image_id": ")" + id +
                       R"(", "hash_alg": "sha-256", "sets": [{"name": "direct", "boot": "direct", "rims": [")" +
                       rim_hex + R"("]}]}})";
    write_text(bundle, json, 0600);
    int status = admin({"enroll", "--bundle", bundle});
    write_text(bundle, std::string(json.size(), '\0'), 0600);
    wipe_bytes(std::span<std::uint8_t>(reinterpret_cast<std::uint8_t*>(json.data()), json.size()));
    fs::remove(bundle);
    REQUIRE(status == 0);
  }

  struct Settings {
    std::vector<std::string> verifiers;  // empty: the running daemon
    std::string ca_file;                 // empty: verifier-ca.pem
    std::string image = image_id;
    std::string failure_policy = "poweroff";
    std::string sim_dir;  // empty: sim
    std::string overall_timeout = "20s";
    std::string attempt_timeout = "5s";
    bool key_checks = true;  // false: a configuration written before check values existed
  };
  void write_agent_config(const Settings& settings) {
    std::string text = "# written by agent_unlock_test\nimage_id = " + settings.image + "\n";
    if (settings.verifiers.empty())
      text += "verifier = https://127.0.0.1:" + std::to_string(verifier_port) + "\n";
    for (const auto& verifier : settings.verifiers) text += "verifier = " + verifier + "\n";
    text += "ca_file = " + (settings.ca_file.empty() ? root + "/verifier-ca.pem" : settings.ca_file) + "\n";
    text += "luks_uuid = " + luks_uuid + "\n";  // the platform comes from --platform sim
    text += "sim_dir = " + (settings.sim_dir.empty() ? root + "/sim" : settings.sim_dir) + "\n";
    text += "failure_policy = " + settings.failure_policy + "\n";
    text += "network_timeout = 2s\ndevice_timeout = 2s\n";
    text += "attempt_timeout = " + settings.attempt_timeout + "\noverall_timeout = " + settings.overall_timeout + "\n";
    text += "backoff_initial = 200ms\nbackoff_max = 1s\n";
    if (settings.key_checks)
      text += "released_key_check = " + released_key_check + "\nvolume_key_check = " + volume_key_check + "\n";
    write_text(root + "/agent.conf", text);
  }

  std::unique_ptr<Process> start_agent(const std::vector<std::string>& extra = {"--test-passphrase"}) {
    std::vector<std::string> argv = agent_command();
    argv.insert(argv.end(), {"--platform", "sim", "--config", root + "/agent.conf", "--cmdline", "/dev/null",
                             "--device", root + "/disk.luks", "--header-dir", header_directory()});
    argv.insert(argv.end(), extra.begin(), extra.end());
    return std::make_unique<Process>(argv, root, root + "/agent.log");
  }
  int run_agent(const std::vector<std::string>& extra = {"--test-passphrase"}) {
    auto agent = start_agent(extra);
    auto status = agent->wait(90s);
    INFO(agent_log());
    REQUIRE(status);
    return *status;
  }
  std::string agent_log() const { return read_text(root + "/agent.log"); }
  std::string header_directory() const { return root + "/luks-header"; }
  std::string daemon_log() const { return read_text(root + "/daemon.log"); }
  std::size_t agent_lines_containing(const std::string& text) const {
    std::istringstream in(agent_log());
    std::size_t n = 0;
    for (std::string line; std::getline(in, line);) n += line.find(text) != std::string::npos;
    return n;
  }

  std::string root;
  std::string rim_hex;
  std::string luks_uuid;
  SecretBytes disk_key;
  std::string released_key_check;  // hex, of disk_key
  std::string volume_key_check;    // hex, of disk.luks's volume key
  std::uint16_t verifier_port = 0;
  std::unique_ptr<Process> daemon;
};

// Rewrites the JSON area of both LUKS2 headers of `path` and recomputes their SHA-256
// checksums, as a host that controls the disk can: cryptsetup then reads the forged
// metadata as valid. `edit` changes the JSON text.
void forge_luks2_json(const std::string& path, const std::function<void(std::string&)>& edit) {
  std::fstream file(path, std::ios::in | std::ios::out | std::ios::binary);
  REQUIRE(file);
  Bytes binary(4096);
  file.read(reinterpret_cast<char*>(binary.data()), static_cast<std::streamsize>(binary.size()));
  std::uint64_t hdr_size = 0;
  for (std::size_t i = 8; i < 16; ++i) hdr_size = (hdr_size << 8) | binary[i];
  REQUIRE(hdr_size >= 16384);
  for (std::uint64_t offset : {std::uint64_t(0), hdr_size}) {
    Bytes header(hdr_size);
    file.seekg(static_cast<std::streamoff>(offset));
    file.read(reinterpret_cast<char*>(header.data()), static_cast<std::streamsize>(header.size()));
    REQUIRE(file);
    auto json_begin = header.begin() + 4096;
    std::string json(json_begin, std::find(json_begin, header.end(), 0));
    edit(json);
    REQUIRE(json.size() < hdr_size - 4096);
    std::fill(json_begin, header.end(), 0);
    std::copy(json.begin(), json.end(), json_begin);
    // The checksum (byte 448, 64 bytes) covers the whole header with the field zeroed.
    std::fill(header.begin() + 448, header.begin() + 512, 0);
    Bytes checksum = crypto::sha256(header);
    std::copy(checksum.begin(), checksum.end(), header.begin() + 448);
    file.seekp(static_cast<std::streamoff>(offset));
    file.write(reinterpret_cast<const char*>(header.data()), static_cast<std::streamsize>(header.size()));
    REQUIRE(file);
  }
}

// Replaces the value of "key":"..." at the first occurrence after `section` ("segments",
// "keyslots") in LUKS2 JSON text.
std::function<void(std::string&)> set_json_string(const std::string& section, const std::string& key,
                                                  const std::string& value) {
  return [=](std::string& json) {
    std::size_t at = json.find("\"" + section + "\":");
    REQUIRE(at != std::string::npos);
    at = json.find("\"" + key + "\":\"", at);
    REQUIRE(at != std::string::npos);
    at += key.size() + 4;
    json.replace(at, json.find('"', at) - at, value);
  };
}

// A program run to its end; its exit status (-1: it did not end in time).
int run_to_end(const std::vector<std::string>& argv, const std::string& cwd, const std::string& log,
               const std::optional<SecretBytes>& input = std::nullopt) {
  Process process(argv, cwd, log, input);
  return process.wait(60s).value_or(-1);
}

// The agent's unlocker with the real cryptsetup, in --test-passphrase mode (no device-mapper
// needed): the header copy, cryptsetup luksDump on it, the checks, the open with --header.
Result<void> check_and_test_open(const World& world, const std::string& image, const SecretBytes& key,
                                 const std::string& cryptsetup = "") {
  agent::CryptsetupOptions options;
  auto found = agent::find_cryptsetup();
  REQUIRE(found);
  options.cryptsetup = cryptsetup.empty() ? *found : cryptsetup;
  options.device = image;
  options.mapper_name = "luks-test";
  options.test_only = true;
  options.header_directory = world.header_directory();
  return agent::CryptsetupUnlocker(options).unlock(key);
}

std::string error_of(const Result<void>& result) { return result ? std::string("(no error)") : result.error().message; }

void check_no_file_holds_the_key(const World& world) {
  auto holders = files_containing_key(world.root, world.disk_key);
  INFO("files holding the key: " << holders.size());
  for (const auto& path : holders) INFO(path);
  CHECK(holders.empty());
}

}  // namespace

TEST_CASE("against a loopback verifier the simulated agent gets the key and it opens the LUKS2 keyslot",
          "[agent][integration][cross]") {
  World world;
  world.start_daemon();
  world.enroll();
  world.write_agent_config({});
  CHECK(world.run_agent() == 0);
  INFO(world.agent_log());
  CHECK(world.agent_lines_containing("attempt 1 https://127.0.0.1:" + std::to_string(world.verifier_port) +
                                     ": key released; unlocking with cryptsetup open --test-passphrase ") == 1);
  CHECK(world.agent_lines_containing("the released key opens a keyslot of " + world.root + "/disk.luks") == 1);
  CHECK(world.daemon_log().find("decision=release") != std::string::npos);
  // The enrolled key opens the keyslot through libcryptsetup too, and a random one does not:
  // the agent's success above was cryptsetup accepting the key the verifier released.
  CHECK(key_opens_keyslot(world.root + "/disk.luks", world.disk_key));
  CHECK_FALSE(key_opens_keyslot(world.root + "/disk.luks", crypto::random_secret(32)));
  CHECK_FALSE(fs::exists(world.header_directory()));  // the checked header copy is gone
  world.daemon->terminate();
  CHECK(world.daemon->wait(20s) == 0);
  check_no_file_holds_the_key(world);
}

TEST_CASE("a verifier that is down at first: the agent retries through the list and succeeds once it is up",
          "[agent][integration]") {
  World world;
  const std::uint16_t dead_port = unused_port();
  const std::uint16_t port = unused_port();
  World::Settings settings;
  settings.verifiers = {"https://127.0.0.1:" + std::to_string(dead_port), "https://127.0.0.1:" + std::to_string(port)};
  settings.overall_timeout = "60s";
  world.write_agent_config(settings);
  // Enroll first, through a daemon on another port that is stopped again, so the agent can
  // only ever meet an enrolled image: the store outlives the process.
  world.start_daemon();
  world.enroll();
  world.daemon->terminate();
  REQUIRE(world.daemon->wait(20s) == 0);
  auto agent = world.start_agent();
  std::this_thread::sleep_for(2s);
  world.start_daemon(port);
  auto status = agent->wait(90s);
  INFO(world.agent_log());
  CHECK(status == 0);
  CHECK(world.agent_lines_containing("failed: challenge: cannot connect to 127.0.0.1:" + std::to_string(port)) >= 1);
  CHECK(world.agent_lines_containing("failed: challenge: cannot connect to 127.0.0.1:" + std::to_string(dead_port) +
                                     ": Connection refused; next: https://127.0.0.1:" + std::to_string(port) +
                                     " now") >= 1);
  CHECK(world.agent_lines_containing("key released") == 1);
  check_no_file_holds_the_key(world);
}

TEST_CASE("a verifier whose certificate does not chain to the pinned CA is refused", "[agent][integration]") {
  World world;
  world.start_daemon();
  world.enroll();
  World::Settings settings;
  settings.ca_file = world.root + "/other-ca.pem";
  settings.overall_timeout = "3s";
  settings.attempt_timeout = "2s";
  world.write_agent_config(settings);
  CHECK(world.run_agent() == 3);
  INFO(world.agent_log());
  CHECK(world.agent_lines_containing("is not trusted") >= 1);
  CHECK(world.agent_lines_containing("giving up: overall deadline of 3s reached; failure policy 'poweroff'") == 1);
  // The agent never got as far as asking for a challenge, let alone sending evidence.
  CHECK(world.daemon_log().find("event=challenge") == std::string::npos);
  CHECK(world.daemon_log().find("event=attest") == std::string::npos);
  check_no_file_holds_the_key(world);
}

TEST_CASE("a denial applies the configured failure policy at once", "[agent][integration][cross]") {
  World world;
  world.start_daemon();
  world.enroll();
  // The VM boots something else than what was enrolled: another RIM.
  fs::create_directories(world.root + "/tampered");
  for (const char* name : {"ca.pem", "device-cert.pem", "device-key.pem"})
    fs::copy_file(world.root + "/sim/" + name, world.root + "/tampered/" + name);
  write_text(world.root + "/tampered/rim", hex_encode(crypto::random_bytes(32)));
  World::Settings settings;
  settings.sim_dir = world.root + "/tampered";

  SECTION("poweroff (the default)") {
    world.write_agent_config(settings);
    CHECK(world.run_agent() == 3);
    INFO(world.agent_log());
    CHECK(world.agent_lines_containing("attempt 1 https://127.0.0.1:" + std::to_string(world.verifier_port) +
                                       ": refused: attest: HTTP 403 attestation_failed") == 1);
    CHECK(world.agent_lines_containing("failure policy 'poweroff': the VM will power off") == 1);
    CHECK(world.agent_lines_containing("attempt 2") == 0);
  }
  SECTION("passphrase") {
    settings.failure_policy = "passphrase";
    world.write_agent_config(settings);
    CHECK(world.run_agent() == 4);
    CHECK(world.agent_lines_containing("falling back to the LUKS passphrase prompt") == 1);
  }
  SECTION("an unknown image id is refused too, with the answer any denial gets") {
    settings.sim_dir.clear();
    settings.image = "not-enrolled";
    world.write_agent_config(settings);
    CHECK(world.run_agent() == 3);
    CHECK(world.agent_lines_containing("refused: attest: HTTP 403 attestation_failed") == 1);
    CHECK(world.agent_lines_containing("unknown_image") == 0);
  }
  CHECK(world.daemon_log().find("decision=release") == std::string::npos);
  check_no_file_holds_the_key(world);
}

TEST_CASE("a released key that does not open the volume is not accepted", "[agent][integration]") {
  World world;
  world.start_daemon();
  world.enroll();
  // The image file is re-formatted with another key after enrollment.
  SecretBytes other = crypto::random_secret(32);
  world.luks_uuid = world.format_luks(world.root + "/disk.luks", other);
  fs::remove(world.root + "/luksformat.log");
  world.write_agent_config({});
  // The verifier releases the enrolled key; cryptsetup refuses it and the policy applies.
  CHECK(world.run_agent() == 3);
  INFO(world.agent_log());
  CHECK(world.agent_lines_containing(
            "unlock failed: the released key opens no keyslot of the volume (cryptsetup exit 2); failure policy "
            "'poweroff'") == 1);
  check_no_file_holds_the_key(world);
}

TEST_CASE("a released key that does not match released_key_check never reaches cryptsetup, even one that opens the volume",
          "[agent][integration]") {
  // A verifier that is not ours (a mis-issued TLS certificate) seals a key of its choosing,
  // one that opens a volume it made with the genuine UUID. Here: the verifier releases the
  // enrolled key, which opens the volume, but the measured configuration names another.
  World world;
  world.start_daemon();
  world.enroll();
  world.released_key_check = hex_encode(crypto::key_check_value(crypto::KeyCheckKind::released_key, Bytes(32, 9)));
  for (const char* policy : {"poweroff", "passphrase"}) {
    World::Settings settings;
    settings.failure_policy = policy;
    world.write_agent_config(settings);
    const int status = world.run_agent();
    INFO(world.agent_log());
    CHECK(status == (std::string(policy) == "poweroff" ? 3 : 4));
    CHECK(world.agent_lines_containing("refused: the released key does not match released_key_check in the measured "
                                       "configuration (not the key enrolled for this image); it was discarded; failure "
                                       "policy '" + std::string(policy) + "'") == 1);
    CHECK(world.agent_lines_containing("unlocking with") == 0);
    CHECK_FALSE(fs::exists(world.header_directory()));  // not even the header was looked at
  }
  check_no_file_holds_the_key(world);
}

TEST_CASE("a configuration without key check values is refused before any attestation", "[agent][integration]") {
  World world;
  world.start_daemon();
  world.enroll();
  World::Settings settings;
  settings.key_checks = false;
  world.write_agent_config(settings);
  CHECK(world.run_agent() == 2);
  INFO(world.agent_log());
  CHECK(world.agent_log().find("released_key_check is not set: fde-image build writes it into the configuration") !=
        std::string::npos);
}

TEST_CASE("a mapping the agent cannot verify or close powers the VM off under every failure policy",
          "[agent][integration][luks]") {
  World world;
  world.start_daemon();
  world.enroll();
  // cryptsetup that reads headers for real but "opens" without mapping anything and cannot
  // close: the kernel then shows no table the agent could accept, and the mapping (as far as
  // the agent can tell) stays. The passphrase prompt must never follow.
  const std::string real = *agent::find_cryptsetup();
  const std::string stand_in = world.root + "/cryptsetup-stuck";
  write_text(stand_in,
             "#!/bin/sh\n"
             "echo \"$*\" >> " + world.root + "/cryptsetup-calls\n"
             "case \"$1\" in\n"
             "luksDump) exec " + real + " \"$@\" ;;\n"
             "open) cat > /dev/null; exit 0 ;;\n"
             "close) echo 'Device is busy.' >&2; exit 5 ;;\n"
             "esac\n"
             "exit 1\n",
             0700);
  for (const std::string policy : {"poweroff", "passphrase", "wait"}) {
    INFO(policy);
    World::Settings settings;
    settings.failure_policy = policy;
    world.write_agent_config(settings);
    write_text(world.root + "/agent.conf", read_text(world.root + "/agent.conf") + "cryptsetup = " + stand_in + "\n");
    CHECK(world.run_agent({}) == 3);
    INFO(world.agent_log());
    CHECK(world.agent_lines_containing("closing it failed (exit 5), the boot must not continue; the VM will power off "
                                       "whatever the failure policy") == 1);
    CHECK(world.agent_lines_containing("attempt 2") == 0);
  }
  CHECK(read_text(world.root + "/cryptsetup-calls").find("close luks-" + world.luks_uuid) != std::string::npos);
  check_no_file_holds_the_key(world);
}

TEST_CASE("bad configuration is one line on stderr and exit status 2", "[agent][integration]") {
  World world;
  write_text(world.root + "/agent.conf", "image_id = a\nverifier = https://verifier.example:8443\n");
  CHECK(world.run_agent() == 2);
  std::string log = world.agent_log();
  CHECK(log.find("agent.conf:2: verifier: 'https://verifier.example:8443': the host must be an IP address") !=
        std::string::npos);
  CHECK(std::count(log.begin(), log.end(), '\n') == 1);
}

TEST_CASE("the key scan finds the key in any of its spellings", "[agent][integration]") {
  World world;
  CHECK(files_containing_key(world.root, world.disk_key).empty());
  write_text(world.root + "/sim/leak.txt", "x" + hex_encode(world.disk_key.view()) + "y");
  CHECK(files_containing_key(world.root, world.disk_key).size() == 1);
  write_text(world.root + "/sim/leak.txt", base64_encode(world.disk_key.view()));
  CHECK(files_containing_key(world.root, world.disk_key).size() == 1);
  REQUIRE(write_file_atomic(world.root + "/sim/leak.txt", world.disk_key.view(), 0600));
  CHECK(files_containing_key(world.root, world.disk_key).size() == 1);
}

TEST_CASE("fde-agent --version names the build", "[agent][integration][cross]") {
  World world;
  std::vector<std::string> argv = agent_command();
  argv.push_back("--version");
  Process version(argv, world.root, world.root + "/version.log");
  CHECK(version.wait(10s) == 0);
  CHECK(read_text(world.root + "/version.log").find("fde-agent ") == 0);
}

TEST_CASE("with device-mapper available the agent opens the volume for real", "[agent][integration]") {
  // Needs root, loop devices and dm-crypt; containers without them use the keyslot check
  // of the first test (cryptsetup --test-passphrase and libcryptsetup) instead.
  struct stat st {};
  if (::geteuid() != 0 || ::stat("/sys/module/dm_crypt", &st) != 0 || ::stat("/dev/mapper/control", &st) != 0) {
    WARN("dm-crypt is not available here: the real open was not exercised (keyslot checks cover the key)");
    return;
  }
  World world;
  world.start_daemon();
  world.enroll();
  world.write_agent_config({});
  const std::string mapper = "/dev/mapper/luks-" + world.luks_uuid;
  int status = world.run_agent({});
  INFO(world.agent_log());
  CHECK(status == 0);
  CHECK(::stat(mapper.c_str(), &st) == 0);
  // A second run finds the mapping, checks it in the kernel and leaves it alone.
  CHECK(world.run_agent({}) == 0);
  CHECK(world.agent_lines_containing("already exists and is LUKS2 volume " + world.luks_uuid +
                                     " with cipher aes-xts-plain64") == 1);
  auto cryptsetup = agent::find_cryptsetup();
  Process close({*cryptsetup, "close", "luks-" + world.luks_uuid}, world.root, world.root + "/close.log");
  CHECK(close.wait(30s) == 0);
  check_no_file_holds_the_key(world);
}

TEST_CASE("a mapping under the volume's name that is not its LUKS2 mapping powers the VM off", "[agent][integration]") {
  struct stat st {};
  if (::geteuid() != 0 || ::stat("/sys/module/dm_crypt", &st) != 0 || ::stat("/dev/mapper/control", &st) != 0) {
    WARN("dm-crypt is not available here: an existing foreign mapping was not exercised (the flow tests cover it)");
    return;
  }
  World world;
  const std::string name = "luks-" + world.luks_uuid;
  const std::string cryptsetup = *agent::find_cryptsetup();
  // Something opened a plain dm-crypt mapping (the right cipher, no LUKS2 header) under the
  // name before the agent ran.
  REQUIRE(run_to_end({cryptsetup, "open", "--type", "plain", "--cipher", "aes-xts-plain64", "--key-size", "512",
                      "--key-file=-", world.root + "/disk.luks", name},
                     world.root, world.root + "/plain.log", crypto::random_secret(64)) == 0);
  World::Settings settings;
  settings.failure_policy = "passphrase";
  world.write_agent_config(settings);
  const int status = world.run_agent({});
  run_to_end({cryptsetup, "close", name}, world.root, world.root + "/close.log");
  INFO(world.agent_log());
  CHECK(status == 3);
  CHECK(world.agent_lines_containing("/dev/mapper/" + name + " already exists, but its device-mapper UUID is 'CRYPT-PLAIN-") ==
        1);
}

TEST_CASE("real cryptsetup on real LUKS2 images: an honest header passes, a hostile one is refused",
          "[agent][integration][luks]") {
  World world;
  const std::string image = world.root + "/disk.luks";
  const std::string cryptsetup = *agent::find_cryptsetup();
  const std::string refused = "LUKS header of " + image + " refused: ";
  auto result_for = [&] {
    auto result = check_and_test_open(world, image, world.disk_key);
    INFO(error_of(result));
    return result;
  };

  SECTION("an honest volume: the copy is checked and the key opens it through --header") {
    CHECK(result_for());
  }
  SECTION("a keyslot rewritten to cipher_null (any passphrase would open it)") {
    forge_luks2_json(image, set_json_string("keyslots", "encryption", "cipher_null-ecb"));
    // cryptsetup itself reads the forged header as valid LUKS2: the refusal is the agent's.
    CHECK(run_to_end({cryptsetup, "luksDump", "--type", "luks2", image}, world.root, world.root + "/dump.log") == 0);
    CHECK(error_of(result_for()) == refused + "keyslot 0 uses cipher_null ('cipher_null-ecb'): any passphrase would open it");
  }
  SECTION("a data segment rewritten to cipher_null") {
    forge_luks2_json(image, set_json_string("segments", "encryption", "cipher_null-ecb"));
    // Without the agent's check cryptsetup accepts the key: the "unlocked" volume would be
    // plaintext the host wrote.
    CHECK(run_to_end({cryptsetup, "open", "--test-passphrase", "--type", "luks2", "--key-file=-", image}, world.root,
                     world.root + "/open.log", world.disk_key.clone()) == 0);
    CHECK(error_of(result_for()) ==
          refused + "data segment 0 uses cipher_null ('cipher_null-ecb'): the data would not be encrypted");
  }
  SECTION("a data segment rewritten to another cipher") {
    forge_luks2_json(image, set_json_string("segments", "encryption", "serpent-xts-plain64"));
    CHECK(error_of(result_for()) ==
          refused + "data segment 0 uses 'serpent-xts-plain64', expected 'aes-xts-plain64' (luks_cipher)");
  }
  SECTION("a volume formatted with another cipher") {
    world.format_luks(image, world.disk_key, {"--cipher", "aes-cbc-essiv:sha256", "--key-size", "256"});
    CHECK(error_of(result_for()) ==
          refused + "data segment 0 uses 'aes-cbc-essiv:sha256', expected 'aes-xts-plain64' (luks_cipher)");
  }
  SECTION("a LUKS1 volume with the same UUID and key") {
    world.format_luks(image, world.disk_key, {"--type", "luks1", "--uuid", world.luks_uuid});
    CHECK(agent::read_luks_header(image)->uuid == world.luks_uuid);
    CHECK(error_of(result_for()) == refused + "it is a LUKS1 header; the agent opens only LUKS2 volumes");
  }
  SECTION("a data segment moved far beyond the header (a huge copy)") {
    forge_luks2_json(image, set_json_string("segments", "offset", "1073741824"));
    CHECK(error_of(result_for()) ==
          refused + "the header area before the data segment is 1024 MiB, more than the 64 MiB the agent accepts");
  }
  SECTION("an oversized hdr_size field") {
    std::fstream file(image, std::ios::in | std::ios::out | std::ios::binary);
    file.seekp(8);
    const char huge[8] = {0, 0, 1, 0, 0, 0, 0, 0};  // 2^40
    file.write(huge, sizeof huge);
    file.close();
    CHECK(error_of(result_for()) ==
          refused + "the binary header's hdr_size is 1099511627776 (LUKS2 allows 16 KiB to 4 MiB, a power of two)");
  }
  SECTION("a persistent allow-discards flag (TRIM would show the host which blocks are used)") {
    // `cryptsetup refresh --persistent --allow-discards` needs the volume active; the host
    // writes the flag directly, with valid checksums, and cryptsetup would apply it on open.
    forge_luks2_json(image, [](std::string& json) {
      const std::size_t at = json.find("\"config\":{");
      REQUIRE(at != std::string::npos);
      json.insert(at + 10, R"("flags":["allow-discards"],)");
    });
    CHECK(run_to_end({cryptsetup, "open", "--test-passphrase", "--type", "luks2", "--key-file=-", image}, world.root,
                     world.root + "/open.log", world.disk_key.clone()) == 0);
    CHECK(error_of(result_for()) ==
          refused + R"(its config sets persistent flags ["allow-discards"]: a volume made by fde-image has none)");
  }
  SECTION("a requirement cryptsetup does not know") {
    forge_luks2_json(image, [](std::string& json) {
      const std::size_t at = json.find("\"config\":{");
      REQUIRE(at != std::string::npos);
      json.insert(at + 10, R"("requirements":{"mandatory":["host-made"]},)");
    });
    CHECK(error_of(result_for()) ==
          refused + R"(its config sets requirements {"mandatory":["host-made"]}: a volume made by fde-image has none)");
  }
  SECTION("a luks2-keyring token") {
    CHECK(run_to_end({cryptsetup, "token", "add", "--key-description", "foo", image}, world.root,
                     world.root + "/token.log") == 0);
    CHECK(error_of(result_for()) == refused + "it has a token (token 0, type 'luks2-keyring'): a volume made by "
                                              "fde-image has none");
  }
  SECTION("a keyslot whose hash is rewritten to a null one") {
    // The first hash in the keyslot as cryptsetup writes it is the anti-forensic splitter's.
    forge_luks2_json(image, set_json_string("keyslots", "hash", "digest_null"));
    CHECK(error_of(result_for()) == refused + "keyslot 0 af uses the null hash ('digest_null')");
  }
  SECTION("a header whose checksums no longer match its JSON") {
    // Edited without recomputing the checksums: only cryptsetup can tell.
    std::string text = read_text(image);
    for (std::size_t at = 0; (at = text.find("\"iterations\":1000", at)) != std::string::npos && at < (1u << 20);)
      text.replace(at, 17, "\"iterations\":1001");
    REQUIRE(write_file_atomic(image, as_bytes(text), 0600));
    CHECK(error_of(result_for()) == refused + "cryptsetup luksDump does not read it as a LUKS2 header (exit 1)");
  }
  SECTION("an image truncated inside the JSON area") {
    fs::resize_file(image, 8192);
    CHECK(error_of(result_for()) == refused + "the device ends inside the LUKS2 JSON area");
  }
  SECTION("an image truncated inside the keyslot area") {
    fs::resize_file(image, 1024 * 1024);
    CHECK(error_of(result_for()) ==
          refused + "the device ends at byte 1048576, inside its LUKS2 header area of 16777216 bytes");
  }
  SECTION("garbage") {
    REQUIRE(write_file_atomic(image, crypto::random_bytes(17 * 1024 * 1024), 0600));
    CHECK(error_of(result_for()) == refused + "it does not start with a LUKS header");
  }
  CHECK_FALSE(fs::exists(world.header_directory()));
  check_no_file_holds_the_key(world);
}

TEST_CASE("a header swapped on the device after the agent's check does not reach cryptsetup open",
          "[agent][integration][luks]") {
  World world;
  const std::string image = world.root + "/disk.luks";
  const std::string cryptsetup = *agent::find_cryptsetup();
  // The host's volume: another key, a cipher_null data segment.
  const std::string hostile = world.root + "/hostile.luks";
  world.format_luks(hostile, crypto::random_secret(32), {"--uuid", world.luks_uuid});
  forge_luks2_json(hostile, set_json_string("segments", "encryption", "cipher_null-ecb"));
  // cryptsetup as the host would like it timed: right after the agent's luksDump, the
  // device's header area is replaced.
  const std::string wrapper = world.root + "/cryptsetup-swap";
  write_text(wrapper,
             "#!/bin/sh\n"
             "if [ \"$1\" = luksDump ]; then\n"
             "  " + cryptsetup + " \"$@\" || exit $?\n"
             "  dd if=" + hostile + " of=" + image + " bs=1M count=16 conv=notrunc 2>/dev/null || exit 9\n"
             "  exit 0\n"
             "fi\n"
             "exec " + cryptsetup + " \"$@\"\n",
             0700);
  auto result = check_and_test_open(world, image, world.disk_key, wrapper);
  INFO(error_of(result));
  // The open used the checked copy, whose keyslot the released key opens...
  CHECK(result);
  // ...while the device now carries the host's header, which the key does not open: an open
  // of the device itself would have failed (or, with the host's key, mapped plaintext).
  CHECK(read_text(image).substr(0, 1 << 20).find("cipher_null-ecb") != std::string::npos);
  CHECK(run_to_end({cryptsetup, "open", "--test-passphrase", "--type", "luks2", "--key-file=-", image}, world.root,
                   world.root + "/open.log", world.disk_key.clone()) == 2);
  CHECK_FALSE(fs::exists(world.header_directory()));
}

TEST_CASE("a volume the host rewrote is refused after the key is released, and the failure policy applies",
          "[agent][integration][luks]") {
  World world;
  world.start_daemon();
  world.enroll();
  world.write_agent_config({});
  const std::string refused = "unlock failed: LUKS header of " + world.root + "/disk.luks refused: ";

  SECTION("a cipher_null data segment, failure policy poweroff") {
    forge_luks2_json(world.root + "/disk.luks", set_json_string("segments", "encryption", "cipher_null-ecb"));
    CHECK(world.run_agent() == 3);
    INFO(world.agent_log());
    CHECK(world.agent_lines_containing("key released; unlocking with cryptsetup open --test-passphrase") == 1);
    CHECK(world.agent_lines_containing(refused +
                                       "data segment 0 uses cipher_null ('cipher_null-ecb'): the data would not be "
                                       "encrypted; failure policy 'poweroff': the VM will power off") == 1);
  }
  SECTION("a cipher_null keyslot, failure policy passphrase") {
    forge_luks2_json(world.root + "/disk.luks", set_json_string("keyslots", "encryption", "cipher_null-ecb"));
    World::Settings settings;
    settings.failure_policy = "passphrase";
    world.write_agent_config(settings);
    CHECK(world.run_agent() == 4);
    INFO(world.agent_log());
    CHECK(world.agent_lines_containing(refused + "keyslot 0 uses cipher_null ('cipher_null-ecb'): any passphrase "
                                                 "would open it; failure policy 'passphrase'") == 1);
  }
  CHECK(world.agent_lines_containing("attempt 2") == 0);
  CHECK_FALSE(fs::exists(world.header_directory()));
  check_no_file_holds_the_key(world);
}
