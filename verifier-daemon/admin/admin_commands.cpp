// fde-admin's socket commands: build a request, send it, print the response for a person
// (tables) or a script (--json, the daemon's response as it came).
#include "verifier-daemon/admin/admin_commands.hpp"

#include <sys/stat.h>

#include <rapidjson/prettywriter.h>
#include <rapidjson/stringbuffer.h>

#include <algorithm>
#include <charconv>
#include <cstring>
#include <filesystem>
#include <optional>

#include "common/protocol/enrollment_bundle.hpp"
#include "common/util/command_line.hpp"
#include "common/util/file.hpp"
#include "common/util/strict_json.hpp"
#include "verifier-daemon/server/admin_socket.hpp"
#include "verifier-daemon/store/store.hpp"

namespace fde::verifier {

namespace {

using Value = json::Value;

// --- output helpers ---

// Text from the daemon can carry claim text from a token: escape what a terminal acts on.
std::string printable(std::string_view text) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string out;
  for (char c : json::valid_utf8(text)) {
    const auto byte = static_cast<unsigned char>(c);
    if (byte < 0x20 || byte == 0x7f) {
      out += "\\x";
      out += digits[byte >> 4];
      out += digits[byte & 0xf];
    } else {
      out += c;
    }
  }
  return out;
}

std::string text_of(const Value& object, std::string_view name) {
  const Value* value = json::find(object, name);
  if (value == nullptr || value->IsNull()) return "";
  if (value->IsString()) return printable(json::view(*value));
  if (value->IsInt64()) return std::to_string(value->GetInt64());
  if (value->IsBool()) return value->GetBool() ? "true" : "false";
  return printable(json::to_string(*value));
}

std::string joined_strings(const Value* array, std::string_view separator = ", ") {
  std::string out;
  if (array == nullptr || !array->IsArray()) return out;
  for (const auto& item : array->GetArray())
    if (item.IsString()) out += (out.empty() ? "" : std::string(separator)) + printable(json::view(item));
  return out;
}

// Columns padded to the widest cell; the last column is not padded.
void print_table(std::ostream& out, const std::vector<std::string>& header,
                 const std::vector<std::vector<std::string>>& rows) {
  std::vector<std::size_t> widths(header.size(), 0);
  for (std::size_t i = 0; i < header.size(); ++i) widths[i] = header[i].size();
  for (const auto& row : rows)
    for (std::size_t i = 0; i < row.size() && i < widths.size(); ++i) widths[i] = std::max(widths[i], row[i].size());
  auto line = [&](const std::vector<std::string>& cells) {
    std::string text;
    for (std::size_t i = 0; i < cells.size(); ++i) {
      text += cells[i];
      if (i + 1 < cells.size()) text += std::string(widths[i] - cells[i].size() + 2, ' ');
    }
    out << text << "\n";
  };
  line(header);
  for (const auto& row : rows) line(row);
}

std::string pretty(const Value& value) {
  rapidjson::StringBuffer buffer;
  rapidjson::PrettyWriter<rapidjson::StringBuffer> writer(buffer);
  writer.SetIndent(' ', 2);
  value.Accept(writer);
  return std::string(buffer.GetString(), buffer.GetSize());
}

void wipe_string(std::string& text) {
  wipe_bytes({reinterpret_cast<std::uint8_t*>(text.data()), text.size()});
  text.clear();
}

// --- options ---

std::vector<OptionSpec> command_specs(std::vector<OptionSpec> own) {
  own.push_back({"socket", true, false, "PATH", "the daemon's admin socket (default " + std::string(default_admin_socket) + ")"});
  own.push_back({"json", false, false, "", "print the daemon's JSON response instead of text"});
  own.push_back({"help", false, false, "", "show this help"});
  return own;
}

struct Command {
  std::string_view name;
  std::string_view synopsis;
  std::string_view summary;
  std::vector<OptionSpec> options;
  std::size_t positional;  // exact number of positional arguments (explain: 0 or 1)
};

const std::vector<Command>& commands() {
  static const std::vector<Command> list = {
      {"enroll", "enroll --bundle FILE", "import an enrollment bundle from fde-image (the file must be 0600)",
       command_specs({{"bundle", true, false, "FILE", "the enrollment bundle (docs/enrollment-bundle.md)"}}), 0},
      {"list", "list", "list enrolled images", command_specs({}), 0},
      {"show", "show IMAGE", "show an image and its reference values", command_specs({}), 1},
      {"add-reference", "add-reference IMAGE --file FILE [--replace NAME]",
       "add a reference set (a set object, or a whole reference-values document)",
       command_specs({{"file", true, false, "FILE", "a reference set or document (docs/reference-values.md)"},
                      {"replace", true, false, "NAME", "retire set NAME in the same change (a rebuilt initramfs)"}}),
       1},
      {"retire-reference", "retire-reference IMAGE --set NAME", "retire a reference set",
       command_specs({{"set", true, false, "NAME", "the set to retire"}}), 1},
      {"revoke", "revoke IMAGE", "stop releasing the image's key", command_specs({}), 1},
      {"reinstate", "reinstate IMAGE", "release the image's key again", command_specs({}), 1},
      {"audit", "audit [--image I] [--decision D] [--after N] [--limit N] | --verify [--expect-head SEQ:HEX] | --head",
       "list audit records (newest first), verify the chain, or print its head",
       command_specs({{"image", true, false, "IMAGE", "only this image"},
                      {"decision", true, false, "D", "only \"release\", \"deny\" or \"admin\" (changes)"},
                      {"after", true, false, "N", "only records after sequence N"},
                      {"limit", true, false, "N", "at most N records (default 50, at most 1000)"},
                      {"verify", false, false, "", "have the daemon check every record's MAC (or hash) and link instead"},
                      {"expect-head", true, false, "SEQ:HEX",
                       "with --verify: a head printed earlier by --head must still be in the chain, unchanged"},
                      {"head", false, false, "", "verify, then print the chain's head as SEQ:HEX to keep elsewhere"}}),
       0},
      {"explain", "explain IMAGE | explain --sequence N",
       "every check of the latest denial for IMAGE, or of audit record N",
       command_specs({{"sequence", true, false, "N", "the audit record to explain"}}), 1},
      {"delete", "delete IMAGE --yes", "delete an image and destroy its wrapped disk key (audited)",
       command_specs({{"yes", false, false, "", "confirm: the disk key is gone for good"}}), 1},
      {"backup", "backup --output FILE", "have the daemon write a consistent copy of its store to a new file",
       command_specs({{"output", true, false, "FILE",
                       "a new file the daemon can write (absolute; e.g. under /var/lib/fde-verifier/backup)"}}),
       0},
      {"rotate-kek", "rotate-kek --new-kek FILE", "re-wrap every disk key under a new key-encryption key",
       command_specs({{"new-kek", true, false, "FILE", "the new KEK: 32 raw bytes or 64 hex digits, mode 0600"}}), 0},
      {"reload", "reload", "reload the configuration (as SIGHUP) and fail if it was not applied", command_specs({}), 0},
  };
  return list;
}

const Command* find_command(std::string_view name) {
  for (const auto& command : commands())
    if (command.name == name) return &command;
  return nullptr;
}

Result<std::int64_t> parse_number(const std::string& name, const std::string& text, std::int64_t min) {
  std::int64_t value = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size() || value < min)
    return fail(Errc::invalid_argument, "--" + name + " needs an integer of at least " + std::to_string(min) +
                                            ", not \"" + text + "\"");
  return value;
}

