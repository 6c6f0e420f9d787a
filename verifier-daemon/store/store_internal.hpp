// What every store backend shares beyond the interface: the "what changed" JSON of admin
// records, the admin record itself, and the walk that checks an audit chain oldest first.
// Internal to the backends (sqlite_store.cpp, postgres_store.cpp); not part of store.hpp.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "verifier-daemon/store/store.hpp"

namespace fde::verifier::store_detail {

inline const std::string genesis_hash(64, '0');

std::string now_text();
bool same_text_constant_time(const std::string& a, const std::string& b);

// The record's reference values must describe the record's image if they name one.
Result<void> check_reference_image(std::string_view image_id, const reference::ReferenceValues& reference);

// The "what changed" member of an admin record: a JSON object built from values the store
// wrote or read, with text quoted and embedded JSON (a reference document) as is.
class ChangeJson {
 public:
  explicit ChangeJson(const AdminActor& by);
  ChangeJson& text(std::string_view name, std::string_view value);
  ChangeJson& number(std::string_view name, std::int64_t value);
  ChangeJson& names(std::string_view name, const std::vector<std::string>& values);
  ChangeJson& embedded(std::string_view name, std::string_view json_text);
  std::string done() const { return out_ + "}"; }

 private:
  void key(std::string_view name);
  std::string out_ = "{";
};

AuditEntry admin_entry(std::string_view image_id, const AdminActor& by, std::string_view action, std::string change);
std::vector<std::string> set_names(const reference::ReferenceValues& reference);
// Names in `a` that are not in `b`.
std::vector<std::string> names_missing_from(const std::vector<std::string>& a, const std::vector<std::string>& b);
// The admin record of a reference change: its action and "what changed" from the sets before and after.
AuditEntry reference_change_entry(std::string_view image_id, const AdminActor& by,
                                  const reference::ReferenceValues& before, const reference::ReferenceValues& after,
                                  const std::string& after_json);

// store_meta's row name for the KEK check value (both backends keep it there).
constexpr std::string_view kek_check_meta = "kek_check";
// The check value of `kek` as stored: hex of HKDF-SHA-256(KEK, kek_check_label).
Result<std::string> kek_check_value(const KeyEncryptionKey& kek);
// The AAD under which a retired audit chain key of `epoch` is wrapped (audit_keys table).
std::string audit_key_aad(std::int64_t epoch);

// Checks a chain fed oldest first: every link, every hash or MAC; unkeyed (format 1)
// records only at the start and, once the store is keyed, sealed by the upgrade's record
// right after them; then the expected head. Only the first problem is reported; records
// keep being counted.
class ChainWalk {
 public:
  ChainWalk(const SecretBytes& audit_key, std::optional<AuditHead> expected_head);
  // With the chain's MAC keys by KEK epoch: records are MAC'd under keys[0] until the first
  // rotate-kek record (itself under the old key), under keys[1] after it, and so on.
  ChainWalk(std::vector<const SecretBytes*> epoch_keys, std::optional<AuditHead> expected_head);
  Result<void> add(const AuditRecord& record);
  // `require_sealed`: unkeyed records with no keyed record after them are a break (a keyed
  // store always seals them on upgrade, so keyed records were removed).
  const AuditChainReport& finish(bool require_sealed);
  bool keyed_seen() const { return keyed_seen_; }
  const AuditChainReport& report() const { return report_; }

 private:
  void bad(std::int64_t sequence, std::string problem);
  std::vector<const SecretBytes*> keys_;
  std::size_t epoch_ = 0;
  std::optional<AuditHead> expected_head_;
  AuditChainReport report_;
  bool keyed_seen_ = false;
  std::int64_t expected_sequence_ = 1;
  std::string expected_previous_ = genesis_hash;
};

// The file a backup is written to: created here, 0600, at an absolute path, never over an
// existing file and never through a symlink (an SQLite store then takes the empty file as a
// new database). Removed again, with any SQLite side files, unless keep() is called.
class BackupFile {
 public:
  static Result<BackupFile> create(const std::string& path);
  BackupFile(BackupFile&& other) noexcept : path_(std::move(other.path_)), keep_(other.keep_) { other.keep_ = true; }
  BackupFile(const BackupFile&) = delete;
  BackupFile& operator=(const BackupFile&) = delete;
  BackupFile& operator=(BackupFile&&) = delete;
  ~BackupFile();
  const std::string& path() const { return path_; }
  void keep() { keep_ = true; }

 private:
  explicit BackupFile(std::string path) : path_(std::move(path)) {}
  std::string path_;
  bool keep_ = false;
};

}  // namespace fde::verifier::store_detail
