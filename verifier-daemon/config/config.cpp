// TOML configuration (toml++) and the command-line flags that override it. toml++ throws on
// a syntax error; the exception is caught here and becomes an fde::Error (style.md: "one
// error idiom").
#include "verifier-daemon/config/config.hpp"

#include <algorithm>
#include <charconv>
#include <filesystem>
#include <functional>
#include <map>

#include <toml++/toml.h>

#include "common/protocol/messages.hpp"
#include "common/util/file.hpp"

namespace fde::verifier {

namespace {

namespace fs = std::filesystem;

static_assert(min_buffered_body_bytes >= 2 * protocol::max_attest_body,
              "the body budget must hold two of the largest requests");

// --- reading TOML nodes, with errors that say where ---

class Reader {
 public:
  Reader(std::string source, std::string base_directory)
      : source_(std::move(source)), base_(std::move(base_directory)) {}

  tl::unexpected<Error> error_at(const toml::node& node, const std::string& path, const std::string& what,
                                 Errc code = Errc::invalid_argument) const {
    return error_at(node.source(), path, what, code);
  }
  tl::unexpected<Error> error_at(const toml::source_region& region, const std::string& path, const std::string& what,
                                 Errc code = Errc::invalid_argument) const {
    const auto& position = region.begin;
    std::string where = source_;
    if (position.line > 0) where += ":" + std::to_string(position.line) + ":" + std::to_string(position.column);
    return fail(code, where + ": " + path + ": " + what);
  }

  static std::string type_name(const toml::node& node) {
    switch (node.type()) {
      case toml::node_type::table: return "a table";
      case toml::node_type::array: return "an array";
      case toml::node_type::string: return "a string";
      case toml::node_type::integer: return "an integer";
      case toml::node_type::floating_point: return "a floating-point number";
      case toml::node_type::boolean: return "a boolean";
      default: return "a date or time";
    }
  }

  Result<std::string> text(const toml::node& node, const std::string& path, bool allow_empty = false) const {
    const auto* value = node.as_string();
    if (value == nullptr) return error_at(node, path, "expected a string, found " + type_name(node));
    if (!allow_empty && value->get().empty()) return error_at(node, path, "must not be empty");
    return value->get();
  }

  Result<std::string> path_value(const toml::node& node, const std::string& path) const {
    auto value = text(node, path);
    if (!value) return value;
    return resolve(*value);
  }

  Result<std::int64_t> integer(const toml::node& node, const std::string& path, std::int64_t min,
                               std::int64_t max) const {
    const auto* value = node.as_integer();
    if (value == nullptr) return error_at(node, path, "expected an integer, found " + type_name(node));
    if (value->get() < min || value->get() > max)
      return error_at(node, path, "must be " + std::to_string(min) + ".." + std::to_string(max) + ", found " +
                                      std::to_string(value->get()));
    return value->get();
  }

  Result<bool> boolean(const toml::node& node, const std::string& path) const {
    const auto* value = node.as_boolean();
    if (value == nullptr) return error_at(node, path, "expected true or false, found " + type_name(node));
    return value->get();
  }

  // An array of strings; `each` turns one element into whatever the setting holds.
  Result<void> strings(const toml::node& node, const std::string& path,
                       const std::function<Result<void>(const toml::node&, const std::string&, std::string)>& each) const {
    const auto* array = node.as_array();
    if (array == nullptr) return error_at(node, path, "expected an array of strings, found " + type_name(node));
    for (std::size_t i = 0; i < array->size(); ++i) {
      const std::string element_path = path + "[" + std::to_string(i) + "]";
      auto value = text((*array)[i], element_path);
      if (!value) return tl::unexpected(value.error());
      if (auto ok = each((*array)[i], element_path, std::move(*value)); !ok) return ok;
    }
    return {};
  }

  std::string resolve(const std::string& path) const {
    if (path.empty() || path.front() == '/' || base_.empty()) return path;
    return (fs::path(base_) / path).lexically_normal().string();
  }

