// The device certificates the verifier has seen, parsed once and their chains validated once
// per configuration: a host sends the same certificate at every boot. Bounded (least recently
// used entries go first) and keyed by the exact bytes the guest sent; a remembered chain is
// used only while `now` lies within every certificate's validity on the path, otherwise the
// full validation runs again (and fails for an expired certificate). The cache belongs to one
// loaded configuration (its roots and intermediates): a reload builds a new, empty one.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "common/crypto/certificate.hpp"
#include "common/token/token_verifier.hpp"

namespace fde::verifier {

class DeviceCertificates {
 public:
  // One device certificate blob: its certificates (the leaf first), and once validated the
  // path and the time window in which that result holds.
  class Entry final : public token::ChainValidator {
   public:
    const std::vector<crypto::Certificate>& certificates() const { return certificates_; }
    // The leaf's description strings, computed once (the verdict text repeats them).
    const std::string& leaf_subject() const { return leaf_subject_; }
    Result<std::vector<crypto::Certificate>> validate(const crypto::Certificate& leaf,
                                                      std::span<const crypto::Certificate> intermediates,
                                                      std::time_t at) const override;

   private:
    friend class DeviceCertificates;
    struct Validated {
      std::vector<crypto::Certificate> path;
      std::int64_t not_before = 0;  // the latest notBefore on the path
      std::int64_t not_after = 0;   // the earliest notAfter on the path (expired from that second on)
    };
    std::shared_ptr<const crypto::TrustAnchors> anchors_;
    std::shared_ptr<std::atomic<std::uint64_t>> validations_;
    std::vector<crypto::Certificate> certificates_;
    std::string leaf_subject_;
    mutable std::mutex mutex_;
    mutable std::optional<Validated> validated_;
  };

  // `roots` become the store every validation uses (built here, once).
  DeviceCertificates(const std::vector<crypto::Certificate>& roots, std::size_t capacity = 1024);
  DeviceCertificates(const DeviceCertificates&) = delete;
  DeviceCertificates& operator=(const DeviceCertificates&) = delete;

  // The parsed blob (DER, or a PEM bundle whose first certificate is the leaf); a blob that
  // does not parse is not remembered.
  Result<std::shared_ptr<const Entry>> parse(const Bytes& blob);

  std::size_t size() const;
  std::uint64_t hits() const;
  // Full chain validations run (cache misses and expired windows), over all entries.
  std::uint64_t validations() const;

 private:
  std::shared_ptr<const crypto::TrustAnchors> anchors_;  // null: no usable roots
  std::shared_ptr<std::atomic<std::uint64_t>> validations_ = std::make_shared<std::atomic<std::uint64_t>>(0);
  const std::size_t capacity_;
  mutable std::mutex mutex_;
  // Most recently used first; the map's keys view the list's blobs.
  std::list<std::pair<std::string, std::shared_ptr<Entry>>> order_;
  std::unordered_map<std::string_view, decltype(order_)::iterator> index_;
  std::uint64_t hits_ = 0;
};

}  // namespace fde::verifier
