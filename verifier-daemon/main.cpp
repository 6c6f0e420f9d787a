// fde-verifierd: the key-release service. Parses flags, loads the configuration, wires the
// store, policy, APIs and servers together, then waits for signals.
//
// Exit status: 0 clean stop (SIGTERM/SIGINT); 1 runtime failure (database, binding a port,
// the admin socket); 2 bad usage or configuration (including a file the configuration
// names: roots, secrets, KEK, TLS pair).
#include <signal.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <chrono>
#include <ctime>
#include <iostream>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "common/util/process.hpp"
#include "common/util/file.hpp"
#include "common/util/secret_bytes.hpp"
#include "verifier-daemon/api/admin_api.hpp"
#include "verifier-daemon/api/attestation_api.hpp"
#include "verifier-daemon/api/operator_api.hpp"
#include "verifier-daemon/server/admin_socket.hpp"
#include "verifier-daemon/server/https_server.hpp"
#include "verifier-daemon/server/operator_server.hpp"
#include "verifier-daemon/service/runtime.hpp"
#include "verifier-daemon/service/sd_notify.hpp"

namespace {

using namespace fde;
using namespace fde::verifier;

constexpr int exit_clean = 0;
constexpr int exit_runtime = 1;
constexpr int exit_config = 2;
// Descriptors kept free of connections: listeners, the admin socket and its clients, SQLite.
constexpr std::uint64_t descriptor_reserve = 64;


// Blocked in every thread (threads inherit the mask), taken by sigtimedwait in main.
sigset_t handled_signals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGHUP);
  return set;
}

std::string usage() {
  return "usage: fde-verifierd [--config FILE] [OPTIONS]\n\n"
         "The virtCCA FDE key-release service: attests CVMs over TLS and releases their disk keys.\n"
         "Flags override the configuration file (see /usr/share/doc/fde-verifier/fde-verifierd.toml).\n"
         "Exit status: 0 clean stop; 1 runtime failure; 2 bad usage or configuration.\n\n" +
         options_help(daemon_option_specs());
}

// Everything a SIGHUP may replace, with what it replaces it in.
struct Running {
  Config config;
  const ParsedOptions& options;
  Logger& logger;
  AttestationApi& api;
  HttpsServer& server;
  const SystemdNotifier& notifier;
  Metrics& metrics;
  TlsCertificateValidity tls_validity;  // of the certificate being served
  // A reload comes from the main loop (SIGHUP) or an admin socket thread (`fde-admin
  // reload`): one at a time, and the daily expiry check reads what a reload writes.
  std::mutex mutex = {};
};

// At start, after each reload and once a day: the certificate's expiry in the log (a warning
// within tls.expiry_warning_days) and in the metrics.
void report_tls_expiry(Logger& logger, Metrics& metrics, const TlsCertificateValidity& validity, int warning_days) {
  metrics.set_tls_certificate_expiry(validity.not_after);
  const auto now = static_cast<std::int64_t>(std::time(nullptr));
  if (auto warning = tls_expiry_warning(validity, warning_days, now))
    logger.warning("tls_certificate_expiring", {{"not_after", validity.not_after_text},
                                                {"days_left", std::to_string(validity.days_left(now))},
                                                {"note", *warning}});
  else
    logger.info("tls_certificate", {{"not_after", validity.not_after_text}});
}

