// The real fde-verifierd on loopback for the integration test and the benchmark: a fresh
// temporary root (SQLite store, KEK, nonce secret, TLS from a throwaway CA, the simulator CA
// as trusted root), started as a child process and stopped (SIGTERM, then SIGKILL) by the
// destructor on every path. A Client runs the guest side of protocol v1 with the real client.
#pragma once

#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "common/crypto/certificate.hpp"
#include "common/crypto/hash.hpp"
#include "common/crypto/hpke.hpp"
#include "common/crypto/keys.hpp"
#include "common/crypto/random.hpp"
#include "common/protocol/enrollment_bundle.hpp"
#include "common/protocol/https_client.hpp"
#include "common/protocol/messages.hpp"
#include "common/sim/event_log_builder.hpp"
#include "common/sim/sim_device.hpp"
#include "common/sim/token_issuer.hpp"
#include "common/util/file.hpp"

namespace fde::itest {

using namespace std::chrono_literals;
namespace fs = std::filesystem;

inline std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

inline void write_text(const std::string& path, std::string_view text, mode_t mode = 0644) {
  if (!write_file_atomic(path, as_bytes(text), mode)) throw std::runtime_error("cannot write " + path);
}

template <class T>
T need(Result<T> result, const char* what) {
  if (!result) throw std::runtime_error(std::string(what) + ": " + result.error().describe());
  return std::move(*result);
}

// A child process, stdout and stderr to `log`; killed (SIGKILL) by the destructor if running.
// With `run_as` (the caller must be root) it runs as that uid, with the gid of the same number.
class Process {
 public:
  Process(const std::vector<std::string>& argv, const std::string& cwd, const std::string& log,
          std::optional<uid_t> run_as = std::nullopt) {
    pid_ = ::fork();
    if (pid_ < 0) throw std::runtime_error("fork failed");
    if (pid_ == 0) {
      int out = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
      if (out >= 0) {
        ::dup2(out, STDOUT_FILENO);
        ::dup2(out, STDERR_FILENO);
      }
      if (::chdir(cwd.c_str()) != 0) ::_exit(127);
      if (run_as && (::setgroups(0, nullptr) != 0 || ::setgid(static_cast<gid_t>(*run_as)) != 0 ||
                     ::setuid(*run_as) != 0))
        ::_exit(126);
      std::vector<char*> args;
      for (const auto& arg : argv) args.push_back(const_cast<char*>(arg.c_str()));
      args.push_back(nullptr);
      ::execv(args[0], args.data());
      ::_exit(127);
    }
  }
  ~Process() { stop(2s); }
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  bool running() {
    if (status_) return false;
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      status_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      return false;
    }
    return true;
  }
  // The exit code, or nullopt if it did not end within `timeout` (it is then killed).
  std::optional<int> wait(std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (running()) {
      if (std::chrono::steady_clock::now() >= deadline) {
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, nullptr, 0);
        status_ = -1;
        return std::nullopt;
      }
      std::this_thread::sleep_for(10ms);
    }
    return status_;
  }
  // SIGKILL at once, as a crash or the OOM killer would; waits for the process to go.
  void kill_now() {
    if (pid_ > 0 && running()) ::kill(pid_, SIGKILL);
    wait(5s);
  }
  // SIGTERM, then SIGKILL after `grace`; returns the exit code (nullopt: it had to be killed).
  std::optional<int> stop(std::chrono::milliseconds grace) {
    if (pid_ <= 0) return std::nullopt;
    if (running()) ::kill(pid_, SIGTERM);
    return wait(grace);
  }
  pid_t pid() const { return pid_; }

 private:
  pid_t pid_ = -1;
  std::optional<int> status_;
};

struct Tls {
  std::string ca_pem;
  std::string server_cert_pem;
  std::string server_key_pem;
  // A second certificate and key from the same CA (serial 3), for rotation tests.
  std::string next_server_cert_pem;
  std::string next_server_key_pem;
};

