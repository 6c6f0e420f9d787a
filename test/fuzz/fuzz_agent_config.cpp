// libFuzzer target: the agent's configuration file and kernel command line (the command line
// comes from the host's boot configuration). Input: configuration text, then an optional
// "\n---cmdline---\n" and a kernel command line.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "guest-agent/config/agent_config.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  constexpr std::string_view separator = "\n---cmdline---\n";
  const auto split = input.find(separator);
  const std::string_view text = input.substr(0, split);
  const std::string_view cmdline = split == std::string_view::npos ? std::string_view{} : input.substr(split + separator.size());

  fde::agent::AgentConfig config;
  if (!fde::agent::parse_config_text(config, text, "fuzz.conf")) return 0;
  (void)fde::agent::split_kernel_command_line(cmdline);
  if (!fde::agent::apply_kernel_command_line(config, cmdline)) return 0;
  (void)fde::agent::validate_config(config);
  (void)fde::agent::parse_verifier_url(cmdline);
  if (auto duration = fde::agent::parse_duration(cmdline)) (void)fde::agent::format_duration(*duration);
  return 0;
}