// --- building requests ---

std::string request_with(std::string_view command, std::initializer_list<std::pair<std::string_view, std::string>> texts) {
  std::string line = "{\"command\":";
  json::append_quoted(line, command);
  for (const auto& [name, value] : texts) {
    line += ",";
    json::append_quoted(line, name);
    line += ":";
    json::append_quoted(line, value);
  }
  line += "}";
  return line;
}

// The bundle holds the disk key: a file others can read has leaked it already, and importing
// it would hide that. The text is checked locally (clear errors before the daemon is asked).
Result<std::string> enroll_request(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return fail(Errc::io, path + ": " + std::strerror(errno));
  if (!S_ISREG(st.st_mode)) return fail(Errc::invalid_argument, path + ": not a regular file");
  if ((st.st_mode & 077) != 0) {
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
    return fail(Errc::invalid_argument, path + ": mode " + std::string(mode) +
                                            " lets group or others read the disk key; refusing it (chmod 0600, and "
                                            "treat the key as exposed if others could read it)");
  }
  auto bytes = read_file(path, protocol::max_enrollment_bundle_size);
  if (!bytes) return tl::unexpected(bytes.error());
  SecretBytes text = SecretBytes::copy_of(*bytes);
  wipe_bytes(*bytes);
  auto bundle = protocol::parse_enrollment_bundle(as_text(text.view()));
  if (!bundle) return fail_with_context(path, bundle.error());
  // The file's own JSON object goes into the request as is.
  std::string_view body = as_text(text.view());
  while (!body.empty() && (body.back() == '\n' || body.back() == ' ' || body.back() == '\r' || body.back() == '\t'))
    body.remove_suffix(1);
  std::string line = "{\"command\":\"enroll\",\"bundle\":";
  line.append(body);
  line += "}";
  // A pretty-printed bundle spans lines; the socket carries one request per line. Newlines
  // outside strings are whitespace, and inside strings JSON has them escaped, so they go.
  std::replace(line.begin(), line.end(), '\n', ' ');
  std::replace(line.begin(), line.end(), '\r', ' ');
  return line;
}

