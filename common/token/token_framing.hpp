// The agent's check that a token fresh from the TSI device is complete (docs/virtcca-platform.md
// a.1 item 5: the driver can return success with a partial token). It walks only the outer
// framing; the verifier does the full parse.
#pragma once

#include "common/util/bytes.hpp"

namespace fde::token {

// Requires: size <= 8192; tag 399; a map of 1 or 2 entries whose keys are 44234/44241 (each
// at most once, 44241 present); each value a byte string that lies wholly inside the buffer
// and starts with a COSE_Sign1 head (tag 18, array of 4); and no bytes after the map. A token
// cut short anywhere fails, because its last byte string then runs past the end.
Result<void> check_token_framing(ByteView token);

}  // namespace fde::token
