// Strict JSON input helpers on RapidJSON: one set of parse flags (UTF-8 validated, iterative,
// no comments or NaN), member checks that refuse unknown and duplicate names, and typed
// getters whose errors name the JSON path ("bundle.disk_key: expected a string, found a number").
#pragma once

#include <cstdint>
#include <initializer_list>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include <rapidjson/document.h>

#include "common/util/error.hpp"
#include "common/util/secret_bytes.hpp"

namespace fde::json {

using Value = rapidjson::Value;

// Parses `text` (at most `max_size` bytes) into `doc`; `what` names the input in errors.
Result<void> parse(rapidjson::Document& doc, std::string_view text, std::size_t max_size, std::string_view what);
// In-situ parse for texts that hold secrets: `text` is copied into `buffer` (which must
// outlive `doc`, whose strings point into it, and which wipes itself), then parsed in place,
// so the secret exists in one buffer the caller controls. The copy is padded with NUL bytes:
// RapidJSON 1.1.0's in-situ UTF-8 validation reads up to three bytes past a truncated
// multi-byte sequence at the end of the text.
Result<void> parse_in_place(rapidjson::Document& doc, SecretBytes& buffer, std::string_view text, std::size_t max_size,
                            std::string_view what);

std::string member_path(std::string_view path, std::string_view name);
std::string index_path(std::string_view path, std::size_t index);
const char* type_name(const Value& value);

// `value` must be an object whose member names are all in `allowed`, each at most once
// (RapidJSON keeps duplicates; "first wins" against "last wins" is an ambiguity an edited
// file could exploit).
Result<void> check_members(const Value& value, std::string_view path, std::initializer_list<std::string_view> allowed);

const Value* find(const Value& object, std::string_view name);
Result<const Value*> require(const Value& object, std::string_view path, std::string_view name);

std::string_view view(const Value& string_value);
Result<std::string_view> get_string(const Value& value, std::string_view path);
Result<std::int64_t> get_int(const Value& value, std::string_view path);
Result<bool> get_bool(const Value& value, std::string_view path);

// Optional members: nullopt when absent; a wrong type is an error.
Result<std::optional<std::string>> optional_string(const Value& object, std::string_view path, std::string_view name);
Result<std::optional<std::int64_t>> optional_int(const Value& object, std::string_view path, std::string_view name);
Result<std::optional<bool>> optional_bool(const Value& object, std::string_view path, std::string_view name);

// Serializes a value compactly (no secrets: the writer's buffer is not wiped).
std::string to_string(const Value& value);

// `text` with every byte that is not part of well-formed UTF-8 replaced by the four
// characters "\xNN", so text from untrusted input (token claims) can go into JSON that a
// strict parser reads back.
std::string valid_utf8(std::string_view text);

// Appends `text` as a JSON string literal (quotes included) to `out`.
void append_quoted(std::string& out, std::string_view text);

}  // namespace fde::json