// From the main loop (SIGHUP) and from the admin socket (`fde-admin reload`, so systemd's
// ExecReload= learns the outcome): one at a time. systemd sees RELOADING=1 and then READY=1
// either way; a failure is in STATUS= and in the result.
Result<void> reload(Running& running) {
  std::lock_guard lock(running.mutex);
  running.logger.info("reload", {{"state", "started"}});
  (void)running.notifier.reloading();
  auto config = load_effective_config(running.options);
  Result<std::shared_ptr<const VerificationPolicy>> policy = fail(Errc::internal, "not loaded");
  if (config) policy = load_policy(*config);
  Result<TlsCertificateValidity> validity = fail(Errc::internal, "not loaded");
  if (config && policy) validity = check_tls_files(config->tls);
  Result<void> tls = validity ? Result<void>{} : tl::unexpected(validity.error());
  if (config && policy && tls) tls = running.server.reload_tls(config->tls);
  running.metrics.set_reload_result(config && policy && tls);
  if (!config || !policy || !tls) {
    const Error& error = !config ? config.error() : !policy ? policy.error() : tls.error();
    running.logger.error("reload", {{"state", "failed"}, {"error", error.describe()}, {"kept", "previous configuration"}});
    (void)running.notifier.ready("serving; the last reload FAILED (previous configuration kept): " + error.message);
    return tl::unexpected(error);
  }
  {
    running.api.set_policy(std::move(*policy));
    running.logger.set_level(config->log_level);
    for (const auto& setting : settings_needing_restart(running.config, *config))
      running.logger.warning("reload", {{"setting", setting}, {"note", "changed; takes effect after a restart"}});
    // Keep the running values of what was not applied, so the next comparison is honest.
    Config applied = running.config;
    applied.tls = config->tls;
    applied.trusted_roots = config->trusted_roots;
    applied.allow_legacy = config->allow_legacy;
    applied.platform = config->platform;
    applied.nonce_secret = config->nonce_secret;
    applied.retired_nonce_secret_files = config->retired_nonce_secret_files;
    applied.nonce_lifetime = config->nonce_lifetime;
    applied.log_level = config->log_level;
    applied.tls_expiry_warning_days = config->tls_expiry_warning_days;
    running.config = std::move(applied);
    running.tls_validity = *validity;
    running.logger.info("reload", {{"state", "done"}});
    report_tls_expiry(running.logger, running.metrics, running.tls_validity, running.config.tls_expiry_warning_days);
  }
  (void)running.notifier.ready("serving");
  return {};
}

// Waits for SIGTERM/SIGINT, reloading on SIGHUP and pinging the watchdog at half its period
// (whatever else wakes the loop, a ping is never later than that).
void serve_until_stopped(Running& running) {
  using namespace std::chrono;
  const sigset_t set = handled_signals();
  const auto interval = running.notifier.watchdog_interval();
  auto next_ping = steady_clock::now() + interval.value_or(hours(1));
  auto next_expiry_check = steady_clock::now() + hours(24);
  for (;;) {
    const auto now = steady_clock::now();
    if (now >= next_expiry_check) {
      std::lock_guard lock(running.mutex);
      report_tls_expiry(running.logger, running.metrics, running.tls_validity, running.config.tls_expiry_warning_days);
      next_expiry_check = now + hours(24);
    }
    if (interval && now >= next_ping) {
      (void)running.notifier.watchdog_ping();
      next_ping = now + *interval;
    }
    const auto wait = interval ? duration_cast<milliseconds>(next_ping - now) : milliseconds(hours(1));
    timespec timeout{};
    timeout.tv_sec = static_cast<time_t>(std::max<std::int64_t>(wait.count(), 0) / 1000);
    timeout.tv_nsec = static_cast<long>(std::max<std::int64_t>(wait.count(), 0) % 1000) * 1'000'000L;
    siginfo_t info{};
    const int signal_number = ::sigtimedwait(&set, &info, &timeout);
    if (signal_number < 0) continue;  // timeout (EAGAIN) or EINTR: ping if due, wait again
    if (signal_number == SIGHUP) {
      (void)reload(running);
      continue;
    }
    running.logger.info("stopping", {{"signal", signal_number == SIGTERM ? "SIGTERM" : "SIGINT"}});
    return;
  }
}

