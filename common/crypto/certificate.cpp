// X.509 loading, chain validation against pinned roots only, and issuing (for the simulator).
#include "common/crypto/certificate.hpp"

#include <cstring>
#include <ctime>

#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "common/crypto/hash.hpp"
#include "common/crypto/openssl_util.hpp"

namespace fde::crypto {

using namespace detail;

namespace {

bool looks_like_pem(ByteView data) {
  static constexpr std::string_view marker = "-----BEGIN";
  return as_text(data).find(marker) != std::string_view::npos;
}

std::string name_to_string(const X509_NAME* name) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || X509_NAME_print_ex(bio.get(), name, 0, XN_FLAG_RFC2253) < 0) return {};
  return bio_to_string(bio.get());
}

std::string time_to_string(const ASN1_TIME* t) {
  struct tm tm {};
  if (t == nullptr || ASN1_TIME_to_tm(t, &tm) != 1) return "?";
  char buffer[32];
  std::strftime(buffer, sizeof buffer, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buffer;
}

// Seconds since the epoch (UTC), or nullopt for a time OpenSSL cannot read.
std::optional<std::int64_t> time_to_epoch(const ASN1_TIME* t) {
  struct tm tm {};
  if (t == nullptr || ASN1_TIME_to_tm(t, &tm) != 1) return std::nullopt;
  return static_cast<std::int64_t>(::timegm(&tm));
}

}  // namespace

Certificate::Certificate(std::shared_ptr<X509> cert) : cert_(std::move(cert)) {}

Result<Certificate> Certificate::from_der(ByteView der) {
  const unsigned char* p = der.data();
  X509* cert = d2i_X509(nullptr, &p, static_cast<long>(der.size()));
  if (cert == nullptr) {
    std::string why = last_openssl_error();
    return fail(Errc::malformed, "not a DER X.509 certificate: " + why);
  }
  Certificate out(share_x509(cert));
  if (p != der.data() + der.size()) return fail(Errc::malformed, "trailing bytes after the DER certificate");
  return out;
}

Result<std::vector<Certificate>> Certificate::load_all(ByteView data) {
  if (!looks_like_pem(data)) {
    auto one = from_der(data);
    if (!one) return tl::unexpected(one.error());
    return std::vector<Certificate>{*one};
  }
  BioPtr bio(BIO_new_mem_buf(data.data(), static_cast<int>(data.size())));
  if (!bio) return fail(Errc::internal, "BIO_new_mem_buf failed");
  std::vector<Certificate> out;
  while (X509* cert = PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr)) out.emplace_back(share_x509(cert));
  // PEM_read_bio_X509 ends the loop with a "no start line" error at the end of input.
  unsigned long err = ERR_peek_last_error();
  ERR_clear_error();
  if (out.empty()) return fail(Errc::malformed, "no PEM certificate found");
  if (err != 0 && ERR_GET_REASON(err) != PEM_R_NO_START_LINE)
    return fail(Errc::malformed, "a PEM certificate in the bundle is corrupt");
  return out;
}

Result<Certificate> Certificate::from_pem_or_der(ByteView data) {
  auto all = load_all(data);
  if (!all) return tl::unexpected(all.error());
  if (all->size() != 1)
    return fail(Errc::invalid_argument, "expected one certificate, found " + std::to_string(all->size()));
  return all->front();
}

PublicKey Certificate::public_key() const {
  EVP_PKEY* key = X509_get_pubkey(cert_.get());  // takes a reference
  return PublicKey(share_pkey(key));
}

Bytes Certificate::der() const {
  unsigned char* der = nullptr;
  int len = i2d_X509(cert_.get(), &der);
  if (len <= 0) return {};
  Bytes out(der, der + len);
  OPENSSL_free(der);
  return out;
}

std::string Certificate::pem() const {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_X509(bio.get(), cert_.get()) != 1) return {};
  return bio_to_string(bio.get());
}

