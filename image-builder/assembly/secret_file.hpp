// Writing a file that holds a secret (the enrollment bundle carries the only copy of the key).
#pragma once

#include "common/util/secret_bytes.hpp"
#include "image-builder/disk/raw_file.hpp"

namespace fde::image {

// Writes `content` at the start of `file`, a file fde-image created (StagedFiles), and fsyncs
// it; refuses a file whose mode lets anyone but its owner read it.
Result<void> write_secret_file(RawFile& file, const SecretBytes& content);

}  // namespace fde::image
