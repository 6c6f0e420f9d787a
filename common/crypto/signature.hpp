// Signature creation and verification for the COSE algorithms virtCCA and Arm CCA use.
#pragma once

#include <cstdint>
#include <optional>

#include "common/crypto/keys.hpp"
#include "common/util/bytes.hpp"

namespace fde::crypto {

// COSE algorithm identifiers (IANA COSE Algorithms registry).
enum class SigAlg : std::int64_t {
  es256 = -7,
  es384 = -35,
  es512 = -36,
  ps256 = -37,
  ps384 = -38,
  ps512 = -39,
};

// Only the allow-listed algorithms map; everything else (including absent) is refused.
std::optional<SigAlg> sig_alg_from_cose(std::int64_t cose_value);
std::string_view sig_alg_name(SigAlg alg);

// The key type an algorithm needs: PS* needs RSA (>= 2048 bits), ES256/384/512 need
// P-256/P-384/P-521 respectively. Mismatches are refused, as t_cose does.
Result<void> check_key_matches_alg(const PublicKey& key, SigAlg alg);

// Verifies `signature` over `message` (the message is hashed here).
// RSA-PSS: MGF1 with the same hash, salt length = hash length (RFC 8230).
// ECDSA: accepts the raw r||s form (2 x field size, COSE's form) or a DER SEQUENCE of two
// INTEGERs (some TMM firmware emits DER); DER must be exactly well formed.
Result<void> verify_signature(const PublicKey& key, SigAlg alg, ByteView message, ByteView signature);

enum class EcdsaEncoding { raw, der };
// Signs for the simulator; ECDSA output in raw r||s unless `der` is asked for.
Result<Bytes> sign(const PrivateKey& key, SigAlg alg, ByteView message,
                   EcdsaEncoding encoding = EcdsaEncoding::raw);

}  // namespace fde::crypto
