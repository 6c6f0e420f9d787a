// Backend-independent helpers of the store backends (store_internal.hpp).
#include "verifier-daemon/store/store_internal.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

#include <openssl/crypto.h>

#include "common/util/strict_json.hpp"
#include "verifier-daemon/nonce/nonce_service.hpp"

namespace fde::verifier::store_detail {

std::string now_text() { return format_rfc3339(Clock::now()); }

bool same_text_constant_time(const std::string& a, const std::string& b) {
  return a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

Result<void> check_reference_image(std::string_view image_id, const reference::ReferenceValues& reference) {
  if (reference.image_id && *reference.image_id != image_id)
    return fail(Errc::invalid_argument, "reference values name image " + *reference.image_id + ", not " +
                                            std::string(image_id));
  return {};
}

std::string audit_key_aad(std::int64_t epoch) {
  // Image ids cannot hold spaces, so this AAD never equals an image's.
  return "audit chain key epoch " + std::to_string(epoch);
}

Result<std::string> kek_check_value(const KeyEncryptionKey& kek) {
  auto value = kek.derive_key(kek_check_label);
  if (!value) return tl::unexpected(value.error());
  return hex_encode(value->view());
}

ChangeJson::ChangeJson(const AdminActor& by) {
  number("uid", by.uid);
  number("pid", by.pid);
}

ChangeJson& ChangeJson::text(std::string_view name, std::string_view value) {
  key(name);
  json::append_quoted(out_, json::valid_utf8(value));
  return *this;
}

ChangeJson& ChangeJson::number(std::string_view name, std::int64_t value) {
  key(name);
  out_ += std::to_string(value);
  return *this;
}

ChangeJson& ChangeJson::names(std::string_view name, const std::vector<std::string>& values) {
  key(name);
  out_ += "[";
  for (std::size_t i = 0; i < values.size(); ++i) {
    if (i > 0) out_ += ",";
    json::append_quoted(out_, json::valid_utf8(values[i]));
  }
  out_ += "]";
  return *this;
}

ChangeJson& ChangeJson::embedded(std::string_view name, std::string_view json_text) {
  key(name);
  out_ += json_text;
  return *this;
}

void ChangeJson::key(std::string_view name) {
  if (out_.size() > 1) out_ += ",";
  json::append_quoted(out_, name);
  out_ += ":";
}

AuditEntry admin_entry(std::string_view image_id, const AdminActor& by, std::string_view action, std::string change) {
  AuditEntry entry;
  entry.image_id = std::string(image_id);
  entry.peer = "uid=" + std::to_string(by.uid) + " pid=" + std::to_string(by.pid);
  entry.measurements = std::move(change);
  entry.decision = "admin";
  entry.reason = std::string(action);
  entry.checks = "[]";
  return entry;
}

std::vector<std::string> set_names(const reference::ReferenceValues& reference) {
  std::vector<std::string> names;
  for (const auto& set : reference.sets) names.push_back(set.name);
  return names;
}

std::vector<std::string> names_missing_from(const std::vector<std::string>& a, const std::vector<std::string>& b) {
  std::vector<std::string> out;
  for (const auto& name : a)
    if (std::find(b.begin(), b.end(), name) == b.end()) out.push_back(name);
  return out;
}

AuditEntry reference_change_entry(std::string_view image_id, const AdminActor& by,
                                  const reference::ReferenceValues& before, const reference::ReferenceValues& after,
                                  const std::string& after_json) {
  const std::vector<std::string> old_names = set_names(before);
  const std::vector<std::string> new_names = set_names(after);
  const auto added = names_missing_from(new_names, old_names);
  const auto retired = names_missing_from(old_names, new_names);
  const std::string_view action = retired.empty()  ? audit_action::add_reference
                                  : added.empty() ? audit_action::retire_reference
                                                  : audit_action::update_reference;
  return admin_entry(image_id, by, action,
                     ChangeJson(by).names("added", added).names("retired", retired).embedded("reference", after_json).done());
}

ChainWalk::ChainWalk(const SecretBytes& audit_key, std::optional<AuditHead> expected_head)
    : ChainWalk(std::vector<const SecretBytes*>{&audit_key}, std::move(expected_head)) {}

ChainWalk::ChainWalk(std::vector<const SecretBytes*> epoch_keys, std::optional<AuditHead> expected_head)
    : keys_(std::move(epoch_keys)), expected_head_(std::move(expected_head)) {
  report_.head = AuditHead{0, genesis_hash};
}

void ChainWalk::bad(std::int64_t sequence, std::string problem) {
  if (report_.first_bad_sequence) return;
  report_.first_bad_sequence = sequence;
  report_.problem = "record " + std::to_string(sequence) + ": " + std::move(problem);
}

Result<void> ChainWalk::add(const AuditRecord& record) {
  ++report_.records;
  report_.head = AuditHead{record.sequence, record.hash};
  if (report_.first_bad_sequence) return {};  // only the first break is reported; keep counting
  if (record.sequence != expected_sequence_) {
    bad(record.sequence, record.sequence > expected_sequence_
                             ? "follows record " + std::to_string(expected_sequence_ - 1) + "; record " +
                                   std::to_string(expected_sequence_) + " is missing"
                             : "unexpected sequence number");
  } else if (record.previous_hash != expected_previous_) {
    bad(record.sequence, expected_sequence_ == 1 ? "the first record does not start from the genesis hash"
                                                 : "previous_hash does not match the hash of record " +
                                                       std::to_string(expected_sequence_ - 1));
  } else if (record.format == audit_format_unkeyed) {
    if (keyed_seen_)
      bad(record.sequence, "an unkeyed record after keyed ones (records are keyed since the schema upgrade)");
    else if (audit_record_hash(record) != record.hash)
      bad(record.sequence, "hash does not match its contents");
    else
      ++report_.unkeyed_records;
  } else if (record.format == audit_format_keyed) {
    if (keys_.empty()) return fail(Errc::internal, "audit chain walk without a key");
    auto mac = audit_record_mac(*keys_[epoch_], record);
    if (!mac) return tl::unexpected(mac.error());
    const bool rotation = record.entry.decision == "admin" && record.entry.reason == audit_action::rotate_kek;
    if (!same_text_constant_time(*mac, record.hash))
      bad(record.sequence, "MAC does not match its contents (edited, or written without this store's KEK)");
    else if (!keyed_seen_ && report_.unkeyed_records > 0 &&
             (record.entry.decision != "admin" || record.entry.reason != audit_action::seal_unkeyed))
      bad(record.sequence, "the unkeyed records before it are not sealed by the schema upgrade's record");
    else if (rotation && epoch_ + 1 >= keys_.size())
      bad(record.sequence, "a KEK rotation the store holds no later chain key for");
    else if (rotation)
      ++epoch_;
    keyed_seen_ = true;
  } else {
    bad(record.sequence, "unknown record format " + std::to_string(record.format));
  }
  if (expected_head_ && record.sequence == expected_head_->sequence) {
    if (!same_text_constant_time(record.hash, expected_head_->hash))
      bad(record.sequence, "differs from the exported head " + format_audit_head(*expected_head_) +
                               " (the chain was rewritten from here or earlier)");
    else
      report_.expected_head_matched = true;
  }
  expected_sequence_ = record.sequence + 1;
  expected_previous_ = record.hash;
  return {};
}

const AuditChainReport& ChainWalk::finish(bool require_sealed) {
  if (require_sealed && report_.unkeyed_records > 0 && !keyed_seen_)
    bad(report_.unkeyed_records + 1, "missing: the unkeyed records 1.." + std::to_string(report_.unkeyed_records) +
                                         " are not followed by the schema upgrade's keyed record");
  // Every rotation left its record: a chain that ends under a retired key lost its newest
  // records, the rotate-kek record among them.
  if (!report_.first_bad_sequence && !keys_.empty() && epoch_ + 1 != keys_.size())
    bad(report_.head.sequence + 1, "missing: the chain ends under the audit key of KEK epoch " + std::to_string(epoch_) +
                                       ", but the store's KEK was rotated " + std::to_string(keys_.size() - 1) +
                                       " times (records were removed from the end)");
  if (expected_head_ && !report_.first_bad_sequence && !report_.expected_head_matched) {
    if (expected_head_->sequence == 0 && expected_head_->hash == genesis_hash)
      report_.expected_head_matched = true;
    else if (expected_head_->sequence > report_.head.sequence)
      bad(report_.head.sequence + 1, "missing: the chain ends at record " + std::to_string(report_.head.sequence) +
                                         ", but the exported head " + format_audit_head(*expected_head_) +
                                         " names a later record (records were removed from the end)");
    else
      bad(expected_head_->sequence, "differs from the exported head " + format_audit_head(*expected_head_));
  }
  report_.intact = !report_.first_bad_sequence.has_value();
  return report_;
}

Result<BackupFile> BackupFile::create(const std::string& path) {
  if (path.empty() || path.front() != '/')
    return fail(Errc::invalid_argument, "backup: the output path must be absolute, not \"" + path + "\"");
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0)
    return fail(errno == EEXIST ? Errc::invalid_argument : Errc::io,
                "backup: " + path + ": " + std::strerror(errno) +
                    (errno == EEXIST ? " (a backup never replaces a file; choose a new name)" : ""));
  BackupFile file(path);  // from here removed again on failure
  // Whatever the umask made of the mode.
  if (::fchmod(fd, 0600) != 0) {
    const int saved = errno;
    ::close(fd);
    return fail(Errc::io, "backup: " + path + ": " + std::strerror(saved));
  }
  ::close(fd);
  return file;
}

BackupFile::~BackupFile() {
  if (keep_) return;
  for (const char* suffix : {"", "-wal", "-shm", "-journal"}) ::unlink((path_ + suffix).c_str());
}

}  // namespace fde::verifier::store_detail