Result<std::string> add_reference_request(const std::string& image, const std::string& path,
                                          const std::optional<std::string>& replace) {
  auto bytes = read_file(path, 1024 * 1024);
  if (!bytes) return tl::unexpected(bytes.error());
  rapidjson::Document doc;
  if (auto ok = json::parse(doc, as_text(*bytes), 1024 * 1024, path); !ok) return tl::unexpected(ok.error());
  if (!doc.IsObject()) return fail(Errc::malformed, path + ": expected a reference set or document (an object)");
  std::string line = "{\"command\":\"add-reference\",\"image_id\":";
  json::append_quoted(line, image);
  line += ",\"reference\":" + json::to_string(doc);
  if (replace) {
    line += ",\"replace\":";
    json::append_quoted(line, *replace);
  }
  return line + "}";
}

// The new KEK is checked like the daemon's own (0600, 32 bytes or 64 hex digits) and sent as
// hex; the request line is wiped after sending.
Result<std::string> rotate_kek_request(const std::string& path) {
  auto kek = KeyEncryptionKey::load_file(path);
  if (!kek) return tl::unexpected(kek.error());
  std::string line;
  line.reserve(128);  // no reallocation leaves a copy of the key behind
  line = "{\"command\":\"rotate-kek\",\"new_kek\":\"";
  static constexpr char digits[] = "0123456789abcdef";
  for (std::uint8_t byte : kek->bytes()) {
    line += digits[byte >> 4];
    line += digits[byte & 0xf];
  }
  return line + "\"}";
}

