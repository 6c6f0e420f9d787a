// Reading and writing the agent configuration fde-image appends (agent_config_file.hpp).
#include "image-builder/initramfs/agent_config_file.hpp"

#include <algorithm>
#include <map>

#include "common/crypto/certificate.hpp"
#include "common/util/file.hpp"

namespace fde::image {
namespace {

constexpr std::size_t max_ca_size = 1u << 20;

std::string_view trim(std::string_view text) {
  const auto start = text.find_first_not_of(" \t\r");
  if (start == std::string_view::npos) return {};
  return text.substr(start, text.find_last_not_of(" \t\r") - start + 1);
}

struct ConfigLine {
  std::string_view raw;  // without its newline
  std::string_view key;  // empty for blank and comment lines
  std::string_view value;
};

Result<std::vector<ConfigLine>> split_config(std::string_view text) {
  if (text.size() > max_agent_conf_size)
    return fail(Errc::too_large, "agent.conf is larger than the agent reads (64 KiB)");
  std::vector<ConfigLine> lines;
  std::size_t number = 0;
  while (!text.empty()) {
    const auto end = text.find('\n');
    ConfigLine line{text.substr(0, end), {}, {}};
    text = end == std::string_view::npos ? std::string_view{} : text.substr(end + 1);
    ++number;
    const auto content = trim(line.raw);
    if (!content.empty() && content.front() != '#') {
      const auto equals = content.find('=');
      if (equals == std::string_view::npos)
        return fail(Errc::malformed, "agent.conf line " + std::to_string(number) + ": not 'key = value'");
      line.key = trim(content.substr(0, equals));
      line.value = trim(content.substr(equals + 1));
    }
    lines.push_back(line);
  }
  return lines;
}

}  // namespace

Result<void> check_verifier_urls(const std::vector<std::string>& urls) {
  if (urls.empty()) return fail(Errc::invalid_argument, "at least one --verifier URL is required");
  for (const auto& url : urls) {
    const std::string_view host = std::string_view(url).substr(std::min<std::size_t>(url.size(), 8));
    if (url.rfind("https://", 0) != 0 || host.empty() || host.front() == '/' || host.front() == ':' ||
        url.find_first_of(" \t\r\n,") != std::string::npos)
      return fail(Errc::invalid_argument, "--verifier " + url + ": must be an https:// URL with a host");
  }
  return {};
}

Result<Bytes> load_verifier_ca(const std::string& path) {
  auto ca = read_file(path, max_ca_size);
  if (!ca) return fail_with_context("--verifier-ca", ca.error());
  const std::string text(ca->begin(), ca->end());
  if (text.find("-----BEGIN CERTIFICATE-----") == std::string::npos)
    return fail(Errc::malformed, "--verifier-ca " + path + ": no PEM certificate");
  if (auto certificates = crypto::Certificate::load_all(*ca); !certificates)
    return fail(Errc::malformed, "--verifier-ca " + path + ": " + certificates.error().message);
  return std::move(*ca);
}

std::string verifier_config_lines(const std::vector<std::string>& urls) {
  std::string text;
  for (const auto& url : urls) text += "verifier = " + url + "\n";
  return text;
}

Result<AgentConfigSummary> read_agent_config_summary(std::string_view text) {
  auto lines = split_config(text);
  if (!lines) return tl::unexpected(lines.error());
  AgentConfigSummary summary;
  std::map<std::string_view, std::string*> single = {
      {"image_id", &summary.image_id},
      {"luks_uuid", &summary.luks_uuid},
      {"ca_file", &summary.ca_file},
      {"released_key_check", &summary.released_key_check},
      {"volume_key_check", &summary.volume_key_check},
  };
  std::vector<std::string_view> seen;
  for (const auto& line : *lines) {
    if (line.key.empty()) continue;
    if (line.key == "verifier") {
      summary.verifiers.emplace_back(line.value);
      continue;
    }
    if (std::find(seen.begin(), seen.end(), line.key) != seen.end())
      return fail(Errc::malformed, "agent.conf sets " + std::string(line.key) + " twice");
    seen.push_back(line.key);
    if (auto it = single.find(line.key); it != single.end()) *it->second = std::string(line.value);
  }
  for (const auto& [key, value] : single)
    if (value->empty()) return fail(Errc::malformed, "agent.conf does not set " + std::string(key));
  if (summary.verifiers.empty()) return fail(Errc::malformed, "agent.conf names no verifier");
  return summary;
}

Result<std::string> replace_verifier_lines(std::string_view text, const std::vector<std::string>& urls) {
  auto lines = split_config(text);
  if (!lines) return tl::unexpected(lines.error());
  std::string out;
  bool placed = false;
  for (const auto& line : *lines) {
    if (line.key == "verifier") {
      if (!placed) out += verifier_config_lines(urls);
      placed = true;
      continue;
    }
    out.append(line.raw);
    out += '\n';
  }
  if (!placed) return fail(Errc::malformed, "agent.conf names no verifier");
  // split_config drops the last newline's empty remainder; a file without one keeps none.
  if (!text.empty() && text.back() != '\n' && !out.empty() && out.back() == '\n' &&
      (lines->empty() || lines->back().key != "verifier"))
    out.pop_back();
  return out;
}

}  // namespace fde::image
