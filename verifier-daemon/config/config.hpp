// fde-verifierd's configuration: one TOML file (packaging/fde-verifierd.toml documents every
// setting), then command-line flags that override it. Unknown keys, wrong types and bad values
// are errors that name the file, line and key path ("verifier.toml:7:1: server.listen[0]: ...").
#pragma once

#include <chrono>
#include <memory>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/token/platform_policy.hpp"
#include "common/util/command_line.hpp"
#include "common/util/error.hpp"
#include "verifier-daemon/config/secret_file.hpp"
#include "verifier-daemon/limits/peer_rate_limiter.hpp"
#include "verifier-daemon/log/logger.hpp"
#include "verifier-daemon/server/https_server.hpp"
#include "verifier-daemon/store/store.hpp"

namespace fde::verifier {

enum class StoreBackend { sqlite, postgresql };

struct Config {
  // [server]
  std::vector<ListenAddress> listen{{"0.0.0.0", 8443}};
  ServerLimits limits;
  // [operator]: plain HTTP for /healthz, /readyz, /metrics
  bool operator_enabled = true;
  ListenAddress operator_listen{"127.0.0.1", 9180};
  // [rate_limit]: per source address (IPv6: per /64)
  RateLimit attest_rate_limit;
  // [tls]
  TlsFiles tls{"/etc/fde-verifier/tls/server.crt", "/etc/fde-verifier/tls/server.key"};
  int tls_expiry_warning_days = 30;  // warn when the certificate expires within this many days
  // [attestation]
  std::vector<std::string> trusted_roots;  // PEM files; self-signed = root, others intermediates
  bool allow_legacy = false;
  token::PlatformPolicy platform;  // allowed_lifecycle_states, required_sw_components, device_issuer_sha256
  // [nonce]
  SecretSource nonce_secret{"", "nonce-secret"};
  std::vector<std::string> retired_nonce_secret_files;  // still verify, never issue
  std::chrono::seconds nonce_lifetime{60};
  // [store]
  StoreBackend store_backend = StoreBackend::sqlite;
  std::string database = "/var/lib/fde-verifier/verifier.db";  // backend "sqlite"
  SecretSource kek{"", "kek"};
  // backend "postgresql": a libpq connection string, the password (optional: none, or from
  // the connection string or ~/.pgpass) and this replica's connection limit.
  std::string postgres_conninfo;
  SecretSource postgres_password;
  std::size_t postgres_pool_size = 4;
  // [admin]
  std::string admin_socket = "/run/fde-verifier/admin.sock";
  // The one uid besides root that may use the admin socket; unset (the default): root only.
  std::optional<std::uint32_t> admin_allowed_uid;
  // [log]
  LogLevel log_level = LogLevel::info;
};

constexpr std::chrono::seconds min_nonce_lifetime{5};
constexpr std::chrono::seconds max_nonce_lifetime{3600};
constexpr std::size_t max_config_file_size = 256 * 1024;
// server.max_buffered_body_bytes: at least two of the largest request (/v1/attest, about
// 1.4 MB), so one large body never locks out another.
constexpr std::size_t min_buffered_body_bytes = 4 * 1024 * 1024;
constexpr std::size_t max_buffered_body_bytes = std::size_t{64} * 1024 * 1024 * 1024;
// The largest valid uid: (uid_t)-1 means "no change" to the kernel's set*id calls.
constexpr std::int64_t max_admin_allowed_uid = 4'294'967'294;

// Parses TOML text over the defaults. `source` names the file in messages; relative paths in
// it are taken relative to `base_directory` (the config file's directory).
Result<Config> parse_config(std::string_view toml_text, const std::string& source, const std::string& base_directory);
Result<Config> load_config_file(const std::string& path);

// The daemon's command-line options (fde-verifierd --help shows them).
const std::vector<OptionSpec>& daemon_option_specs();
// Applies the overriding flags (--listen, --database, ...) to `config`; paths relative to
// the working directory.
Result<void> apply_command_line(Config& config, const ParsedOptions& options);
// The checks that need the whole picture (a root configured, a KEK source, ...).
Result<void> validate_config(const Config& config);

// The configured store backend, opened with `kek` (the PostgreSQL password is read here).
Result<std::unique_ptr<Store>> open_configured_store(const Config& config, KeyEncryptionKey kek);
// `--check-config`: whether `kek` opens the configured store, read without writing anything
// (check_sqlite_store_kek / check_postgres_store_kek). Errc::verification_failed when not.
Result<void> check_configured_store_kek(const Config& config, const KeyEncryptionKey& kek);
// "sqlite" or "postgresql <conninfo>", for logs (the connection string holds no password
// unless the operator put one there: use password_file).
std::string describe_store(const Config& config);

// "127.0.0.1:8443", "[::1]:8443"; port 0 asks for a free port.
Result<ListenAddress> parse_listen_address(std::string_view text);
std::string format_listen_address(const ListenAddress& address);

}  // namespace fde::verifier