Result<std::string> build_request(const Command& command, const ParsedOptions& options) {
  const auto& args = options.positional();
  const std::string image = args.empty() ? "" : args.front();
  const std::string_view name = command.name;
  if (name == "enroll") {
    auto bundle = options.get("bundle");
    if (!bundle) return fail(Errc::invalid_argument, "--bundle FILE is required");
    return enroll_request(*bundle);
  }
  if (name == "list") return request_with(name, {});
  if (name == "show" || name == "revoke" || name == "reinstate") return request_with(name, {{"image_id", image}});
  if (name == "add-reference") {
    auto file = options.get("file");
    if (!file) return fail(Errc::invalid_argument, "--file FILE is required");
    return add_reference_request(image, *file, options.get("replace"));
  }
  if (name == "retire-reference") {
    auto set = options.get("set");
    if (!set) return fail(Errc::invalid_argument, "--set NAME is required");
    return request_with(name, {{"image_id", image}, {"set", *set}});
  }
  if (name == "audit") {
    const bool filtered = options.has("image") || options.has("decision") || options.has("after") || options.has("limit");
    if (options.has("expect-head") && !options.has("verify"))
      return fail(Errc::invalid_argument, "--expect-head goes with --verify");
    if (options.has("head") && (options.has("verify") || filtered))
      return fail(Errc::invalid_argument, "--head verifies the whole chain itself; it takes no other option");
    if (options.has("verify") || options.has("head")) {
      if (filtered) return fail(Errc::invalid_argument, "--verify checks the whole chain; it takes no filters");
      if (auto expected = options.get("expect-head")) {
        // Checked here too, so a mistyped head is a usage error, not a refusal.
        if (auto ok = parse_audit_head(*expected); !ok) return fail(Errc::invalid_argument, "--expect-head: " + ok.error().message);
        return request_with("verify-audit", {{"expect_head", *expected}});
      }
      return request_with("verify-audit", {});
    }
    std::string line = "{\"command\":\"audit\"";
    if (auto v = options.get("image")) {
      line += ",\"image_id\":";
      json::append_quoted(line, *v);
    }
    if (auto v = options.get("decision")) {
      if (*v != "release" && *v != "deny" && *v != "admin")
        return fail(Errc::invalid_argument, "--decision is \"release\", \"deny\" or \"admin\"");
      line += ",\"decision\":";
      json::append_quoted(line, *v);
    }
    for (const char* option : {"after", "limit"}) {
      auto v = options.get(option);
      if (!v) continue;
      auto n = parse_number(option, *v, std::string_view(option) == "limit" ? 1 : 0);
      if (!n) return tl::unexpected(n.error());
      line += std::string(std::string_view(option) == "limit" ? ",\"limit\":" : ",\"after_sequence\":") +
              std::to_string(*n);
    }
    return line + "}";
  }
  if (name == "delete") {
    if (!options.has("yes"))
      return fail(Errc::invalid_argument, "this destroys the disk key of " + image +
                                              " for good (the image can no longer be unlocked); add --yes to confirm");
    return request_with(name, {{"image_id", image}, {"confirm", image}});
  }
  if (name == "backup") {
    auto output = options.get("output");
    if (!output) return fail(Errc::invalid_argument, "--output FILE is required");
    // The daemon writes the file: a relative name would be relative to its directory, not ours.
    std::error_code ec;
    const auto absolute = std::filesystem::absolute(*output, ec);
    if (ec) return fail(Errc::invalid_argument, "--output: " + ec.message());
    return request_with(name, {{"path", absolute.lexically_normal().string()}});
  }
  if (name == "rotate-kek") {
    auto file = options.get("new-kek");
    if (!file) return fail(Errc::invalid_argument, "--new-kek FILE is required");
    return rotate_kek_request(*file);
  }
  if (name == "reload") return request_with(name, {});
  if (name == "explain") {
    if (auto v = options.get("sequence")) {
      if (!image.empty()) return fail(Errc::invalid_argument, "give IMAGE or --sequence N, not both");
      auto n = parse_number("sequence", *v, 1);
      if (!n) return tl::unexpected(n.error());
      return "{\"command\":\"explain\",\"sequence\":" + std::to_string(*n) + "}";
    }
    if (image.empty()) return fail(Errc::invalid_argument, "give IMAGE or --sequence N");
    return request_with(name, {{"image_id", image}});
  }
  return fail(Errc::internal, "no request for " + std::string(name));
}

// --- printing results ---

void print_image_line(std::ostream& out, const std::string& verb, const Value& result) {
  out << verb << " " << text_of(result, "image_id");
  if (json::find(result, "luks_uuid") != nullptr) out << " (LUKS UUID " << text_of(result, "luks_uuid") << ")";
  out << "; status " << text_of(result, "status") << "; reference sets: " << joined_strings(json::find(result, "sets"))
      << "\n";
}

void print_list(std::ostream& out, const Value& result) {
  const Value* images = json::find(result, "images");
  std::vector<std::vector<std::string>> rows;
  if (images != nullptr && images->IsArray())
    for (const auto& image : images->GetArray())
      rows.push_back({text_of(image, "image_id"), text_of(image, "status"), text_of(image, "luks_uuid"),
                      text_of(image, "updated_at"), joined_strings(json::find(image, "sets"))});
  if (rows.empty()) {
    out << "no images enrolled\n";
    return;
  }
  print_table(out, {"IMAGE", "STATUS", "LUKS UUID", "UPDATED", "REFERENCE SETS"}, rows);
}

