// Parsing of the agent's configuration file and of its rd.fde.* kernel arguments.
#include "guest-agent/config/agent_config.hpp"

#include <arpa/inet.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <limits>

#include "common/crypto/key_check.hpp"
#include "common/protocol/messages.hpp"
#include "common/util/file.hpp"

namespace fde::agent {

namespace {

std::string_view trim(std::string_view text) {
  const char* space = " \t\r\n";
  std::size_t start = text.find_first_not_of(space);
  if (start == std::string_view::npos) return {};
  std::size_t end = text.find_last_not_of(space);
  return text.substr(start, end - start + 1);
}

std::vector<std::string_view> split_commas(std::string_view text) {
  std::vector<std::string_view> parts;
  while (true) {
    std::size_t comma = text.find(',');
    std::string_view part = trim(text.substr(0, comma));
    if (!part.empty()) parts.push_back(part);
    if (comma == std::string_view::npos) break;
    text = text.substr(comma + 1);
  }
  return parts;
}

tl::unexpected<Error> bad(const std::string& origin, std::string_view key, const std::string& message) {
  return fail(Errc::invalid_argument, origin + ": " + std::string(key) + ": " + message);
}

Result<std::string> canonical_uuid(std::string_view text) {
  // 8-4-4-4-12 hex digits, either case; stored lowercase like /dev/disk/by-uuid.
  if (text.size() != 36) return fail(Errc::invalid_argument, "'" + std::string(text) + "' is not a UUID (8-4-4-4-12 hex digits)");
  std::string out(text);
  for (std::size_t i = 0; i < out.size(); ++i) {
    bool dash_position = i == 8 || i == 13 || i == 18 || i == 23;
    if (dash_position ? out[i] != '-' : !std::isxdigit(static_cast<unsigned char>(out[i])))
      return fail(Errc::invalid_argument, "'" + std::string(text) + "' is not a UUID (8-4-4-4-12 hex digits)");
    out[i] = static_cast<char>(std::tolower(static_cast<unsigned char>(out[i])));
  }
  return out;
}

// A device-mapper name: what /dev/mapper can hold and a shell hook can pass on unquoted.
bool valid_mapper_name(std::string_view name) {
  if (name.empty() || name.size() > 127 || name == "." || name == "..") return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.';
  });
}

// A dm-crypt cipher specification as LUKS2 stores it ("aes-xts-plain64",
// "capi:xts(aes)-plain64"); never a null cipher, which would leave the disk in the clear.
Result<void> check_cipher(std::string_view cipher) {
  const bool ok = cipher.size() <= 64 && std::all_of(cipher.begin(), cipher.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == ':' || c == '(' || c == ')';
  });
  if (!ok) return fail(Errc::invalid_argument, "'" + std::string(cipher) + "' is not a cipher specification like aes-xts-plain64");
  std::string lower(cipher);
  for (auto& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (lower.find("null") != std::string::npos)
    return fail(Errc::invalid_argument, "'" + std::string(cipher) + "' is a null cipher: the disk would not be encrypted");
  return {};
}

bool absolute_path(std::string_view path) { return !path.empty() && path.front() == '/'; }

// Settings that can be given once; `verifier` accumulates instead.
enum class Key {
  image_id, verifier, ca_file, server_name, luks_uuid, luks_name, luks_cipher, platform, sim_dir, failure_policy,
  network_timeout, device_timeout, attempt_timeout, overall_timeout, backoff_initial, backoff_max, cryptsetup,
  released_key_check, volume_key_check,
};
struct KeyInfo {
  std::string_view name;
  Key key;
  bool file_only;  // trust anchors, programs and the expected cipher come only from the measured file
};
constexpr KeyInfo keys[] = {
    {"image_id", Key::image_id, false},
    {"verifier", Key::verifier, false},
    {"ca_file", Key::ca_file, true},
    {"server_name", Key::server_name, false},
    {"luks_uuid", Key::luks_uuid, false},
    {"luks_name", Key::luks_name, false},
    // What a LUKS2 header must say is part of the trust anchor: a kernel argument could
    // otherwise accept a header the host weakened.
    {"luks_cipher", Key::luks_cipher, true},
    {"platform", Key::platform, false},
    {"sim_dir", Key::sim_dir, false},
    {"failure_policy", Key::failure_policy, false},
    {"network_timeout", Key::network_timeout, false},
    {"device_timeout", Key::device_timeout, false},
    {"attempt_timeout", Key::attempt_timeout, false},
    {"overall_timeout", Key::overall_timeout, false},
    {"backoff_initial", Key::backoff_initial, false},
    {"backoff_max", Key::backoff_max, false},
    {"cryptsetup", Key::cryptsetup, true},
    // What the released key and the opened volume's key must hash to: from a kernel argument
    // they would be the host's choice, and a host-made volume would pass.
    {"released_key_check", Key::released_key_check, true},
    {"volume_key_check", Key::volume_key_check, true},
};

