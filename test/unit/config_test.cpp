// fde-verifierd's configuration (TOML and flags), secret files, the systemd notification
// socket, the log format and the metrics text.
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>

#include "common/crypto/random.hpp"
#include "common/util/file.hpp"
#include "test/unit/verifier_fixture.hpp"
#include "verifier-daemon/config/config.hpp"
#include "verifier-daemon/config/secret_file.hpp"
#include "verifier-daemon/log/logger.hpp"
#include "verifier-daemon/metrics/metrics.hpp"
#include "verifier-daemon/service/runtime.hpp"
#include "verifier-daemon/service/sd_notify.hpp"

using namespace fde;
using namespace fde::test;
using namespace fde::verifier;

namespace {

Result<Config> parse(std::string_view text) { return parse_config(text, "test.toml", "/etc/fde-verifier"); }

// The error a configuration gets, or "" if it parses.
std::string error_of(std::string_view text) {
  auto config = parse(text);
  return config ? std::string() : config.error().message;
}

ParsedOptions flags(const std::vector<std::string>& args) {
  return expect_ok(parse_options(args, daemon_option_specs()));
}

}  // namespace

TEST_CASE("the annotated example configuration parses and sets every section") {
  auto bytes = expect_ok(read_file(std::string(FDE_TEST_DATA) + "/../../packaging/fde-verifierd.toml", 1024 * 1024));
  auto config = expect_ok(parse_config(as_text(bytes), "fde-verifierd.toml", "/etc/fde-verifier"));
  CHECK_FALSE(config.listen.empty());
  CHECK_FALSE(config.trusted_roots.empty());
  CHECK(config.kek.credential == "kek");
  CHECK(config.nonce_secret.credential == "nonce-secret");
  CHECK(config.tls_expiry_warning_days == 30);
  CHECK(validate_config(config));
  // The [server] values it shows are the built-in defaults.
  const ServerLimits defaults;
  CHECK(config.limits.max_connections == defaults.max_connections);
  CHECK(config.limits.max_connections_per_peer == defaults.max_connections_per_peer);
  CHECK(config.limits.shed_after == defaults.shed_after);
  CHECK(config.limits.max_buffered_body_bytes == defaults.max_buffered_body_bytes);
  CHECK(config.limits.first_byte_timeout == defaults.first_byte_timeout);
  CHECK(config.limits.handshake_timeout == defaults.handshake_timeout);
  CHECK(config.limits.header_timeout == defaults.header_timeout);
  CHECK(config.limits.request_timeout == defaults.request_timeout);
  CHECK(config.limits.idle_timeout == defaults.idle_timeout);
  CHECK(config.limits.max_requests_per_connection == defaults.max_requests_per_connection);
}

TEST_CASE("tls.expiry_warning_days sets the warning window, 0 to 3650 days") {
  CHECK(expect_ok(parse("[tls]\nexpiry_warning_days = 7\n")).tls_expiry_warning_days == 7);
  CHECK(expect_ok(parse("")).tls_expiry_warning_days == 30);
  CHECK(error_of("[tls]\nexpiry_warning_days = -1\n").find("tls.expiry_warning_days: must be 0..3650") !=
        std::string::npos);
}

TEST_CASE("the TLS expiry warning starts within the configured window") {
  TlsCertificateValidity validity;
  validity.not_before = 0;
  validity.not_after = 100 * 86400;
  validity.not_after_text = "1970-04-11T00:00:00Z";
  CHECK_FALSE(tls_expiry_warning(validity, 30, 69 * 86400).has_value());
  auto warning = tls_expiry_warning(validity, 30, 71 * 86400);
  REQUIRE(warning.has_value());
  CHECK(*warning == "the TLS certificate expires on 1970-04-11T00:00:00Z (in 29 days); renew it and reload");
  CHECK_FALSE(tls_expiry_warning(validity, 0, 99 * 86400).has_value());
}

