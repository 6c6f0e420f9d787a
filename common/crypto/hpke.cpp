// HPKE base mode (RFC 9180 sections 4, 5.1, 5.2) on OpenSSL EVP: X25519, HKDF, AES-GCM.
#include "common/crypto/hpke.hpp"

#include <openssl/core_names.h>
#include <openssl/kdf.h>

#include "common/crypto/algorithms.hpp"
#include "common/crypto/openssl_util.hpp"
#include "common/crypto/random.hpp"

namespace fde::crypto::hpke {

using namespace detail;

namespace {

constexpr std::size_t hash_size = 32;   // Nh of HKDF-SHA256
constexpr std::size_t nonce_size = 12;  // Nn of AES-GCM

std::size_t key_size(Aead aead) { return aead == Aead::aes128_gcm ? 16 : 32; }

void append_u16(Bytes& out, std::uint16_t v) {
  out.push_back(static_cast<std::uint8_t>(v >> 8));
  out.push_back(static_cast<std::uint8_t>(v));
}
void append(Bytes& out, ByteView data) { out.insert(out.end(), data.begin(), data.end()); }
void append(Bytes& out, std::string_view text) { append(out, as_bytes(text)); }

Bytes kem_suite_id() {
  Bytes id;
  append(id, "KEM");
  append_u16(id, kem_x25519_sha256);
  return id;
}

Bytes hpke_suite_id(Aead aead) {
  Bytes id;
  append(id, "HPKE");
  append_u16(id, kem_x25519_sha256);
  append_u16(id, kdf_hkdf_sha256);
  append_u16(id, static_cast<std::uint16_t>(aead));
  return id;
}

// HKDF-Extract or HKDF-Expand through EVP_KDF; the output is secret in every use here.
Result<SecretBytes> hkdf(int mode, ByteView salt, ByteView key, ByteView info, std::size_t length) {
  std::unique_ptr<EVP_KDF_CTX, Deleter<EVP_KDF_CTX_free>> ctx(EVP_KDF_CTX_new(algorithms::hkdf()));
  if (!ctx) return fail(Errc::internal, "HKDF unavailable");
  char digest[] = "SHA256";
  OSSL_PARAM params[6];
  std::size_t n = 0;
  params[n++] = OSSL_PARAM_construct_int(OSSL_KDF_PARAM_MODE, &mode);
  params[n++] = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, digest, 0);
  // An empty key is legal in HPKE (e.g. LabeledExtract with empty ikm is never used, but an
  // empty salt is); OpenSSL wants a non-null pointer even for zero length.
  static std::uint8_t empty = 0;
  auto ptr = [](ByteView v) { return const_cast<std::uint8_t*>(v.empty() ? &empty : v.data()); };
  params[n++] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, ptr(key), key.size());
  if (mode == EVP_KDF_HKDF_MODE_EXTRACT_ONLY)
    params[n++] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, ptr(salt), salt.size());
  else
    params[n++] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, ptr(info), info.size());
  params[n] = OSSL_PARAM_construct_end();
  SecretBytes out(length);
  if (EVP_KDF_derive(ctx.get(), out.data(), out.size(), params) != 1)
    return fail(Errc::internal, "HKDF failed: " + last_openssl_error());
  return out;
}

// LabeledExtract(salt, label, ikm) = Extract(salt, "HPKE-v1" || suite_id || label || ikm)
Result<SecretBytes> labeled_extract(ByteView suite_id, ByteView salt, std::string_view label, ByteView ikm) {
  Bytes labeled;
  append(labeled, "HPKE-v1");
  append(labeled, suite_id);
  append(labeled, label);
  append(labeled, ikm);
  auto out = hkdf(EVP_KDF_HKDF_MODE_EXTRACT_ONLY, salt, labeled, {}, hash_size);
  wipe_bytes(labeled);
  return out;
}

// LabeledExpand(prk, label, info, L) = Expand(prk, I2OSP(L, 2) || "HPKE-v1" || suite_id || label || info, L)
Result<SecretBytes> labeled_expand(ByteView suite_id, const SecretBytes& prk, std::string_view label, ByteView info,
                                   std::size_t length) {
  Bytes labeled_info;
  append_u16(labeled_info, static_cast<std::uint16_t>(length));
  append(labeled_info, "HPKE-v1");
  append(labeled_info, suite_id);
  append(labeled_info, label);
  append(labeled_info, info);
  return hkdf(EVP_KDF_HKDF_MODE_EXPAND_ONLY, {}, prk.view(), labeled_info, length);
}