 private:
  std::string source_;
  std::string base_;
};

using Setting = std::function<Result<void>(const Reader&, const toml::node&, const std::string&, Config&)>;
using Section = std::map<std::string, Setting, std::less<>>;

Result<std::chrono::milliseconds> milliseconds(const Reader& r, const toml::node& node, const std::string& path) {
  auto value = r.integer(node, path, 100, 3'600'000);
  if (!value) return tl::unexpected(value.error());
  return std::chrono::milliseconds(*value);
}

// Every key the file may hold, by section. A key that is not here is an error.
const std::map<std::string, Section, std::less<>>& schema() {
  static const std::map<std::string, Section, std::less<>> sections = {
      {"server",
       {
           {"listen",
            [](const Reader& r, const toml::node& n, const std::string& p, Config& c) -> Result<void> {
              std::vector<ListenAddress> listen;
              auto ok = r.strings(n, p, [&](const toml::node& e, const std::string& ep, std::string v) -> Result<void> {
                auto address = parse_listen_address(v);
                if (!address) return r.error_at(e, ep, address.error().message);
                listen.push_back(*address);
                return {};
              });
              if (!ok) return ok;
              if (listen.empty()) return r.error_at(n, p, "needs at least one address");
              c.listen = std::move(listen);
              return {};
            }},
           {"threads",
            [](const Reader& r, const toml::node& n, const std::string& p, Config& c) -> Result<void> {
              auto v = r.integer(n, p, 0, 256);
              if (!v) return tl::unexpected(v.error());
              c.limits.threads = static_cast<unsigned>(*v);
              return {};
            }},
           {"blocking_threads",
            [](const Reader& r, const toml::node& n, const std::string& p, Config& c) -> Result<void> {
              auto v = r.integer(n, p, 1, 256);
              if (!v) return tl::unexpected(v.error());
              c.limits.blocking_threads = static_cast<unsigned>(*v);
              return {};
            }},
           {"max_connections",
            [](const Reader& r, const toml::node& n, const std::string& p, Config& c) -> Result<void> {
              auto v = r.integer(n, p, 1, 1'000'000);
              if (!v) return tl::unexpected(v.error());
              c.limits.max_connections = static_cast<std::size_t>(*v);
              return {};
            }},
           {"max_connections_per_peer",
            [](const Reader& r, const toml::node& n, const std::string& p, Config& c) -> Result<void> {
              auto v = r.integer(n, p, 0, 1'000'000);
              if (!v) return tl::unexpected(v.error());
              c.limits.max_connections_per_peer = static_cast<std::size_t>(*v);
              return {};
            }},
           {"max_active_connections",
            [](const Reader& r, const toml::node& n, const std::string& p, Config& c) -> Result<void> {
              auto v = r.integer(n, p, 0, 1'000'000);
              if (!v) return tl::unexpected(v.error());
              c.limits.max_active = static_cast<std::size_t>(*v);
              return {};
            }},
           {"queue_timeout_ms",
            [](const Reader& r, const toml::node& n, const std::string& p, Config& c) -> Result<void> {
              auto v = milliseconds(r, n, p);
              if (!v) return tl::unexpected(v.error());
              c.limits.queue_timeout = *v;
              return {};
            }},
           {"shed_after_ms",
            [](const Reader& r, const toml::node& n, const std::string& p, Config& c) -> Result<void> {
              auto v = milliseconds(r, n, p);
              if (!v) return tl::unexpected(v.error());
              c.limits.shed_after = *v;
              return {};
            }},
           {"max_buffered_body_bytes",
            [](const Reader& r, const toml::node& n, const std::string& p, Config& c) -> Result<void> {
              auto v = r.integer(n, p, static_cast<std::int64_t>(min_buffered_body_bytes),
                                 static_cast<std::int64_t>(max_buffered_body_bytes));
              if (!v) return tl::unexpected(v.error());
              c.limits.max_buffered_body_bytes = static_cast<std::size_t>(*v);
              return {};
            }},
           {"max_requests_per_connection",
            [](const Reader& r, const toml::node& n, const std::string& p, Config& c) -> Result<void> {
              auto v = r.integer(n, p, 1, 1'000'000);
              if (!v) return tl::unexpected(v.error());
              c.limits.max_requests_per_connection = static_cast<std::size_t>(*v);
              return {};
            }},
           {"max_header_bytes",
            [](const Reader& r, const toml::node& n, const std::string& p, Config& c) -> Result<void> {
              auto v = r.integer(n, p, 1024, 1024 * 1024);
              if (!v) return tl::unexpected(v.error());
              c.limits.max_header_bytes = static_cast<std::size_t>(*v);
              return {};
            }},
           {"handshake_timeout_ms",
            [](const Reader& r, const toml::node& n, const std::string& p, Config& c) -> Result<void> {
              auto v = milliseconds(r, n, p);
              if (!v) return tl::unexpected(v.error());
              c.limits.handshake_timeout = *v;
              return {};
            }},
           {"first_byte_timeout_ms",
            [](const Reader& r, const toml::node& n, const std::string& p, Config& c) -> Result<void> {
              auto v = milliseconds(r, n, p);
              if (!v) return tl::unexpected(v.error());
              c.limits.first_byte_timeout = *v;
              return {};
            }},
           {"header_timeout_ms",
            [](const Reader& r, const toml::node& n, const std::string& p, Config& c) -> Result<void> {
              auto v = milliseconds(r, n, p);
              if (!v) return tl::unexpected(v.error());
              c.limits.header_timeout = *v;
              return {};
            }},
           {"request_timeout_ms",
            [](const Reader& r, const toml::node& n, const std::string& p, Config& c) -> Result<void> {
              auto v = milliseconds(r, n, p);
              if (!v) return tl::unexpected(v.error());
              c.limits.request_timeout = *v;
              return {};
            }},
           {"idle_timeout_ms",
            [](const Reader& r, const toml::node& n, const std::string& p, Config& c) -> Result<void> {
              auto v = milliseconds(r, n, p);
              if (!v) return tl::unexpected(v.error());
              c.limits.idle_timeout = *v;
              return {};
            }},
       }},
      {"operator",
       {
           {"enabled",
            [](const Reader& r, const toml::node& n, const std::string& p, Config& c) -> Result<void> {
              auto v = r.boolean(n, p);
              if (!v) return tl::unexpected(v.error());
              c.operator_enabled = *v;
              return {};
            }},
           {"listen",
            [](const Reader& r, const toml::node& n, const std::string& p, Config& c) -> Result<void> {
              auto v = r.text(n, p);
              if (!v) return tl::unexpected(v.error());
              auto address = parse_listen_address(*v);
              if (!address) return r.error_at(n, p, address.error().message);
              c.operator_listen = *address;
              return {};
            }},
       }},
      {"rate_limit",
       {
           {"attest_per_minute",
            [](const Reader& r, const toml::node& n, const std::string& p, Config& c) -> Result<void> {
              auto v = r.integer(n, p, 0, 1'000'000);
              if (!v) return tl::unexpected(v.error());
              c.attest_rate_limit.per_minute = static_cast<unsigned>(*v);
              return {};
            }},
           {"attest_burst",
            [](const Reader& r, const toml::node& n, const std::string& p, Config& c) -> Result<void> {
              auto v = r.integer(n, p, 1, 1'000'000);
              if (!v) return tl::unexpected(v.error());
              c.attest_rate_limit.burst = static_cast<unsigned>(*v);
              return {};
            }},
       }},
      {"tls",
       {
           {"certificate",
            [](const Reader& r, const toml::node& n, const std::string& p, Config& c) -> Result<void> {
              auto v = r.path_value(n, p);
              if (!v) return tl::unexpected(v.error());
              c.tls.certificate_chain = *v;
              return {};
            }},
           {"private_key",
            [](const Reader& r, const toml::node& n, const std::string& p, Config& c) -> Result<void> {
              auto v = r.path_value(n, p);
              if (!v) return tl::unexpected(v.error());
              c.tls.private_key = *v;
              return {};
            }},
           {"expiry_warning_days",
            [](const Reader& r, const toml::node& n, const std::string& p, Config& c) -> Result<void> {
              auto v = r.integer(n, p, 0, 3650);
              if (!v) return tl::unexpected(v.error());
              c.tls_expiry_warning_days = static_cast<int>(*v);
              return {};
            }},
       }},
      {"attestation",
       {
           {"trusted_roots",
            [](const Reader& r, const toml::node& n, const std::string& p, Config& c) -> Result<void> {
              std::vector<std::string> roots;
              auto ok = r.strings(n, p, [&](const toml::node&, const std::string&, std::string v) -> Result<void> {
                roots.push_back(r.resolve(v));
                return {};
              });
              if (!ok) return ok;
              c.trusted_roots = std::move(roots);
              return {};
            }},
           {"allow_legacy",
            [](const Reader& r, const toml::node& n, const std::string& p, Config& c) -> Result<void> {
              auto v = r.boolean(n, p);
              if (!v) return tl::unexpected(v.error());
              c.allow_legacy = *v;
              return {};
            }},
           {"allowed_lifecycle_states",
            [](const Reader& r, const toml::node& n, const std::string& p, Config& c) -> Result<void> {
              std::vector<token::LifecycleState> states;
              auto ok = r.strings(n, p, [&](const toml::node& e, const std::string& ep, std::string v) -> Result<void> {
                auto state = token::lifecycle_state_from_name(v);
                if (!state) return r.error_at(e, ep, state.error().message);
                states.push_back(*state);
                return {};
              });
              if (!ok) return ok;
              // An empty list would deny every full token; say so instead of starting like that.
              if (states.empty()) return r.error_at(n, p, "needs at least one state (the default is [\"secured\"])");
              c.platform.allowed_lifecycle_states = std::move(states);
              return {};
            }},
           {"required_sw_components",
            [](const Reader& r, const toml::node& n, const std::string& p, Config& c) -> Result<void> {
              std::vector<token::RequiredSwComponent> required;
              auto ok = r.strings(n, p, [&](const toml::node& e, const std::string& ep, std::string v) -> Result<void> {
                auto component = token::parse_required_sw_component(v);
                if (!component) return r.error_at(e, ep, component.error().message);
                required.push_back(std::move(*component));
                return {};
              });
              if (!ok) return ok;
              c.platform.required_sw_components = std::move(required);
              return {};
            }},
           {"device_issuer_sha256",
            [](const Reader& r, const toml::node& n, const std::string& p, Config& c) -> Result<void> {
              std::vector<Bytes> pins;
              auto ok = r.strings(n, p, [&](const toml::node& e, const std::string& ep, std::string v) -> Result<void> {
                auto pin = token::parse_sha256_fingerprint(v);
                if (!pin) return r.error_at(e, ep, pin.error().message);
                pins.push_back(std::move(*pin));
                return {};
              });
              if (!ok) return ok;
              c.platform.device_issuer_sha256 = std::move(pins);
              return {};
            }},
       }},
      {"nonce",
       {
           {"secret_file",
            [](const Reader& r, const toml::node& n, const std::string& p, Config& c) -> Result<void> {
              auto v = r.path_value(n, p);
              if (!v) return tl::unexpected(v.error());
              c.nonce_secret = SecretSource{*v, ""};
              return {};
            }},
           {"secret_credential",
            [](const Reader& r, const toml::node& n, const std::string& p, Config& c) -> Result<void> {
              auto v = r.text(n, p);
              if (!v) return tl::unexpected(v.error());
              c.nonce_secret = SecretSource{"", *v};
              return {};
            }},
           {"retired_secret_files",
            [](const Reader& r, const toml::node& n, const std::string& p, Config& c) -> Result<void> {
              std::vector<std::string> files;
              auto ok = r.strings(n, p, [&](const toml::node&, const std::string&, std::string v) -> Result<void> {
                files.push_back(r.resolve(v));
                return {};
              });
              if (!ok) return ok;
              c.retired_nonce_secret_files = std::move(files);
              return {};
            }},
           {"lifetime_seconds",
            [](const Reader& r, const toml::node& n, const std::string& p, Config& c) -> Result<void> {
              auto v = r.integer(n, p, min_nonce_lifetime.count(), max_nonce_lifetime.count());
              if (!v) return tl::unexpected(v.error());
              c.nonce_lifetime = std::chrono::seconds(*v);
              return {};
            }},
       }},
      {"store",
       {
           {"backend",
            [](const Reader& r, const toml::node& n, const std::string& p, Config& c) -> Result<void> {
              auto v = r.text(n, p);
              if (!v) return tl::unexpected(v.error());
              if (*v == "sqlite") c.store_backend = StoreBackend::sqlite;
              else if (*v == "postgresql") c.store_backend = StoreBackend::postgresql;
              else return r.error_at(n, p, "expected \"sqlite\" or \"postgresql\", found \"" + *v + "\"");
              return {};
            }},
           {"conninfo",
            [](const Reader& r, const toml::node& n, const std::string& p, Config& c) -> Result<void> {
              auto v = r.text(n, p);
              if (!v) return tl::unexpected(v.error());
              c.postgres_conninfo = *v;
              return {};
            }},
           {"password_file",
            [](const Reader& r, const toml::node& n, const std::string& p, Config& c) -> Result<void> {
              auto v = r.path_value(n, p);
              if (!v) return tl::unexpected(v.error());
              c.postgres_password = SecretSource{*v, ""};
              return {};
            }},
           {"password_credential",
            [](const Reader& r, const toml::node& n, const std::string& p, Config& c) -> Result<void> {
              auto v = r.text(n, p);
              if (!v) return tl::unexpected(v.error());
              c.postgres_password = SecretSource{"", *v};
              return {};
            }},
           {"pool_size",
            [](const Reader& r, const toml::node& n, const std::string& p, Config& c) -> Result<void> {
              auto v = r.integer(n, p, 1, static_cast<std::int64_t>(max_postgres_pool_size));
              if (!v) return tl::unexpected(v.error());
              c.postgres_pool_size = static_cast<std::size_t>(*v);
              return {};
            }},
           {"database",
            [](const Reader& r, const toml::node& n, const std::string& p, Config& c) -> Result<void> {
              auto v = r.path_value(n, p);
              if (!v) return tl::unexpected(v.error());
              c.database = *v;
              return {};
            }},
           {"kek_file",
            [](const Reader& r, const toml::node& n, const std::string& p, Config& c) -> Result<void> {
              auto v = r.path_value(n, p);
              if (!v) return tl::unexpected(v.error());
              c.kek = SecretSource{*v, ""};
              return {};
            }},
           {"kek_credential",
            [](const Reader& r, const toml::node& n, const std::string& p, Config& c) -> Result<void> {
              auto v = r.text(n, p);
              if (!v) return tl::unexpected(v.error());
              c.kek = SecretSource{"", *v};
              return {};
            }},
       }},
      {"admin",
       {
           {"socket",
            [](const Reader& r, const toml::node& n, const std::string& p, Config& c) -> Result<void> {
              auto v = r.path_value(n, p);
              if (!v) return tl::unexpected(v.error());
              c.admin_socket = *v;
              return {};
            }},
           {"allowed_uid",
            [](const Reader& r, const toml::node& n, const std::string& p, Config& c) -> Result<void> {
              auto v = r.integer(n, p, 0, max_admin_allowed_uid);
              if (!v) return tl::unexpected(v.error());
              c.admin_allowed_uid = static_cast<std::uint32_t>(*v);
              return {};
            }},
       }},
      {"log",
       {
           {"level",
            [](const Reader& r, const toml::node& n, const std::string& p, Config& c) -> Result<void> {
              auto v = r.text(n, p);
              if (!v) return tl::unexpected(v.error());
              auto level = log_level_from_name(*v);
              if (!level) return r.error_at(n, p, "expected \"error\", \"warning\", \"info\" or \"debug\", found \"" + *v + "\"");
              c.log_level = *level;
              return {};
            }},
       }},
  };
  return sections;
}

// Keys that pick one of two sources may not both appear in one file.
Result<void> check_exclusive(const Reader& r, const toml::table& table, const std::string& section,
                             std::string_view first, std::string_view second) {
  const toml::node* a = table.get(first);
  const toml::node* b = table.get(second);
  if (a != nullptr && b != nullptr)
    return r.error_at(*b, section + "." + std::string(second), "give " + section + "." + std::string(first) + " or " +
                                                                   section + "." + std::string(second) + ", not both");
  return {};
}

}  // namespace

Result<ListenAddress> parse_listen_address(std::string_view text) {
  const std::string expected = "expected HOST:PORT (\"127.0.0.1:8443\", \"[::1]:8443\"), found \"" + std::string(text) + "\"";
  std::string_view host;
  std::string_view port;
  if (!text.empty() && text.front() == '[') {
    const auto close = text.find(']');
    if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':')
      return fail(Errc::invalid_argument, expected);
    host = text.substr(1, close - 1);
    port = text.substr(close + 2);
  } else {
    const auto colon = text.rfind(':');
    if (colon == std::string_view::npos || text.find(':') != colon) return fail(Errc::invalid_argument, expected);
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
  }
  unsigned value = 0;
  const auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
  if (host.empty() || port.empty() || ec != std::errc() || end != port.data() + port.size() || value > 65535)
    return fail(Errc::invalid_argument, expected);
  return ListenAddress{std::string(host), static_cast<std::uint16_t>(value)};
}

