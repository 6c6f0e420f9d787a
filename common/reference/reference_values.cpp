// Strict JSON parsing, validation, serialization and import of reference values.
#include "common/reference/reference_values.hpp"

#include <algorithm>
#include <set>

#include <rapidjson/document.h>
#include <rapidjson/error/en.h>
#include <rapidjson/prettywriter.h>
#include <rapidjson/stringbuffer.h>

namespace fde::reference {

namespace {

using Value = rapidjson::Value;

// Every error of this file reads "reference values: <json path>: <what>".
tl::unexpected<Error> fail_at(const std::string& path, const std::string& what,
                              Errc code = Errc::malformed) {
  return fail(code, "reference values: " + (path.empty() ? std::string("document") : path) +
                        ": " + what);
}

std::string member_path(const std::string& path, std::string_view name) {
  return path.empty() ? std::string(name) : path + "." + std::string(name);
}
std::string index_path(const std::string& path, std::size_t i) {
  return path + "[" + std::to_string(i) + "]";
}

const char* type_name(const Value& v) {
  if (v.IsNull()) return "null";
  if (v.IsBool()) return "a boolean";
  if (v.IsNumber()) return "a number";
  if (v.IsString()) return "a string";
  if (v.IsArray()) return "an array";
  return "an object";
}

std::string_view view(const Value& v) { return {v.GetString(), v.GetStringLength()}; }

// Checks an object's member names: each must be in `allowed`, none may repeat (RapidJSON's
// DOM keeps duplicates, and "first wins" vs "last wins" is exactly the kind of ambiguity an
// attacker-edited file would exploit). Required members are checked by the callers.
Result<void> check_members(const Value& object, const std::string& path,
                           std::initializer_list<std::string_view> allowed) {
  if (!object.IsObject())
    return fail_at(path, std::string("expected an object, found ") + type_name(object));
  std::set<std::string_view> seen;
  for (auto it = object.MemberBegin(); it != object.MemberEnd(); ++it) {
    std::string_view name = view(it->name);
    if (std::find(allowed.begin(), allowed.end(), name) == allowed.end())
      return fail_at(member_path(path, name), "unknown field");
    if (!seen.insert(name).second) return fail_at(member_path(path, name), "duplicate field");
  }
  return {};
}

const Value* find_member(const Value& object, std::string_view name) {
  auto it = object.FindMember(Value(rapidjson::StringRef(name.data(), name.size())));
  return it == object.MemberEnd() ? nullptr : &it->value;
}

Result<const Value*> require_member(const Value& object, const std::string& path,
                                    std::string_view name) {
  const Value* v = find_member(object, name);
  if (v == nullptr) return fail_at(member_path(path, name), "missing required field");
  return v;
}

Result<std::string> parse_text(const Value& v, const std::string& path, bool allow_empty) {
  if (!v.IsString()) return fail_at(path, std::string("expected a string, found ") + type_name(v));
  std::string_view text = view(v);
  if (text.size() > max_text_size)
    return fail_at(path, "longer than " + std::to_string(max_text_size) + " bytes",
                   Errc::too_large);
  if (!allow_empty && text.empty()) return fail_at(path, "must not be empty");
  // JSON allows "\u0000"; none of our texts can contain it (grub strings are C strings).
  if (text.find('\0') != std::string_view::npos) return fail_at(path, "contains a NUL character");
  return std::string(text);
}

bool is_hex_digit(char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

// Hex of exactly `size` bytes; either case; no whitespace or prefix (hex_decode would skip
// whitespace, which a strict format should not).
Result<Bytes> parse_hex(const Value& v, const std::string& path, std::size_t size,
                        std::string_view what) {
  if (!v.IsString())
    return fail_at(path, std::string("expected a hex string, found ") + type_name(v));
  std::string_view text = view(v);
  if (text.size() != 2 * size)
    return fail_at(path, "expected " + std::to_string(2 * size) + " hex digits (" +
                             std::string(what) + "), found " + std::to_string(text.size()));
  if (!std::all_of(text.begin(), text.end(), is_hex_digit))
    return fail_at(path, "not a hex string");
  auto bytes = hex_decode(text);
  if (!bytes) return fail_at(path, bytes.error().message);
  return std::move(*bytes);
}

Result<std::vector<Bytes>> parse_hex_list(const Value& v, const std::string& path,
                                          std::size_t size, std::string_view what) {
  if (!v.IsArray()) return fail_at(path, std::string("expected an array, found ") + type_name(v));
  if (v.Size() > max_list_entries)
    return fail_at(path, "more than " + std::to_string(max_list_entries) + " entries",
                   Errc::too_large);
  std::vector<Bytes> out;
  for (rapidjson::SizeType i = 0; i < v.Size(); ++i) {
    auto b = parse_hex(v[i], index_path(path, i), size, what);
    if (!b) return tl::unexpected(b.error());
    out.push_back(std::move(*b));
  }
  return out;
}

std::string digest_what(crypto::HashAlg alg) { return std::string(crypto::hash_alg_name(alg)); }

Result<ReferenceSet> parse_set(const Value& v, const std::string& path, crypto::HashAlg alg) {
  const std::size_t size = crypto::digest_size(alg);
  const std::string what = digest_what(alg);
  if (auto ok = check_members(v, path,
                              {"name", "description", "kernel_version", "boot", "grub",
                               "grub_cfg", "kernel", "kernel_alternatives", "kernel_efi",
                               "initramfs", "kernel_cmdline", "grub_commands", "rims", "rems"});
      !ok)
    return tl::unexpected(ok.error());
  ReferenceSet set;
  auto name = require_member(v, path, "name");
  if (!name) return tl::unexpected(name.error());
  auto name_text = parse_text(**name, member_path(path, "name"), false);
  if (!name_text) return tl::unexpected(name_text.error());
  set.name = std::move(*name_text);
  for (auto [field, target] : {std::pair{"description", &set.description},
                               std::pair{"kernel_version", &set.kernel_version}}) {
    if (const Value* f = find_member(v, field)) {
      auto t = parse_text(*f, member_path(path, field), true);
      if (!t) return tl::unexpected(t.error());
      *target = std::move(*t);
    }
  }
  auto boot = require_member(v, path, "boot");
  if (!boot) return tl::unexpected(boot.error());
  auto boot_text = parse_text(**boot, member_path(path, "boot"), false);
  if (!boot_text) return tl::unexpected(boot_text.error());
  if (*boot_text == "grub") {
    set.boot = BootMode::grub;
  } else if (*boot_text == "direct") {
    set.boot = BootMode::direct;
  } else {
    return fail_at(member_path(path, "boot"), "expected \"grub\" or \"direct\", found \"" +
                                                  *boot_text + "\"");
  }

  // Fields of the other boot mode are refused rather than ignored: a direct set carrying a
  // kernel hash would suggest a check that never runs.
  const bool grub = set.boot == BootMode::grub;
  for (std::string_view field :
       {"grub", "grub_cfg", "kernel", "kernel_alternatives", "kernel_efi", "initramfs",
        "kernel_cmdline", "grub_commands"})
    if (!grub && find_member(v, field))
      return fail_at(member_path(path, field), "not allowed in a \"direct\" set");
  if (grub && find_member(v, "rims"))
    return fail_at(member_path(path, "rims"),
                   "not allowed in a \"grub\" set (use the document's firmware_rims)");

  if (grub) {
    for (auto [field, target] :
         {std::pair{"grub", &set.grub.efi_applications}, std::pair{"grub_cfg", &set.grub.grub_cfgs}}) {
      auto f = require_member(v, path, field);
      if (!f) return tl::unexpected(f.error());
      auto list = parse_hex_list(**f, member_path(path, field), size, what);
      if (!list) return tl::unexpected(list.error());
      *target = std::move(*list);
    }
    auto kernel = require_member(v, path, "kernel");
    if (!kernel) return tl::unexpected(kernel.error());
    auto kernel_digest = parse_hex(**kernel, member_path(path, "kernel"), size, what);
    if (!kernel_digest) return tl::unexpected(kernel_digest.error());
    set.grub.kernel = std::move(*kernel_digest);
    for (auto [field, target] : {std::pair{"kernel_alternatives", &set.grub.kernel_alternatives},
                                 std::pair{"kernel_efi", &set.grub.kernel_efi}}) {
      if (const Value* f = find_member(v, field)) {
        auto list = parse_hex_list(*f, member_path(path, field), size, what);
        if (!list) return tl::unexpected(list.error());
        *target = std::move(*list);
      }
    }
    // initramfs is required so that "expects no initramfs" is always written down (null).
    auto initramfs = require_member(v, path, "initramfs");
    if (!initramfs) return tl::unexpected(initramfs.error());
    if (!(*initramfs)->IsNull()) {
      auto d = parse_hex(**initramfs, member_path(path, "initramfs"), size, what);
      if (!d) return tl::unexpected(d.error());
      set.grub.initramfs = std::move(*d);
    }
    if (const Value* f = find_member(v, "kernel_cmdline")) {
      auto t = parse_text(*f, member_path(path, "kernel_cmdline"), true);
      if (!t) return tl::unexpected(t.error());
      set.grub.kernel_cmdline = std::move(*t);
    }
    if (const Value* f = find_member(v, "grub_commands")) {
      const std::string p = member_path(path, "grub_commands");
      if (!f->IsArray())
        return fail_at(p, std::string("expected an array, found ") + type_name(*f));
      if (f->Size() > max_grub_commands)
        return fail_at(p, "more than " + std::to_string(max_grub_commands) + " entries",
                       Errc::too_large);
      std::vector<std::string> commands;
      for (rapidjson::SizeType i = 0; i < f->Size(); ++i) {
        auto t = parse_text((*f)[i], index_path(p, i), true);
        if (!t) return tl::unexpected(t.error());
        commands.push_back(std::move(*t));
      }
      set.grub.grub_commands = std::move(commands);
    }
  } else {
    auto rims = require_member(v, path, "rims");
    if (!rims) return tl::unexpected(rims.error());
    auto list = parse_hex_list(**rims, member_path(path, "rims"), size, what);
    if (!list) return tl::unexpected(list.error());
    set.rims = std::move(*list);
  }

  if (const Value* f = find_member(v, "rems")) {
    const std::string p = member_path(path, "rems");
    if (!f->IsArray() || f->Size() != rem_count)
      return fail_at(p, "expected an array of 4 entries (hex or null)");
    for (rapidjson::SizeType i = 0; i < rem_count; ++i) {
      if ((*f)[i].IsNull()) continue;
      auto d = parse_hex((*f)[i], index_path(p, i), size, what);
      if (!d) return tl::unexpected(d.error());
      set.rems[i] = std::move(*d);
    }
  }
  return set;
}

// rapidjson Document with the flags every JSON input here is parsed with: UTF-8 validated,
// iterative (a deeply nested hostile document cannot exhaust the stack), no comments,
// no trailing commas, no NaN.
Result<void> parse_json(rapidjson::Document& doc, std::string_view json, std::string_view what) {
  if (json.size() > max_document_size)
    return fail(Errc::too_large, std::string(what) + ": " + std::to_string(json.size()) +
                                     " bytes, more than " + std::to_string(max_document_size));
  doc.Parse<rapidjson::kParseValidateEncodingFlag | rapidjson::kParseIterativeFlag>(json.data(),
                                                                                     json.size());
  if (doc.HasParseError())
    return fail(Errc::malformed, std::string(what) + ": invalid JSON at offset " +
                                     std::to_string(doc.GetErrorOffset()) + ": " +
                                     rapidjson::GetParseError_En(doc.GetParseError()));
  return {};
}

Result<void> check_size(const Bytes& b, std::size_t size, const std::string& path,
                        std::string_view what) {
  if (b.size() != size)
    return fail_at(path, "expected " + std::to_string(size) + " bytes (" + std::string(what) +
                             "), found " + std::to_string(b.size()));
  return {};
}

Result<void> check_list(const std::vector<Bytes>& list, std::size_t size, const std::string& path,
                        std::string_view what, bool allow_empty) {
  if (!allow_empty && list.empty()) return fail_at(path, "must list at least one digest");
  if (list.size() > max_list_entries)
    return fail_at(path, "more than " + std::to_string(max_list_entries) + " entries",
                   Errc::too_large);
  for (std::size_t i = 0; i < list.size(); ++i)
    if (auto ok = check_size(list[i], size, index_path(path, i), what); !ok) return ok;
  return {};
}

Result<void> check_text(const std::string& text, const std::string& path, bool allow_empty) {
  if (!allow_empty && text.empty()) return fail_at(path, "must not be empty");
  if (text.size() > max_text_size)
    return fail_at(path, "longer than " + std::to_string(max_text_size) + " bytes",
                   Errc::too_large);
  if (text.find('\0') != std::string::npos) return fail_at(path, "contains a NUL character");
  return {};
}

Result<void> validate_set(const ReferenceSet& set, const std::string& path, crypto::HashAlg alg) {
  const std::size_t size = crypto::digest_size(alg);
  const std::string what = digest_what(alg);
  if (auto ok = check_text(set.name, member_path(path, "name"), false); !ok) return ok;
  if (set.description)
    if (auto ok = check_text(*set.description, member_path(path, "description"), true); !ok)
      return ok;
  if (set.kernel_version)
    if (auto ok = check_text(*set.kernel_version, member_path(path, "kernel_version"), true); !ok)
      return ok;
  for (std::size_t i = 0; i < rem_count; ++i)
    if (set.rems[i])
      if (auto ok = check_size(*set.rems[i], size, index_path(member_path(path, "rems"), i), what);
          !ok)
        return ok;
  const GrubBootValues& g = set.grub;
  if (set.boot == BootMode::direct) {
    if (!g.efi_applications.empty() || !g.grub_cfgs.empty() || !g.kernel.empty() ||
        !g.kernel_alternatives.empty() || !g.kernel_efi.empty() || g.initramfs || g.kernel_cmdline || g.grub_commands)
      return fail_at(path, "a \"direct\" set must not carry grub-boot values");
    return check_list(set.rims, size, member_path(path, "rims"), what, false);
  }
  if (!set.rims.empty())
    return fail_at(member_path(path, "rims"),
                   "not allowed in a \"grub\" set (use the document's firmware_rims)");
  if (auto ok = check_list(g.efi_applications, size, member_path(path, "grub"), what, false); !ok)
    return ok;
  if (auto ok = check_list(g.grub_cfgs, size, member_path(path, "grub_cfg"), what, false); !ok)
    return ok;
  if (auto ok = check_size(g.kernel, size, member_path(path, "kernel"), what); !ok) return ok;
  if (auto ok = check_list(g.kernel_alternatives, size, member_path(path, "kernel_alternatives"),
                           what, true);
      !ok)
    return ok;
  if (auto ok = check_list(g.kernel_efi, size, member_path(path, "kernel_efi"), what, true); !ok)
    return ok;
  if (g.initramfs)
    if (auto ok = check_size(*g.initramfs, size, member_path(path, "initramfs"), what); !ok)
      return ok;
  if (g.kernel_cmdline)
    if (auto ok = check_text(*g.kernel_cmdline, member_path(path, "kernel_cmdline"), true); !ok)
      return ok;
  if (g.grub_commands) {
    if (g.grub_commands->size() > max_grub_commands)
      return fail_at(member_path(path, "grub_commands"),
                     "more than " + std::to_string(max_grub_commands) + " entries",
                     Errc::too_large);
    for (std::size_t i = 0; i < g.grub_commands->size(); ++i)
      if (auto ok = check_text((*g.grub_commands)[i],
                               index_path(member_path(path, "grub_commands"), i), true);
          !ok)
        return ok;
  }
  // Section d.4: without a pinned command line an attacker who reaches the grub console can
  // boot the expected kernel with "init=/bin/sh". REM[2] covers the command line too.
  if (!g.kernel_cmdline && !set.rems[2])
    return fail_at(path, "a \"grub\" set must pin the kernel command line (kernel_cmdline, "
                         "or rems[2])");
  // The allow-list explains a grub command only by the pinned list (or a pinned REM[2]);
  // a set with neither could never match a boot whose grub measures its commands.
  if (!g.grub_commands && !set.rems[2])
    return fail_at(path, "a \"grub\" set must pin the grub commands (grub_commands, or rems[2])");
  return {};
}

void write_hex(rapidjson::PrettyWriter<rapidjson::StringBuffer>& w, const Bytes& b) {
  std::string hex = hex_encode(b);
  w.String(hex.data(), static_cast<rapidjson::SizeType>(hex.size()));
}
void write_text(rapidjson::PrettyWriter<rapidjson::StringBuffer>& w, std::string_view text) {
  w.String(text.data(), static_cast<rapidjson::SizeType>(text.size()));
}
void write_hex_list(rapidjson::PrettyWriter<rapidjson::StringBuffer>& w, const char* key,
                    const std::vector<Bytes>& list) {
  w.Key(key);
  w.StartArray();
  for (const auto& b : list) write_hex(w, b);
  w.EndArray();
}

}  // namespace

std::string_view boot_mode_name(BootMode mode) {
  return mode == BootMode::grub ? "grub" : "direct";
}

const ReferenceSet* ReferenceValues::find_set(std::string_view name) const {
  for (const auto& set : sets)
    if (set.name == name) return &set;
  return nullptr;
}

Result<void> validate_reference_values(const ReferenceValues& values) {
  const std::size_t size = crypto::digest_size(values.hash_alg);
  const std::string what = digest_what(values.hash_alg);
  if (values.image_id)
    if (auto ok = check_text(*values.image_id, "image_id", false); !ok) return ok;
  if (values.sets.empty()) return fail_at("sets", "must contain at least one set");
  if (values.sets.size() > max_sets)
    return fail_at("sets", "more than " + std::to_string(max_sets) + " sets", Errc::too_large);
  std::set<std::string_view> names;
  bool any_grub = false;
  for (std::size_t i = 0; i < values.sets.size(); ++i) {
    const ReferenceSet& set = values.sets[i];
    const std::string path = index_path("sets", i);
    if (auto ok = validate_set(set, path, values.hash_alg); !ok) return ok;
    if (!names.insert(set.name).second)
      return fail_at(member_path(path, "name"), "duplicate set name \"" + set.name + "\"");
    any_grub = any_grub || set.boot == BootMode::grub;
  }
  if (any_grub && values.firmware_rims.empty())
    return fail_at("firmware_rims", "grub-boot sets need at least one firmware RIM");
  if (auto ok = check_list(values.firmware_rims, size, "firmware_rims", what, true); !ok) return ok;
  if (auto ok = check_list(values.firmware_drivers, size, "firmware_drivers", what, true); !ok)
    return ok;
  if (auto ok = check_list(values.firmware_rem0, size, "firmware_rem0", what, true); !ok) return ok;
  return check_list(values.allowed_rpvs, rpv_size, "allowed_rpvs", "RPV", true);
}

Result<ReferenceValues> parse_reference_values(std::string_view json) {
  rapidjson::Document doc;
  if (auto ok = parse_json(doc, json, "reference values"); !ok) return tl::unexpected(ok.error());
  if (auto ok = check_members(doc, "",
                              {"version", "image_id", "hash_alg", "firmware_rims",
                               "firmware_drivers", "firmware_rem0", "allowed_rpvs", "sets"});
      !ok)
    return tl::unexpected(ok.error());

  auto version = require_member(doc, "", "version");
  if (!version) return tl::unexpected(version.error());
  if (!(*version)->IsInt64() || (*version)->GetInt64() != format_version)
    return fail_at("version", "expected " + std::to_string(format_version), Errc::unsupported);

  ReferenceValues out;
  if (const Value* f = find_member(doc, "image_id")) {
    auto t = parse_text(*f, "image_id", false);
    if (!t) return tl::unexpected(t.error());
    out.image_id = std::move(*t);
  }
  auto alg_value = require_member(doc, "", "hash_alg");
  if (!alg_value) return tl::unexpected(alg_value.error());
  auto alg_text = parse_text(**alg_value, "hash_alg", false);
  if (!alg_text) return tl::unexpected(alg_text.error());
  auto alg = crypto::hash_alg_from_name(*alg_text);
  if (!alg)
    return fail_at("hash_alg", "expected \"sha-256\", \"sha-384\" or \"sha-512\", found \"" +
                                   *alg_text + "\"",
                   Errc::unsupported);
  out.hash_alg = *alg;
  const std::size_t size = crypto::digest_size(out.hash_alg);
  const std::string what = digest_what(out.hash_alg);

  if (const Value* f = find_member(doc, "firmware_rims")) {
    auto list = parse_hex_list(*f, "firmware_rims", size, what);
    if (!list) return tl::unexpected(list.error());
    out.firmware_rims = std::move(*list);
  }
  for (auto [field, target] : {std::pair{"firmware_drivers", &out.firmware_drivers},
                               std::pair{"firmware_rem0", &out.firmware_rem0}}) {
    if (const Value* f = find_member(doc, field)) {
      auto list = parse_hex_list(*f, field, size, what);
      if (!list) return tl::unexpected(list.error());
      *target = std::move(*list);
    }
  }
  if (const Value* f = find_member(doc, "allowed_rpvs")) {
    auto list = parse_hex_list(*f, "allowed_rpvs", rpv_size, "RPV");
    if (!list) return tl::unexpected(list.error());
    out.allowed_rpvs = std::move(*list);
  }
  auto sets = require_member(doc, "", "sets");
  if (!sets) return tl::unexpected(sets.error());
  if (!(*sets)->IsArray())
    return fail_at("sets", std::string("expected an array, found ") + type_name(**sets));
  if ((*sets)->Size() > max_sets)
    return fail_at("sets", "more than " + std::to_string(max_sets) + " sets", Errc::too_large);
  for (rapidjson::SizeType i = 0; i < (*sets)->Size(); ++i) {
    auto set = parse_set((**sets)[i], index_path("sets", i), out.hash_alg);
    if (!set) return tl::unexpected(set.error());
    out.sets.push_back(std::move(*set));
  }
  if (auto ok = validate_reference_values(out); !ok) return tl::unexpected(ok.error());
  return out;
}

Result<std::string> serialize_reference_values(const ReferenceValues& values) {
  if (auto ok = validate_reference_values(values); !ok) return tl::unexpected(ok.error());
  rapidjson::StringBuffer buffer;
  rapidjson::PrettyWriter<rapidjson::StringBuffer> w(buffer);
  w.SetIndent(' ', 2);
  w.StartObject();
  w.Key("version");
  w.Int64(format_version);
  if (values.image_id) {
    w.Key("image_id");
    write_text(w, *values.image_id);
  }
  w.Key("hash_alg");
  write_text(w, crypto::hash_alg_name(values.hash_alg));
  write_hex_list(w, "firmware_rims", values.firmware_rims);
  if (!values.firmware_drivers.empty())
    write_hex_list(w, "firmware_drivers", values.firmware_drivers);
  if (!values.firmware_rem0.empty()) write_hex_list(w, "firmware_rem0", values.firmware_rem0);
  if (!values.allowed_rpvs.empty()) write_hex_list(w, "allowed_rpvs", values.allowed_rpvs);
  w.Key("sets");
  w.StartArray();
  for (const ReferenceSet& set : values.sets) {
    w.StartObject();
    w.Key("name");
    write_text(w, set.name);
    if (set.description) {
      w.Key("description");
      write_text(w, *set.description);
    }
    if (set.kernel_version) {
      w.Key("kernel_version");
      write_text(w, *set.kernel_version);
    }
    w.Key("boot");
    write_text(w, boot_mode_name(set.boot));
    if (set.boot == BootMode::grub) {
      const GrubBootValues& g = set.grub;
      write_hex_list(w, "grub", g.efi_applications);
      write_hex_list(w, "grub_cfg", g.grub_cfgs);
      w.Key("kernel");
      write_hex(w, g.kernel);
      if (!g.kernel_alternatives.empty())
        write_hex_list(w, "kernel_alternatives", g.kernel_alternatives);
      if (!g.kernel_efi.empty()) write_hex_list(w, "kernel_efi", g.kernel_efi);
      w.Key("initramfs");
      if (g.initramfs)
        write_hex(w, *g.initramfs);
      else
        w.Null();
      if (g.kernel_cmdline) {
        w.Key("kernel_cmdline");
        write_text(w, *g.kernel_cmdline);
      }
      if (g.grub_commands) {
        w.Key("grub_commands");
        w.StartArray();
        for (const auto& c : *g.grub_commands) write_text(w, c);
        w.EndArray();
      }
    } else {
      write_hex_list(w, "rims", set.rims);
    }
    if (std::any_of(set.rems.begin(), set.rems.end(), [](const auto& r) { return r.has_value(); })) {
      w.Key("rems");
      w.StartArray();
      for (const auto& r : set.rems) {
        if (r)
          write_hex(w, *r);
        else
          w.Null();
      }
      w.EndArray();
    }
    w.EndObject();
  }
  w.EndArray();
  w.EndObject();
  std::string out(buffer.GetString(), buffer.GetSize());
  out.push_back('\n');
  return out;
}

Result<void> add_reference_set(ReferenceValues& values, ReferenceSet set) {
  ReferenceValues updated = values;
  updated.sets.push_back(std::move(set));
  if (auto ok = validate_reference_values(updated); !ok) return ok;
  values = std::move(updated);
  return {};
}

Result<void> retire_reference_set(ReferenceValues& values, std::string_view name) {
  auto it = std::find_if(values.sets.begin(), values.sets.end(),
                         [&](const ReferenceSet& s) { return s.name == name; });
  if (it == values.sets.end())
    return fail(Errc::not_found, "reference values: no set named \"" + std::string(name) + "\"");
  if (values.sets.size() == 1)
    return fail(Errc::invalid_argument,
                "reference values: cannot retire \"" + std::string(name) +
                    "\", the only set (add its replacement first)");
  values.sets.erase(it);
  return {};
}

Result<ReferenceValues> import_image_reference_measurement(std::string_view json,
                                                           const ImageReferenceImport& options) {
  rapidjson::Document doc;
  if (auto ok = parse_json(doc, json, "image reference measurement"); !ok)
    return tl::unexpected(ok.error());
  // Same path-bearing errors as our own format, with the source file named in the message.
  auto wrap = [](const Error& e) {
    Error out = e;
    const std::string prefix = "reference values: ";
    if (out.message.starts_with(prefix)) out.message.erase(0, prefix.size());
    return fail_with_context("image reference measurement", std::move(out));
  };
  if (auto ok = check_members(doc, "", {"grub", "grub.cfg", "kernels", "hash_alg"}); !ok)
    return wrap(ok.error());
  // Section d.4: the reference implementation only accepts sha-256.
  auto alg_value = require_member(doc, "", "hash_alg");
  if (!alg_value) return wrap(alg_value.error());
  auto alg_text = parse_text(**alg_value, "hash_alg", false);
  if (!alg_text) return wrap(alg_text.error());
  if (*alg_text != "sha-256")
    return wrap(Error{Errc::unsupported, "hash_alg: expected \"sha-256\", found \"" + *alg_text + "\""});
  constexpr auto alg = crypto::HashAlg::sha256;
  const std::size_t size = crypto::digest_size(alg);

  ReferenceValues out;
  out.hash_alg = alg;
  out.image_id = options.image_id;
  out.firmware_rims = options.firmware_rims;

  auto grub = require_member(doc, "", "grub");
  if (!grub) return wrap(grub.error());
  auto grub_digest = parse_hex(**grub, "grub", size, "sha-256");
  if (!grub_digest) return wrap(grub_digest.error());
  auto cfg = require_member(doc, "", "grub.cfg");
  if (!cfg) return wrap(cfg.error());
  auto cfg_digest = parse_hex(**cfg, "grub.cfg", size, "sha-256");
  if (!cfg_digest) return wrap(cfg_digest.error());

  auto kernels = require_member(doc, "", "kernels");
  if (!kernels) return wrap(kernels.error());
  if (!(*kernels)->IsArray() || (*kernels)->Empty())
    return wrap(Error{Errc::malformed, "kernels: expected a non-empty array"});
  if ((*kernels)->Size() > max_sets)
    return wrap(Error{Errc::too_large, "kernels: more than " + std::to_string(max_sets) + " entries"});
  for (rapidjson::SizeType i = 0; i < (*kernels)->Size(); ++i) {
    const Value& k = (**kernels)[i];
    const std::string path = index_path("kernels", i);
    if (auto ok = check_members(k, path, {"version", "kernel", "initramfs"}); !ok)
      return wrap(ok.error());
    auto version = require_member(k, path, "version");
    if (!version) return wrap(version.error());
    auto version_text = parse_text(**version, member_path(path, "version"), false);
    if (!version_text) return wrap(version_text.error());
    auto kernel = require_member(k, path, "kernel");
    if (!kernel) return wrap(kernel.error());
    auto kernel_digest = parse_hex(**kernel, member_path(path, "kernel"), size, "sha-256");
    if (!kernel_digest) return wrap(kernel_digest.error());
    auto initramfs = require_member(k, path, "initramfs");
    if (!initramfs) return wrap(initramfs.error());

    ReferenceSet set;
    set.name = "kernel-" + *version_text;
    set.kernel_version = *version_text;
    set.description = "imported from image_reference_measurement.json";
    set.boot = BootMode::grub;
    set.grub.efi_applications = {*grub_digest};
    set.grub.grub_cfgs = {*cfg_digest};
    set.grub.kernel = std::move(*kernel_digest);
    // create-fde-image.sh writes "NOT_FOUND" for a kernel without an initramfs (e.2); that
    // set then expects no initramfs event at all.
    if (!((*initramfs)->IsString() && view(**initramfs) == "NOT_FOUND")) {
      auto d = parse_hex(**initramfs, member_path(path, "initramfs"), size, "sha-256");
      if (!d) return wrap(d.error());
      set.grub.initramfs = std::move(*d);
    }
    auto cmdline = options.kernel_cmdlines.find(*version_text);
    if (cmdline == options.kernel_cmdlines.end())
      return fail(Errc::invalid_argument,
                  "image reference measurement: " + member_path(path, "version") +
                      ": no kernel command line given for kernel version \"" + *version_text +
                      "\" (the file does not record it, and every set must pin it)");
    set.grub.kernel_cmdline = cmdline->second;
    auto commands = options.grub_commands.find(*version_text);
    if (commands == options.grub_commands.end())
      return fail(Errc::invalid_argument,
                  "image reference measurement: " + member_path(path, "version") +
                      ": no grub commands given for kernel version \"" + *version_text +
                      "\" (the file does not record them, and every set must pin them)");
    set.grub.grub_commands = commands->second;
    out.sets.push_back(std::move(set));
  }
  if (auto ok = validate_reference_values(out); !ok) return wrap(ok.error());
  return out;
}

}  // namespace fde::reference
