// Key releases per second with a new connection per request, ours against Tang, with the
// server's CPU per release read from /proc (the load client shares the cores, so the rate
// alone says little). One "result" line per client count, for bench/run-all.sh to collect.
//
//   release_bench ours --clients 1,16,64,256 --count N [--count-single N1] [--threads T]
//                      [--blocking-threads B] [--db-dir DIR] [--label NAME] [--server-cpu C]
//   release_bench tang --port P --kid KID --body FILE --server-pid PID --clients ... --count N
//                      [--count-single N1] [--label NAME]
//
// ours: the real fde-verifierd on loopback (test/integration/daemon_support.hpp), one image
// enrolled with the grub reference values. Untimed, per planned release: a nonce from
// POST /v1/challenge, a fresh X25519 key and a simulated token (two ES512 signatures) bound
// to them, the request serialised. Timed, per release, as a booting guest's agent does it:
// one new TLS 1.3 connection carrying POST /v1/challenge and then POST /v1/attest with the
// prepared request (keep-alive), the key HPKE-opened and compared with the enrolled one. The daemon's CPU is its own (utime + stime).
// --server-cpu C moves every thread of the daemon to CPU C once it runs (run the bench itself
// under `taskset -c` on another CPU: the server then has exactly one core of its own, and the
// rate can be set against the one-core bound).
// tang: POST /rec/KID with the body `clevis decrypt` would send (bench/tang_setup.sh), plain
// HTTP/1.1 with Connection: close on a new TCP connection, the 200 reply read to the end. The
// server's CPU is the socat process plus its reaped tangd children.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <array>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <mutex>

#include "bench/bench_proc.hpp"
#include "test/integration/daemon_support.hpp"

using namespace fde;
using namespace fde::itest;
using Clock = std::chrono::steady_clock;