std::string format_listen_address(const ListenAddress& address) {
  const bool v6 = address.host.find(':') != std::string::npos;
  return (v6 ? "[" + address.host + "]" : address.host) + ":" + std::to_string(address.port);
}

Result<Config> parse_config(std::string_view toml_text, const std::string& source, const std::string& base_directory) {
  toml::table root;
  try {
    root = toml::parse(toml_text, source);
  } catch (const toml::parse_error& error) {
    const auto& position = error.source().begin;
    return fail(Errc::malformed, source + ":" + std::to_string(position.line) + ":" + std::to_string(position.column) +
                                     ": " + std::string(error.description()));
  }
  const Reader reader(source, base_directory);
  Config config;
  for (auto&& [section_key, section_node] : root) {
    const std::string section_name(section_key.str());
    const auto section = schema().find(section_name);
    if (section == schema().end())
      return reader.error_at(section_key.source(), section_name,
                             "unknown section (known: server, operator, rate_limit, tls, attestation, nonce, store, admin, log)");
    const toml::table* table = section_node.as_table();
    if (table == nullptr)
      return reader.error_at(section_node, section_name, "expected a table ([" + section_name + "]), found " +
                                                             Reader::type_name(section_node));
    for (auto&& [key, node] : *table) {
      const std::string path = section_name + "." + std::string(key.str());
      const auto setting = section->second.find(key.str());
      if (setting == section->second.end()) {
        std::string known;
        for (const auto& [name, unused] : section->second) known += (known.empty() ? "" : ", ") + name;
        return reader.error_at(key.source(), path, "unknown key (known in [" + section_name + "]: " + known + ")");
      }
      if (auto ok = setting->second(reader, node, path, config); !ok) return tl::unexpected(ok.error());
    }
    if (section_name == "nonce")
      if (auto ok = check_exclusive(reader, *table, "nonce", "secret_file", "secret_credential"); !ok)
        return tl::unexpected(ok.error());
    if (section_name == "store")
      for (const auto& [a, b] : {std::pair{"kek_file", "kek_credential"}, {"password_file", "password_credential"}})
        if (auto ok = check_exclusive(reader, *table, "store", a, b); !ok) return tl::unexpected(ok.error());
  }
  return config;
}