std::string Certificate::subject() const { return name_to_string(X509_get_subject_name(cert_.get())); }
std::string Certificate::issuer() const { return name_to_string(X509_get_issuer_name(cert_.get())); }
std::string Certificate::not_before() const { return time_to_string(X509_get0_notBefore(cert_.get())); }
std::string Certificate::not_after() const { return time_to_string(X509_get0_notAfter(cert_.get())); }
std::optional<std::int64_t> Certificate::not_before_seconds() const {
  return time_to_epoch(X509_get0_notBefore(cert_.get()));
}
std::optional<std::int64_t> Certificate::not_after_seconds() const {
  return time_to_epoch(X509_get0_notAfter(cert_.get()));
}
Bytes Certificate::sha256_fingerprint() const { return sha256(der()); }
bool Certificate::is_self_signed() const { return X509_self_signed(cert_.get(), 0) == 1; }

Result<TrustAnchors> TrustAnchors::create(std::span<const Certificate> roots) {
  std::shared_ptr<X509_STORE> store(X509_STORE_new(), X509_STORE_free);
  if (!store) return fail(Errc::internal, "X509_STORE_new failed");
  for (const auto& root : roots)
    if (X509_STORE_add_cert(store.get(), root.native()) != 1) ERR_clear_error();  // duplicates are fine
  return TrustAnchors(std::move(store), roots.size());
}

Result<std::vector<Certificate>> verify_chain(const Certificate& leaf, std::span<const Certificate> intermediates,
                          std::span<const Certificate> roots, const ChainOptions& options) {
  if (roots.empty()) return fail(Errc::verification_failed, "no trusted roots are configured");
  auto anchors = TrustAnchors::create(roots);
  if (!anchors) return tl::unexpected(anchors.error());
  return anchors->verify(leaf, intermediates, options);
}

Result<std::vector<Certificate>> TrustAnchors::verify(const Certificate& leaf,
                                                      std::span<const Certificate> intermediates,
                                                      const ChainOptions& options) const {
  if (count_ == 0) return fail(Errc::verification_failed, "no trusted roots are configured");
  struct StackFree {
    void operator()(STACK_OF(X509) * s) const { sk_X509_free(s); }
  };
  std::unique_ptr<STACK_OF(X509), StackFree> untrusted(sk_X509_new_null());
  for (const auto& cert : intermediates) sk_X509_push(untrusted.get(), cert.native());
  X509StoreCtxPtr ctx(X509_STORE_CTX_new());
  if (!ctx || X509_STORE_CTX_init(ctx.get(), store_.get(), leaf.native(), untrusted.get()) != 1)
    return fail(Errc::internal, "X509_STORE_CTX_init failed");
  if (options.at_time) X509_STORE_CTX_set_time(ctx.get(), 0, *options.at_time);
  int rc = X509_verify_cert(ctx.get());
  if (rc != 1) {
    int err = X509_STORE_CTX_get_error(ctx.get());
    ERR_clear_error();
    return fail(Errc::verification_failed, std::string("certificate chain: ") + X509_verify_cert_error_string(err));
  }
  // Section b.7: the device certificate signs tokens, so it must be allowed to sign.
  if ((X509_get_extension_flags(leaf.native()) & EXFLAG_KUSAGE) != 0 &&
      (X509_get_key_usage(leaf.native()) & KU_DIGITAL_SIGNATURE) == 0)
    return fail(Errc::verification_failed, "device certificate keyUsage lacks digitalSignature");
  std::vector<Certificate> path;
  STACK_OF(X509)* built = X509_STORE_CTX_get0_chain(ctx.get());
  for (int i = 0; built != nullptr && i < sk_X509_num(built); ++i) {
    X509* cert = sk_X509_value(built, i);
    X509_up_ref(cert);
    path.emplace_back(share_x509(cert));
  }
  return path;
}