namespace {

[[noreturn]] void usage() {
  std::cerr << "usage: release_bench ours --clients LIST --count N [--count-single N] [--threads T]\n"
               "                          [--blocking-threads B] [--db-dir DIR] [--label NAME] [--server-cpu C]\n"
               "       release_bench tang --port P --kid KID --body FILE --server-pid PID --clients LIST\n"
               "                          --count N [--count-single N] [--label NAME]\n";
  std::exit(2);
}

long parse_number(const std::string& text, const char* name, long max = 1'000'000, long min = 1) {
  char* end = nullptr;
  long value = std::strtol(text.c_str(), &end, 10);
  if (text.empty() || *end != 0 || value < min || value > max) {
    std::cerr << "release_bench: bad " << name << ": " << text << "\n";
    std::exit(2);
  }
  return value;
}

struct Run {
  std::vector<std::chrono::nanoseconds> latencies;
  int failures = 0;
  std::string first_failure;
  double seconds = 0;
  double server_cpu = 0;
  double client_cpu = 0;
  std::optional<double> lock_held;  // share of the wall time the daemon's store lock was held
};

// `clients` threads take indexes 0..count-1 and call `one(index)`, which returns an empty
// string on success or what went wrong.
template <class One>
Run run_clients(int clients, int count, pid_t server, One&& one) {
  Run run;
  std::mutex mutex;
  std::atomic<int> next{0};
  const double server_before = bench::process_cpu_seconds(server);
  const double client_before = bench::self_cpu_seconds();
  const auto start = Clock::now();
  std::vector<std::thread> threads;
  for (int t = 0; t < clients; ++t)
    threads.emplace_back([&] {
      for (int n = next.fetch_add(1); n < count; n = next.fetch_add(1)) {
        const auto begin = Clock::now();
        std::string failure;
        try {
          failure = one(n);
        } catch (const std::exception& error) {
          failure = error.what();
        }
        const auto took = Clock::now() - begin;
        std::lock_guard lock(mutex);
        if (failure.empty()) {
          run.latencies.push_back(took);
        } else if (run.failures++ == 0) {
          run.first_failure = failure;
        }
      }
    });
  for (auto& thread : threads) thread.join();
  run.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  run.server_cpu = bench::process_cpu_seconds(server) - server_before;
  run.client_cpu = bench::self_cpu_seconds() - client_before;
  return run;
}

void print_result(const std::string& label, const char* side, int clients, const Run& run, pid_t server) {
  const double ok = static_cast<double>(run.latencies.size());
  char lock_held[48] = "";
  if (run.lock_held) std::snprintf(lock_held, sizeof lock_held, " lock_held_pct=%.1f", 100.0 * *run.lock_held);
  std::printf("result label=%s side=%s clients=%d count=%zu failed=%d rate=%.1f p50_ms=%.2f p99_ms=%.2f "
              "server_cpu_ms=%.3f client_cpu_ms=%.3f server_cores=%.2f server_hwm_kib=%ld%s\n",
              label.c_str(), side, clients, run.latencies.size(), run.failures, ok / run.seconds,
              bench::percentile_ms(run.latencies, 0.50), bench::percentile_ms(run.latencies, 0.99),
              ok > 0 ? 1000.0 * run.server_cpu / ok : 0.0, ok > 0 ? 1000.0 * run.client_cpu / ok : 0.0,
              run.server_cpu / run.seconds, bench::process_status_kib(server, "VmHWM"), lock_held);
  if (run.failures > 0) std::printf("  first failure: %s\n", run.first_failure.c_str());
  std::fflush(stdout);
}

std::vector<int> parse_list(const std::string& text) {
  std::vector<int> values;
  std::stringstream in(text);
  for (std::string item; std::getline(in, item, ',');)
    values.push_back(static_cast<int>(parse_number(item, "client count", 4096)));
  if (values.empty()) usage();
  return values;
}

// --- ours ---

struct Prepared {
  std::optional<crypto::hpke::X25519KeyPair> ephemeral;
  Bytes nonce;
  std::string body;
};

Prepared prepare(const Daemon& daemon, const std::string& image, ByteView event_log,
                 const std::array<Bytes, 4>& rems) {
  auto reply = need(protocol::https_post_json(daemon.endpoint(), "/v1/challenge",
                                              protocol::serialize(protocol::ChallengeRequest{image}),
                                              daemon.client_options()),
                    "challenge");
  if (reply.status != 200) throw std::runtime_error("challenge: HTTP " + std::to_string(reply.status) + " " + reply.body);
  auto challenge = need(protocol::parse_challenge_response(reply.body), "challenge response");
  Prepared prepared;
  prepared.ephemeral = crypto::hpke::X25519KeyPair::generate();
  prepared.nonce = challenge.nonce;
  sim::TokenRequest token;
  token.challenge = protocol::challenge_binding(challenge.nonce, prepared.ephemeral->public_key());
  token.rim = firmware_rim();
  for (std::size_t i = 0; i < token.rems.size(); ++i) token.rems[i] = rems[i];
  auto issued = need(sim::issue_token(*daemon.device, token), "token");
  protocol::AttestRequest request;
  request.image_id = image;
  request.nonce = challenge.nonce;
  request.ephemeral_public = prepared.ephemeral->public_key();
  request.token = issued.token;
  request.device_cert = daemon.device->device_certificate_blob();
  request.event_log = Bytes(event_log.begin(), event_log.end());
  prepared.body = protocol::serialize(request);
  return prepared;
}

int run_ours(const std::vector<int>& client_counts, int count, int count_single, DaemonOptions options,
             const std::string& db_dir, const std::string& label, int server_cpu) {
  options.nonce_lifetime_seconds = 3600;  // nonces are fetched before the timed phase
  options.attest_per_minute = 0;          // every client is 127.0.0.1: no per-address limit
  options.server_settings += "max_connections_per_peer = 0\n";
  std::string db_root;
  if (!db_dir.empty()) {
    db_root = db_dir + "/release-bench-XXXXXX";
    if (::mkdtemp(db_root.data()) == nullptr) throw std::runtime_error("mkdtemp in " + db_dir + " failed");
    options.store_settings = "database = \"" + db_root + "/verifier.db\"\n";
  }
  struct RemoveRoot {
    std::string path;
    ~RemoveRoot() {
      std::error_code ignored;
      if (!path.empty()) fs::remove_all(path, ignored);
    }
  } remove_root{db_root};

  Daemon daemon(options);
  daemon.start();
  if (server_cpu >= 0 && !bench::pin_process_to_cpu(daemon.pid(), server_cpu))
    throw std::runtime_error("cannot move the daemon to CPU " + std::to_string(server_cpu));
  const std::string image = "bench-image-01";
  const SecretBytes key = crypto::random_secret(32);
  if (auto enrolled = daemon.enroll(image, key); enrolled.status != 0)
    throw std::runtime_error("enroll failed: " + enrolled.output);
  const sim::GrubBoot boot = grub_boot();
  auto boot_log = need(sim::build_grub_boot_log(boot), "boot log");
  auto rems = need(boot_log.rems(crypto::HashAlg::sha256), "rems");
  const Bytes event_log = boot_log.log();
  const std::string challenge_body = protocol::serialize(protocol::ChallengeRequest{image});

  for (int clients : client_counts) {
    const int n = clients == 1 ? count_single : count;
    // Untimed: nonces, keys and tokens for every release of this run (16 threads).
    std::vector<Prepared> prepared(static_cast<std::size_t>(n));
    {
      std::atomic<int> next{0};
      std::mutex mutex;
      std::string failure;
      std::vector<std::thread> threads;
      for (int t = 0; t < std::min(n, 16); ++t)
        threads.emplace_back([&] {
          for (int i = next.fetch_add(1); i < n; i = next.fetch_add(1)) {
            try {
              prepared[static_cast<std::size_t>(i)] = prepare(daemon, image, event_log, rems);
            } catch (const std::exception& error) {
              std::lock_guard lock(mutex);
              failure = error.what();
            }
          }
        });
      for (auto& thread : threads) thread.join();
      if (!failure.empty()) throw std::runtime_error("preparing: " + failure);
    }
    const auto held_before =
        bench::metric(bench::operator_get(daemon.operator_port, "/metrics"), "fde_store_lock_held_seconds_total");
    Run run = run_clients(clients, n, daemon.pid(), [&](int i) -> std::string {
      Prepared& one = prepared[static_cast<std::size_t>(i)];
      // As the agent does: the challenge and the attestation share one new TLS connection.
      protocol::HttpsSession session(daemon.endpoint(), daemon.client_options());
      auto challenge = session.post_json("/v1/challenge", challenge_body);
      if (!challenge) return "challenge: " + challenge.error().describe();
      if (challenge->status != 200) return "challenge: HTTP " + std::to_string(challenge->status);
      auto reply = session.post_json("/v1/attest", one.body);
      if (!reply) return "attest: " + reply.error().describe();
      if (reply->status != 200) return "attest: HTTP " + std::to_string(reply->status) + " " + reply->body;
      auto response = protocol::parse_attest_response(reply->body);
      if (!response) return "attest response: " + response.error().describe();
      auto opened = crypto::hpke::open(*one.ephemeral, response->enc, protocol::hpke_info(image, one.nonce), {},
                                       response->sealed_key);
      if (!opened || opened->view().size() != key.view().size() ||
          !std::equal(opened->view().begin(), opened->view().end(), key.view().begin()))
        return "the opened key is not the enrolled one";
      return {};
    });
    const auto held_after =
        bench::metric(bench::operator_get(daemon.operator_port, "/metrics"), "fde_store_lock_held_seconds_total");
    if (held_before && held_after && run.seconds > 0) run.lock_held = (*held_after - *held_before) / run.seconds;
    print_result(label, "ours", clients, run, daemon.pid());
  }
  return daemon.stop() == 0 ? 0 : 1;
}

// --- tang ---

std::string tang_exchange(std::uint16_t port, const std::string& request) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return "socket failed";
  struct Close {
    int fd;
    ~Close() { ::close(fd); }
  } closer{fd};
  timeval timeout{30, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof timeout);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(port);
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0)
    return std::string("connect: ") + std::strerror(errno);
  for (std::size_t sent = 0; sent < request.size();) {
    ssize_t n = ::send(fd, request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) return std::string("send: ") + std::strerror(errno);
    sent += static_cast<std::size_t>(n);
  }
  // Read the head and Content-Length bytes of body, then close (as curl in clevis does: tangd
  // serves the connection until the client goes).
  std::string reply;
  std::optional<std::size_t> total;
  char buffer[4096];
  while (!total || reply.size() < *total) {
    ssize_t n = ::recv(fd, buffer, sizeof buffer, 0);
    if (n < 0) return std::string("recv: ") + std::strerror(errno);
    if (n == 0) break;
    reply.append(buffer, static_cast<std::size_t>(n));
    if (reply.size() > 64 * 1024) return "reply too large";
    const auto head_end = reply.find("\r\n\r\n");
    if (!total && head_end != std::string::npos) {
      std::string head = reply.substr(0, head_end);
      for (auto& c : head) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      const auto field = head.find("\r\ncontent-length:");
      if (field == std::string::npos) return "tang's reply has no Content-Length";
      total = head_end + 4 + std::strtoul(head.c_str() + field + 17, nullptr, 10);
    }
  }
  if (!total || reply.size() < *total) return "tang's reply ended early";
  if (reply.rfind("HTTP/1.1 200", 0) != 0 && reply.rfind("HTTP/1.0 200", 0) != 0)
    return "tang answered: " + reply.substr(0, reply.find('\r'));
  if (reply.find("\"kty\"") == std::string::npos) return "tang's reply holds no JWK";
  return {};
}

