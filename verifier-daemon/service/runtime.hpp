// Turning a Config into the daemon's working objects: the effective configuration (file +
// flags), the verification policy (roots, nonce secrets), the KEK, and a check of the TLS
// files. Used at start-up and again on SIGHUP, so a reload runs exactly the start-up checks.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/util/command_line.hpp"
#include "verifier-daemon/config/config.hpp"
#include "verifier-daemon/policy/decision.hpp"
#include "verifier-daemon/store/key_encryption_key.hpp"

namespace fde::verifier {

// --config FILE (if given) over the defaults, then the flags, then validate_config().
Result<Config> load_effective_config(const ParsedOptions& options);

// Reads attestation.trusted_roots (self-signed certificates are trust anchors, the others
// intermediates; at least one anchor) and the nonce secrets (>= 32 bytes, 0600).
Result<std::shared_ptr<const VerificationPolicy>> load_policy(const Config& config);

Result<KeyEncryptionKey> load_kek(const Config& config);

// The validity of the server certificate (the chain's first), as check_tls_files found it.
struct TlsCertificateValidity {
  std::int64_t not_before = 0;  // seconds since the epoch
  std::int64_t not_after = 0;
  std::string not_after_text;   // "2027-01-31T12:00:00Z"
  // Whole days left at `now`, rounded down.
  std::int64_t days_left(std::int64_t now) const { return (not_after - now) / 86400; }
};

// The certificate chain parses, its first certificate is valid at `now` (not expired, not
// yet to come), the private key belongs to it, and the key file is not open to group or
// others. A bad pair is reported as a configuration error before the server is built (and a
// reload with a bad pair keeps the old one).
Result<TlsCertificateValidity> check_tls_files(const TlsFiles& tls, std::int64_t now);
Result<TlsCertificateValidity> check_tls_files(const TlsFiles& tls);  // now = the system clock

// A warning text when the certificate expires within `warning_days` days, else nullopt.
std::optional<std::string> tls_expiry_warning(const TlsCertificateValidity& validity, int warning_days,
                                              std::int64_t now);

// Settings a SIGHUP cannot apply (listen addresses, the operator listener, database, KEK,
// admin socket, limits, the rate limit), named for the "restart needed" warning; empty if
// none changed.
std::vector<std::string> settings_needing_restart(const Config& running, const Config& loaded);

}  // namespace fde::verifier