namespace {
Result<void> add_extension(X509* cert, X509* issuer, int nid, const char* value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value);
  if (ext == nullptr) return fail(Errc::internal, "cannot build certificate extension");
  int ok = X509_add_ext(cert, ext, -1);
  X509_EXTENSION_free(ext);
  if (ok != 1) return fail(Errc::internal, "cannot add certificate extension");
  return {};
}
}  // namespace

Result<Certificate> issue_certificate(const CertificateRequest& request, const PublicKey& subject_key,
                                      const PrivateKey& issuer_key, const Certificate* issuer_cert) {
  auto cert = share_x509(X509_new());
  if (!cert) return fail(Errc::internal, "X509_new failed");
  X509_set_version(cert.get(), 2);
  ASN1_INTEGER_set(X509_get_serialNumber(cert.get()), request.serial);
  X509_NAME* name = X509_get_subject_name(cert.get());
  auto add_entry = [&](const char* field, const std::string& value) {
    X509_NAME_add_entry_by_txt(name, field, MBSTRING_UTF8, reinterpret_cast<const unsigned char*>(value.c_str()), -1,
                               -1, 0);
  };
  add_entry("C", "CN");
  add_entry("O", request.organization);
  add_entry("CN", request.common_name);
  X509_set_issuer_name(cert.get(), issuer_cert ? X509_get_subject_name(issuer_cert->native()) : name);
  X509_gmtime_adj(X509_getm_notBefore(cert.get()), -3600);
  X509_time_adj_ex(X509_getm_notAfter(cert.get()), static_cast<int>(request.valid_days), 0, nullptr);
  if (X509_set_pubkey(cert.get(), subject_key.native()) != 1) return fail(Errc::internal, "X509_set_pubkey failed");
  X509* issuer = issuer_cert ? issuer_cert->native() : cert.get();
  if (request.is_ca) {
    if (auto ok = add_extension(cert.get(), issuer, NID_basic_constraints, "critical,CA:TRUE"); !ok)
      return tl::unexpected(ok.error());
    if (auto ok = add_extension(cert.get(), issuer, NID_key_usage, "critical,keyCertSign,cRLSign"); !ok)
      return tl::unexpected(ok.error());
  } else {
    if (auto ok = add_extension(cert.get(), issuer, NID_basic_constraints, "critical,CA:FALSE"); !ok)
      return tl::unexpected(ok.error());
    if (auto ok = add_extension(cert.get(), issuer, NID_key_usage, "critical,digitalSignature"); !ok)
      return tl::unexpected(ok.error());
  }
  if (!request.subject_alt_names.empty()) {
    std::string names;
    for (const auto& entry : request.subject_alt_names) {
      // A comma would split the entry in OpenSSL's configuration syntax.
      if (entry.empty() || entry.find(',') != std::string::npos)
        return fail(Errc::invalid_argument, "subject alternative name '" + entry + "' is not TYPE:value");
      names += (names.empty() ? "" : ",") + entry;
    }
    if (auto ok = add_extension(cert.get(), issuer, NID_subject_alt_name, names.c_str()); !ok) {
      ERR_clear_error();
      return fail(Errc::invalid_argument, "subject alternative names '" + names + "': " + ok.error().message);
    }
  }
  if (auto ok = add_extension(cert.get(), issuer, NID_subject_key_identifier, "hash"); !ok)
    return tl::unexpected(ok.error());
  if (issuer_cert)
    if (auto ok = add_extension(cert.get(), issuer, NID_authority_key_identifier, "keyid:always"); !ok)
      return tl::unexpected(ok.error());
  const EVP_MD* md = issuer_key.type() == KeyType::ec_p521 ? EVP_sha512()
                     : issuer_key.type() == KeyType::ec_p384 ? EVP_sha384()
                                                              : EVP_sha256();
  if (X509_sign(cert.get(), issuer_key.native(), md) <= 0)
    return fail(Errc::internal, "certificate signing failed: " + last_openssl_error());
  return Certificate(cert);
}

}  // namespace fde::crypto