TEST_CASE("a configuration sets listen addresses, limits, files and secrets") {
  auto config = expect_ok(parse(R"(
[server]
listen = ["127.0.0.1:0", "[::1]:8443"]
threads = 2
blocking_threads = 3
max_connections = 50
max_connections_per_peer = 8
shed_after_ms = 250
max_buffered_body_bytes = 8388608
first_byte_timeout_ms = 700
header_timeout_ms = 1500
request_timeout_ms = 2500

[tls]
certificate = "tls/server.crt"
private_key = "/secure/server.key"

[attestation]
trusted_roots = ["roots/sim-ca.pem"]
allow_legacy = true

[nonce]
secret_file = "nonce.secret"
retired_secret_files = ["old.secret"]
lifetime_seconds = 120

[store]
database = "/var/lib/x/db.sqlite"
kek_file = "kek"

[admin]
socket = "/run/x/admin.sock"

[log]
level = "debug"
)"));
  REQUIRE(config.listen.size() == 2);
  CHECK(config.listen[0].host == "127.0.0.1");
  CHECK(config.listen[0].port == 0);
  CHECK(config.listen[1].host == "::1");
  CHECK(config.listen[1].port == 8443);
  CHECK(config.limits.threads == 2);
  CHECK(config.limits.blocking_threads == 3);
  CHECK(config.limits.max_connections == 50);
  CHECK(config.limits.max_connections_per_peer == 8);
  CHECK(config.limits.shed_after == std::chrono::milliseconds(250));
  CHECK(config.limits.max_buffered_body_bytes == 8 * 1024 * 1024);
  CHECK(config.limits.first_byte_timeout == std::chrono::milliseconds(700));
  CHECK(config.limits.header_timeout == std::chrono::milliseconds(1500));
  CHECK(config.limits.request_timeout == std::chrono::milliseconds(2500));
  // Relative paths are relative to the configuration file's directory.
  CHECK(config.tls.certificate_chain == "/etc/fde-verifier/tls/server.crt");
  CHECK(config.tls.private_key == "/secure/server.key");
  CHECK(config.trusted_roots == std::vector<std::string>{"/etc/fde-verifier/roots/sim-ca.pem"});
  CHECK(config.allow_legacy);
  CHECK(config.nonce_secret.file == "/etc/fde-verifier/nonce.secret");
  CHECK(config.nonce_secret.credential.empty());
  CHECK(config.retired_nonce_secret_files == std::vector<std::string>{"/etc/fde-verifier/old.secret"});
  CHECK(config.nonce_lifetime == std::chrono::seconds(120));
  CHECK(config.kek.file == "/etc/fde-verifier/kek");
  CHECK(config.admin_socket == "/run/x/admin.sock");
  CHECK(config.log_level == LogLevel::debug);
  CHECK(validate_config(config));
}

TEST_CASE("unknown keys and sections are errors that name the file, line and key") {
  CHECK(error_of("[server]\nlisten = [\"127.0.0.1:1\"]\nlisen = 3\n") ==
        "test.toml:3:1: server.lisen: unknown key (known in [server]: blocking_threads, first_byte_timeout_ms, "
        "handshake_timeout_ms, header_timeout_ms, idle_timeout_ms, listen, max_active_connections, "
        "max_buffered_body_bytes, max_connections, max_connections_per_peer, max_header_bytes, "
        "max_requests_per_connection, queue_timeout_ms, request_timeout_ms, shed_after_ms, threads)");
  CHECK(error_of("[serverr]\n").find("serverr: unknown section") != std::string::npos);
  CHECK(error_of("listen = 1\n").find("listen: unknown section") != std::string::npos);
  CHECK(error_of("[store]\n[store.extra]\n").find("store.extra: unknown key") != std::string::npos);
}

TEST_CASE("bad values are errors that say what was expected") {
  CHECK(error_of("[server]\nthreads = \"2\"\n") == "test.toml:2:11: server.threads: expected an integer, found a string");
  CHECK(error_of("[server]\nmax_connections = 0\n").find("server.max_connections: must be 1..1000000, found 0") !=
        std::string::npos);
  // A body budget smaller than two of the largest requests would lock large requests out.
  CHECK(error_of("[server]\nmax_buffered_body_bytes = 1000000\n")
            .find("server.max_buffered_body_bytes: must be 4194304..") != std::string::npos);
  CHECK(error_of("[server]\nlisten = [\"localhost\"]\n").find("server.listen[0]: expected HOST:PORT") !=
        std::string::npos);
  CHECK(error_of("[server]\nlisten = [\"1.2.3.4:99999\"]\n").find("server.listen[0]") != std::string::npos);
  CHECK(error_of("[server]\nlisten = []\n").find("server.listen: needs at least one address") != std::string::npos);
  CHECK(error_of("[server]\nlisten = \"1.2.3.4:1\"\n").find("expected an array of strings") != std::string::npos);
  CHECK(error_of("[attestation]\nallow_legacy = \"yes\"\n").find("expected true or false") != std::string::npos);
  CHECK(error_of("[nonce]\nlifetime_seconds = 1\n").find("nonce.lifetime_seconds: must be 5..3600") !=
        std::string::npos);
  CHECK(error_of("[log]\nlevel = \"loud\"\n").find("log.level: expected \"error\"") != std::string::npos);
  CHECK(error_of("[tls]\ncertificate = \"\"\n").find("tls.certificate: must not be empty") != std::string::npos);
  CHECK(error_of("[store]\nkek_file = \"a\"\nkek_credential = \"b\"\n").find("not both") != std::string::npos);
  CHECK(error_of("[nonce]\nsecret_file = \"a\"\nsecret_credential = \"b\"\n").find("not both") != std::string::npos);
  CHECK(error_of("[server\n").rfind("test.toml:1:", 0) == 0);  // TOML syntax errors say where too
  CHECK(error_of("[server]\nthreads = 1\nthreads = 2\n").rfind("test.toml:3:", 0) == 0);
}

TEST_CASE("the platform policy keys default to secured-only and parse into the token policy") {
  const Config defaults = expect_ok(parse(""));
  CHECK(defaults.platform.allowed_lifecycle_states == std::vector<token::LifecycleState>{token::LifecycleState::secured});
  CHECK(defaults.platform.required_sw_components.empty());
  CHECK(defaults.platform.device_issuer_sha256.empty());

  const std::string tmm(64, 'b');
  const std::string pin(64, 'c');
  auto config = expect_ok(parse("[attestation]\nallowed_lifecycle_states = [\"secured\", \"non_rot_debug\"]\n"
                                "required_sw_components = [\"TMM:" + tmm + "\", \"" + std::string(96, 'd') + "\"]\n"
                                "device_issuer_sha256 = [\"" + pin + "\"]\n"));
  CHECK(config.platform.allowed_lifecycle_states ==
        std::vector<token::LifecycleState>{token::LifecycleState::secured, token::LifecycleState::non_rot_debug});
  REQUIRE(config.platform.required_sw_components.size() == 2);
  CHECK(config.platform.required_sw_components[0].type == "TMM");
  CHECK(config.platform.required_sw_components[0].measurement == Bytes(32, 0xbb));
  CHECK_FALSE(config.platform.required_sw_components[1].type.has_value());
  CHECK(config.platform.required_sw_components[1].measurement == Bytes(48, 0xdd));
  CHECK(config.platform.device_issuer_sha256 == std::vector<Bytes>{Bytes(32, 0xcc)});

  SECTION("bad values name the key and what was expected") {
    CHECK(error_of("[attestation]\nallowed_lifecycle_states = [\"debug\"]\n")
              .find("attestation.allowed_lifecycle_states[0]: unknown lifecycle state \"debug\" (known: ") !=
          std::string::npos);
    CHECK(error_of("[attestation]\nallowed_lifecycle_states = []\n")
              .find("attestation.allowed_lifecycle_states: needs at least one state") != std::string::npos);
    CHECK(error_of("[attestation]\nrequired_sw_components = [\"TMM:12\"]\n")
              .find("attestation.required_sw_components[0]: expected [TYPE:]HEX") != std::string::npos);
    CHECK(error_of("[attestation]\ndevice_issuer_sha256 = [\"abcd\"]\n")
              .find("attestation.device_issuer_sha256[0]: expected a SHA-256 fingerprint") != std::string::npos);
  }
}

TEST_CASE("command-line flags override the configuration file") {
  auto config = expect_ok(parse("[server]\nlisten = [\"0.0.0.0:8443\"]\n[store]\ndatabase = \"/var/lib/db\"\n"));
  expect_ok(apply_command_line(
      config, flags({"--listen", "127.0.0.1:0", "--listen", "[::1]:0", "--database", "test.db", "--roots", "ca.pem",
                     "--kek-file", "kek", "--nonce-secret-file", "nonce", "--nonce-lifetime", "30", "--allow-legacy",
                     "--log-level", "warning", "--threads", "1", "--max-connections", "7"})));
  REQUIRE(config.listen.size() == 2);
  CHECK(config.listen[0].port == 0);
  CHECK(config.listen[1].host == "::1");
  CHECK(config.database == "test.db");
  CHECK(config.trusted_roots == std::vector<std::string>{"ca.pem"});
  CHECK(config.kek.file == "kek");
  CHECK(config.kek.credential.empty());
  CHECK(config.nonce_secret.file == "nonce");
  CHECK(config.nonce_lifetime == std::chrono::seconds(30));
  CHECK(config.allow_legacy);
  CHECK(config.log_level == LogLevel::warning);
  CHECK(config.limits.threads == 1);
  CHECK(config.limits.max_connections == 7);

  CHECK_FALSE(apply_command_line(config, flags({"--nonce-lifetime", "0"})));
  CHECK_FALSE(apply_command_line(config, flags({"--listen", "nope"})));
  CHECK_FALSE(apply_command_line(config, flags({"--log-level", "chatty"})));
  CHECK_FALSE(apply_command_line(config, flags({"--kek-file", "a", "--kek-credential", "b"})));
  CHECK_FALSE(parse_options({"--no-such-flag"}, daemon_option_specs()));
}

TEST_CASE("the admin socket is root-only unless admin.allowed_uid names one more uid") {
  // The default, and the shipped example, name nobody but root.
  CHECK_FALSE(Config{}.admin_allowed_uid.has_value());
  auto bytes = expect_ok(read_file(std::string(FDE_TEST_DATA) + "/../../packaging/fde-verifierd.toml", 1024 * 1024));
  CHECK_FALSE(expect_ok(parse_config(as_text(bytes), "fde-verifierd.toml", "/etc/fde-verifier")).admin_allowed_uid);
  CHECK_FALSE(expect_ok(parse("[admin]\nsocket = \"/run/x/admin.sock\"\n")).admin_allowed_uid);

  CHECK(expect_ok(parse("[admin]\nallowed_uid = 1000\n")).admin_allowed_uid == 1000u);
  CHECK(expect_ok(parse("[admin]\nallowed_uid = 4294967294\n")).admin_allowed_uid == 4294967294u);
  CHECK(error_of("[admin]\nallowed_uid = -1\n").find("admin.allowed_uid: must be 0..4294967294") != std::string::npos);
  CHECK(error_of("[admin]\nallowed_uid = 4294967295\n").find("admin.allowed_uid: must be") != std::string::npos);
  CHECK(error_of("[admin]\nallowed_uid = \"fde-verifier\"\n").find("expected an integer") != std::string::npos);

  Config config;
  expect_ok(apply_command_line(config, flags({"--admin-allowed-uid", "1234"})));
  CHECK(config.admin_allowed_uid == 1234u);
  CHECK_FALSE(apply_command_line(config, flags({"--admin-allowed-uid", "-1"})));
  CHECK_FALSE(apply_command_line(config, flags({"--admin-allowed-uid", "root"})));
  CHECK(config.admin_allowed_uid == 1234u);

  // The socket's access is fixed at start-up, so a reload that changes it asks for a restart.
  CHECK(settings_needing_restart(Config{}, config) == std::vector<std::string>{"admin.allowed_uid"});
}

TEST_CASE("validation asks for what a working daemon needs") {
  Config config;
  auto error = validate_config(config);
  REQUIRE_FALSE(error);
  CHECK(error.error().message.find("attestation.trusted_roots") != std::string::npos);
  config.trusted_roots = {"ca.pem"};
  CHECK(validate_config(config));
  config.kek = {};
  CHECK(validate_config(config).error().message.find("kek_file or kek_credential") != std::string::npos);
}

TEST_CASE("the store backend: sqlite by default, postgresql with a connection string and a password source") {
  CHECK(Config{}.store_backend == StoreBackend::sqlite);
  auto config = expect_ok(parse("[attestation]\ntrusted_roots = [\"ca.pem\"]\n[store]\nbackend = \"postgresql\"\n"
                                "conninfo = \"host=db dbname=fde sslmode=verify-full\"\npassword_file = \"db-password\"\n"
                                "pool_size = 8\n"));
  CHECK(config.store_backend == StoreBackend::postgresql);
  CHECK(config.postgres_conninfo == "host=db dbname=fde sslmode=verify-full");
  CHECK(config.postgres_password.file == "/etc/fde-verifier/db-password");
  CHECK(config.postgres_pool_size == 8);
  CHECK(validate_config(config));
  CHECK(describe_store(config) == "postgresql dbname=fde host=db sslmode=verify-full");
  // A password written into the connection string never reaches the logs.
  config.postgres_conninfo = "host=db dbname=fde password=hunter2";
  CHECK(describe_store(config).find("hunter2") == std::string::npos);
  config.postgres_conninfo.clear();
  CHECK(validate_config(config).error().message.find("store.conninfo is required") != std::string::npos);
  config.store_backend = StoreBackend::sqlite;
  config.postgres_conninfo = "host=db";
  CHECK(validate_config(config).error().message.find("are for backend = \"postgresql\"") != std::string::npos);

  CHECK(error_of("[store]\nbackend = \"mysql\"\n").find("store.backend: expected \"sqlite\" or \"postgresql\"") !=
        std::string::npos);
  CHECK(error_of("[store]\npassword_file = \"a\"\npassword_credential = \"b\"\n").find("not both") !=
        std::string::npos);
  CHECK(error_of("[store]\npool_size = 0\n").find("store.pool_size: must be 1..64") != std::string::npos);
  // A reload cannot move the daemon to another database.
  Config moved = config;
  moved.store_backend = StoreBackend::postgresql;
  CHECK(settings_needing_restart(config, moved) ==
        std::vector<std::string>{"store (backend, conninfo, password, pool_size)"});
}

TEST_CASE("listen addresses are parsed and formatted, IPv6 in brackets") {
  CHECK(expect_ok(parse_listen_address("127.0.0.1:8443")).port == 8443);
  CHECK(expect_ok(parse_listen_address("[::]:0")).host == "::");
  CHECK(format_listen_address({"::1", 8443}) == "[::1]:8443");
  CHECK(format_listen_address({"127.0.0.1", 1}) == "127.0.0.1:1");
  for (const char* bad : {"", ":1", "host", "::1:8443", "[::1]8443", "h:-1", "h:65536", "h:1x"}) {
    INFO(bad);
    CHECK_FALSE(parse_listen_address(bad));
  }
}

// --- secrets ---

TEST_CASE("a secret file must be private and long enough; hex text is decoded") {
  TempDir dir;
  const Bytes raw = crypto::random_bytes(48);
  const std::string raw_file = dir.write("raw", as_text(raw), 0600);
  auto secret = expect_ok(load_secret_file(raw_file, 32, 1024));
  CHECK(equal_constant_time(secret.view(), raw));

  const std::string hex_file = dir.write("hex", hex_encode(raw) + "\n", 0400);
  CHECK(equal_constant_time(expect_ok(load_secret_file(hex_file, 32, 1024)).view(), raw));

  const std::string readable = dir.write("readable", as_text(raw), 0640);
  auto refused = load_secret_file(readable, 32, 1024);
  REQUIRE_FALSE(refused);
  CHECK(refused.error().message.find("mode 0640") != std::string::npos);

  const std::string short_file = dir.write("short", std::string(16, 'x'), 0600);
  CHECK(load_secret_file(short_file, 32, 1024).error().message.find("has 16 bytes") != std::string::npos);
  CHECK_FALSE(load_secret_file(dir.path("missing"), 32, 1024));
}

TEST_CASE("a systemd credential is read from $CREDENTIALS_DIRECTORY") {
  TempDir dir;
  const Bytes raw = crypto::random_bytes(32);
  dir.write("nonce-secret", as_text(raw), 0400);
  ::setenv("CREDENTIALS_DIRECTORY", dir.root().c_str(), 1);
  auto secret = expect_ok(load_secret(SecretSource{"", "nonce-secret"}, 32, 1024));
  CHECK(equal_constant_time(secret.view(), raw));
  CHECK_FALSE(load_secret(SecretSource{"", "../nonce-secret"}, 32, 1024));
  ::unsetenv("CREDENTIALS_DIRECTORY");
  auto missing = load_secret(SecretSource{"", "nonce-secret"}, 32, 1024);
  REQUIRE_FALSE(missing);
  CHECK(missing.error().message.find("LoadCredential=nonce-secret") != std::string::npos);
}

// --- systemd notification ---

namespace {

// A datagram socket standing in for systemd's notification socket.
class NotifyListener {
 public:
  explicit NotifyListener(const std::string& name) : name_(name) {
    fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    REQUIRE(fd_ >= 0);
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    std::memcpy(address.sun_path, name.data(), name.size());
    if (name[0] == '@') address.sun_path[0] = '\0';
    const auto length = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + name.size() + (name[0] == '@' ? 0 : 1));
    REQUIRE(::bind(fd_, reinterpret_cast<const sockaddr*>(&address), length) == 0);
    timeval timeout{2, 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
  }
  ~NotifyListener() {
    ::close(fd_);
    if (name_[0] == '/') ::unlink(name_.c_str());
  }
  std::string receive() {
    char buffer[4096];
    const ssize_t n = ::recv(fd_, buffer, sizeof buffer, 0);
    return n > 0 ? std::string(buffer, static_cast<std::size_t>(n)) : std::string();
  }

 private:
  std::string name_;
  int fd_ = -1;
};

}  // namespace

TEST_CASE("sd_notify messages reach a path socket and an abstract one") {
  TempDir dir;
  for (const std::string& name : {dir.path("notify"), "@fde-test-notify-" + hex_encode(crypto::random_bytes(4))}) {
    INFO(name);
    NotifyListener listener(name);
    const SystemdNotifier notifier(name, std::chrono::microseconds(10'000'000));
    CHECK(notifier.enabled());
    expect_ok(notifier.ready("serving on 127.0.0.1:1"));
    const std::string ready = listener.receive();
    CHECK(ready.rfind("READY=1\nSTATUS=serving on 127.0.0.1:1\nMAINPID=", 0) == 0);
    expect_ok(notifier.watchdog_ping());
    CHECK(listener.receive() == "WATCHDOG=1");
    expect_ok(notifier.stopping());
    CHECK(listener.receive() == "STOPPING=1");
    CHECK(notifier.watchdog_interval() == std::chrono::milliseconds(5000));
  }
  const SystemdNotifier disabled("");
  CHECK_FALSE(disabled.enabled());
  CHECK(disabled.notify("READY=1"));
  CHECK_FALSE(disabled.watchdog_interval());
}

TEST_CASE("the operator listener and the attest rate limit: defaults, keys and flags") {
  const Config defaults;
  CHECK(defaults.operator_enabled);
  CHECK(defaults.operator_listen.host == "127.0.0.1");
  CHECK(defaults.operator_listen.port == 9180);
  CHECK(defaults.attest_rate_limit.per_minute == 60);
  CHECK(defaults.attest_rate_limit.burst == 30);

  auto config = expect_ok(parse("[operator]\nlisten = \"[::1]:0\"\n[rate_limit]\nattest_per_minute = 0\nattest_burst = 5\n"));
  CHECK(config.operator_enabled);
  CHECK(config.operator_listen.host == "::1");
  CHECK(config.operator_listen.port == 0);
  CHECK(config.attest_rate_limit.per_minute == 0);
  CHECK(config.attest_rate_limit.burst == 5);
  CHECK_FALSE(expect_ok(parse("[operator]\nenabled = false\n")).operator_enabled);
  CHECK(error_of("[operator]\nlisten = \"localhost\"\n").find("operator.listen: expected HOST:PORT") != std::string::npos);
  CHECK(error_of("[rate_limit]\nattest_burst = 0\n").find("rate_limit.attest_burst: must be 1..") != std::string::npos);
  CHECK(error_of("[rate_limit]\nattest_per_minute = -1\n").find("rate_limit.attest_per_minute: must be 0..") !=
        std::string::npos);

  Config flagged;
  expect_ok(apply_command_line(flagged, flags({"--operator-listen", "127.0.0.1:0"})));
  CHECK(flagged.operator_enabled);
  CHECK(flagged.operator_listen.port == 0);
  expect_ok(apply_command_line(flagged, flags({"--operator-listen", "off"})));
  CHECK_FALSE(flagged.operator_enabled);
  CHECK_FALSE(apply_command_line(flagged, flags({"--operator-listen", "nowhere"})));

  // Neither can change under a running daemon: a reload names them for a restart.
  Config changed = defaults;
  changed.operator_listen.port = 9181;
  changed.attest_rate_limit.burst = 10;
  CHECK(settings_needing_restart(defaults, changed) == std::vector<std::string>{"operator", "rate_limit"});
}

// --- log and metrics ---

TEST_CASE("log lines are logfmt, one line per event whatever the values hold") {
  std::string lines;
  Logger logger(LogLevel::info, [&](std::string_view line) { lines.append(line); });
  logger.info("attest", {{"image", "img-1"}, {"reason", "reference.rim: expected \"a\", found b\nlevel=error"}});
  logger.debug("hidden", {});
  CHECK(lines == "level=info event=attest image=img-1 reason=\"reference.rim: expected \\\"a\\\", found b\\nlevel=error\"\n");
  CHECK(logfmt_value("") == "\"\"");
  CHECK(logfmt_value("a=b") == "\"a=b\"");
  CHECK(logfmt_value("\x1b[2J") == "\"\\x1b[2J\"");
  logger.set_level(LogLevel::debug);
  logger.debug("shown", {});
  CHECK(lines.find("level=debug event=shown\n") != std::string::npos);
}

TEST_CASE("metrics render counters, a cumulative histogram and transport gauges") {
  Metrics metrics;
  metrics.set_transport_stats([] {
    TransportStats stats;
    stats.connections_accepted = 7;
    stats.connections_open = 2;
    return stats;
  });
  metrics.request_started();
  metrics.request_finished("/v1/attest", 200, std::chrono::milliseconds(3));
  metrics.request_started();
  metrics.request_finished("/v1/attest", 403, std::chrono::seconds(10));
  metrics.released();
  metrics.denied("reference.rim");
  metrics.denied("reference.rim");
  const std::string text = metrics.render();
  CHECK(text.find("fde_requests_total{endpoint=\"/v1/attest\",code=\"200\"} 1\n") != std::string::npos);
  CHECK(text.find("fde_requests_total{endpoint=\"/v1/attest\",code=\"403\"} 1\n") != std::string::npos);
  CHECK(text.find("fde_request_duration_seconds_bucket{endpoint=\"/v1/attest\",le=\"0.0025\"} 0\n") != std::string::npos);
  CHECK(text.find("fde_request_duration_seconds_bucket{endpoint=\"/v1/attest\",le=\"0.005\"} 1\n") != std::string::npos);
  CHECK(text.find("fde_request_duration_seconds_bucket{endpoint=\"/v1/attest\",le=\"5\"} 1\n") != std::string::npos);
  CHECK(text.find("fde_request_duration_seconds_bucket{endpoint=\"/v1/attest\",le=\"+Inf\"} 2\n") != std::string::npos);
  CHECK(text.find("fde_request_duration_seconds_count{endpoint=\"/v1/attest\"} 2\n") != std::string::npos);
  CHECK(text.find("fde_releases_total 1\n") != std::string::npos);
  CHECK(text.find("fde_denials_total{reason=\"reference.rim\"} 2\n") != std::string::npos);
  CHECK(text.find("fde_requests_in_flight 0\n") != std::string::npos);
  CHECK(text.find("fde_transport_connections_accepted_total 7\n") != std::string::npos);
  CHECK(text.find("fde_transport_connections_open 2\n") != std::string::npos);
  CHECK(Metrics::endpoint_label("/v1/attest?x=1") == "other");
  // Only the attestation port's paths are labels of their own.
  CHECK(Metrics::endpoint_label("/metrics") == "other");
  metrics.refused("nonce_forged");
  CHECK(metrics.render().find("fde_attest_refused_total{reason=\"nonce_forged\"} 1\n") != std::string::npos);
  // Absent until known.
  CHECK(text.find("fde_tls_certificate_expiry_timestamp_seconds") == std::string::npos);
  CHECK(text.find("fde_config_last_reload_successful") == std::string::npos);
  metrics.set_tls_certificate_expiry(1798761600);
  metrics.set_reload_result(false);
  const std::string later = metrics.render();
  CHECK(later.find("# TYPE fde_tls_certificate_expiry_timestamp_seconds gauge\n") != std::string::npos);
  CHECK(later.find("fde_tls_certificate_expiry_timestamp_seconds 1798761600\n") != std::string::npos);
  CHECK(later.find("fde_config_last_reload_successful 0\n") != std::string::npos);
}
