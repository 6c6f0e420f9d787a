// Parsed device certificates and their validated chains, remembered per configuration.
#include "verifier-daemon/policy/device_certificates.hpp"

#include <algorithm>

namespace fde::verifier {

DeviceCertificates::DeviceCertificates(const std::vector<crypto::Certificate>& roots, std::size_t capacity)
    : capacity_(std::max<std::size_t>(1, capacity)) {
  if (auto anchors = crypto::TrustAnchors::create(roots); anchors && anchors->size() > 0)
    anchors_ = std::make_shared<const crypto::TrustAnchors>(std::move(*anchors));
}

Result<std::shared_ptr<const DeviceCertificates::Entry>> DeviceCertificates::parse(const Bytes& blob) {
  const std::string_view key(reinterpret_cast<const char*>(blob.data()), blob.size());
  {
    std::lock_guard lock(mutex_);
    if (auto found = index_.find(key); found != index_.end()) {
      order_.splice(order_.begin(), order_, found->second);
      ++hits_;
      return std::shared_ptr<const Entry>(found->second->second);
    }
  }
  // Parsed outside the lock: two threads may parse the same new blob; the first kept wins.
  auto certificates = crypto::Certificate::load_all(blob);
  if (!certificates) return tl::unexpected(certificates.error());
  auto entry = std::make_shared<Entry>();
  entry->anchors_ = anchors_;
  entry->validations_ = validations_;
  entry->leaf_subject_ = certificates->front().subject();
  entry->certificates_ = std::move(*certificates);

  std::lock_guard lock(mutex_);
  if (auto found = index_.find(key); found != index_.end()) return std::shared_ptr<const Entry>(found->second->second);
  order_.emplace_front(std::string(key), entry);
  index_.emplace(std::string_view(order_.front().first), order_.begin());
  while (order_.size() > capacity_) {
    index_.erase(std::string_view(order_.back().first));
    order_.pop_back();
  }
  return std::shared_ptr<const Entry>(std::move(entry));
}

std::size_t DeviceCertificates::size() const {
  std::lock_guard lock(mutex_);
  return order_.size();
}

std::uint64_t DeviceCertificates::hits() const {
  std::lock_guard lock(mutex_);
  return hits_;
}

std::uint64_t DeviceCertificates::validations() const { return validations_->load(); }

Result<std::vector<crypto::Certificate>> DeviceCertificates::Entry::validate(
    const crypto::Certificate& leaf, std::span<const crypto::Certificate> intermediates, std::time_t at) const {
  // Only this entry's own leaf can use its remembered result.
  const bool own_leaf = !certificates_.empty() && leaf.native() == certificates_.front().native();
  if (own_leaf) {
    std::lock_guard lock(mutex_);
    if (validated_ && at >= validated_->not_before && at < validated_->not_after) return validated_->path;
  }
  if (!anchors_) return fail(Errc::verification_failed, "no trusted roots are configured");
  validations_->fetch_add(1);
  crypto::ChainOptions options;
  options.at_time = at;
  auto path = anchors_->verify(leaf, intermediates, options);
  if (!path || !own_leaf) return path;
  // The window in which every certificate on the path is valid, as OpenSSL checked it.
  Validated validated{*path, INT64_MIN, INT64_MAX};
  for (const auto& cert : *path) {
    const auto not_before = cert.not_before_seconds();
    const auto not_after = cert.not_after_seconds();
    if (!not_before || !not_after) return path;  // a time we cannot read: never remembered
    validated.not_before = std::max(validated.not_before, *not_before);
    validated.not_after = std::min(validated.not_after, *not_after);
  }
  std::lock_guard lock(mutex_);
  validated_ = std::move(validated);
  return path;
}

}  // namespace fde::verifier
