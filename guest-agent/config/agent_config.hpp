// fde-agent's configuration: a small key = value file baked into the initramfs (so it is
// measured), then optional rd.fde.<key>=<value> kernel arguments that override it. Every
// bad or missing setting is one line naming where it came from (docs/fde-agent.md).
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/util/bytes.hpp"
#include "common/util/error.hpp"

namespace fde::agent {

using Milliseconds = std::chrono::milliseconds;

enum class FailurePolicy { poweroff, wait, passphrase };
std::string_view failure_policy_name(FailurePolicy policy);

enum class PlatformKind { tsi, sim };
std::string_view platform_kind_name(PlatformKind kind);

// "https://192.0.2.10:8443". Only IP literals: a static glibc cannot load the NSS plugins
// that name resolution needs, and the initramfs has no resolver configuration anyway.
struct VerifierUrl {
  std::string text;  // as written, for status lines
  std::string host;  // "192.0.2.10" or "::1" (no brackets)
  std::uint16_t port = 443;
};
Result<VerifierUrl> parse_verifier_url(std::string_view text);

struct AgentConfig {
  std::string image_id;
  std::vector<VerifierUrl> verifiers;  // tried in this order
  std::string ca_file;                 // PEM; the only CA the verifiers' certificates may chain to
  std::string server_name;             // name checked in the certificate; empty: the URL's IP
  std::string luks_uuid;               // canonical lowercase 8-4-4-4-12
  std::string luks_name;               // device-mapper name; empty: "luks-<uuid>"
  // The data segment cipher the LUKS2 header must name and the opened mapping must use.
  std::string luks_cipher = "aes-xts-plain64";
  PlatformKind platform = PlatformKind::tsi;
  std::string sim_dir;                 // sim only; empty: QEMU fw_cfg opt/fde/*
  FailurePolicy failure_policy = FailurePolicy::poweroff;
  Milliseconds network_timeout{std::chrono::seconds(60)};   // waiting for a route to a verifier
  Milliseconds device_timeout{std::chrono::seconds(60)};    // waiting for the LUKS device node
  Milliseconds attempt_timeout{std::chrono::seconds(30)};   // one challenge + attest exchange
  Milliseconds overall_timeout{std::chrono::seconds(300)};  // from start to giving up
  Milliseconds backoff_initial{std::chrono::seconds(1)};
  Milliseconds backoff_max{std::chrono::seconds(30)};
  std::string cryptsetup;  // empty: the first of /usr/sbin, /sbin, /usr/bin, /bin
  // Check values (common/crypto/key_check.hpp) of the key the verifier releases and of the
  // LUKS volume key, written by fde-image; required, file only.
  Bytes released_key_check;
  Bytes volume_key_check;

  std::string mapper_name() const { return luks_name.empty() ? "luks-" + luks_uuid : luks_name; }
};

inline constexpr const char* default_config_path = "/etc/fde/agent.conf";
inline constexpr std::size_t max_config_file_size = 64 * 1024;
inline constexpr std::string_view kernel_argument_prefix = "rd.fde.";

// Applies one setting. `origin` prefixes errors ("/etc/fde/agent.conf:7",
// "kernel argument rd.fde.verifier"). `from_kernel` refuses the settings that must come from
// the measured file only (ca_file, cryptsetup, luks_cipher, released_key_check, volume_key_check).
Result<void> apply_setting(AgentConfig& config, std::string_view key, std::string_view value,
                           const std::string& origin, bool from_kernel);

// "key = value" lines; '#' starts a comment line; blank lines are ignored. Unknown keys and
// repeated single-valued keys are errors. `verifier` may repeat (or list URLs with commas).
Result<void> parse_config_text(AgentConfig& config, std::string_view text, const std::string& source);

// Splits a kernel command line as the kernel does: whitespace separates, double quotes group.
std::vector<std::string> split_kernel_command_line(std::string_view text);
// Applies every rd.fde.<key>=<value>; the first rd.fde.verifier replaces the file's list.
// Unknown rd.fde.* names are errors; other arguments are ignored.
Result<void> apply_kernel_command_line(AgentConfig& config, std::string_view text);

// Required settings present and deadlines consistent; the message says how to set what is
// missing.
Result<void> validate_config(const AgentConfig& config);

// "30s", "500ms", "5m", "1h", or a plain number of seconds.
Result<Milliseconds> parse_duration(std::string_view text);
std::string format_duration(Milliseconds duration);  // "1.5s", "30s", "5m"

// File, then kernel command line (nullopt: none), then validation.
Result<AgentConfig> load_config(const std::string& path, const std::optional<std::string>& kernel_command_line);

}  // namespace fde::agent
