// Hash functions through OpenSSL EVP.
#include "common/crypto/hash.hpp"

#include "common/crypto/algorithms.hpp"

#include <memory>
#include <string>

#include <openssl/evp.h>

namespace fde::crypto {

std::optional<HashAlg> hash_alg_from_name(std::string_view name) {
  if (name == "sha-256") return HashAlg::sha256;
  if (name == "sha-384") return HashAlg::sha384;
  if (name == "sha-512") return HashAlg::sha512;
  return std::nullopt;
}

std::optional<HashAlg> hash_alg_from_lenient_name(std::string_view name) {
  std::string lower(name);
  for (char& c : lower)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  // Only the hyphen right after "sha" is optional: "sha256" or "sha-256", nothing looser.
  if (lower.size() == 7 && lower.compare(0, 4, "sha-") == 0) lower.erase(3, 1);
  if (lower == "sha256") return HashAlg::sha256;
  if (lower == "sha384") return HashAlg::sha384;
  if (lower == "sha512") return HashAlg::sha512;
  return std::nullopt;
}

std::string_view hash_alg_name(HashAlg alg) {
  switch (alg) {
    case HashAlg::sha256: return "sha-256";
    case HashAlg::sha384: return "sha-384";
    case HashAlg::sha512: return "sha-512";
  }
  return "unknown";
}

std::size_t digest_size(HashAlg alg) {
  switch (alg) {
    case HashAlg::sha256: return 32;
    case HashAlg::sha384: return 48;
    case HashAlg::sha512: return 64;
  }
  return 0;
}

namespace {
const EVP_MD* md_for(HashAlg alg) { return algorithms::md(alg); }
}  // namespace

Bytes digest_parts(HashAlg alg, std::initializer_list<ByteView> parts) {
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  Bytes out(digest_size(alg));
  unsigned int len = 0;
  // These calls fail only on allocation failure; treat that as fatal rather than return a
  // wrong digest that a caller could compare against.
  if (!ctx || EVP_DigestInit_ex(ctx.get(), md_for(alg), nullptr) != 1) std::abort();
  for (auto part : parts)
    if (EVP_DigestUpdate(ctx.get(), part.data(), part.size()) != 1) std::abort();
  if (EVP_DigestFinal_ex(ctx.get(), out.data(), &len) != 1 || len != out.size()) std::abort();
  return out;
}

Bytes digest(HashAlg alg, ByteView data) { return digest_parts(alg, {data}); }

}  // namespace fde::crypto
