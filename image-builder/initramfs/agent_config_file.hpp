// The agent configuration fde-image puts into the archive it appends to the initramfs
// (/etc/fde/agent.conf and the verifier CA beside it): the checks of the verifier options,
// the `verifier` lines build writes, and the reading and rewriting rebind does. The syntax is
// the agent's (docs/fde-agent.md): "key = value" lines, '#' comment lines, `verifier` may
// repeat, every other key appears once.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "common/util/bytes.hpp"

namespace fde::image {

inline constexpr const char* agent_conf_path = "/etc/fde/agent.conf";
inline constexpr const char* verifier_ca_path = "/etc/fde/verifier-ca.pem";
inline constexpr std::size_t max_agent_conf_size = 64 * 1024;  // the agent's own limit

// Each URL is https:// with a host, without whitespace or commas.
Result<void> check_verifier_urls(const std::vector<std::string>& urls);
// The PEM file at `path`, read (at most 1 MiB) and checked to hold certificates.
Result<Bytes> load_verifier_ca(const std::string& path);

// "verifier = URL\n" for each URL, in order.
std::string verifier_config_lines(const std::vector<std::string>& urls);

// What rebind needs to know from an agent.conf fde-image wrote.
struct AgentConfigSummary {
  std::string image_id;
  std::string luks_uuid;
  std::string ca_file;
  std::vector<std::string> verifiers;  // as written (a comma list counts as one line's value)
  std::string released_key_check;      // hex, as written
  std::string volume_key_check;
};
// Refuses a file without image_id, luks_uuid, ca_file, a verifier and both key check values
// (fde-image writes them all), with a repeated key other than `verifier`, or a line that is
// not "key = value".
Result<AgentConfigSummary> read_agent_config_summary(std::string_view text);

// `text` with every `verifier` line removed and verifier_config_lines(urls) where the first
// one was; every other line, comment and the order stay as they were.
Result<std::string> replace_verifier_lines(std::string_view text, const std::vector<std::string>& urls);

}  // namespace fde::image