Result<Config> load_config_file(const std::string& path) {
  auto bytes = read_file(path, max_config_file_size);
  if (!bytes) return tl::unexpected(bytes.error());
  const std::string base = fs::path(path).parent_path().string();
  return parse_config(as_text(*bytes), path, base.empty() ? "." : base);
}

const std::vector<OptionSpec>& daemon_option_specs() {
  static const std::vector<OptionSpec> specs{
      {"config", true, false, "FILE", "the TOML configuration (default: none, built-in defaults)"},
      {"listen", true, true, "HOST:PORT", "replaces server.listen; port 0 picks a free port"},
      {"operator-listen", true, false, "HOST:PORT|off",
       "replaces operator.listen (plain HTTP: /healthz, /readyz, /metrics); off disables it"},
      {"tls-cert", true, false, "PEM", "replaces tls.certificate (server certificate chain)"},
      {"tls-key", true, false, "PEM", "replaces tls.private_key"},
      {"roots", true, true, "PEM", "replaces attestation.trusted_roots"},
      {"allow-legacy", false, false, "", "sets attestation.allow_legacy = true"},
      {"database", true, false, "FILE", "replaces store.database"},
      {"kek-file", true, false, "FILE", "replaces the KEK source with this 0600 file"},
      {"kek-credential", true, false, "NAME", "replaces the KEK source with this systemd credential"},
      {"nonce-secret-file", true, false, "FILE", "replaces the nonce secret source with this 0600 file"},
      {"nonce-secret-credential", true, false, "NAME", "replaces the nonce secret source with this credential"},
      {"nonce-lifetime", true, false, "SECONDS", "replaces nonce.lifetime_seconds"},
      {"admin-socket", true, false, "PATH", "replaces admin.socket"},
      {"admin-allowed-uid", true, false, "UID", "replaces admin.allowed_uid (the one uid besides root allowed to administer)"},
      {"threads", true, false, "N", "replaces server.threads"},
      {"max-connections", true, false, "N", "replaces server.max_connections"},
      {"log-level", true, false, "LEVEL", "replaces log.level (error, warning, info, debug)"},
      {"ready-file", true, false, "FILE", "write the bound address(es) to FILE once ready (for tests)"},
      {"check-config", false, false, "", "load the configuration and every file it names, then exit"},
      {"help", false, false, "", "show this help"},
      {"version", false, false, "", "show the version"},
  };
  return specs;
}

