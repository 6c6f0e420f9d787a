// The enrollment bundle that `fde-admin enroll` imports: the only copy of the disk key.
// Format (until common/protocol/enrollment_bundle.hpp exists):
// {"format": "virtcca-fde-enrollment/v1", "image_id", "luks_uuid", "disk_key": base64,
//  "reference": <reference document>}
#pragma once

#include <string>

#include "common/reference/reference_values.hpp"
#include "common/util/secret_bytes.hpp"

namespace fde::image {

constexpr std::string_view enrollment_bundle_format = "virtcca-fde-enrollment/v1";

// The serialized bundle, held as a secret (it contains the key).
Result<SecretBytes> serialize_enrollment_bundle(const std::string& image_id, const std::string& luks_uuid,
                                                const SecretBytes& disk_key,
                                                const reference::ReferenceValues& reference);

// Writes `content` to a new file with mode 0600 (refuses an existing path) and fsyncs it.
Result<void> write_secret_file(const std::string& path, const SecretBytes& content);

}  // namespace fde::image