std::shared_ptr<EVP_PKEY> x25519_private(ByteView key) {
  return share_pkey(EVP_PKEY_new_raw_private_key(EVP_PKEY_X25519, nullptr, key.data(), key.size()));
}
std::shared_ptr<EVP_PKEY> x25519_public(ByteView key) {
  return share_pkey(EVP_PKEY_new_raw_public_key(EVP_PKEY_X25519, nullptr, key.data(), key.size()));
}

Result<SecretBytes> diffie_hellman(const X25519KeyPair& own, ByteView public_key) {
  if (public_key.size() != x25519_key_size)
    return fail(Errc::invalid_argument, "X25519 public key must be 32 bytes, got " + std::to_string(public_key.size()));
  const auto& priv = own.openssl_key();
  auto peer = x25519_public(public_key);
  if (!priv || !peer) return fail(Errc::invalid_argument, "invalid X25519 key");
  PkeyCtxPtr ctx(EVP_PKEY_CTX_new(priv.get(), nullptr));
  std::size_t len = x25519_key_size;
  SecretBytes shared(x25519_key_size);
  if (!ctx || EVP_PKEY_derive_init(ctx.get()) != 1 || EVP_PKEY_derive_set_peer(ctx.get(), peer.get()) != 1 ||
      EVP_PKEY_derive(ctx.get(), shared.data(), &len) != 1 || len != x25519_key_size) {
    ERR_clear_error();
    // OpenSSL refuses an all-zero result (a small-order peer key), as RFC 9180 7.1.4 asks.
    return fail(Errc::verification_failed, "X25519 key agreement failed (invalid peer key)");
  }
  return shared;
}

// ExtractAndExpand(dh, kem_context) of DHKEM (RFC 9180 section 4.1).
Result<SecretBytes> kem_shared_secret(const SecretBytes& dh, ByteView enc, ByteView recipient_public) {
  Bytes suite = kem_suite_id();
  Bytes kem_context;
  append(kem_context, enc);
  append(kem_context, recipient_public);
  auto prk = labeled_extract(suite, {}, "eae_prk", dh.view());
  if (!prk) return prk;
  return labeled_expand(suite, *prk, "shared_secret", kem_context, hash_size);
}

Result<Bytes> aes_gcm(bool encrypt, Aead aead, const SecretBytes& key, ByteView nonce, ByteView aad, ByteView input) {
  if (!encrypt && input.size() < tag_size) return fail(Errc::malformed, "ciphertext shorter than the AEAD tag");
  std::unique_ptr<EVP_CIPHER_CTX, Deleter<EVP_CIPHER_CTX_free>> ctx(EVP_CIPHER_CTX_new());
  const EVP_CIPHER* cipher = algorithms::aes_gcm(aead != Aead::aes128_gcm);
  std::size_t body = encrypt ? input.size() : input.size() - tag_size;
  Bytes out(body + (encrypt ? tag_size : 0));
  int len = 0;
  if (!ctx || EVP_CipherInit_ex(ctx.get(), cipher, nullptr, key.data(), nonce.data(), encrypt ? 1 : 0) != 1)
    return fail(Errc::internal, "AES-GCM init failed");
  if (!aad.empty() && EVP_CipherUpdate(ctx.get(), nullptr, &len, aad.data(), static_cast<int>(aad.size())) != 1)
    return fail(Errc::internal, "AES-GCM aad failed");
  if (body > 0 && EVP_CipherUpdate(ctx.get(), out.data(), &len, input.data(), static_cast<int>(body)) != 1)
    return fail(Errc::internal, "AES-GCM update failed");
  if (!encrypt &&
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_TAG, static_cast<int>(tag_size),
                          const_cast<std::uint8_t*>(input.data() + body)) != 1)
    return fail(Errc::internal, "AES-GCM tag failed");
  int final_len = 0;
  if (EVP_CipherFinal_ex(ctx.get(), out.data() + body, &final_len) != 1) {
    ERR_clear_error();
    wipe_bytes(out);
    return fail(Errc::verification_failed, "AEAD open failed: the sealed data or its context does not match");
  }
  if (encrypt &&
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_GET_TAG, static_cast<int>(tag_size), out.data() + body) != 1)
    return fail(Errc::internal, "AES-GCM tag failed");
  return out;
}

}  // namespace