inline Tls make_tls(const std::string& name) {
  auto ca_key = need(crypto::PrivateKey::generate(crypto::KeyType::ec_p256), "CA key");
  crypto::CertificateRequest ca_request;
  ca_request.common_name = name + " CA";
  ca_request.is_ca = true;
  auto ca = need(crypto::issue_certificate(ca_request, ca_key.public_key(), ca_key, nullptr), "CA certificate");
  auto server_key = need(crypto::PrivateKey::generate(crypto::KeyType::ec_p256), "server key");
  crypto::CertificateRequest server_request;
  server_request.common_name = name;
  server_request.serial = 2;
  server_request.subject_alt_names = {"IP:127.0.0.1"};
  auto server = need(crypto::issue_certificate(server_request, server_key.public_key(), ca_key, &ca), "server cert");
  SecretBytes key_pem = server_key.to_pem();
  auto next_key = need(crypto::PrivateKey::generate(crypto::KeyType::ec_p256), "next server key");
  server_request.serial = 3;
  auto next = need(crypto::issue_certificate(server_request, next_key.public_key(), ca_key, &ca), "next server cert");
  SecretBytes next_key_pem = next_key.to_pem();
  return Tls{ca.pem(), server.pem(), std::string(as_text(key_pem.view())), next.pem(),
             std::string(as_text(next_key_pem.view()))};
}

// The grub boot the enrolled image's reference values describe.
inline sim::GrubBoot grub_boot() {
  const crypto::HashAlg banks[] = {crypto::HashAlg::sha256};
  sim::GrubBoot boot;
  boot.grub_authenticode = sim::Measurement::of_content(as_bytes("BOOTAA64.EFI authenticode image"), banks);
  boot.grub_cfg = sim::Measurement::of_content(as_bytes("menuentry 'openEuler' { linux /vmlinuz-6.6.0 }\n"), banks);
  boot.grub_commands = {"set root=hd0,gpt2", "insmod gzio"};
  boot.kernel_path = "/vmlinuz-6.6.0-28.0.0.34.oe2403.aarch64";
  boot.kernel = sim::Measurement::of_content(as_bytes("decompressed arm64 Image"), banks);
  boot.kernel_arguments = "root=/dev/mapper/encroot ro console=ttyAMA0";
  boot.initramfs_path = "/initramfs-6.6.0-28.0.0.34.oe2403.aarch64.img";
  boot.initramfs = sim::Measurement::of_content(as_bytes("initramfs cpio with the FDE agent"), banks);
  return boot;
}
inline Bytes firmware_rim() { return crypto::sha256(as_bytes("simulated UEFI firmware, DTB and vCPUs")); }

inline reference::ReferenceValues reference_for(const std::string& image_id) {
  const auto alg = crypto::HashAlg::sha256;
  const sim::GrubBoot boot = grub_boot();
  reference::ReferenceSet grub;
  grub.name = "kernel-6.6.0-28";
  grub.boot = reference::BootMode::grub;
  grub.grub.efi_applications = {*boot.grub_authenticode.digest_for(alg)};
  grub.grub.grub_cfgs = {*boot.grub_cfg.digest_for(alg)};
  grub.grub.kernel = *boot.kernel.digest_for(alg);
  grub.grub.initramfs = *boot.initramfs.digest_for(alg);
  grub.grub.kernel_cmdline = sim::grub_kernel_cmdline(boot);
  grub.grub.grub_commands = sim::grub_boot_commands(boot);
  reference::ReferenceValues values;
  values.image_id = image_id;
  values.hash_alg = alg;
  values.firmware_rims = {firmware_rim()};
  values.sets = {std::move(grub)};
  return values;
}

struct DaemonOptions {
  int nonce_lifetime_seconds = 60;
  int request_timeout_ms = 15000;
  int handshake_timeout_ms = 10000;
  int threads = 1;
  int blocking_threads = 4;
  // Run fde-verifierd as this uid (needs root; its temporary root is handed to that uid).
  std::optional<uid_t> run_as = {};
  // admin.allowed_uid. Unset: root only, except that a test run by a non-root developer
  // names its own uid, since nobody else could then use the socket.
  std::optional<uid_t> admin_allowed_uid = {};
  // rate_limit.attest_per_minute / attest_burst (unset: the daemon's defaults). Every client
  // of a test is 127.0.0.1, one address: a load test turns the limit off (0).
  std::optional<unsigned> attest_per_minute = {};
  std::optional<unsigned> attest_burst = {};
  // More [server] lines ("max_connections = 200\n"), for tests and benchmarks of the limits.
  std::string server_settings = {};
  // The [store] settings besides kek_file (the fleet test points replicas at PostgreSQL).
  std::string store_settings = "database = \"verifier.db\"\n";
};