void print_show(std::ostream& out, const Value& result) {
  out << "Image:       " << text_of(result, "image_id") << "\n"
      << "Status:      " << text_of(result, "status") << "\n"
      << "LUKS UUID:   " << text_of(result, "luks_uuid") << "\n"
      << "Enrolled:    " << text_of(result, "created_at") << "\n"
      << "Updated:     " << text_of(result, "updated_at") << "\n";
  const Value* reference = json::find(result, "reference");
  if (reference == nullptr || !reference->IsObject()) return;
  out << "Hash:        " << text_of(*reference, "hash_alg") << "\n";
  const Value* rims = json::find(*reference, "firmware_rims");
  out << "Firmware RIMs:" << (rims != nullptr && rims->IsArray() && !rims->Empty() ? "\n" : " none\n");
  if (rims != nullptr && rims->IsArray())
    for (const auto& rim : rims->GetArray())
      if (rim.IsString()) out << "  " << printable(json::view(rim)) << "\n";
  const Value* rpvs = json::find(*reference, "allowed_rpvs");
  const std::size_t rpv_count = rpvs != nullptr && rpvs->IsArray() ? rpvs->Size() : 0;
  out << "Allowed RPVs: " << (rpv_count == 0 ? std::string("any") : std::to_string(rpv_count) + " listed") << "\n";
  out << "Reference sets:\n";
  const Value* sets = json::find(*reference, "sets");
  if (sets == nullptr || !sets->IsArray()) return;
  for (const auto& set : sets->GetArray()) {
    out << "  " << text_of(set, "name") << " (" << text_of(set, "boot") << " boot";
    if (const std::string kernel = text_of(set, "kernel_version"); !kernel.empty()) out << ", kernel " << kernel;
    out << ")";
    if (const std::string description = text_of(set, "description"); !description.empty()) out << ": " << description;
    out << "\n";
  }
  out << "Run with --json for every reference value.\n";
}

void print_audit(std::ostream& out, const Value& result) {
  const Value* records = json::find(result, "records");
  std::vector<std::vector<std::string>> rows;
  if (records != nullptr && records->IsArray())
    for (const auto& record : records->GetArray())
      rows.push_back({text_of(record, "sequence"), text_of(record, "time"), text_of(record, "image_id"),
                      text_of(record, "peer"), text_of(record, "decision"), text_of(record, "reason")});
  if (rows.empty()) {
    out << "no audit records match\n";
    return;
  }
  print_table(out, {"SEQ", "TIME", "IMAGE", "PEER", "DECISION", "REASON"}, rows);
}

int print_verify_audit(std::ostream& out, const Value& result, bool head_only) {
  const Value* intact = json::find(result, "intact");
  const bool ok = intact != nullptr && intact->IsBool() && intact->GetBool();
  if (ok && head_only) {
    out << text_of(result, "head") << "\n";
    return admin_exit_ok;
  }
  if (ok) {
    out << "audit chain intact: " << text_of(result, "records") << " records";
    if (const std::string unkeyed = text_of(result, "unkeyed_records"); !unkeyed.empty() && unkeyed != "0")
      out << " (the first " << unkeyed << " unkeyed, from before the upgrade, and sealed by it)";
    out << "; head " << text_of(result, "head") << "\n";
    const Value* matched = json::find(result, "expected_head_matched");
    if (matched != nullptr && matched->IsBool() && matched->GetBool())
      out << "the exported head " << text_of(result, "expected_head") << " is in the chain, unchanged\n";
    return admin_exit_ok;
  }
  out << "audit chain BROKEN at record " << text_of(result, "first_bad_sequence") << ": " << text_of(result, "problem")
      << " (" << text_of(result, "records") << " records)\n";
  return admin_exit_refused;
}