int run(const std::vector<std::string>& args) {
  auto options = parse_options(args, daemon_option_specs());
  if (!options) {
    std::cerr << "fde-verifierd: " << options.error().message << " (try --help)\n";
    return exit_config;
  }
  if (options->has("help")) {
    std::cout << usage();
    return exit_clean;
  }
  if (options->has("version")) {
    std::cout << "fde-verifierd " FDE_VERSION "\n";
    return exit_clean;
  }
  if (!options->positional().empty()) {
    std::cerr << "fde-verifierd: unexpected argument '" << options->positional().front() << "' (try --help)\n";
    return exit_config;
  }

  // Every secret (KEK, nonce secret, unwrapped disk keys, HPKE intermediates, and OpenSSL's
  // own: the TLS key, handshake key shares) in one locked arena from here on, instead of two
  // system calls per secret (about 12 per attestation). OpenSSL's use scales with the open
  // connections (each keeps its key share's private half, 32 to 128 bytes, until it closes)
  // plus the handshakes and requests being worked on; fde_locked_arena_bytes_used (/metrics)
  // shows it. OpenSSL fails, not falls back, when the arena is full (no handshake, and a
  // thread's first random_secret aborts), so SecretBytes leave it half the arena and lock
  // alone beyond that (docs/fde-verifierd.md, "Connections and memory").
  constexpr std::size_t arena_size = std::size_t{2} << 20;
  const LockedArena arena = init_locked_arena(arena_size);
  auto config = load_effective_config(*options);
  if (!config) {
    std::cerr << "fde-verifierd: configuration: " << config.error().message << "\n";
    return exit_config;
  }
  Logger logger(config->log_level, Logger::stderr_is_journal());
  if (arena != LockedArena::locked)
    logger.warning("secret_memory",
                   {{"state", arena == LockedArena::unlocked ? "arena not locked (RLIMIT_MEMLOCK): secrets may be swapped"
                                                             : "no locked arena (RLIMIT_MEMLOCK below 2 MiB?): each "
                                                               "secret locked on its own"}});
  auto config_failed = [&](const Error& error) {
    logger.error("config_failed", {{"error", error.describe()}});
    return exit_config;
  };
  auto policy = load_policy(*config);
  if (!policy) return config_failed(policy.error());
  auto kek = load_kek(*config);
  if (!kek) return config_failed(kek.error());
  auto tls_validity = check_tls_files(config->tls);
  if (!tls_validity) return config_failed(tls_validity.error());
  if (options->has("check-config")) {
    // A KEK that does not open the store is a configuration error (the start refuses it when
    // the store is opened below). Read-only here, so it is safe beside a running daemon.
    // PostgreSQL: read in a READ ONLY transaction, so the database must be reachable.
    if (auto ok = check_configured_store_kek(*config, *kek); !ok) return config_failed(ok.error());
    std::cout << "configuration OK\n";
    return exit_clean;
  }

  auto store = open_configured_store(*config, std::move(*kek));
  if (!store) {
    logger.error("store_failed", {{"store", describe_store(*config)}, {"error", store.error().describe()}});
    // A KEK that is not the store's: restarting would not help (exit 2 is not restarted).
    return store.error().code == Errc::verification_failed ? exit_config : exit_runtime;
  }

  // Every connection is a descriptor: the limit must cover max_connections plus what the
  // daemon holds anyway (listeners, the admin socket and its clients, the database and its
  // journal). If it cannot, fewer slots are offered rather than accept() failing with
  // EMFILE, which would hit honest and hostile clients alike.
  // (The configuration keeps the configured value, so a reload does not report a change.)
  ServerLimits limits = config->limits;
  const std::uint64_t open_files = raise_open_files_limit();
  if (open_files < limits.max_connections + descriptor_reserve) {
    const std::uint64_t fitting = open_files > 2 * descriptor_reserve ? open_files - descriptor_reserve : open_files / 2;
    logger.warning("fd_limit", {{"limit", std::to_string(open_files)},
                                {"max_connections", std::to_string(limits.max_connections)},
                                {"lowered_to", std::to_string(fitting)},
                                {"note", "raise LimitNOFILE= (or ulimit -n) to keep server.max_connections"}});
    limits.max_connections = static_cast<std::size_t>(std::max<std::uint64_t>(fitting, 1));
  }
  // OpenSSL's half of the arena against the key shares that open connections may hold (128
  // bytes each with P-521, the largest a client can pick).
  if (arena == LockedArena::locked && limits.max_connections * 128 > arena_size / 2)
    logger.warning("secret_memory", {{"max_connections", std::to_string(limits.max_connections)},
                                     {"note", "more open connections than the locked arena's OpenSSL half holds "
                                              "with P-521 key shares; past about 8,000 new handshakes can fail"}});

  Metrics metrics;
  AttestationOptions attestation_options;
  attestation_options.rate_limit = config->attest_rate_limit;
  AttestationApi api(std::move(*policy), **store, metrics, logger, [] { return Clock::now(); }, attestation_options);
  OperatorApi operator_api(**store, metrics, logger);
  AdminApi admin(**store, logger);
  std::atomic<Running*> reloadable{nullptr};  // set once everything a reload touches exists
  admin.set_reload_handler([&reloadable]() -> Result<void> {
    Running* running = reloadable.load();
    if (running == nullptr) return fail(Errc::unsupported, "the daemon is still starting; try again");
    return reload(*running);
  });

  auto server = HttpsServer::create(
      config->listen, config->tls, limits, [&api](const HttpRequest& request) { return api.handle(request); },
      &AttestationApi::body_limit);
  if (!server) {
    logger.error("listen_failed", {{"error", server.error().describe()}});
    return exit_runtime;
  }
  HttpsServer& https = **server;
  metrics.set_transport_stats([&https] { return https.stats(); });
  metrics.set_store_stats([&store = **store] { return store.stats(); });
  std::unique_ptr<OperatorServer> operator_server;
  if (config->operator_enabled) {
    auto created = OperatorServer::create(config->operator_listen,
                                          [&operator_api](const HttpRequest& request) { return operator_api.handle(request); });
    if (!created) {
      logger.error("listen_failed", {{"error", created.error().describe()}});
      return exit_runtime;
    }
    operator_server = std::move(*created);
  }
  AdminSocketLimits admin_limits;
  if (config->admin_allowed_uid) admin_limits.allowed_uid = static_cast<uid_t>(*config->admin_allowed_uid);
  auto admin_server = AdminSocketServer::create(
      config->admin_socket,
      [&admin](const AdminPeer& peer, const std::string& line) { return admin.handle(peer, line); }, admin_limits);
  if (!admin_server) {
    logger.error("admin_socket_failed", {{"path", config->admin_socket}, {"error", admin_server.error().describe()}});
    return exit_runtime;
  }
  https.start();
  if (operator_server) operator_server->start();
  (*admin_server)->start();

  // The addresses actually bound (port 0 resolved), for the operator and for tests.
  std::string addresses;
  std::string ready_lines;
  const auto ports = https.bound_ports();
  for (std::size_t i = 0; i < config->listen.size() && i < ports.size(); ++i) {
    const std::string address = format_listen_address({config->listen[i].host, ports[i]});
    addresses += (addresses.empty() ? "" : ", ") + address;
    ready_lines += address + "\n";
  }
  // The operator listener's line comes last and is marked, so that a reader that wants the
  // attestation port can take the first line.
  std::string operator_address = "off";
  if (operator_server) {
    operator_address = format_listen_address({config->operator_listen.host, operator_server->bound_port()});
    ready_lines += "operator " + operator_address + "\n";
  }
  std::cout << "listening on " << addresses << " (operator " << operator_address << ", admin socket "
            << config->admin_socket << ")" << std::endl;
  const std::string admin_users =
      config->admin_allowed_uid ? "root, uid " + std::to_string(*config->admin_allowed_uid) : std::string("root");
  const std::string rate_limit =
      config->attest_rate_limit.per_minute == 0
          ? std::string("off")
          : std::to_string(config->attest_rate_limit.per_minute) + "/min burst " +
                std::to_string(config->attest_rate_limit.burst);
  logger.info("started", {{"version", FDE_VERSION}, {"listen", addresses}, {"operator", operator_address},
                          {"attest_rate_limit", rate_limit}, {"admin_socket", config->admin_socket},
                          {"admin_users", admin_users}, {"database", config->database}});
  if (auto path = options->get("ready-file"))
    if (auto written = write_file_atomic(*path, as_bytes(ready_lines), 0644); !written)
      logger.warning("ready_file_failed", {{"error", written.error().describe()}});

  const SystemdNotifier notifier = SystemdNotifier::from_environment();
  if (auto ok = notifier.ready("serving on " + addresses); !ok)
    logger.warning("notify_failed", {{"error", ok.error().describe()}});

  report_tls_expiry(logger, metrics, *tls_validity, config->tls_expiry_warning_days);
  Running running{std::move(*config), *options, logger, api, https, notifier, metrics, *tls_validity};
  reloadable.store(&running);
  serve_until_stopped(running);
  reloadable.store(nullptr);

  (void)notifier.stopping();
  (*admin_server)->stop();
  if (operator_server) operator_server->stop();
  https.stop();
  logger.info("stopped", {});
  return exit_clean;
}

}  // namespace

int main(int argc, char** argv) {
  fde::keep_secrets_out_of_core_dumps();  // the KEK and, briefly, disk keys
  // Before any thread exists, so every thread inherits the mask and only sigtimedwait in
  // main sees these signals. SIGPIPE is ignored: a peer closing early is an I/O error.
  const sigset_t set = handled_signals();
  ::pthread_sigmask(SIG_BLOCK, &set, nullptr);
  ::signal(SIGPIPE, SIG_IGN);
  ::umask(077);
#ifdef __GLIBC__
  // Request bodies of up to 1.4 MB come and go with the traffic. A fixed mmap threshold
  // gives every allocation above it its own mapping, returned to the system when freed;
  // glibc's default raises the threshold after the first such free and then keeps those
  // bodies in its heaps, so the resident size would stay at the peak of a burst.
  ::mallopt(M_MMAP_THRESHOLD, 128 * 1024);
#endif
  return run(std::vector<std::string>(argv + 1, argv + argc));
}
