// The COSE Sig_structure (RFC 9052 section 4.4), apart from the libcbor-based parser so that
// the simulator (and anything else in fde_base's world) can sign without libcbor.
#pragma once

#include "common/util/bytes.hpp"

namespace fde::cose {

// ToBeSigned = ["Signature1", protected, h'' (external_aad), payload], deterministic CBOR.
Bytes sig_structure(ByteView protected_header, ByteView payload);

}  // namespace fde::cose