Result<void> apply_command_line(Config& config, const ParsedOptions& options) {
  auto number = [&](const std::string& name, std::int64_t min, std::int64_t max) -> Result<std::optional<std::int64_t>> {
    auto text = options.get(name);
    if (!text) return std::optional<std::int64_t>();
    std::int64_t value = 0;
    const auto [end, ec] = std::from_chars(text->data(), text->data() + text->size(), value);
    if (ec != std::errc() || end != text->data() + text->size() || value < min || value > max)
      return fail(Errc::invalid_argument, "--" + name + ": expected an integer " + std::to_string(min) + ".." +
                                              std::to_string(max) + ", found \"" + *text + "\"");
    return std::optional<std::int64_t>(value);
  };

  if (options.has("listen")) {
    std::vector<ListenAddress> listen;
    for (const auto& text : options.get_all("listen")) {
      auto address = parse_listen_address(text);
      if (!address) return fail_with_context("--listen", address.error());
      listen.push_back(*address);
    }
    config.listen = std::move(listen);
  }
  if (auto v = options.get("operator-listen")) {
    if (*v == "off") {
      config.operator_enabled = false;
    } else {
      auto address = parse_listen_address(*v);
      if (!address) return fail_with_context("--operator-listen", address.error());
      config.operator_enabled = true;
      config.operator_listen = *address;
    }
  }
  if (auto v = options.get("tls-cert")) config.tls.certificate_chain = *v;
  if (auto v = options.get("tls-key")) config.tls.private_key = *v;
  if (options.has("roots")) config.trusted_roots = options.get_all("roots");
  if (options.has("allow-legacy")) config.allow_legacy = true;
  if (auto v = options.get("database")) config.database = *v;
  if (options.has("kek-file") && options.has("kek-credential"))
    return fail(Errc::invalid_argument, "give --kek-file or --kek-credential, not both");
  if (auto v = options.get("kek-file")) config.kek = SecretSource{*v, ""};
  if (auto v = options.get("kek-credential")) config.kek = SecretSource{"", *v};
  if (options.has("nonce-secret-file") && options.has("nonce-secret-credential"))
    return fail(Errc::invalid_argument, "give --nonce-secret-file or --nonce-secret-credential, not both");
  if (auto v = options.get("nonce-secret-file")) config.nonce_secret = SecretSource{*v, ""};
  if (auto v = options.get("nonce-secret-credential")) config.nonce_secret = SecretSource{"", *v};
  auto lifetime = number("nonce-lifetime", min_nonce_lifetime.count(), max_nonce_lifetime.count());
  if (!lifetime) return tl::unexpected(lifetime.error());
  if (*lifetime) config.nonce_lifetime = std::chrono::seconds(**lifetime);
  if (auto v = options.get("admin-socket")) config.admin_socket = *v;
  auto allowed_uid = number("admin-allowed-uid", 0, max_admin_allowed_uid);
  if (!allowed_uid) return tl::unexpected(allowed_uid.error());
  if (*allowed_uid) config.admin_allowed_uid = static_cast<std::uint32_t>(**allowed_uid);
  auto threads = number("threads", 0, 256);
  if (!threads) return tl::unexpected(threads.error());
  if (*threads) config.limits.threads = static_cast<unsigned>(**threads);
  auto connections = number("max-connections", 1, 1'000'000);
  if (!connections) return tl::unexpected(connections.error());
  if (*connections) config.limits.max_connections = static_cast<std::size_t>(**connections);
  if (auto v = options.get("log-level")) {
    auto level = log_level_from_name(*v);
    if (!level)
      return fail(Errc::invalid_argument, "--log-level: expected error, warning, info or debug, found \"" + *v + "\"");
    config.log_level = *level;
  }
  return {};
}

