// Strict parsing and serialization of the enrollment bundle (docs/enrollment-bundle.md).
#include "common/protocol/enrollment_bundle.hpp"

#include <algorithm>
#include <cstring>

#include "common/protocol/messages.hpp"
#include "common/util/bytes.hpp"
#include "common/util/strict_json.hpp"

namespace fde::protocol {

namespace {

constexpr std::string_view context = "enrollment bundle";

tl::unexpected<Error> fail_at(std::string_view field, const std::string& what, Errc code = Errc::malformed) {
  return fail(code, std::string(context) + ": " + std::string(field) + ": " + what);
}

tl::unexpected<Error> with_context(Error error) { return fail_with_context(context, std::move(error)); }

bool is_hex_digit(char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }

// Decodes the base64 key straight into a SecretBytes and wipes the intermediate buffer. The
// error never quotes the text: it may be most of a key.
Result<SecretBytes> decode_key(std::string_view base64) {
  auto decoded = base64_decode(base64);
  if (!decoded) return fail_at("disk_key", "not valid base64 (standard alphabet, padded)");
  SecretBytes key = SecretBytes::copy_of(*decoded);
  wipe_bytes(*decoded);
  if (key.size() < min_bundle_disk_key_size || key.size() > max_bundle_disk_key_size)
    return fail_at("disk_key", "expected " + std::to_string(min_bundle_disk_key_size) + " to " +
                                   std::to_string(max_bundle_disk_key_size) + " bytes, found " +
                                   std::to_string(key.size()));
  return key;
}

Result<void> validate(const EnrollmentBundle& bundle) {
  if (auto ok = validate_image_id(bundle.image_id); !ok) return fail_at("image_id", ok.error().message);
  if (auto uuid = normalize_luks_uuid(bundle.luks_uuid); !uuid || *uuid != bundle.luks_uuid)
    return fail_at("luks_uuid", "expected a lowercase UUID (8-4-4-4-12 hex digits)");
  if (bundle.disk_key.size() < min_bundle_disk_key_size || bundle.disk_key.size() > max_bundle_disk_key_size)
    return fail_at("disk_key", "expected " + std::to_string(min_bundle_disk_key_size) + " to " +
                                   std::to_string(max_bundle_disk_key_size) + " bytes, found " +
                                   std::to_string(bundle.disk_key.size()));
  if (bundle.reference.image_id && *bundle.reference.image_id != bundle.image_id)
    return fail_at("reference.image_id", "\"" + *bundle.reference.image_id + "\" differs from image_id \"" +
                                             bundle.image_id + "\"");
  if (auto ok = reference::validate_reference_values(bundle.reference); !ok) return with_context(ok.error());
  return {};
}

}  // namespace

Result<std::string> normalize_luks_uuid(std::string_view uuid) {
  static constexpr std::size_t group_ends[] = {8, 13, 18, 23};
  if (uuid.size() != 36) return fail(Errc::malformed, "a UUID has 36 characters, found " + std::to_string(uuid.size()));
  std::string out(uuid);
  for (std::size_t i = 0; i < out.size(); ++i) {
    const bool dash = std::find(std::begin(group_ends), std::end(group_ends), i) != std::end(group_ends);
    if (dash ? out[i] != '-' : !is_hex_digit(out[i]))
      return fail(Errc::malformed, "not a UUID (8-4-4-4-12 hex digits)");
    if (out[i] >= 'A' && out[i] <= 'F') out[i] = static_cast<char>(out[i] - 'A' + 'a');
  }
  return out;
}

Result<EnrollmentBundle> parse_enrollment_bundle(const rapidjson::Value& value) {
  if (auto ok = json::check_members(value, "", {"format", "image_id", "luks_uuid", "disk_key", "reference"}); !ok)
    return with_context(ok.error());
  EnrollmentBundle bundle;
  auto member = [&](std::string_view name) -> Result<std::string_view> {
    auto found = json::require(value, "", name);
    if (!found) return tl::unexpected(found.error());
    return json::get_string(**found, name);
  };
  auto format = member("format");
  if (!format) return with_context(format.error());
  if (*format != enrollment_bundle_format)
    return fail_at("format", "expected \"" + std::string(enrollment_bundle_format) + "\"",
                   Errc::unsupported);
  auto image_id = member("image_id");
  if (!image_id) return with_context(image_id.error());
  if (auto ok = validate_image_id(*image_id); !ok) return fail_at("image_id", ok.error().message);
  bundle.image_id = std::string(*image_id);

  auto uuid_text = member("luks_uuid");
  if (!uuid_text) return with_context(uuid_text.error());
  auto uuid = normalize_luks_uuid(*uuid_text);
  if (!uuid) return fail_at("luks_uuid", uuid.error().message);
  bundle.luks_uuid = std::move(*uuid);

  auto key_text = member("disk_key");
  if (!key_text) return with_context(key_text.error());
  auto key = decode_key(*key_text);
  if (!key) return tl::unexpected(key.error());
  bundle.disk_key = std::move(*key);

  auto reference_value = json::require(value, "", "reference");
  if (!reference_value) return with_context(reference_value.error());
  if (!(*reference_value)->IsObject())
    return fail_at("reference", std::string("expected a reference-values document (an object), found ") +
                                    json::type_name(**reference_value));
  // The reference parser works on text; the document holds no secret, so re-serializing it
  // is harmless, and the parser then applies its own strict rules (duplicates included).
  auto reference = reference::parse_reference_values(json::to_string(**reference_value));
  if (!reference) return fail_with_context(std::string(context) + ": reference", reference.error());
  bundle.reference = std::move(*reference);

  if (auto ok = validate(bundle); !ok) return tl::unexpected(ok.error());
  return bundle;
}

Result<EnrollmentBundle> parse_enrollment_bundle(std::string_view text) {
  // A private copy parsed in place: the key's base64 text exists only in this buffer (and
  // the caller's), and SecretBytes wipes it on every return path.
  SecretBytes buffer;
  rapidjson::Document doc;
  if (auto ok = json::parse_in_place(doc, buffer, text, max_enrollment_bundle_size, context); !ok)
    return tl::unexpected(ok.error());
  return parse_enrollment_bundle(static_cast<const rapidjson::Value&>(doc));
}

Result<SecretBytes> serialize_enrollment_bundle(const EnrollmentBundle& bundle) {
  if (auto ok = validate(bundle); !ok) return tl::unexpected(ok.error());
  auto reference = reference::serialize_reference_values(bundle.reference);
  if (!reference) return with_context(reference.error());

  // Assembled by hand so the key's text lives only in buffers this function wipes. Image ids
  // and UUIDs are validated to need no escaping.
  std::string key_text = base64_encode(bundle.disk_key.view());
  const std::string head = "{\n  \"format\": \"" + std::string(enrollment_bundle_format) + "\",\n  \"image_id\": \"" +
                           bundle.image_id + "\",\n  \"luks_uuid\": \"" + bundle.luks_uuid +
                           "\",\n  \"disk_key\": \"";
  const std::string middle = "\",\n  \"reference\": ";
  // Indent the reference document by two spaces to nest it.
  std::string_view document = *reference;
  while (!document.empty() && (document.back() == '\n' || document.back() == ' ')) document.remove_suffix(1);
  std::string nested;
  for (char c : document) {
    nested += c;
    if (c == '\n') nested += "  ";
  }
  const std::string tail = "\n}\n";
  const std::string_view parts[] = {head, key_text, middle, nested, tail};
  std::size_t size = 0;
  for (auto part : parts) size += part.size();
  SecretBytes out(size);
  std::size_t at = 0;
  for (auto part : parts) {
    std::memcpy(out.data() + at, part.data(), part.size());
    at += part.size();
  }
  wipe_bytes({reinterpret_cast<std::uint8_t*>(key_text.data()), key_text.size()});
  return out;
}

}  // namespace fde::protocol
