// The simulated TMM: issues byte-exact virtCCA attestation tokens, legacy (CVM token only,
// RSA RAK) or full (platform + CVM token, P-521 RAK) (docs/virtcca-platform.md b.1-b.6).
//
// The encoding steps are public on their own so tests can check framing against the real
// secGear token and build hostile variants (a swapped RAK, a foreign platform token).
#pragma once

#include <array>
#include <optional>

#include "common/crypto/hash.hpp"
#include "common/crypto/keys.hpp"
#include "common/crypto/signature.hpp"
#include "common/sim/sim_device.hpp"
#include "common/token/token.hpp"
#include "common/util/bytes.hpp"

namespace fde::sim {

enum class TokenFormat {
  legacy,  // tag 399 {44241: CVM token}; older TMM, RSA-4096 RAK = the device key
  full,    // tag 399 {44234: platform token, 44241: CVM token}; newer TMM, P-521 RAK
};

struct TokenRequest {
  Bytes challenge;  // exactly 64 bytes (the TSI ioctl always passes 64)
  Bytes rim;        // digest size of hash_alg
  std::array<Bytes, token::rem_count> rems;  // each digest size of hash_alg; empty = zeros
  Bytes personalization_value = Bytes(token::rpv_size, 0);  // RPV, 64 bytes
  crypto::HashAlg hash_alg = crypto::HashAlg::sha256;       // claim 44236 (RIM/REM algorithm)
  crypto::HashAlg rak_hash_alg = crypto::HashAlg::sha256;   // claim 44240 and the platform binding
  TokenFormat format = TokenFormat::full;
  // ECDSA signatures as raw r||s (COSE) or DER (the firmware quirk of section b.4).
  crypto::EcdsaEncoding ecdsa_encoding = crypto::EcdsaEncoding::raw;
  // The RAK. Unset: legacy tokens use the device key (legacy firmware: RAK = AIK); full
  // tokens use the device's persistent RAK or else a fresh P-521 key for this token.
  std::optional<crypto::PrivateKey> rak;
  // Full tokens: the platform claims to sign. Unset: the device's own. An empty challenge is
  // filled with the RAK binding H_rak_hash_alg(RAK claim); a non-empty one is kept as given
  // (to build tokens whose binding is broken).
  std::optional<token::PlatformClaims> platform_claims;
};

struct IssuedToken {
  Bytes token;  // the whole token, as the TSI ioctl returns it
  token::CvmClaims cvm;
  std::optional<token::PlatformClaims> platform;
  Bytes cvm_sign1;                 // the tagged CVM COSE_Sign1
  std::optional<Bytes> platform_sign1;  // the tagged platform COSE_Sign1 (full tokens)
};

Result<IssuedToken> issue_token(const SimDevice& device, const TokenRequest& request);

// --- Encoding steps (fde::cbor::Writer conventions: minimal heads, definite lengths) ---

// The RAK claim (44237): DER SubjectPublicKeyInfo for RSA (550 bytes for RSA-4096, legacy),
// the raw point 0x04||X||Y for EC keys (133 bytes for P-521).
Bytes rak_claim(const crypto::PublicKey& rak);

// The COSE algorithm a key signs with here: RSA -> PS256, P-256/384/521 -> ES256/384/512.
Result<crypto::SigAlg> signing_alg_for(const crypto::PublicKey& key);

// The 7-claim CVM map in the order of the real token:
// 10, 44235, 44237, 44236, 44240, 44238, 44239.
Bytes encode_cvm_claims(const token::CvmClaims& claims);
// The CVM COSE payload content: a CBOR bstr holding the claim map (the virtCCA double wrap,
// section b.1). The Sign1 payload field is a bstr around these bytes.
Bytes encode_cvm_payload(const token::CvmClaims& claims);
// The platform claim map, single-wrapped, in the order of Arm's CCA example tokens:
// 265, 10, 2396, 256, 2401, 2395, 2402, 2399, then 2400 if present. Sw components as
// {1, 5, 4, 2, 6}, optional entries left out when absent.
Bytes encode_platform_claims(const token::PlatformClaims& claims);

// The serialized protected header {1: alg}, e.g. a1 01 38 24 for PS256.
Bytes encode_protected_header(crypto::SigAlg alg);
// Tag 18 [protected bstr, {}, payload bstr, signature bstr].
Bytes encode_sign1(ByteView protected_header, ByteView payload, ByteView signature);
// Signs `payload` with the key's algorithm over the RFC 9052 Sig_structure and encodes it.
Result<Bytes> sign_sign1(const crypto::PrivateKey& key, ByteView payload,
                         crypto::EcdsaEncoding encoding = crypto::EcdsaEncoding::raw);
// Tag 399 {44234: bstr(platform), 44241: bstr(cvm)}, platform first; legacy when the
// platform token is empty.
Bytes encode_token(ByteView platform_sign1, ByteView cvm_sign1);

}  // namespace fde::sim
