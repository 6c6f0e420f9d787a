// COSE signature algorithms on OpenSSL EVP: RSA-PSS and ECDSA (raw r||s or DER).
#include "common/crypto/signature.hpp"

#include <openssl/rsa.h>

#include "common/crypto/openssl_util.hpp"

namespace fde::crypto {

using namespace detail;

namespace {

const char* digest_name(SigAlg alg) {
  switch (alg) {
    case SigAlg::es256:
    case SigAlg::ps256: return "SHA256";
    case SigAlg::es384:
    case SigAlg::ps384: return "SHA384";
    case SigAlg::es512:
    case SigAlg::ps512: return "SHA512";
  }
  return "SHA256";
}

bool is_pss(SigAlg alg) { return alg == SigAlg::ps256 || alg == SigAlg::ps384 || alg == SigAlg::ps512; }

std::size_t ec_field_bytes(KeyType type) {
  switch (type) {
    case KeyType::ec_p256: return 32;
    case KeyType::ec_p384: return 48;
    case KeyType::ec_p521: return 66;
    default: return 0;
  }
}

// raw r||s (each `n` bytes, big-endian) -> DER ECDSA-Sig-Value.
Result<Bytes> raw_to_der(ByteView raw, std::size_t n) {
  EcdsaSigPtr sig(ECDSA_SIG_new());
  BIGNUM* r = BN_bin2bn(raw.data(), static_cast<int>(n), nullptr);
  BIGNUM* s = BN_bin2bn(raw.data() + n, static_cast<int>(n), nullptr);
  if (!sig || r == nullptr || s == nullptr || ECDSA_SIG_set0(sig.get(), r, s) != 1) {
    BN_free(r);
    BN_free(s);
    return fail(Errc::internal, "cannot build ECDSA signature");
  }
  unsigned char* der = nullptr;
  int len = i2d_ECDSA_SIG(sig.get(), &der);
  if (len <= 0) return fail(Errc::internal, "cannot encode ECDSA signature");
  Bytes out(der, der + len);
  OPENSSL_free(der);
  return out;
}

// A DER signature must round-trip exactly: no BER leniency, no trailing bytes.
Result<Bytes> strict_der(ByteView der) {
  const unsigned char* p = der.data();
  EcdsaSigPtr sig(d2i_ECDSA_SIG(nullptr, &p, static_cast<long>(der.size())));
  if (!sig || p != der.data() + der.size()) {
    ERR_clear_error();
    return fail(Errc::malformed, "ECDSA signature is neither raw r||s of the curve's size nor valid DER");
  }
  unsigned char* again = nullptr;
  int len = i2d_ECDSA_SIG(sig.get(), &again);
  Bytes out(again, again + (len > 0 ? len : 0));
  OPENSSL_free(again);
  if (out.size() != der.size() || !std::equal(out.begin(), out.end(), der.begin()))
    return fail(Errc::malformed, "ECDSA signature DER is not canonical");
  return out;
}

Result<void> configure_pss(EVP_PKEY_CTX* pctx, SigAlg alg) {
  if (EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) != 1 ||
      EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST) != 1 ||
      EVP_PKEY_CTX_set_rsa_mgf1_md_name(pctx, digest_name(alg), nullptr) != 1)
    return fail(Errc::internal, "cannot configure RSA-PSS: " + last_openssl_error());
  return {};
}

}  // namespace

std::optional<SigAlg> sig_alg_from_cose(std::int64_t v) {
  switch (v) {
    case -7: return SigAlg::es256;
    case -35: return SigAlg::es384;
    case -36: return SigAlg::es512;
    case -37: return SigAlg::ps256;
    case -38: return SigAlg::ps384;
    case -39: return SigAlg::ps512;
    default: return std::nullopt;
  }
}

std::string_view sig_alg_name(SigAlg alg) {
  switch (alg) {
    case SigAlg::es256: return "ES256";
    case SigAlg::es384: return "ES384";
    case SigAlg::es512: return "ES512";
    case SigAlg::ps256: return "PS256";
    case SigAlg::ps384: return "PS384";
    case SigAlg::ps512: return "PS512";
  }
  return "unknown";
}

