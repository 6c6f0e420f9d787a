// fde-verifierd and fde-admin as shipped: the real binaries on loopback, a fresh store per
// test, driven with the real protocol client and simulated virtCCA tokens. Every daemon is
// stopped (SIGTERM, then SIGKILL) on every path by the fixture's destructor; every wait is
// bounded.
#include <netinet/in.h>
#include <sqlite3.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <algorithm>
#include <cstring>
#include <memory>

#include <catch2/catch.hpp>

#include "test/integration/daemon_support.hpp"
#include "test/integration/stale_socket.hpp"
#include "verifier-daemon/server/admin_socket.hpp"

using namespace fde;
using namespace fde::itest;

namespace {

constexpr const char* image = "it-daemon-web-01";

std::string error_code(const protocol::HttpsResult& result) {
  auto error = protocol::parse_error_response(result.body);
  return error ? std::string(protocol::error_code_name(error->error)) : "<not an error body: " + result.body + ">";
}

struct Enrolled {
  explicit Enrolled(const DaemonOptions& options = {}) : daemon(options), key(crypto::random_secret(32)) {
    daemon.start();
    auto enrolled = daemon.enroll(image, key);
    INFO(enrolled.output);
    REQUIRE(enrolled.status == 0);
  }
  Daemon daemon;
  SecretBytes key;
};

void expect_release(const Enrolled& world) {
  auto exchange = attest(world.daemon, {image});
  REQUIRE(exchange.challenge.status == 200);
  REQUIRE(exchange.attest);
  INFO(exchange.attest->body << "\n" << world.daemon.log());
  REQUIRE(exchange.attest->status == 200);
  REQUIRE(exchange.key);
  CHECK(exchange.key->view().size() == world.key.view().size());
  CHECK(std::equal(exchange.key->view().begin(), exchange.key->view().end(), world.key.view().begin()));
}

void expect_denial(const Exchange& exchange, unsigned status, const std::string& code) {
  REQUIRE(exchange.attest);
  INFO(exchange.attest->body);
  CHECK(exchange.attest->status == status);
  CHECK(error_code(*exchange.attest) == code);
  CHECK_FALSE(exchange.key);
}

// A raw TCP connection to the daemon's port on loopback.
int connect_loopback(std::uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  REQUIRE(fd >= 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = htons(port);
  REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0);
  timeval timeout{10, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
  return fd;
}

// One plain-HTTP exchange with the operator listener on loopback; the whole response as text.
std::string operator_exchange(const Daemon& daemon, const std::string& request) {
  REQUIRE(daemon.operator_port != 0);
  const int fd = connect_loopback(daemon.operator_port);
  REQUIRE(::send(fd, request.data(), request.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(request.size()));
  std::string response;
  char buffer[4096];
  for (ssize_t n; (n = ::recv(fd, buffer, sizeof buffer, 0)) > 0;) response.append(buffer, static_cast<std::size_t>(n));
  ::close(fd);
  return response;
}
std::string operator_get(const Daemon& daemon, const std::string& target) {
  return operator_exchange(daemon, "GET " + target + " HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
}

}  // namespace

TEST_CASE("the daemon releases the enrolled key to a simulated full token of the reference grub boot",
          "[daemon][integration]") {
  Enrolled world;
  expect_release(world);
}

TEST_CASE("health, readiness and metrics are on the operator listener, not on the attestation port",
          "[daemon][integration]") {
  Enrolled world;
  expect_release(world);
  const std::string health = operator_get(world.daemon, "/healthz");
  CHECK(health.rfind("HTTP/1.1 200 OK\r\n", 0) == 0);
  CHECK(health.find("\r\n\r\nok\n") != std::string::npos);
  CHECK(operator_get(world.daemon, "/readyz").find("\r\n\r\nready\n") != std::string::npos);
  const std::string metrics = operator_get(world.daemon, "/metrics");
  CHECK(metrics.find("fde_releases_total 1\n") != std::string::npos);
  CHECK(metrics.find("fde_transport_connections_accepted_total") != std::string::npos);
  // GET only, and no body.
  CHECK(operator_exchange(world.daemon, "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
            .rfind("HTTP/1.1 405 ", 0) == 0);
  CHECK(operator_exchange(world.daemon, "GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
            .rfind("HTTP/1.1 413 ", 0) == 0);
  CHECK(operator_get(world.daemon, "/v1/attest").rfind("HTTP/1.1 404 ", 0) == 0);
  // On the attestation port, which the hosts reach, none of them exists.
  for (const char* path : {"/healthz", "/readyz", "/metrics"}) {
    CAPTURE(path);
    auto result = protocol::https_get(world.daemon.endpoint(), path, world.daemon.client_options());
    REQUIRE(result);
    CHECK(result->status == 404);
    CHECK(result->body.find("fde_") == std::string::npos);
  }
}

TEST_CASE("a flood of forged-nonce requests does not grow the database", "[daemon][integration]") {
  Enrolled world({.attest_per_minute = 0});
  expect_release(world);
  auto size_of = [&](const char* name) {
    std::error_code ec;
    const auto size = fs::file_size(world.daemon.root + "/" + name, ec);
    return ec ? std::uintmax_t{0} : size;
  };
  const std::uintmax_t before = size_of("verifier.db") + size_of("verifier.db-wal");
  auto audit_count = [&] {
    auto listed = world.daemon.admin({"audit", "--limit", "1000"});
    REQUIRE(listed.status == 0);
    return std::count(listed.output.begin(), listed.output.end(), '\n');
  };
  const auto records_before = audit_count();

  // A genuine exchange with the nonce's MAC broken, then a flood of cheap forged requests.
  auto genuine = attest(world.daemon, {.image_id = image, .flip_nonce = true});
  REQUIRE(genuine.attest);
  CHECK(genuine.attest->status == 400);
  protocol::ChallengeRequest challenge{image};
  auto issued = need(protocol::https_post_json(world.daemon.endpoint(), "/v1/challenge", protocol::serialize(challenge),
                                               world.daemon.client_options()),
                     "challenge");
  auto nonce = need(protocol::parse_challenge_response(issued.body), "challenge response").nonce;
  nonce[10] ^= 0x40;
  protocol::AttestRequest request;
  request.image_id = image;
  request.nonce = nonce;
  request.ephemeral_public = Bytes(protocol::ephemeral_public_size, 7);
  request.token = Bytes(4000, 0xd9);
  request.device_cert = Bytes(1500, 0x30);
  const std::string body = protocol::serialize(request);
  constexpr int flood = 200;
  const auto started = std::chrono::steady_clock::now();
  for (int i = 0; i < flood; ++i) {
    auto result = need(protocol::https_post_json(world.daemon.endpoint(), "/v1/attest", body,
                                                 world.daemon.client_options()),
                       "forged attest");
    if (result.status != 400) FAIL("request " << i << ": " << result.status << " " << result.body);
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  WARN(flood << " forged-nonce requests (one TLS connection each) in " << seconds << " s");
  CHECK(audit_count() == records_before);
  CHECK(size_of("verifier.db") + size_of("verifier.db-wal") == before);
  CHECK(operator_get(world.daemon, "/metrics").find("fde_attest_refused_total{reason=\"nonce_forged\"} " +
                                                    std::to_string(flood + 1) + "\n") != std::string::npos);
}

TEST_CASE("the daemon denies evidence that does not match (coarse error codes)", "[daemon][integration]") {
  Enrolled world;

  SECTION("a wrong RIM") {
    expect_denial(attest(world.daemon, {.image_id = image, .rim = crypto::sha256(as_bytes("other firmware"))}), 403,
                  "attestation_failed");
  }
  SECTION("an event log that is not the one the token's REMs measured") {
    sim::GrubBoot other = grub_boot();
    other.kernel_arguments += " init=/bin/sh";
    expect_denial(attest(world.daemon, {.image_id = image, .logged = other}), 403, "attestation_failed");
  }
  SECTION("a token over another challenge (ephemeral key not bound)") {
    expect_denial(attest(world.daemon, {.image_id = image, .wrong_binding = true}), 403, "attestation_failed");
  }
  SECTION("a forged nonce (one byte flipped)") {
    auto exchange = attest(world.daemon, {.image_id = image, .flip_nonce = true});
    REQUIRE(exchange.attest);
    INFO(exchange.attest->body);
    CHECK(exchange.attest->status >= 400);
    CHECK(exchange.attest->status < 500);
    CHECK_FALSE(exchange.key);
  }
  SECTION("an unknown image: the same answer as a denied enrolled one") {
    auto unknown = attest(world.daemon, {.image_id = "never-enrolled"});
    auto denied = attest(world.daemon, {.image_id = image, .rim = crypto::sha256(as_bytes("other firmware"))});
    REQUIRE(unknown.attest);
    REQUIRE(denied.attest);
    CHECK(unknown.attest->status == 403);
    CHECK(unknown.attest->body == denied.attest->body);
    CHECK(unknown.attest->body.find("never-enrolled") == std::string::npos);  // not echoed back
    CHECK_FALSE(unknown.key);
  }
  SECTION("a revoked image, until it is reinstated") {
    auto revoked = world.daemon.admin({"revoke", image});
    INFO(revoked.output);
    REQUIRE(revoked.status == 0);
    expect_denial(attest(world.daemon, {image}), 403, "attestation_failed");
    REQUIRE(world.daemon.admin({"reinstate", image}).status == 0);
    expect_release(world);
  }
  SECTION("a garbage body") {
    auto result = protocol::https_post_json(world.daemon.endpoint(), "/v1/attest", "{\"image_id\": [garbage",
                                            world.daemon.client_options());
    REQUIRE(result);
    CHECK(result->status == 400);
    CHECK(error_code(*result) == "bad_request");
  }
  SECTION("an oversized body is refused") {
    std::string body(protocol::max_attest_body + 1024, 'a');
    auto result = protocol::https_post_json(world.daemon.endpoint(), "/v1/attest", body, world.daemon.client_options());
    if (result) {
      INFO(result->body);
      CHECK(result->status == 413);
    } else {
      SUCCEED("the daemon closed the connection: " << result.error().describe());
    }
  }
  // Whatever was denied, the daemon still serves an honest guest.
  expect_release(world);
}

TEST_CASE("a nonce older than its lifetime is refused as expired", "[daemon][integration][slow]") {
  Enrolled world({.nonce_lifetime_seconds = 5});
  auto exchange = attest(world.daemon, {.image_id = image, .delay_before_attest = 6500ms});
  expect_denial(exchange, 410, "expired_nonce");
}

// Reads until the daemon closes the connection (0) or our own 10 s receive timeout (-1).
template <class Read>
std::pair<long, std::chrono::nanoseconds> read_until_closed(Read read) {
  const auto start = std::chrono::steady_clock::now();
  long n = 0;
  char buffer[256];
  do {
    n = read(buffer, sizeof buffer);
  } while (n > 0);
  return {n, std::chrono::steady_clock::now() - start};
}

TEST_CASE("a slow client is disconnected after the handshake or request timeout", "[daemon][integration]") {
  Enrolled world({.request_timeout_ms = 1000, .handshake_timeout_ms = 1000});

  SECTION("half a TLS handshake") {
    int fd = connect_loopback(world.daemon.port);
    const unsigned char half[] = {0x16, 0x03, 0x01, 0x02};  // half a ClientHello record header
    REQUIRE(::send(fd, half, sizeof half, MSG_NOSIGNAL) == static_cast<ssize_t>(sizeof half));
    auto [n, waited] = read_until_closed([fd](char* b, std::size_t size) { return ::recv(fd, b, size, 0); });
    ::close(fd);
    CHECK(n == 0);  // closed by the daemon, not by our receive timeout
    CHECK(waited < 5s);
  }
  SECTION("half an HTTP request after a completed TLS 1.3 handshake (CA pinned)") {
    int fd = connect_loopback(world.daemon.port);
    std::unique_ptr<SSL_CTX, decltype(&SSL_CTX_free)> ctx(SSL_CTX_new(TLS_client_method()), &SSL_CTX_free);
    REQUIRE(ctx);
    SSL_CTX_set_min_proto_version(ctx.get(), TLS1_3_VERSION);
    std::unique_ptr<BIO, decltype(&BIO_free)> bio(BIO_new_mem_buf(world.daemon.ca_pem.data(),
                                                                  static_cast<int>(world.daemon.ca_pem.size())),
                                                  &BIO_free);
    X509* ca = PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr);
    REQUIRE(ca != nullptr);
    X509_STORE_add_cert(SSL_CTX_get_cert_store(ctx.get()), ca);
    X509_free(ca);
    SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_PEER, nullptr);
    std::unique_ptr<SSL, decltype(&SSL_free)> ssl(SSL_new(ctx.get()), &SSL_free);
    REQUIRE(ssl);
    SSL_set_fd(ssl.get(), fd);
    X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl.get()), "127.0.0.1");
    REQUIRE(SSL_connect(ssl.get()) == 1);
    const std::string half = "POST /v1/attest HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                             "Content-Length: 100\r\n\r\n{\"image_id\": ";
    REQUIRE(SSL_write(ssl.get(), half.data(), static_cast<int>(half.size())) == static_cast<int>(half.size()));
    auto [n, waited] = read_until_closed(
        [&ssl](char* b, std::size_t size) { return static_cast<long>(SSL_read(ssl.get(), b, static_cast<int>(size))); });
    ::close(fd);
    CHECK(n <= 0);
    CHECK(waited < 5s);
  }
  expect_release(world);
}

TEST_CASE("after a restart on the same store the key is still released", "[daemon][integration]") {
  Enrolled world;
  expect_release(world);
  CHECK(world.daemon.stop() == 0);
  world.daemon.start();
  expect_release(world);
  auto list = world.daemon.admin({"list"});
  CHECK(list.status == 0);
  CHECK(list.output.find(image) != std::string::npos);
}

TEST_CASE("fde-admin explains a denial and verifies the audit chain then finds an edited record",
          "[daemon][integration][audit]") {
  Enrolled world;
  expect_release(world);
  expect_denial(attest(world.daemon, {.image_id = image, .rim = crypto::sha256(as_bytes("other firmware"))}), 403,
                "attestation_failed");
  expect_release(world);

  auto explained = world.daemon.admin({"explain", image});
  INFO(explained.output);
  CHECK(explained.status == 0);
  CHECK(explained.output.find("FAIL") != std::string::npos);
  CHECK(explained.output.find("FAIL reference.rim") != std::string::npos);

  auto intact = world.daemon.admin({"audit", "--verify"});
  INFO(intact.output);
  REQUIRE(intact.status == 0);
  CHECK(intact.output.find("audit chain intact: 4 records") != std::string::npos);

  // An attacker with write access to the database file: drop the append-only trigger and
  // rewrite the denial's reason.
  sqlite3* db = nullptr;
  REQUIRE(sqlite3_open(( world.daemon.root + "/verifier.db").c_str(), &db) == SQLITE_OK);
  sqlite3_busy_timeout(db, 5000);
  char* message = nullptr;
  int rc = sqlite3_exec(db,
                        "DROP TRIGGER audit_no_update;"
                        "UPDATE audit SET reason = 'nothing to see' WHERE decision = 'deny';",
                        nullptr, nullptr, &message);
  std::string error = message != nullptr ? message : "";
  sqlite3_free(message);
  const int changed = sqlite3_changes(db);
  sqlite3_stmt* statement = nullptr;
  std::int64_t edited = 0;
  REQUIRE(sqlite3_prepare_v2(db, "SELECT sequence FROM audit WHERE reason = 'nothing to see'", -1, &statement,
                             nullptr) == SQLITE_OK);
  if (sqlite3_step(statement) == SQLITE_ROW) edited = sqlite3_column_int64(statement, 0);
  sqlite3_finalize(statement);
  sqlite3_close(db);
  INFO(error);
  REQUIRE(rc == SQLITE_OK);
  REQUIRE(changed == 1);
  REQUIRE(edited > 0);

  auto broken = world.daemon.admin({"--json", "audit", "--verify"});
  INFO(broken.output);
  CHECK(broken.status == 1);
  CHECK(broken.output.find("\"first_bad_sequence\": " + std::to_string(edited)) != std::string::npos);
}

TEST_CASE("fde-admin changes are chained with the caller's uid, and an exported head catches a truncated log",
          "[daemon][integration][audit]") {
  Enrolled world;
  REQUIRE(world.daemon.admin({"revoke", image}).status == 0);
  REQUIRE(world.daemon.admin({"reinstate", image}).status == 0);
  expect_release(world);

  // The uid the daemon read with SO_PEERCRED: this process's, as fde-admin ran as it.
  const std::string who = "uid=" + std::to_string(::geteuid());
  auto changes = world.daemon.admin({"--json", "audit", "--decision", "admin"});
  INFO(changes.output);
  REQUIRE(changes.status == 0);
  for (const char* action : {"\"enroll\"", "\"revoke\"", "\"reinstate\""})
    CHECK(changes.output.find(std::string("\"reason\": ") + action) != std::string::npos);
  CHECK(changes.output.find("\"peer\": \"" + who + " pid=") != std::string::npos);

  auto head = world.daemon.admin({"audit", "--head"});
  INFO(head.output);
  REQUIRE(head.status == 0);
  REQUIRE(head.output.rfind("4:", 0) == 0);
  const std::string exported = head.output.substr(0, head.output.find('\n'));
  CHECK(world.daemon.admin({"audit", "--verify", "--expect-head", exported}).status == 0);

  // Someone with write access to the database file removes the release and the reinstate.
  sqlite3* db = nullptr;
  REQUIRE(sqlite3_open((world.daemon.root + "/verifier.db").c_str(), &db) == SQLITE_OK);
  sqlite3_busy_timeout(db, 5000);
  const int rc = sqlite3_exec(db, "DROP TRIGGER audit_no_delete; DELETE FROM audit WHERE sequence >= 3;", nullptr,
                              nullptr, nullptr);
  sqlite3_close(db);
  REQUIRE(rc == SQLITE_OK);

  CHECK(world.daemon.admin({"audit", "--verify"}).status == 0);  // a shorter chain is still well-formed
  auto truncated = world.daemon.admin({"audit", "--verify", "--expect-head", exported});
  INFO(truncated.output);
  CHECK(truncated.status == 1);
  CHECK(truncated.output.find("BROKEN at record 3") != std::string::npos);
  CHECK(truncated.output.find("removed from the end") != std::string::npos);
}

// ---------------------------------------------------------------------------------------
// The admin socket: who may use it, and where it may be created
// ---------------------------------------------------------------------------------------

namespace {

constexpr uid_t nobody = 65534;


bool is_socket(const std::string& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode);
}

// A directory under /tmp for one socket, removed with its contents.
struct SocketDir {
  std::string path;
  SocketDir() {
    char pattern[] = "/tmp/fde-admin-dir-XXXXXX";
    REQUIRE(::mkdtemp(pattern) != nullptr);
    path = pattern;
  }
  ~SocketDir() {
    std::error_code ignored;
    fs::remove_all(path, ignored);
  }
  std::string socket() const { return path + "/admin.sock"; }
};

verifier::AdminHandler echo_handler() {
  return [](const verifier::AdminPeer&, const std::string&) { return std::string(R"({"ok":true,"result":{}})"); };
}

}  // namespace

TEST_CASE("the admin socket refuses the daemon's own user unless admin.allowed_uid names it",
          "[daemon][integration][admin]") {
  if (::geteuid() != 0) {
    WARN("needs root to run the daemon as another user; skipped");
    return;
  }
  SECTION("root only by default: the service user's own uid is refused") {
    Daemon daemon({.run_as = nobody});
    daemon.start();
    // Root administers a daemon that runs as another user.
    auto enrolled = daemon.enroll(image, crypto::random_secret(32));
    INFO(enrolled.output << daemon.log());
    REQUIRE(enrolled.status == 0);
    // Whoever controls the service user (a compromised daemon, say) gets nothing.
    for (const std::vector<std::string>& command :
         {std::vector<std::string>{"list"}, {"revoke", image}, {"audit", "--limit", "5"}}) {
      auto refused = daemon.admin_as(nobody, command);
      INFO(command.front() << ": " << refused.output);
      CHECK(refused.status == 1);
      CHECK(refused.output.find("may not use the admin socket") != std::string::npos);
      CHECK(refused.output.find("uid 65534") != std::string::npos);
    }
    auto shown = daemon.admin({"show", image});
    CHECK(shown.status == 0);
    CHECK(shown.output.find("active") != std::string::npos);  // the refused revoke did nothing
  }
  SECTION("admin.allowed_uid lets that one uid in") {
    Daemon daemon({.run_as = nobody, .admin_allowed_uid = nobody});
    daemon.start();
    auto listed = daemon.admin_as(nobody, {"list"});
    INFO(listed.output << daemon.log());
    CHECK(listed.status == 0);
    CHECK(daemon.admin({"list"}).status == 0);
    CHECK(daemon.log().find("admin_users=\"root, uid 65534\"") != std::string::npos);
  }
}

TEST_CASE("the admin socket is not created in a directory others can write to, and a stale socket there is left alone",
          "[integration][admin]") {
  SocketDir dir;
  make_stale_socket(dir.socket());
  for (const mode_t mode : {01777, 0777, 0770, 0730, 0702}) {
    INFO("directory mode " << std::oct << mode);
    REQUIRE(::chmod(dir.path.c_str(), mode) == 0);
    auto server = verifier::AdminSocketServer::create(dir.socket(), echo_handler());
    REQUIRE_FALSE(server);
    CHECK(server.error().message.find("others can write to it") != std::string::npos);
    CHECK(is_socket(dir.socket()));  // the stale socket was not unlinked
  }
  // Closed to others again, the stale socket is replaced as usual.
  REQUIRE(::chmod(dir.path.c_str(), 0755) == 0);
  auto server = verifier::AdminSocketServer::create(dir.socket(), echo_handler());
  INFO((server ? std::string() : server.error().describe()));
  REQUIRE(server);
  (*server)->start();
  CHECK(verifier::admin_request(dir.socket(), "{}", 5000ms));
}

TEST_CASE("the admin socket is not created in a directory another user owns", "[integration][admin]") {
  if (::geteuid() != 0) {
    WARN("needs root to give the directory to another user; skipped");
    return;
  }
  SocketDir dir;
  make_stale_socket(dir.socket());
  REQUIRE(::chown(dir.path.c_str(), nobody, nobody) == 0);
  auto server = verifier::AdminSocketServer::create(dir.socket(), echo_handler());
  REQUIRE_FALSE(server);
  CHECK(server.error().message.find("owned by uid 65534") != std::string::npos);
  CHECK(is_socket(dir.socket()));
}

TEST_CASE("the admin socket's directory may not be a symbolic link", "[integration][admin]") {
  SocketDir dir;
  REQUIRE(::mkdir((dir.path + "/real").c_str(), 0700) == 0);
  REQUIRE(::symlink("real", (dir.path + "/link").c_str()) == 0);
  make_stale_socket(dir.path + "/real/admin.sock");
  auto server = verifier::AdminSocketServer::create(dir.path + "/link/admin.sock", echo_handler());
  REQUIRE_FALSE(server);
  CHECK(server.error().message.find("symbolic link") != std::string::npos);
  CHECK(is_socket(dir.path + "/real/admin.sock"));
  // The real directory itself is fine.
  CHECK(verifier::AdminSocketServer::create(dir.path + "/real/admin.sock", echo_handler()));
}

TEST_CASE("the admin socket is 0600 from bind() on, whatever the umask, and the umask is restored",
          "[integration][admin]") {
  SocketDir dir;
  const mode_t previous = ::umask(0);
  auto server = verifier::AdminSocketServer::create(dir.socket(), echo_handler());
  const mode_t after = ::umask(previous);
  CHECK(after == 0);
  INFO((server ? std::string() : server.error().describe()));
  REQUIRE(server);
  struct stat st {};
  REQUIRE(::lstat(dir.socket().c_str(), &st) == 0);
  CHECK(S_ISSOCK(st.st_mode));
  CHECK((st.st_mode & 07777) == 0600);
  // A path that names no file in its directory is refused.
  CHECK_FALSE(verifier::AdminSocketServer::create(dir.path + "/", echo_handler()));
}

// --- start-up checks and reload reported to systemd ---

namespace {

// fde-verifierd with the daemon's configuration and extra flags, to its end (bounded).
Daemon::AdminResult run_verifierd(const Daemon& daemon, std::vector<std::string> extra) {
  std::vector<std::string> argv{FDE_VERIFIERD, "--config", daemon.root + "/verifier.toml", "--listen", "127.0.0.1:0"};
  argv.insert(argv.end(), extra.begin(), extra.end());
  const std::string log_path = daemon.root + "/verifierd-run.log";
  fs::remove(log_path);
  Process process(argv, daemon.root, log_path);
  auto status = process.wait(20s);
  return {status.value_or(-1), read_text(log_path)};
}

// A server certificate for 127.0.0.1 valid for `days` (negative: expired), with its key.
void write_server_certificate(const Daemon& daemon, long days, mode_t key_mode = 0600) {
  auto ca_key = need(crypto::PrivateKey::generate(crypto::KeyType::ec_p256), "CA key");
  crypto::CertificateRequest ca_request;
  ca_request.common_name = "expiry test CA";
  ca_request.is_ca = true;
  auto ca = need(crypto::issue_certificate(ca_request, ca_key.public_key(), ca_key, nullptr), "CA");
  auto key = need(crypto::PrivateKey::generate(crypto::KeyType::ec_p256), "server key");
  crypto::CertificateRequest request;
  request.common_name = "expiry test";
  request.serial = 2;
  request.valid_days = days;
  request.subject_alt_names = {"IP:127.0.0.1"};
  auto certificate = need(crypto::issue_certificate(request, key.public_key(), ca_key, &ca), "server certificate");
  SecretBytes key_pem = key.to_pem();
  write_text(daemon.root + "/server.crt", certificate.pem());
  write_text(daemon.root + "/server.key", as_text(key_pem.view()), key_mode);
  REQUIRE(::chmod((daemon.root + "/server.key").c_str(), key_mode) == 0);
}

// A notify socket like systemd's, bound in the test's directory; NOTIFY_SOCKET is set for the
// daemon started while it lives.
struct NotifySocket {
  explicit NotifySocket(const std::string& path) : path_(path) {
    fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    REQUIRE(fd >= 0);
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    REQUIRE(path.size() < sizeof address.sun_path);
    std::memcpy(address.sun_path, path.c_str(), path.size() + 1);
    REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0);
    timeval timeout{0, 200000};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
    ::setenv("NOTIFY_SOCKET", path.c_str(), 1);
  }
  ~NotifySocket() {
    ::unsetenv("NOTIFY_SOCKET");
    ::close(fd);
  }
  // Every message received until none comes for 200 ms, joined by "|".
  std::string drain() {
    std::string all;
    char buffer[4096];
    for (;;) {
      const ssize_t n = ::recv(fd, buffer, sizeof buffer, 0);
      if (n <= 0) return all;
      all += (all.empty() ? "" : "|") + std::string(buffer, static_cast<std::size_t>(n));
    }
  }
  int fd = -1;

 private:
  std::string path_;
};

}  // namespace

TEST_CASE("a KEK that does not open the store stops --check-config and the start, with exit status 2",
          "[daemon][integration]") {
  Enrolled world;
  expect_release(world);
  CHECK(world.daemon.stop() == 0);
  CHECK(run_verifierd(world.daemon, {"--check-config"}).status == 0);
  // The KEK file regenerated, as on a host restored without its KEK.
  write_text(world.daemon.root + "/kek", hex_encode(crypto::random_bytes(32)) + "\n", 0600);
  auto check = run_verifierd(world.daemon, {"--check-config"});
  CHECK(check.status == 2);
  CHECK(check.output.find("does not open") != std::string::npos);
  CHECK(check.output.find("configuration OK") == std::string::npos);
  auto start = run_verifierd(world.daemon, {});
  CHECK(start.status == 2);
  CHECK(start.output.find("event=started") == std::string::npos);
  CHECK(start.output.find("does not open") != std::string::npos);
}

TEST_CASE("an expired or not yet valid TLS certificate and a readable TLS key are refused; an expiring one is warned about",
          "[daemon][integration]") {
  Daemon daemon;
  SECTION("expired") {
    write_server_certificate(daemon, -1);
    auto check = run_verifierd(daemon, {"--check-config"});
    CHECK(check.status == 2);
    CHECK(check.output.find("expired on") != std::string::npos);
  }
  SECTION("a private key that others can read") {
    write_server_certificate(daemon, 365, 0644);
    auto check = run_verifierd(daemon, {"--check-config"});
    CHECK(check.status == 2);
    CHECK(check.output.find("mode 0644") != std::string::npos);
  }
  SECTION("expiring within the warning window: started, with a warning") {
    write_server_certificate(daemon, 10);
    CHECK(run_verifierd(daemon, {"--check-config"}).status == 0);
    daemon.start();
    CHECK(daemon.log().find("event=tls_certificate_expiring") != std::string::npos);
    INFO(daemon.log());
    CHECK((daemon.log().find("days_left=9 ") != std::string::npos || daemon.log().find("days_left=10 ") != std::string::npos));
  }
  SECTION("far from expiry: started, its expiry logged without a warning") {
    write_server_certificate(daemon, 365);
    daemon.start();
    CHECK(daemon.log().find("event=tls_certificate ") != std::string::npos);
    CHECK(daemon.log().find("tls_certificate_expiring") == std::string::npos);
  }
}

TEST_CASE("fde-admin reload tells systemd and its caller whether the reload was applied", "[daemon][integration]") {
  Daemon daemon;
  NotifySocket notify(daemon.root + "/notify.sock");
  daemon.start();
  CHECK(notify.drain().find("READY=1") != std::string::npos);

  auto reloaded = daemon.admin({"reload"});
  INFO(reloaded.output << daemon.log());
  CHECK(reloaded.status == 0);
  std::string messages = notify.drain();
  CHECK(messages.find("RELOADING=1\nMONOTONIC_USEC=") != std::string::npos);
  CHECK(messages.find("READY=1\nSTATUS=serving\n") != std::string::npos);

  // A configuration that does not parse: the old one is kept, and the reload fails.
  const std::string config = read_text(daemon.root + "/verifier.toml");
  write_text(daemon.root + "/verifier.toml", config + "\n[tls\n");
  auto failed = daemon.admin({"reload"});
  CHECK(failed.status == 1);
  CHECK(failed.output.find("reload failed, previous configuration kept") != std::string::npos);
  messages = notify.drain();
  CHECK(messages.find("RELOADING=1") != std::string::npos);
  CHECK(messages.find("STATUS=serving; the last reload FAILED") != std::string::npos);

  // Still serving with the old configuration.
  write_text(daemon.root + "/verifier.toml", config);
  CHECK(daemon.admin({"reload"}).status == 0);
  CHECK(daemon.admin({"list"}).status == 0);
}

TEST_CASE("fde-admin backup, more changes, the documented restore: the backup's keys release and its chain verifies",
          "[daemon][integration]") {
  Enrolled world;
  expect_release(world);
  const std::string backup = world.daemon.root + "/backup.db";
  auto taken = world.daemon.admin({"backup", "--output", backup});
  INFO(taken.output);
  REQUIRE(taken.status == 0);
  // "backup written: PATH (N bytes, 1 images, audit head SEQ:HEX); ..."
  const auto at = taken.output.find("audit head ");
  REQUIRE(at != std::string::npos);
  const std::string head = taken.output.substr(at + 11, taken.output.find(')', at) - at - 11);
  // Changes after the backup: the image deleted and enrolled again with another key, and a
  // second image.
  REQUIRE(world.daemon.admin({"delete", image, "--yes"}).status == 0);
  REQUIRE(world.daemon.enroll(image, crypto::random_secret(32)).status == 0);
  REQUIRE(world.daemon.enroll("it-daemon-web-02", crypto::random_secret(32)).status == 0);
  CHECK(world.daemon.stop() == 0);

  // The restore: stopped, the database and its -wal/-shm replaced by the backup, started.
  const std::string db = world.daemon.root + "/verifier.db";
  fs::remove(db + "-wal");
  fs::remove(db + "-shm");
  fs::copy_file(backup, db, fs::copy_options::overwrite_existing);
  CHECK(run_verifierd(world.daemon, {"--check-config"}).status == 0);
  world.daemon.start();
  expect_release(world);  // the key from the backup, not the re-enrolled one
  auto list = world.daemon.admin({"list"});
  CHECK(list.output.find("it-daemon-web-02") == std::string::npos);
  auto verified = world.daemon.admin({"audit", "--verify", "--expect-head", head});
  INFO(verified.output);
  CHECK(verified.status == 0);
  CHECK(verified.output.find("is in the chain, unchanged") != std::string::npos);
}
