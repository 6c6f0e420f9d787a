// The enrollment bundle (docs/enrollment-bundle.md): what `fde-image` hands to
// `fde-admin enroll` — image id, LUKS UUID, the disk key and the image's reference values.
// The key is a secret from the moment it is parsed: SecretBytes, and every buffer that held
// its base64 text is wiped.
#pragma once

#include <string>
#include <string_view>

#include <rapidjson/document.h>

#include "common/reference/reference_values.hpp"
#include "common/util/error.hpp"
#include "common/util/secret_bytes.hpp"

namespace fde::protocol {

constexpr std::string_view enrollment_bundle_format = "virtcca-fde-enrollment/v1";
constexpr std::size_t min_bundle_disk_key_size = 32;
constexpr std::size_t max_bundle_disk_key_size = 64;
// The reference document (at most 1 MiB) plus the few other fields.
constexpr std::size_t max_enrollment_bundle_size = reference::max_document_size + 16 * 1024;

struct EnrollmentBundle {
  std::string image_id;   // protocol::validate_image_id
  std::string luks_uuid;  // canonical 8-4-4-4-12 lowercase hex
  SecretBytes disk_key;   // 32..64 bytes
  reference::ReferenceValues reference;
};

// Strict: unknown or duplicate fields refused, "format" must be enrollment_bundle_format, the
// reference document's own image_id (if any) must equal image_id. Errors name the field
// ("enrollment bundle: disk_key: ...") and never contain key material. The text is copied
// into a buffer that is wiped before returning; the caller wipes its own copy.
Result<EnrollmentBundle> parse_enrollment_bundle(std::string_view json);
// The same on a value already parsed (the admin socket carries the bundle inside a request).
Result<EnrollmentBundle> parse_enrollment_bundle(const rapidjson::Value& bundle);

// The bundle's JSON text, as a secret (it holds the key). Validates like the parser, so a
// written bundle always loads. fde-image writes it with mode 0600.
Result<SecretBytes> serialize_enrollment_bundle(const EnrollmentBundle& bundle);

// "0f1e2d3c-..." in either case -> lowercase; anything else is an error.
Result<std::string> normalize_luks_uuid(std::string_view uuid);

}  // namespace fde::protocol