const KeyInfo* find_key(std::string_view name) {
  for (const auto& info : keys)
    if (info.name == name) return &info;
  return nullptr;
}

std::string known_keys() {
  std::string out;
  for (const auto& info : keys) out += (out.empty() ? "" : ", ") + std::string(info.name);
  return out;
}

}  // namespace

std::string_view failure_policy_name(FailurePolicy policy) {
  switch (policy) {
    case FailurePolicy::poweroff: return "poweroff";
    case FailurePolicy::wait: return "wait";
    case FailurePolicy::passphrase: return "passphrase";
  }
  return "poweroff";
}

std::string_view platform_kind_name(PlatformKind kind) { return kind == PlatformKind::sim ? "sim" : "tsi"; }

Result<VerifierUrl> parse_verifier_url(std::string_view text) {
  const std::string quoted = "'" + std::string(text) + "'";
  constexpr std::string_view scheme = "https://";
  if (text.substr(0, scheme.size()) != scheme)
    return fail(Errc::invalid_argument, quoted + " must start with https://");
  std::string_view rest = text.substr(scheme.size());
  if (!rest.empty() && rest.back() == '/') rest.remove_suffix(1);
  if (rest.find('/') != std::string_view::npos || rest.find('?') != std::string_view::npos ||
      rest.find('@') != std::string_view::npos)
    return fail(Errc::invalid_argument, quoted + " must be https://HOST[:PORT] with no path");
  std::string_view host = rest, port_text;
  if (!rest.empty() && rest.front() == '[') {
    std::size_t close = rest.find(']');
    if (close == std::string_view::npos) return fail(Errc::invalid_argument, quoted + ": unclosed '[' in the host");
    host = rest.substr(1, close - 1);
    std::string_view after = rest.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') return fail(Errc::invalid_argument, quoted + ": expected ':PORT' after ']'");
      port_text = after.substr(1);
    }
  } else if (std::size_t colon = rest.rfind(':'); colon != std::string_view::npos) {
    host = rest.substr(0, colon);
    port_text = rest.substr(colon + 1);
  }
  VerifierUrl url;
  url.text = std::string(text);
  url.host = std::string(host);
  unsigned char address[sizeof(in6_addr)];
  bool is_v4 = ::inet_pton(AF_INET, url.host.c_str(), address) == 1;
  bool is_v6 = !is_v4 && ::inet_pton(AF_INET6, url.host.c_str(), address) == 1;
  if (!is_v4 && !is_v6)
    return fail(Errc::invalid_argument,
                quoted + ": the host must be an IP address (the agent cannot resolve names in the initramfs)");
  if (is_v6 && rest.front() != '[') return fail(Errc::invalid_argument, quoted + ": write an IPv6 host as [ADDRESS]");
  if (!port_text.empty() || (rest.size() > 0 && rest.back() == ':')) {
    unsigned port = 0;
    auto [end, error] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
    if (error != std::errc() || end != port_text.data() + port_text.size() || port == 0 || port > 65535)
      return fail(Errc::invalid_argument, quoted + ": the port must be a number from 1 to 65535");
    url.port = static_cast<std::uint16_t>(port);
  }
  return url;
}

Result<Milliseconds> parse_duration(std::string_view text) {
  text = trim(text);
  std::uint64_t number = 0;
  auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), number);
  if (error != std::errc() || end == text.data())
    return fail(Errc::invalid_argument, "'" + std::string(text) + "' is not a duration (e.g. 30s, 500ms, 5m)");
  std::string_view unit(end, static_cast<std::size_t>(text.data() + text.size() - end));
  std::uint64_t scale = 0;
  if (unit.empty() || unit == "s") scale = 1000;
  else if (unit == "ms") scale = 1;
  else if (unit == "m") scale = 60'000;
  else if (unit == "h") scale = 3'600'000;
  else return fail(Errc::invalid_argument, "'" + std::string(text) + "' is not a duration (e.g. 30s, 500ms, 5m)");
  // A week is far beyond any boot; the cap keeps the arithmetic on time points safe.
  constexpr std::uint64_t max_ms = 7ull * 24 * 3'600'000;
  if (number > max_ms / scale) return fail(Errc::invalid_argument, "'" + std::string(text) + "' is longer than a week");
  return Milliseconds(static_cast<Milliseconds::rep>(number * scale));
}

