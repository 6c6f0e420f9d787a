// Loading what the configuration names: roots, secrets, the KEK and the TLS pair.
#include "verifier-daemon/service/runtime.hpp"

#include <sys/stat.h>

#include <cstdio>
#include <ctime>

#include "common/crypto/certificate.hpp"
#include "common/crypto/keys.hpp"
#include "common/util/file.hpp"
#include "verifier-daemon/config/secret_file.hpp"

namespace fde::verifier {

namespace {

constexpr std::size_t max_pem_file = 1024 * 1024;
constexpr std::size_t max_nonce_secret = 1024;

}  // namespace

Result<Config> load_effective_config(const ParsedOptions& options) {
  Config config;
  if (auto path = options.get("config")) {
    auto loaded = load_config_file(*path);
    if (!loaded) return tl::unexpected(loaded.error());
    config = std::move(*loaded);
  }
  if (auto ok = apply_command_line(config, options); !ok) return tl::unexpected(ok.error());
  if (auto ok = validate_config(config); !ok) return tl::unexpected(ok.error());
  return config;
}

Result<std::shared_ptr<const VerificationPolicy>> load_policy(const Config& config) {
  DeciderConfig decider;
  decider.allow_legacy = config.allow_legacy;
  decider.platform = config.platform;
  for (const auto& path : config.trusted_roots) {
    auto bytes = read_file(path, max_pem_file);
    if (!bytes) return fail_with_context("attestation.trusted_roots", bytes.error());
    auto certificates = crypto::Certificate::load_all(*bytes);
    if (!certificates) return fail_with_context("attestation.trusted_roots: " + path, certificates.error());
    for (auto& certificate : *certificates)
      (certificate.is_self_signed() ? decider.trusted_roots : decider.intermediates).push_back(std::move(certificate));
  }
  if (decider.trusted_roots.empty())
    return fail(Errc::invalid_argument,
                "attestation.trusted_roots: no self-signed root certificate in the files given (intermediates alone "
                "anchor nothing)");

  std::vector<SecretBytes> secrets;
  auto primary = load_secret(config.nonce_secret, NonceService::min_secret_size, max_nonce_secret);
  if (!primary) return fail_with_context("nonce secret (" + config.nonce_secret.describe() + ")", primary.error());
  secrets.push_back(std::move(*primary));
  for (const auto& file : config.retired_nonce_secret_files) {
    auto retired = load_secret_file(file, NonceService::min_secret_size, max_nonce_secret);
    if (!retired) return fail_with_context("nonce.retired_secret_files", retired.error());
    secrets.push_back(std::move(*retired));
  }
  auto nonces = NonceService::create(std::move(secrets), config.nonce_lifetime);
  if (!nonces) return fail_with_context("nonce", nonces.error());
  return std::make_shared<const VerificationPolicy>(std::move(*nonces), std::move(decider));
}

Result<KeyEncryptionKey> load_kek(const Config& config) {
  auto kek = config.kek.file.empty() ? KeyEncryptionKey::load_credential(config.kek.credential)
                                     : KeyEncryptionKey::load_file(config.kek.file);
  if (!kek) return fail_with_context("key-encryption key (" + config.kek.describe() + ")", kek.error());
  return kek;
}

Result<TlsCertificateValidity> check_tls_files(const TlsFiles& tls) {
  return check_tls_files(tls, static_cast<std::int64_t>(std::time(nullptr)));
}

Result<TlsCertificateValidity> check_tls_files(const TlsFiles& tls, std::int64_t now) {
  auto chain_bytes = read_file(tls.certificate_chain, max_pem_file);
  if (!chain_bytes) return fail_with_context("tls.certificate", chain_bytes.error());
  auto chain = crypto::Certificate::load_all(*chain_bytes);
  if (!chain) return fail_with_context("tls.certificate: " + tls.certificate_chain, chain.error());
  // An expired (or not yet valid) certificate fails every agent's handshake, and each boot
  // then times out: refused here, where the operator sees it, rather than at the first boot.
  TlsCertificateValidity validity;
  const auto not_before = chain->front().not_before_seconds();
  const auto not_after = chain->front().not_after_seconds();
  if (!not_before || !not_after)
    return fail(Errc::malformed, "tls.certificate " + tls.certificate_chain + ": unreadable validity dates");
  validity.not_before = *not_before;
  validity.not_after = *not_after;
  validity.not_after_text = chain->front().not_after();
  if (now > validity.not_after)
    return fail(Errc::invalid_argument, "tls.certificate " + tls.certificate_chain + ": expired on " +
                                            validity.not_after_text + "; agents would refuse it (renew it)");
  if (now < validity.not_before)
    return fail(Errc::invalid_argument, "tls.certificate " + tls.certificate_chain + ": not valid before " +
                                            chain->front().not_before() + " (check the clock, or the certificate)");

  // The private key is a secret like the KEK: a file that group or others can read is refused.
  struct stat st {};
  if (::stat(tls.private_key.c_str(), &st) == 0 && (st.st_mode & 077) != 0) {
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
    return fail(Errc::invalid_argument, "tls.private_key " + tls.private_key + ": mode " + mode +
                                            " lets group or others read it; chmod 600 it (owned by the service "
                                            "user), and treat the key as exposed if others could read it");
  }

  auto key_bytes = read_file(tls.private_key, max_pem_file);
  if (!key_bytes) return fail_with_context("tls.private_key", key_bytes.error());
  // Only the public half is kept; the private key's text is wiped at once.
  SecretBytes key_text = SecretBytes::copy_of(*key_bytes);
  wipe_bytes(*key_bytes);
  auto key = crypto::PublicKey::from_pem(as_text(key_text.view()));
  if (!key) return fail_with_context("tls.private_key: " + tls.private_key, key.error());
  if (!chain->front().public_key().equals(*key))
    return fail(Errc::invalid_argument, "tls.private_key " + tls.private_key + " does not belong to the first certificate in " +
                                            tls.certificate_chain);
  return validity;
}

std::optional<std::string> tls_expiry_warning(const TlsCertificateValidity& validity, int warning_days,
                                              std::int64_t now) {
  if (validity.not_after - now >= static_cast<std::int64_t>(warning_days) * 86400) return std::nullopt;
  return "the TLS certificate expires on " + validity.not_after_text + " (in " +
         std::to_string(validity.days_left(now)) + " days); renew it and reload";
}

std::vector<std::string> settings_needing_restart(const Config& running, const Config& loaded) {
  std::vector<std::string> changed;
  auto same_listen = [](const std::vector<ListenAddress>& a, const std::vector<ListenAddress>& b) {
    if (a.size() != b.size()) return false;
    for (std::size_t i = 0; i < a.size(); ++i)
      if (a[i].host != b[i].host || a[i].port != b[i].port) return false;
    return true;
  };
  if (!same_listen(running.listen, loaded.listen)) changed.push_back("server.listen");
  if (running.operator_enabled != loaded.operator_enabled ||
      (running.operator_enabled && !same_listen({running.operator_listen}, {loaded.operator_listen})))
    changed.push_back("operator");
  if (running.attest_rate_limit.per_minute != loaded.attest_rate_limit.per_minute ||
      running.attest_rate_limit.burst != loaded.attest_rate_limit.burst)
    changed.push_back("rate_limit");
  const ServerLimits& a = running.limits;
  const ServerLimits& b = loaded.limits;
  if (a.max_connections != b.max_connections || a.max_connections_per_peer != b.max_connections_per_peer ||
      a.shed_after != b.shed_after || a.max_active != b.max_active || a.queue_timeout != b.queue_timeout ||
      a.max_buffered_body_bytes != b.max_buffered_body_bytes || a.first_byte_timeout != b.first_byte_timeout ||
      a.header_timeout != b.header_timeout || a.handshake_timeout != b.handshake_timeout ||
      a.request_timeout != b.request_timeout || a.idle_timeout != b.idle_timeout ||
      a.max_header_bytes != b.max_header_bytes || a.max_requests_per_connection != b.max_requests_per_connection ||
      a.threads != b.threads || a.blocking_threads != b.blocking_threads)
    changed.push_back("server limits");
  if (running.database != loaded.database) changed.push_back("store.database");
  if (running.store_backend != loaded.store_backend || running.postgres_conninfo != loaded.postgres_conninfo ||
      running.postgres_password.file != loaded.postgres_password.file ||
      running.postgres_password.credential != loaded.postgres_password.credential ||
      running.postgres_pool_size != loaded.postgres_pool_size)
    changed.push_back("store (backend, conninfo, password, pool_size)");
  if (running.kek.file != loaded.kek.file || running.kek.credential != loaded.kek.credential)
    changed.push_back("store.kek");
  if (running.admin_socket != loaded.admin_socket) changed.push_back("admin.socket");
  if (running.admin_allowed_uid != loaded.admin_allowed_uid) changed.push_back("admin.allowed_uid");
  return changed;
}

}  // namespace fde::verifier
