// Strict JSON input helpers on RapidJSON.
#include "common/util/strict_json.hpp"

#include <algorithm>
#include <cstring>
#include <set>

#include <rapidjson/error/en.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

namespace fde::json {

namespace {

constexpr unsigned parse_flags = rapidjson::kParseValidateEncodingFlag | rapidjson::kParseIterativeFlag;

tl::unexpected<Error> fail_at(std::string_view path, const std::string& what) {
  return fail(Errc::malformed, (path.empty() ? std::string("document") : std::string(path)) + ": " + what);
}

Result<void> describe_parse_error(const rapidjson::Document& doc, std::string_view what) {
  if (!doc.HasParseError()) return {};
  return fail(Errc::malformed, std::string(what) + ": invalid JSON at offset " + std::to_string(doc.GetErrorOffset()) +
                                   ": " + rapidjson::GetParseError_En(doc.GetParseError()));
}

}  // namespace

Result<void> parse(rapidjson::Document& doc, std::string_view text, std::size_t max_size, std::string_view what) {
  if (text.size() > max_size)
    return fail(Errc::too_large, std::string(what) + ": " + std::to_string(text.size()) + " bytes, more than " +
                                     std::to_string(max_size));
  doc.Parse<parse_flags>(text.data(), text.size());
  return describe_parse_error(doc, what);
}

Result<void> parse_in_place(rapidjson::Document& doc, SecretBytes& buffer, std::string_view text, std::size_t max_size,
                            std::string_view what) {
  static constexpr std::size_t padding = 4;  // a NUL terminator and three bytes of look-ahead
  if (text.size() > max_size)
    return fail(Errc::too_large, std::string(what) + ": " + std::to_string(text.size()) + " bytes, more than " +
                                     std::to_string(max_size));
  // The text must not hold a NUL of its own: RapidJSON would stop there and accept a prefix.
  if (text.find('\0') != std::string_view::npos) return fail(Errc::malformed, std::string(what) + ": contains a NUL byte");
  buffer = SecretBytes(text.size() + padding);
  std::memcpy(buffer.data(), text.data(), text.size());
  std::memset(buffer.data() + text.size(), 0, padding);
  doc.ParseInsitu<parse_flags>(reinterpret_cast<char*>(buffer.data()));
  return describe_parse_error(doc, what);
}

std::string member_path(std::string_view path, std::string_view name) {
  return path.empty() ? std::string(name) : std::string(path) + "." + std::string(name);
}

std::string index_path(std::string_view path, std::size_t index) {
  return std::string(path) + "[" + std::to_string(index) + "]";
}

const char* type_name(const Value& value) {
  if (value.IsNull()) return "null";
  if (value.IsBool()) return "a boolean";
  if (value.IsNumber()) return "a number";
  if (value.IsString()) return "a string";
  if (value.IsArray()) return "an array";
  return "an object";
}

std::string_view view(const Value& string_value) { return {string_value.GetString(), string_value.GetStringLength()}; }

Result<void> check_members(const Value& value, std::string_view path, std::initializer_list<std::string_view> allowed) {
  if (!value.IsObject()) return fail_at(path, std::string("expected an object, found ") + type_name(value));
  std::set<std::string_view> seen;
  for (auto it = value.MemberBegin(); it != value.MemberEnd(); ++it) {
    std::string_view name = view(it->name);
    if (std::find(allowed.begin(), allowed.end(), name) == allowed.end())
      return fail_at(member_path(path, name), "unknown field");
    if (!seen.insert(name).second) return fail_at(member_path(path, name), "duplicate field");
  }
  return {};
}

const Value* find(const Value& object, std::string_view name) {
  if (!object.IsObject()) return nullptr;
  auto it = object.FindMember(Value(rapidjson::StringRef(name.data(), name.size())));
  return it == object.MemberEnd() ? nullptr : &it->value;
}

Result<const Value*> require(const Value& object, std::string_view path, std::string_view name) {
  const Value* value = find(object, name);
  if (value == nullptr) return fail_at(member_path(path, name), "missing required field");
  return value;
}

Result<std::string_view> get_string(const Value& value, std::string_view path) {
  if (!value.IsString()) return fail_at(path, std::string("expected a string, found ") + type_name(value));
  return view(value);
}

Result<std::int64_t> get_int(const Value& value, std::string_view path) {
  if (!value.IsInt64()) return fail_at(path, std::string("expected an integer, found ") + type_name(value));
  return value.GetInt64();
}

Result<bool> get_bool(const Value& value, std::string_view path) {
  if (!value.IsBool()) return fail_at(path, std::string("expected true or false, found ") + type_name(value));
  return value.GetBool();
}

Result<std::optional<std::string>> optional_string(const Value& object, std::string_view path,
                                                   std::string_view name) {
  const Value* value = find(object, name);
  if (value == nullptr) return std::optional<std::string>();
  auto text = get_string(*value, member_path(path, name));
  if (!text) return tl::unexpected(text.error());
  return std::optional<std::string>(std::string(*text));
}

Result<std::optional<std::int64_t>> optional_int(const Value& object, std::string_view path, std::string_view name) {
  const Value* value = find(object, name);
  if (value == nullptr) return std::optional<std::int64_t>();
  auto number = get_int(*value, member_path(path, name));
  if (!number) return tl::unexpected(number.error());
  return std::optional<std::int64_t>(*number);
}

Result<std::optional<bool>> optional_bool(const Value& object, std::string_view path, std::string_view name) {
  const Value* value = find(object, name);
  if (value == nullptr) return std::optional<bool>();
  auto flag = get_bool(*value, member_path(path, name));
  if (!flag) return tl::unexpected(flag.error());
  return std::optional<bool>(*flag);
}

std::string to_string(const Value& value) {
  rapidjson::StringBuffer buffer;
  rapidjson::Writer<rapidjson::StringBuffer> writer(buffer);
  value.Accept(writer);
  return std::string(buffer.GetString(), buffer.GetSize());
}

std::string valid_utf8(std::string_view text) {
  static constexpr char digits[] = "0123456789abcdef";
  static constexpr std::uint32_t smallest[] = {0, 0, 0x80, 0x800, 0x10000};  // no overlong forms
  std::string out;
  out.reserve(text.size());
  for (std::size_t i = 0; i < text.size();) {
    const auto lead = static_cast<unsigned char>(text[i]);
    if (lead < 0x80) {
      out += text[i++];
      continue;
    }
    std::size_t length = 0;
    if (lead >= 0xc2 && lead <= 0xdf)
      length = 2;
    else if (lead >= 0xe0 && lead <= 0xef)
      length = 3;
    else if (lead >= 0xf0 && lead <= 0xf4)
      length = 4;
    bool keep = length != 0 && i + length <= text.size();
    std::uint32_t code_point = keep ? lead & (0x7fu >> length) : 0;
    for (std::size_t k = 1; keep && k < length; ++k) {
      const auto next = static_cast<unsigned char>(text[i + k]);
      keep = (next & 0xc0) == 0x80;
      code_point = (code_point << 6) | (next & 0x3fu);
    }
    keep = keep && code_point >= smallest[length] && code_point <= 0x10ffff &&
           !(code_point >= 0xd800 && code_point <= 0xdfff);
    if (keep) {
      out.append(text.substr(i, length));
      i += length;
    } else {
      out += "\\x";
      out += digits[lead >> 4];
      out += digits[lead & 0xf];
      ++i;
    }
  }
  return out;
}

void append_quoted(std::string& out, std::string_view text) {
  static constexpr char digits[] = "0123456789abcdef";
  out += '"';
  for (char c : text) {
    const auto byte = static_cast<unsigned char>(c);
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (byte < 0x20) {
          out += "\\u00";
          out += digits[byte >> 4];
          out += digits[byte & 0xf];
        } else {
          out += c;
        }
    }
  }
  out += '"';
}

}  // namespace fde::json