Result<void> validate_config(const Config& config) {
  if (config.listen.empty()) return fail(Errc::invalid_argument, "server.listen: needs at least one address");
  if (config.tls.certificate_chain.empty() || config.tls.private_key.empty())
    return fail(Errc::invalid_argument, "tls.certificate and tls.private_key are required");
  if (config.trusted_roots.empty())
    return fail(Errc::invalid_argument,
                "attestation.trusted_roots: at least one root certificate file is required (Huawei's roots, or the "
                "simulator's CA in tests)");
  if (config.store_backend == StoreBackend::sqlite && config.database.empty())
    return fail(Errc::invalid_argument, "store.database must not be empty");
  if (config.store_backend == StoreBackend::postgresql && config.postgres_conninfo.empty())
    return fail(Errc::invalid_argument, "store.conninfo is required with backend = \"postgresql\"");
  if (config.store_backend == StoreBackend::sqlite &&
      (!config.postgres_conninfo.empty() || !config.postgres_password.empty()))
    return fail(Errc::invalid_argument,
                "store.conninfo and store.password_* are for backend = \"postgresql\" (the backend is \"sqlite\")");
  if (config.kek.empty()) return fail(Errc::invalid_argument, "store: kek_file or kek_credential is required");
  if (config.nonce_secret.empty())
    return fail(Errc::invalid_argument, "nonce: secret_file or secret_credential is required");
  if (config.admin_socket.empty()) return fail(Errc::invalid_argument, "admin.socket must not be empty");
  if (config.nonce_lifetime < min_nonce_lifetime || config.nonce_lifetime > max_nonce_lifetime)
    return fail(Errc::invalid_argument, "nonce.lifetime_seconds must be " + std::to_string(min_nonce_lifetime.count()) +
                                            ".." + std::to_string(max_nonce_lifetime.count()));
  return {};
}