int run_tang(const std::vector<int>& client_counts, int count, int count_single, std::uint16_t port,
             const std::string& kid, const std::string& body, pid_t server, const std::string& label) {
  const std::string request = "POST /rec/" + kid + " HTTP/1.1\r\nHost: 127.0.0.1:" + std::to_string(port) +
                              "\r\nContent-Type: application/jwk+json\r\nContent-Length: " +
                              std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body;
  if (auto failure = tang_exchange(port, request); !failure.empty())
    throw std::runtime_error("warm-up recovery failed: " + failure);
  int failed = 0;
  for (int clients : client_counts) {
    Run run = run_clients(clients, clients == 1 ? count_single : count, server,
                          [&](int) { return tang_exchange(port, request); });
    print_result(label, "tang", clients, run, server);
    failed += run.failures;
  }
  return failed == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) usage();
  const std::string side = argv[1];
  std::vector<int> clients{1, 16, 64, 256};
  int count = 600;
  int count_single = 0;
  std::string label = side;
  DaemonOptions options;
  options.threads = 2;
  options.blocking_threads = 4;
  std::string db_dir;
  long port = 0;
  long server_pid = 0;
  int server_cpu = -1;
  std::string kid;
  std::string body_file;
  for (int i = 2; i < argc; i += 2) {
    const std::string arg = argv[i];
    if (i + 1 >= argc) usage();
    const std::string value = argv[i + 1];
    if (arg == "--clients") clients = parse_list(value);
    else if (arg == "--count") count = static_cast<int>(parse_number(value, "count"));
    else if (arg == "--count-single") count_single = static_cast<int>(parse_number(value, "count"));
    else if (arg == "--label") label = value;
    else if (arg == "--threads") options.threads = static_cast<int>(parse_number(value, "threads", 64));
    else if (arg == "--blocking-threads") options.blocking_threads = static_cast<int>(parse_number(value, "threads", 64));
    else if (arg == "--db-dir") db_dir = value;
    else if (arg == "--server-cpu") server_cpu = static_cast<int>(parse_number(value, "cpu", 4095, 0));
    else if (arg == "--port") port = parse_number(value, "port", 65535);
    else if (arg == "--server-pid") server_pid = parse_number(value, "pid", 1L << 30);
    else if (arg == "--kid") kid = value;
    else if (arg == "--body") body_file = value;
    else usage();
  }
  if (count_single == 0) count_single = count;
  try {
    if (side == "ours") return run_ours(clients, count, count_single, options, db_dir, label, server_cpu);
    if (side == "tang") {
      if (port == 0 || server_pid == 0 || kid.empty() || body_file.empty()) usage();
      std::string body = read_text(body_file);
      while (!body.empty() && (body.back() == '\n' || body.back() == '\r')) body.pop_back();
      if (body.empty()) throw std::runtime_error("empty body file " + body_file);
      return run_tang(clients, count, count_single, static_cast<std::uint16_t>(port), kid, body,
                      static_cast<pid_t>(server_pid), label);
    }
    usage();
  } catch (const std::exception& error) {
    std::cerr << "release_bench: " << error.what() << "\n";
    return 1;
  }
}
