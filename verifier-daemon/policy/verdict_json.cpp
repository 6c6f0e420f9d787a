// Verdict <-> JSON for audit records and `fde-admin explain`.
#include "verifier-daemon/policy/verdict_json.hpp"

#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include "common/util/strict_json.hpp"

namespace fde::verifier {

namespace {

// Audit records hold a few dozen checks; this bounds what a damaged record can cost.
constexpr std::size_t max_checks_json = 1024 * 1024;

void write_text(rapidjson::Writer<rapidjson::StringBuffer>& writer, const std::string& text) {
  const std::string valid = json::valid_utf8(text);
  writer.String(valid.c_str(), static_cast<rapidjson::SizeType>(valid.size()));
}

}  // namespace

std::string checks_to_json(const Verdict& verdict) {
  rapidjson::StringBuffer buffer;
  rapidjson::Writer<rapidjson::StringBuffer> writer(buffer);
  writer.StartArray();
  for (const Check& check : verdict.checks()) {
    writer.StartObject();
    writer.Key("name");
    write_text(writer, check.name);
    writer.Key("expected");
    write_text(writer, check.expected);
    writer.Key("found");
    write_text(writer, check.found);
    writer.Key("passed");
    writer.Bool(check.passed);
    writer.EndObject();
  }
  writer.EndArray();
  return std::string(buffer.GetString(), buffer.GetSize());
}

Result<Verdict> checks_from_json(std::string_view text) {
  rapidjson::Document doc;
  if (auto ok = json::parse(doc, text, max_checks_json, "checks"); !ok) return tl::unexpected(ok.error());
  if (!doc.IsArray()) return fail(Errc::malformed, std::string("checks: expected an array, found ") + json::type_name(doc));
  Verdict verdict;
  for (rapidjson::SizeType i = 0; i < doc.Size(); ++i) {
    const auto& item = doc[i];
    const std::string path = json::index_path("checks", i);
    if (auto ok = json::check_members(item, path, {"name", "expected", "found", "passed"}); !ok)
      return tl::unexpected(ok.error());
    std::string fields[3];
    const char* names[3] = {"name", "expected", "found"};
    for (int f = 0; f < 3; ++f) {
      auto value = json::require(item, path, names[f]);
      if (!value) return tl::unexpected(value.error());
      auto text_value = json::get_string(**value, json::member_path(path, names[f]));
      if (!text_value) return tl::unexpected(text_value.error());
      fields[f] = std::string(*text_value);
    }
    auto passed_value = json::require(item, path, "passed");
    if (!passed_value) return tl::unexpected(passed_value.error());
    auto passed = json::get_bool(**passed_value, json::member_path(path, "passed"));
    if (!passed) return tl::unexpected(passed.error());
    verdict.add(std::move(fields[0]), std::move(fields[1]), std::move(fields[2]), *passed);
  }
  return verdict;
}

}  // namespace fde::verifier
