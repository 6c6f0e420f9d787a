// Writing a file that holds a secret (the enrollment bundle carries the only copy of the key).
#pragma once

#include <string>

#include "common/util/secret_bytes.hpp"

namespace fde::image {

// Writes `content` to a new file with mode 0600 (refuses an existing path) and fsyncs it.
Result<void> write_secret_file(const std::string& path, const SecretBytes& content);

}  // namespace fde::image