void print_explain(std::ostream& out, const Value& result) {
  const Value* record = json::find(result, "record");
  if (record != nullptr && record->IsObject()) {
    std::string decision = text_of(*record, "decision");
    std::transform(decision.begin(), decision.end(), decision.begin(),
                   [](char c) { return static_cast<char>(c >= 'a' && c <= 'z' ? c - 'a' + 'A' : c); });
    out << "Audit record " << text_of(*record, "sequence") << " at " << text_of(*record, "time") << ": " << decision
        << " image " << text_of(*record, "image_id") << " for " << text_of(*record, "peer") << "\n"
        << "Reason: " << text_of(*record, "reason") << "\n"
        << "Token SHA-256: " << text_of(*record, "token_digest") << "\n";
    if (const Value* measurements = json::find(*record, "measurements"); measurements != nullptr && measurements->IsObject()) {
      if (const std::string set = text_of(*measurements, "matched_set"); !set.empty()) out << "Matched set: " << set << "\n";
      if (const std::string rim = text_of(*measurements, "rim"); !rim.empty()) out << "RIM: " << rim << "\n";
    }
  }
  out << "Checks:\n";
  const Value* checks = json::find(result, "checks");
  if (checks == nullptr || !checks->IsArray()) return;
  for (const auto& check : checks->GetArray()) {
    const Value* passed = json::find(check, "passed");
    const bool ok = passed != nullptr && passed->IsBool() && passed->GetBool();
    out << "  " << (ok ? "PASS " : "FAIL ") << text_of(check, "name") << "\n";
    if (!ok) out << "       expected: " << text_of(check, "expected") << "\n";
    out << "       found:    " << text_of(check, "found") << "\n";
  }
  const std::string failed = joined_strings(json::find(result, "failed"));
  out << (failed.empty() ? "Every check passed.\n" : "Failed: " + failed + "\n");
}

int print_result(std::string_view command, const Value& result, std::ostream& out, bool head_only) {
  if (command == "enroll") {
    print_image_line(out, "enrolled", result);
  } else if (command == "list") {
    print_list(out, result);
  } else if (command == "show") {
    print_show(out, result);
  } else if (command == "add-reference") {
    out << text_of(result, "image_id") << ": added " << joined_strings(json::find(result, "added"));
    if (json::find(result, "retired") != nullptr) out << ", retired " << text_of(result, "retired");
    out << "; reference sets now: " << joined_strings(json::find(result, "sets")) << "\n";
  } else if (command == "delete") {
    out << text_of(result, "image_id") << ": deleted, its disk key destroyed (audit record " << text_of(result, "audit")
        << "); the id may be enrolled again\n";
  } else if (command == "backup") {
    out << "backup written: " << text_of(result, "path") << " (" << text_of(result, "bytes") << " bytes, "
        << text_of(result, "images") << " images, audit head " << text_of(result, "audit_head")
        << "); it opens only with the current KEK\n";
  } else if (command == "rotate-kek") {
    out << "KEK rotated: " << text_of(result, "images") << " disk keys re-wrapped, audit chain key epoch "
        << text_of(result, "key_epoch") << " (audit record " << text_of(result, "audit")
        << ").\nInstall the new KEK where the configuration reads it (store.kek_file or the kek credential) now: "
           "the store no longer opens with the old one.\nOn a PostgreSQL fleet, every other replica refuses to write "
           "(503, /readyz fails) until it is restarted with the new KEK.\n";
  } else if (command == "reload") {
    out << "reloaded\n";
  } else if (command == "retire-reference") {
    out << text_of(result, "image_id") << ": retired " << text_of(result, "retired")
        << "; reference sets now: " << joined_strings(json::find(result, "sets")) << "\n";
  } else if (command == "revoke" || command == "reinstate") {
    out << text_of(result, "image_id") << ": " << text_of(result, "status") << " (was "
        << text_of(result, "previous_status") << ")\n";
  } else if (command == "audit") {
    if (json::find(result, "intact") != nullptr) return print_verify_audit(out, result, head_only);
    print_audit(out, result);
  } else if (command == "explain") {
    print_explain(out, result);
  }
  return admin_exit_ok;
}

std::string command_help(const Command& command) {
  std::string summary(command.summary);
  if (!summary.empty() && summary[0] >= 'a' && summary[0] <= 'z') summary[0] = static_cast<char>(summary[0] - 'a' + 'A');
  return "usage: fde-admin " + std::string(command.synopsis) + " [--socket PATH] [--json]\n\n" + summary +
         ".\nExit status: 0 done; 1 the daemon refused (or the audit chain is broken); 2 bad arguments, "
         "unusable file or daemon unreachable.\n\n" +
         options_help(command.options);
}

}  // namespace

