// Hash functions by name (IANA named-information names as used in virtCCA claims).
#pragma once

#include <optional>
#include <string_view>

#include "common/util/bytes.hpp"

namespace fde::crypto {

enum class HashAlg { sha256, sha384, sha512 };

// "sha-256" / "sha-384" / "sha-512" (virtCCA claims 44236 and 44240, platform claim 2402).
std::optional<HashAlg> hash_alg_from_name(std::string_view name);
// Also "sha256", "SHA256" and "SHA-256" (any case, hyphen optional): the spellings upstream
// tools write for platform measurements (virtCCA_sdk's platform reference file uses "sha256").
// Only for claims no upstream verifier holds to the IANA name (platform claim 2402, sw
// component key 6); the CVM claims keep the strict form above.
std::optional<HashAlg> hash_alg_from_lenient_name(std::string_view name);
std::string_view hash_alg_name(HashAlg alg);
std::size_t digest_size(HashAlg alg);

Bytes digest(HashAlg alg, ByteView data);
// Digest of the concatenation of several pieces, without copying them together.
Bytes digest_parts(HashAlg alg, std::initializer_list<ByteView> parts);

inline Bytes sha256(ByteView data) { return digest(HashAlg::sha256, data); }
inline Bytes sha512(ByteView data) { return digest(HashAlg::sha512, data); }

}  // namespace fde::crypto