// The lines of a ready file: the attestation port's addresses, then "operator HOST:PORT"
// when the operator listener is on. The port of the first line of `prefix` (empty: the first
// attestation address), or 0.
inline std::uint16_t port_from_ready_file(const std::string& text, std::string_view prefix = {}) {
  std::istringstream lines(text);
  std::string line;
  while (std::getline(lines, line)) {
    const bool is_operator = line.rfind("operator ", 0) == 0;
    if (prefix.empty() ? is_operator : line.rfind(prefix, 0) != 0) continue;
    return static_cast<std::uint16_t>(std::stoi(line.substr(line.rfind(':') + 1)));
  }
  return 0;
}

// One daemon's world under a fresh temporary directory.
class Daemon {
 public:
  explicit Daemon(const DaemonOptions& options = {}) : options_(options) {
    char pattern[] = "/tmp/fde-daemon-it-XXXXXX";
    if (::mkdtemp(pattern) == nullptr) throw std::runtime_error("mkdtemp failed");
    root = pattern;
    device.emplace(need(sim::SimDevice::create({sim::DeviceType::p521, "SIMDAEMONIT01", false}), "sim device"));
    write_text(root + "/sim-ca.pem", device->ca_certificate().pem());
    Tls tls = make_tls("fde daemon test verifier");
    ca_pem = tls.ca_pem;
    next_server_cert_pem = tls.next_server_cert_pem;
    next_server_key_pem = tls.next_server_key_pem;
    write_text(root + "/server.crt", tls.server_cert_pem);
    write_text(root + "/server.key", tls.server_key_pem, 0600);
    write_text(root + "/nonce-secret", hex_encode(crypto::random_bytes(32)) + "\n", 0600);
    write_text(root + "/kek", hex_encode(crypto::random_bytes(32)) + "\n", 0600);
    write_text(root + "/verifier.toml",
               "[server]\nthreads = " + std::to_string(options.threads) +
                   "\nblocking_threads = " + std::to_string(options.blocking_threads) +
                   "\nrequest_timeout_ms = " + std::to_string(options.request_timeout_ms) +
                   "\nhandshake_timeout_ms = " + std::to_string(options.handshake_timeout_ms) + "\n" +
                   options.server_settings +
                   "[tls]\ncertificate = \"server.crt\"\nprivate_key = \"server.key\"\n"
                   "[attestation]\ntrusted_roots = [\"sim-ca.pem\"]\n"
                   "[nonce]\nsecret_file = \"nonce-secret\"\nlifetime_seconds = " +
                   std::to_string(options.nonce_lifetime_seconds) +
                   "\n[store]\n" + options.store_settings + "kek_file = \"kek\"\n"
                   "[admin]\nsocket = \"admin.sock\"\n" + admin_allowed_uid_line(options) +
                   "[operator]\nlisten = \"127.0.0.1:0\"\n" + rate_limit_lines(options) +
                   "[log]\nlevel = \"info\"\n");
    if (options.run_as) hand_over(*options.run_as);
  }
  ~Daemon() {
    stop();
    std::error_code ignored;
    fs::remove_all(root, ignored);
  }
  Daemon(const Daemon&) = delete;
  Daemon& operator=(const Daemon&) = delete;

  // Starts fde-verifierd on `listen` (127.0.0.1, port 0 unless a test set it to restart on
  // the same port) and waits (bounded) for its ready file.
  void start() {
    fs::remove(root + "/ready");
    process_ = std::make_unique<Process>(
        std::vector<std::string>{verifierd, "--config", root + "/verifier.toml", "--ready-file", root + "/ready",
                                 "--listen", listen},
        root, root + "/daemon.log", options_.run_as);
    const auto deadline = std::chrono::steady_clock::now() + 20s;
    while (std::chrono::steady_clock::now() < deadline) {
      std::string ready = read_text(root + "/ready");
      if (!ready.empty() && ready.back() == '\n') {
        port = port_from_ready_file(ready);
        operator_port = port_from_ready_file(ready, "operator ");
        return;
      }
      if (!process_->running()) break;
      std::this_thread::sleep_for(20ms);
    }
    throw std::runtime_error("fde-verifierd did not become ready: " + log());
  }
  // SIGTERM, SIGKILL after 10 s; the exit code (nullopt: not running or killed).
  std::optional<int> stop() {
    if (!process_) return std::nullopt;
    auto status = process_->stop(10s);
    process_.reset();
    return status;
  }

