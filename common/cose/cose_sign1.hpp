// COSE_Sign1 (RFC 9052 section 4.2) parsing and verification.
#pragma once

#include <cstdint>

#include <cbor.h>

#include "common/crypto/keys.hpp"
#include "common/crypto/signature.hpp"
#include "common/cose/sig_structure.hpp"
#include "common/util/bytes.hpp"

namespace fde::cose {

constexpr std::uint64_t tag_cose_sign1 = 18;
constexpr std::int64_t header_alg = 1;
constexpr std::int64_t header_crit = 2;

struct Sign1 {
  Bytes protected_header;  // the serialized protected-header map, exactly as received
  crypto::SigAlg alg = crypto::SigAlg::es512;
  Bytes payload;           // the payload bstr's content, exactly as received
  Bytes signature;
};

// Parses a tagged COSE_Sign1 (tag 18, 4-element array) from an already-decoded item:
// protected header a bstr holding a map with an allow-listed integer alg (1) and no
// critical headers (2); unprotected header a map (no alg, no crit there either);
// payload a bstr (not detached); signature a bstr.
Result<Sign1> parse_sign1(const cbor_item_t* item);
// Decodes and parses a serialized tagged COSE_Sign1.
Result<Sign1> parse_sign1(ByteView encoded);

// Checks that the key fits the alg, then verifies the signature over the Sig_structure.
Result<void> verify_sign1(const Sign1& message, const crypto::PublicKey& key);

}  // namespace fde::cose
