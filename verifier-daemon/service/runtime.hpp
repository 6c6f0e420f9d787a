// Turning a Config into the daemon's working objects: the effective configuration (file +
// flags), the verification policy (roots, nonce secrets), the KEK, and a check of the TLS
// files. Used at start-up and again on SIGHUP, so a reload runs exactly the start-up checks.
#pragma once

#include <memory>
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

// The certificate chain parses and the private key belongs to its first certificate, so a
// bad pair is reported as a configuration error before the server is built (and a reload
// with a bad pair keeps the old one).
Result<void> check_tls_files(const TlsFiles& tls);

// Settings a SIGHUP cannot apply (listen addresses, the operator listener, database, KEK,
// admin socket, limits, the rate limit), named for the "restart needed" warning; empty if
// none changed.
std::vector<std::string> settings_needing_restart(const Config& running, const Config& loaded);

}  // namespace fde::verifier