  // SIGKILL, no shutdown: a replica crashing mid-request.
  void kill() {
    if (process_) process_->kill_now();
    process_.reset();
  }

  struct AdminResult {
    int status = -1;
    std::string output;
  };
  AdminResult admin(const std::vector<std::string>& args) const { return admin_as(std::nullopt, args); }
  // fde-admin run as `uid` (needs root), to see whom the admin socket lets in.
  AdminResult admin_as(std::optional<uid_t> uid, const std::vector<std::string>& args) const {
    std::vector<std::string> argv{FDE_ADMIN, "--socket", root + "/admin.sock"};
    argv.insert(argv.end(), args.begin(), args.end());
    const std::string log_path = root + "/admin.log";
    fs::remove(log_path);
    Process process(argv, root, log_path, uid);
    auto status = process.wait(30s);
    return AdminResult{status.value_or(-1), read_text(log_path)};
  }

  // Writes a 0600 enrollment bundle for `image_id` and imports it with `fde-admin enroll`.
  AdminResult enroll(const std::string& image_id, const SecretBytes& disk_key) const {
    protocol::EnrollmentBundle bundle;
    bundle.image_id = image_id;
    bundle.luks_uuid = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0";
    bundle.disk_key = disk_key.clone();
    bundle.reference = reference_for(image_id);
    SecretBytes json = need(protocol::serialize_enrollment_bundle(bundle), "bundle");
    const std::string path = root + "/bundle.json";
    write_text(path, as_text(json.view()), 0600);
    auto result = admin({"enroll", "--bundle", path});
    fs::remove(path);
    return result;
  }

  protocol::HttpsEndpoint endpoint() const { return {"127.0.0.1", port, ""}; }
  protocol::HttpsClientOptions client_options() const {
    protocol::HttpsClientOptions options;
    options.ca_pem = ca_pem;
    options.connect_timeout = 5s;
    options.request_timeout = 15s;
    return options;
  }
  std::string log() const { return read_text(root + "/daemon.log"); }
  // The daemon's process id while it runs (to read /proc/PID/status), else -1.
  pid_t pid() const { return process_ ? process_->pid() : -1; }

  std::string root;
  std::string ca_pem;
  std::string next_server_cert_pem;  // same CA as server.crt, for rotation (not installed)
  std::string next_server_key_pem;
  std::string listen = "127.0.0.1:0";
  std::uint16_t port = 0;           // the attestation port (HTTPS)
  std::uint16_t operator_port = 0;  // the operator listener (plain HTTP: health, metrics)
  std::string verifierd = FDE_VERIFIERD;  // the binary start() runs (a benchmark may compare builds)
  std::optional<sim::SimDevice> device;

 private:
  static std::string rate_limit_lines(const DaemonOptions& options) {
    std::string lines;
    if (options.attest_per_minute) lines += "attest_per_minute = " + std::to_string(*options.attest_per_minute) + "\n";
    if (options.attest_burst) lines += "attest_burst = " + std::to_string(*options.attest_burst) + "\n";
    return lines.empty() ? lines : "[rate_limit]\n" + lines;
  }
  static std::string admin_allowed_uid_line(const DaemonOptions& options) {
    std::optional<uid_t> uid = options.admin_allowed_uid;
    if (!uid && ::geteuid() != 0) uid = ::geteuid();
    return uid ? "allowed_uid = " + std::to_string(*uid) + "\n" : std::string();
  }
  // The temporary root and everything in it now belong to `uid`, as /run/fde-verifier and
  // /var/lib/fde-verifier belong to the service user.
  void hand_over(uid_t uid) const {
    if (::geteuid() != 0) throw std::runtime_error("running the daemon as another uid needs root");
    const auto gid = static_cast<gid_t>(uid);
    if (::chown(root.c_str(), uid, gid) != 0) throw std::runtime_error("cannot chown " + root);
    for (const auto& entry : fs::directory_iterator(root))
      if (::chown(entry.path().c_str(), uid, gid) != 0) throw std::runtime_error("cannot chown " + entry.path().string());
  }