X25519KeyPair X25519KeyPair::generate() {
  // RFC 7748 clamping happens inside X25519 itself; any 32 random bytes are a private key.
  auto pair = from_private(random_secret(x25519_key_size).view());
  if (!pair) std::abort();
  return std::move(*pair);
}

Result<X25519KeyPair> X25519KeyPair::from_private(ByteView private_key) {
  if (private_key.size() != x25519_key_size) return fail(Errc::invalid_argument, "X25519 private key must be 32 bytes");
  auto key = x25519_private(private_key);
  if (!key) return fail(Errc::invalid_argument, "invalid X25519 private key");
  X25519KeyPair pair;
  pair.private_key_ = SecretBytes::copy_of(private_key);
  pair.key_ = key;
  pair.public_key_.resize(x25519_key_size);
  std::size_t len = x25519_key_size;
  if (EVP_PKEY_get_raw_public_key(key.get(), pair.public_key_.data(), &len) != 1 || len != x25519_key_size)
    return fail(Errc::internal, "cannot derive X25519 public key");
  return pair;
}

Result<SecretBytes> encap_shared_secret(const X25519KeyPair& ephemeral, ByteView recipient_public_key) {
  auto dh = diffie_hellman(ephemeral, recipient_public_key);
  if (!dh) return dh;
  return kem_shared_secret(*dh, ephemeral.public_key(), recipient_public_key);
}

Result<KeySchedule> key_schedule(const SecretBytes& shared_secret, ByteView info, Aead aead) {
  Bytes suite = hpke_suite_id(aead);
  auto psk_id_hash = labeled_extract(suite, {}, "psk_id_hash", {});
  auto info_hash = labeled_extract(suite, {}, "info_hash", info);
  if (!psk_id_hash) return tl::unexpected(psk_id_hash.error());
  if (!info_hash) return tl::unexpected(info_hash.error());
  Bytes context{0x00};  // mode_base
  append(context, psk_id_hash->view());
  append(context, info_hash->view());
  auto secret = labeled_extract(suite, shared_secret.view(), "secret", {});
  if (!secret) return tl::unexpected(secret.error());
  auto key = labeled_expand(suite, *secret, "key", context, key_size(aead));
  auto nonce = labeled_expand(suite, *secret, "base_nonce", context, nonce_size);
  if (!key) return tl::unexpected(key.error());
  if (!nonce) return tl::unexpected(nonce.error());
  return KeySchedule{std::move(*key), to_bytes(nonce->view())};
}

Result<Sealed> seal_with_ephemeral(const X25519KeyPair& ephemeral, ByteView recipient_public_key, ByteView info,
                                   ByteView aad, ByteView plaintext, Aead aead) {
  auto shared = encap_shared_secret(ephemeral, recipient_public_key);
  if (!shared) return tl::unexpected(shared.error());
  auto schedule = key_schedule(*shared, info, aead);
  if (!schedule) return tl::unexpected(schedule.error());
  // Sequence number 0: the nonce is the base nonce itself (one message per context).
  auto ciphertext = aes_gcm(true, aead, schedule->key, schedule->base_nonce, aad, plaintext);
  if (!ciphertext) return tl::unexpected(ciphertext.error());
  return Sealed{ephemeral.public_key(), std::move(*ciphertext)};
}

Result<Sealed> seal(ByteView recipient_public_key, ByteView info, ByteView aad, ByteView plaintext, Aead aead) {
  return seal_with_ephemeral(X25519KeyPair::generate(), recipient_public_key, info, aad, plaintext, aead);
}

Result<SecretBytes> open(const X25519KeyPair& recipient, ByteView enc, ByteView info, ByteView aad,
                         ByteView ciphertext, Aead aead) {
  auto dh = diffie_hellman(recipient, enc);
  if (!dh) return tl::unexpected(dh.error());
  auto shared = kem_shared_secret(*dh, enc, recipient.public_key());
  if (!shared) return tl::unexpected(shared.error());
  auto schedule = key_schedule(*shared, info, aead);
  if (!schedule) return tl::unexpected(schedule.error());
  auto plaintext = aes_gcm(false, aead, schedule->key, schedule->base_nonce, aad, ciphertext);
  if (!plaintext) return tl::unexpected(plaintext.error());
  auto out = SecretBytes::copy_of(*plaintext);
  wipe_bytes(*plaintext);
  return out;
}

}  // namespace fde::crypto::hpke
