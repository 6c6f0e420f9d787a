// X.509 certificates and chain validation against pinned roots.
#pragma once

#include <ctime>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "common/crypto/keys.hpp"
#include "common/util/bytes.hpp"

typedef struct x509_st X509;
typedef struct x509_store_st X509_STORE;

namespace fde::crypto {

class Certificate {
 public:
  static Result<Certificate> from_der(ByteView der);
  // Accepts a single PEM or DER certificate.
  static Result<Certificate> from_pem_or_der(ByteView data);
  // All certificates in a PEM bundle (at least one), or a single DER certificate.
  static Result<std::vector<Certificate>> load_all(ByteView data);

  PublicKey public_key() const;
  Bytes der() const;
  std::string pem() const;
  std::string subject() const;  // one-line RFC 2253 form
  std::string issuer() const;
  std::string not_before() const;  // "2024-05-28T00:00:00Z"
  std::string not_after() const;
  // The same as seconds since the epoch (UTC); nullopt if the field cannot be read.
  std::optional<std::int64_t> not_before_seconds() const;
  std::optional<std::int64_t> not_after_seconds() const;
  Bytes sha256_fingerprint() const;
  bool is_self_signed() const;

  X509* native() const { return cert_.get(); }
  explicit Certificate(std::shared_ptr<X509> cert);

 private:
  std::shared_ptr<X509> cert_;
};

struct ChainOptions {
  // Time at which validity is checked; nullopt = now.
  std::optional<std::time_t> at_time;
};

// Pinned roots as one OpenSSL store, built once (per configuration load) and shared by every
// validation: X509_STORE is safe for concurrent verifications. Only these roots are trusted.
class TrustAnchors {
 public:
  static Result<TrustAnchors> create(std::span<const Certificate> roots);
  // Validates leaf -> intermediates -> one of the roots (see verify_chain).
  Result<std::vector<Certificate>> verify(const Certificate& leaf, std::span<const Certificate> intermediates,
                                          const ChainOptions& options = {}) const;
  std::size_t size() const { return count_; }

 private:
  TrustAnchors(std::shared_ptr<X509_STORE> store, std::size_t count) : store_(std::move(store)), count_(count) {}
  std::shared_ptr<X509_STORE> store_;
  std::size_t count_ = 0;
};

// Validates leaf -> intermediates -> one of `roots`. Only the given roots are trusted (no
// system store). The leaf must carry digitalSignature if it has a keyUsage extension.
// Returns the validated path: the leaf first, the trust anchor last.
Result<std::vector<Certificate>> verify_chain(const Certificate& leaf, std::span<const Certificate> intermediates,
                          std::span<const Certificate> roots, const ChainOptions& options = {});

// For the simulator and tests: issue a certificate for `subject_key`, signed by `issuer_key`
// (self-signed when issuer is nullopt).
struct CertificateRequest {
  std::string common_name;
  std::string organization = "virtCCA FDE simulator";
  bool is_ca = false;
  long valid_days = 3650;
  long serial = 1;
  // subjectAltName entries in OpenSSL's form, e.g. "DNS:localhost", "IP:127.0.0.1", "IP:::1"
  // (TLS server certificates for tests); none by default.
  std::vector<std::string> subject_alt_names = {};
};
Result<Certificate> issue_certificate(const CertificateRequest& request, const PublicKey& subject_key,
                                      const PrivateKey& issuer_key, const Certificate* issuer_cert);

}  // namespace fde::crypto