  DaemonOptions options_;
  std::unique_ptr<Process> process_;
};

// How the guest deviates from the honest grub boot.
struct GuestOptions {
  std::string image_id = {};
  std::optional<Bytes> rim = {};             // another RIM in the token
  std::optional<sim::GrubBoot> logged = {};   // another event log than the one booted
  bool wrong_binding = false;              // token challenge over another ephemeral key
  bool flip_nonce = false;                 // flip a byte of the nonce before use
  std::chrono::milliseconds delay_before_attest{0};
};

struct Exchange {
  protocol::HttpsResult challenge;
  std::optional<protocol::HttpsResult> attest;
  std::optional<SecretBytes> key;  // opened from a 200 response
  std::chrono::nanoseconds attest_time{0};
  std::chrono::nanoseconds total_time{0};
};

// challenge -> ephemeral X25519 key -> simulated token over challenge_binding -> attest ->
// HPKE open. The challenge comes from `challenger`, the attest request goes to `verifier`
// (two replicas of a fleet; the same daemon otherwise), the token from `challenger`'s device.
inline Exchange attest_across(const Daemon& challenger, const Daemon& verifier, const GuestOptions& options) {
  const Daemon& daemon = challenger;
  Exchange exchange;
  const auto start = std::chrono::steady_clock::now();
  exchange.challenge = need(protocol::https_post_json(daemon.endpoint(), "/v1/challenge",
                                                      protocol::serialize(protocol::ChallengeRequest{options.image_id}),
                                                      daemon.client_options()),
                            "challenge");
  if (exchange.challenge.status != 200) return exchange;
  auto challenge = need(protocol::parse_challenge_response(exchange.challenge.body), "challenge response");
  if (options.flip_nonce) challenge.nonce[challenge.nonce.size() / 2] ^= 0x01;

  auto ephemeral = crypto::hpke::X25519KeyPair::generate();
  const Bytes bound =
      options.wrong_binding ? crypto::hpke::X25519KeyPair::generate().public_key() : ephemeral.public_key();
  const sim::GrubBoot booted = grub_boot();
  auto boot_log = need(sim::build_grub_boot_log(booted), "boot log");
  auto rems = need(boot_log.rems(crypto::HashAlg::sha256), "rems");
  sim::TokenRequest token;
  token.challenge = protocol::challenge_binding(challenge.nonce, bound);
  token.rim = options.rim.value_or(firmware_rim());
  for (std::size_t i = 0; i < token.rems.size(); ++i) token.rems[i] = rems[i];
  auto issued = need(sim::issue_token(*daemon.device, token), "token");

  protocol::AttestRequest request;
  request.image_id = options.image_id;
  request.nonce = challenge.nonce;
  request.ephemeral_public = ephemeral.public_key();
  request.token = issued.token;
  request.device_cert = daemon.device->device_certificate_blob();
  request.event_log = options.logged ? need(sim::build_grub_boot_log(*options.logged), "logged").log() : boot_log.log();
  if (options.delay_before_attest.count() > 0) std::this_thread::sleep_for(options.delay_before_attest);

  const auto attest_start = std::chrono::steady_clock::now();
  exchange.attest = need(protocol::https_post_json(verifier.endpoint(), "/v1/attest", protocol::serialize(request),
                                                   verifier.client_options()),
                         "attest");
  const auto end = std::chrono::steady_clock::now();
  exchange.attest_time = end - attest_start;
  exchange.total_time = end - start;
  if (exchange.attest->status == 200) {
    auto response = need(protocol::parse_attest_response(exchange.attest->body), "attest response");
    auto key = crypto::hpke::open(ephemeral, response.enc, protocol::hpke_info(options.image_id, challenge.nonce), {},
                                  response.sealed_key);
    if (key) exchange.key = std::move(*key);
  }
  return exchange;
}

inline Exchange attest(const Daemon& daemon, const GuestOptions& options) { return attest_across(daemon, daemon, options); }

}  // namespace fde::itest