std::string format_duration(Milliseconds duration) {
  auto ms = duration.count();
  if (ms < 1000) return std::to_string(ms) + "ms";
  if (ms % 60'000 == 0 && ms >= 120'000) return std::to_string(ms / 60'000) + "m";
  if (ms % 1000 == 0) return std::to_string(ms / 1000) + "s";
  return std::to_string(ms / 1000) + "." + std::to_string((ms % 1000) / 100) + "s";
}

Result<void> apply_setting(AgentConfig& config, std::string_view key, std::string_view value,
                           const std::string& origin, bool from_kernel) {
  const KeyInfo* info = find_key(key);
  if (info == nullptr)
    return fail(Errc::invalid_argument,
                origin + ": unknown setting '" + std::string(key) + "' (known: " + known_keys() + ")");
  if (from_kernel && info->file_only)
    return bad(origin, key, "can only be set in the configuration file inside the initramfs");
  value = trim(value);
  if (value.empty()) return bad(origin, key, "empty value");
  const std::string text(value);
  auto duration = [&](Milliseconds& field) -> Result<void> {
    auto parsed = parse_duration(value);
    if (!parsed) return bad(origin, key, parsed.error().message);
    if (parsed->count() == 0) return bad(origin, key, "must be more than zero");
    field = *parsed;
    return {};
  };
  switch (info->key) {
    case Key::image_id:
      if (auto valid = protocol::validate_image_id(value); !valid) return bad(origin, key, valid.error().message);
      config.image_id = text;
      return {};
    case Key::verifier:
      for (auto part : split_commas(value)) {
        auto url = parse_verifier_url(part);
        if (!url) return bad(origin, key, url.error().message);
        config.verifiers.push_back(std::move(*url));
      }
      return {};
    case Key::ca_file:
    case Key::sim_dir:
    case Key::cryptsetup:
      if (!absolute_path(value)) return bad(origin, key, "must be an absolute path");
      (info->key == Key::ca_file ? config.ca_file : info->key == Key::sim_dir ? config.sim_dir : config.cryptsetup) = text;
      return {};
    case Key::server_name: {
      bool ok = std::all_of(value.begin(), value.end(), [](char c) {
        return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '.' || c == ':';
      });
      if (!ok || value.size() > 253) return bad(origin, key, "'" + text + "' is not a host name or IP address");
      config.server_name = text;
      return {};
    }
    case Key::luks_uuid: {
      auto uuid = canonical_uuid(value);
      if (!uuid) return bad(origin, key, uuid.error().message);
      config.luks_uuid = std::move(*uuid);
      return {};
    }
    case Key::luks_name:
      if (!valid_mapper_name(value)) return bad(origin, key, "'" + text + "' is not a device-mapper name ([A-Za-z0-9._-])");
      config.luks_name = text;
      return {};
    case Key::luks_cipher:
      if (auto valid = check_cipher(value); !valid) return bad(origin, key, valid.error().message);
      config.luks_cipher = text;
      return {};
    case Key::platform:
      if (value == "tsi") config.platform = PlatformKind::tsi;
      else if (value == "sim") config.platform = PlatformKind::sim;
      else return bad(origin, key, "'" + text + "' is not tsi or sim");
      return {};
    case Key::failure_policy:
      if (value == "poweroff") config.failure_policy = FailurePolicy::poweroff;
      else if (value == "wait") config.failure_policy = FailurePolicy::wait;
      else if (value == "passphrase") config.failure_policy = FailurePolicy::passphrase;
      else return bad(origin, key, "'" + text + "' is not poweroff, wait or passphrase");
      return {};
    case Key::network_timeout: return duration(config.network_timeout);
    case Key::device_timeout: return duration(config.device_timeout);
    case Key::attempt_timeout: return duration(config.attempt_timeout);
    case Key::overall_timeout: return duration(config.overall_timeout);
    case Key::backoff_initial: return duration(config.backoff_initial);
    case Key::backoff_max: return duration(config.backoff_max);
    case Key::released_key_check:
    case Key::volume_key_check: {
      auto check = crypto::parse_key_check(value);
      if (!check) return bad(origin, key, check.error().message);
      (info->key == Key::released_key_check ? config.released_key_check : config.volume_key_check) = std::move(*check);
      return {};
    }
  }
  return {};
}

Result<void> parse_config_text(AgentConfig& config, std::string_view text, const std::string& source) {
  std::vector<std::string_view> seen;
  std::size_t line_number = 0;
  while (!text.empty()) {
    std::size_t end = text.find('\n');
    std::string_view line = text.substr(0, end);
    text = end == std::string_view::npos ? std::string_view{} : text.substr(end + 1);
    ++line_number;
    line = trim(line);
    if (line.empty() || line.front() == '#') continue;
    const std::string origin = source + ":" + std::to_string(line_number);
    std::size_t equals = line.find('=');
    if (equals == std::string_view::npos)
      return fail(Errc::invalid_argument, origin + ": expected 'key = value', found '" + std::string(line) + "'");
    std::string_view key = trim(line.substr(0, equals));
    if (key != "verifier" && std::find(seen.begin(), seen.end(), key) != seen.end())
      return fail(Errc::invalid_argument, origin + ": " + std::string(key) + " is set twice");
    if (auto ok = apply_setting(config, key, line.substr(equals + 1), origin, false); !ok) return ok;
    seen.push_back(key);
  }
  return {};
}

std::vector<std::string> split_kernel_command_line(std::string_view text) {
  std::vector<std::string> arguments;
  std::string current;
  bool quoted = false, have = false;
  for (char c : text) {
    if (c == '"') {
      quoted = !quoted;
      have = true;
    } else if (!quoted && std::isspace(static_cast<unsigned char>(c))) {
      if (have) arguments.push_back(std::move(current));
      current.clear();
      have = false;
    } else {
      current.push_back(c);
      have = true;
    }
  }
  if (have) arguments.push_back(std::move(current));
  return arguments;
}

Result<void> apply_kernel_command_line(AgentConfig& config, std::string_view text) {
  bool verifiers_replaced = false;
  for (const auto& argument : split_kernel_command_line(text)) {
    if (argument.rfind(kernel_argument_prefix, 0) != 0) continue;
    std::size_t equals = argument.find('=');
    std::string key = argument.substr(kernel_argument_prefix.size(),
                                      equals == std::string::npos ? std::string::npos : equals - kernel_argument_prefix.size());
    const std::string origin = "kernel argument " + argument.substr(0, equals);
    if (equals == std::string::npos) return fail(Errc::invalid_argument, origin + ": expected rd.fde." + key + "=VALUE");
    if (key == "verifier" && !verifiers_replaced) {
      // The command line names the verifiers to use, not extra ones after the file's.
      config.verifiers.clear();
      verifiers_replaced = true;
    }
    if (auto ok = apply_setting(config, key, std::string_view(argument).substr(equals + 1), origin, true); !ok)
      return ok;
  }
  return {};
}

Result<void> validate_config(const AgentConfig& config) {
  auto missing = [](std::string_view key, std::string_view example) {
    return fail(Errc::invalid_argument, std::string(key) + " is not set (set '" + std::string(key) + " = " +
                                            std::string(example) + "' in the configuration file or rd.fde." +
                                            std::string(key) + "=)");
  };
  if (config.image_id.empty()) return missing("image_id", "IMAGE-ID");
  if (config.verifiers.empty()) return missing("verifier", "https://192.0.2.10:8443");
  if (config.ca_file.empty())
    return fail(Errc::invalid_argument, "ca_file is not set (set 'ca_file = /etc/fde/verifier-ca.pem' in the configuration file)");
  if (config.luks_uuid.empty()) return missing("luks_uuid", "UUID of the LUKS2 volume");
  // Fail closed: without them a host-made volume could not be told from the enrolled one.
  auto missing_check = [](std::string_view key) {
    return fail(Errc::invalid_argument,
                std::string(key) + " is not set: fde-image build writes it into the configuration (an image built "
                                   "before key check values existed must be built again; docs/fde-agent.md)");
  };
  if (config.released_key_check.empty()) return missing_check("released_key_check");
  if (config.volume_key_check.empty()) return missing_check("volume_key_check");
  if (config.attempt_timeout > config.overall_timeout)
    return fail(Errc::invalid_argument, "attempt_timeout (" + format_duration(config.attempt_timeout) +
                                            ") is longer than overall_timeout (" +
                                            format_duration(config.overall_timeout) + ")");
  if (config.backoff_initial > config.backoff_max)
    return fail(Errc::invalid_argument, "backoff_initial (" + format_duration(config.backoff_initial) +
                                            ") is longer than backoff_max (" + format_duration(config.backoff_max) + ")");
  return {};
}

Result<AgentConfig> load_config(const std::string& path, const std::optional<std::string>& kernel_command_line) {
  AgentConfig config;
  auto text = read_file(path, max_config_file_size);
  if (!text) return fail(Errc::invalid_argument, "cannot read the configuration: " + text.error().message);
  if (auto ok = parse_config_text(config, as_text(*text), path); !ok) return tl::unexpected(ok.error());
  if (kernel_command_line) {
    if (auto ok = apply_kernel_command_line(config, *kernel_command_line); !ok) return tl::unexpected(ok.error());
  }
  if (auto ok = validate_config(config); !ok) return fail(Errc::invalid_argument, path + ": " + ok.error().message);
  return config;
}

}  // namespace fde::agent