Result<void> check_key_matches_alg(const PublicKey& key, SigAlg alg) {
  KeyType need = KeyType::rsa;
  switch (alg) {
    case SigAlg::es256: need = KeyType::ec_p256; break;
    case SigAlg::es384: need = KeyType::ec_p384; break;
    case SigAlg::es512: need = KeyType::ec_p521; break;
    default: need = KeyType::rsa; break;
  }
  if (key.type() != need)
    return fail(Errc::verification_failed, std::string(sig_alg_name(alg)) + " needs an " +
                                               std::string(key_type_name(need)) + " key, found " + key.description());
  if (need == KeyType::rsa && key.bits() < 2048)
    return fail(Errc::verification_failed, "RSA key of " + std::to_string(key.bits()) + " bits is too small");
  return {};
}

Result<void> verify_signature(const PublicKey& key, SigAlg alg, ByteView message, ByteView signature) {
  if (auto ok = check_key_matches_alg(key, alg); !ok) return ok;
  Bytes der_signature;
  ByteView to_verify = signature;
  if (!is_pss(alg)) {
    std::size_t n = ec_field_bytes(key.type());
    if (signature.size() == 2 * n) {
      auto der = raw_to_der(signature, n);
      if (!der) return tl::unexpected(der.error());
      der_signature = std::move(*der);
    } else {
      auto der = strict_der(signature);
      if (!der) return tl::unexpected(der.error());
      der_signature = std::move(*der);
    }
    to_verify = der_signature;
  }
  MdCtxPtr ctx(EVP_MD_CTX_new());
  EVP_PKEY_CTX* pctx = nullptr;
  if (!ctx || EVP_DigestVerifyInit_ex(ctx.get(), &pctx, digest_name(alg), nullptr, nullptr, key.native(), nullptr) != 1)
    return fail(Errc::internal, "cannot initialise verification: " + last_openssl_error());
  if (is_pss(alg))
    if (auto ok = configure_pss(pctx, alg); !ok) return ok;
  int rc = EVP_DigestVerify(ctx.get(), to_verify.data(), to_verify.size(), message.data(), message.size());
  ERR_clear_error();
  if (rc != 1) return fail(Errc::verification_failed, std::string(sig_alg_name(alg)) + " signature does not verify");
  return {};
}

Result<Bytes> sign(const PrivateKey& key, SigAlg alg, ByteView message, EcdsaEncoding encoding) {
  if (auto ok = check_key_matches_alg(key.public_key(), alg); !ok) return tl::unexpected(ok.error());
  MdCtxPtr ctx(EVP_MD_CTX_new());
  EVP_PKEY_CTX* pctx = nullptr;
  if (!ctx || EVP_DigestSignInit_ex(ctx.get(), &pctx, digest_name(alg), nullptr, nullptr, key.native(), nullptr) != 1)
    return fail(Errc::internal, "cannot initialise signing: " + last_openssl_error());
  if (is_pss(alg))
    if (auto ok = configure_pss(pctx, alg); !ok) return tl::unexpected(ok.error());
  std::size_t len = 0;
  if (EVP_DigestSign(ctx.get(), nullptr, &len, message.data(), message.size()) != 1)
    return fail(Errc::internal, "signing failed: " + last_openssl_error());
  Bytes out(len);
  if (EVP_DigestSign(ctx.get(), out.data(), &len, message.data(), message.size()) != 1)
    return fail(Errc::internal, "signing failed: " + last_openssl_error());
  out.resize(len);
  if (is_pss(alg) || encoding == EcdsaEncoding::der) return out;
  // OpenSSL emits DER; COSE wants r||s, each left-padded to the field size.
  const unsigned char* p = out.data();
  EcdsaSigPtr sig(d2i_ECDSA_SIG(nullptr, &p, static_cast<long>(out.size())));
  if (!sig) return fail(Errc::internal, "cannot decode own ECDSA signature");
  std::size_t n = ec_field_bytes(key.type());
  Bytes raw(2 * n);
  if (BN_bn2binpad(ECDSA_SIG_get0_r(sig.get()), raw.data(), static_cast<int>(n)) < 0 ||
      BN_bn2binpad(ECDSA_SIG_get0_s(sig.get()), raw.data() + n, static_cast<int>(n)) < 0)
    return fail(Errc::internal, "cannot encode raw ECDSA signature");
  return raw;
}

}  // namespace fde::crypto