AdminSender socket_sender() {
  return [](const std::string& socket_path, const std::string& request_line) {
    return admin_request(socket_path, request_line);
  };
}

const std::vector<std::string_view>& admin_command_names() {
  static const std::vector<std::string_view> names = [] {
    std::vector<std::string_view> out;
    for (const auto& command : commands()) out.push_back(command.name);
    return out;
  }();
  return names;
}

bool is_admin_command(std::string_view command) { return find_command(command) != nullptr; }

std::string admin_commands_usage() {
  std::string out;
  for (const auto& command : commands()) {
    std::string left = "  " + std::string(command.name);
    left.resize(std::max<std::size_t>(left.size() + 1, 20), ' ');
    out += left + std::string(command.summary) + "\n";
  }
  return out;
}

int run_admin_command(const std::string& name, const std::vector<std::string>& args, std::ostream& out,
                      std::ostream& err, const AdminSender& send) {
  const Command* command = find_command(name);
  if (command == nullptr) {
    err << "fde-admin: unknown command '" << printable(name) << "' (try --help)\n";
    return admin_exit_usage;
  }
  auto options = parse_options(args, command->options);
  if (!options) {
    err << "fde-admin " << name << ": " << options.error().message << " (try --help)\n";
    return admin_exit_usage;
  }
  if (options->has("help")) {
    out << command_help(*command);
    return admin_exit_ok;
  }
  const auto& positional = options->positional();
  const bool explain_by_sequence = command->name == "explain" && options->has("sequence");
  const std::size_t wanted = explain_by_sequence ? 0 : command->positional;
  if (positional.size() != wanted) {
    err << "fde-admin " << name << ": expected " << (wanted == 0 ? "no arguments" : "IMAGE") << " (usage: fde-admin "
        << command->synopsis << ")\n";
    return admin_exit_usage;
  }

  auto request = build_request(*command, *options);
  if (!request) {
    err << "fde-admin " << name << ": " << request.error().message << "\n";
    return admin_exit_usage;
  }
  const std::string socket = options->get("socket").value_or(std::string(default_admin_socket));
  auto response = send(socket, *request);
  wipe_string(*request);  // an enroll request holds the disk key
  if (!response) {
    err << "fde-admin " << name << ": cannot reach fde-verifierd at " << socket << ": " << response.error().message
        << "\n";
    return admin_exit_usage;
  }

  rapidjson::Document doc;
  if (auto ok = json::parse(doc, *response, max_admin_response, "response"); !ok || !doc.IsObject()) {
    err << "fde-admin " << name << ": the daemon's response is not a JSON object\n";
    return admin_exit_usage;
  }
  const Value* ok_value = json::find(doc, "ok");
  const bool ok = ok_value != nullptr && ok_value->IsBool() && ok_value->GetBool();
  if (options->has("json")) out << pretty(doc) << "\n";
  if (!ok) {
    // The stable code (`error`) is for scripts, in --json output; a person reads the message.
    err << "fde-admin " << name << ": refused: " << text_of(doc, "message") << "\n";
    return admin_exit_refused;
  }
  const Value* result = json::find(doc, "result");
  if (result == nullptr) {
    err << "fde-admin " << name << ": the daemon's response has no result\n";
    return admin_exit_usage;
  }
  if (options->has("json")) {
    // Scripts read the exit status too: a broken chain is 1 in either output mode.
    const Value* intact = json::find(*result, "intact");
    return intact != nullptr && intact->IsBool() && !intact->GetBool() ? admin_exit_refused : admin_exit_ok;
  }
  if (options->has("head")) {
    // A head is what gets kept elsewhere: never print one for a broken chain.
    const Value* intact = json::find(*result, "intact");
    if (intact == nullptr || !intact->IsBool() || !intact->GetBool()) {
      err << "fde-admin audit: no head printed: the audit chain is BROKEN at record "
          << text_of(*result, "first_bad_sequence") << ": " << text_of(*result, "problem") << "\n";
      return admin_exit_refused;
    }
  }
  return print_result(command->name, *result, out, options->has("head"));
}

}  // namespace fde::verifier