// The longest database password taken from a file or credential.
constexpr std::size_t max_database_password_size = 1024;

namespace {

Result<PostgresOptions> configured_postgres_options(const Config& config) {
  PostgresOptions options;
  options.conninfo = config.postgres_conninfo;
  options.pool_size = config.postgres_pool_size;
  if (!config.postgres_password.empty()) {
    auto password = load_secret_text(config.postgres_password, max_database_password_size);
    if (!password) return fail_with_context("store password " + config.postgres_password.describe(), password.error());
    options.password = std::move(*password);
  }
  return options;
}

}  // namespace

Result<std::unique_ptr<Store>> open_configured_store(const Config& config, KeyEncryptionKey kek) {
  if (config.store_backend == StoreBackend::sqlite) return open_sqlite_store(config.database, std::move(kek));
  auto options = configured_postgres_options(config);
  if (!options) return tl::unexpected(options.error());
  return open_postgres_store(std::move(*options), std::move(kek));
}

Result<void> check_configured_store_kek(const Config& config, const KeyEncryptionKey& kek) {
  if (config.store_backend == StoreBackend::sqlite) return check_sqlite_store_kek(config.database, kek);
  auto options = configured_postgres_options(config);
  if (!options) return tl::unexpected(options.error());
  return check_postgres_store_kek(std::move(*options), kek);
}

std::string describe_store(const Config& config) {
  if (config.store_backend == StoreBackend::sqlite) return "sqlite " + config.database;
  return "postgresql " + describe_postgres_conninfo(config.postgres_conninfo);
}

}  // namespace fde::verifier
