// Verifier state behind one interface (design.md section 4): images with their wrapped disk
// keys, reference values and status, and the hash-chained append-only audit log.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/reference/reference_values.hpp"
#include "common/util/bytes.hpp"
#include "common/util/secret_bytes.hpp"
#include "verifier-daemon/store/key_encryption_key.hpp"

namespace fde::verifier {

enum class ImageStatus { active, revoked };
std::string_view image_status_name(ImageStatus status);  // "active", "revoked"
std::optional<ImageStatus> image_status_from_name(std::string_view name);

struct ImageRecord {
  std::string image_id;
  std::string luks_uuid;
  ImageStatus status = ImageStatus::active;
  reference::ReferenceValues reference;  // accepted sets, RIMs, allowed RPVs
  std::string created_at;                // RFC 3339, set by the store
  std::string updated_at;
};

// One release or denial, as the policy step produced it.
struct AuditEntry {
  std::string image_id;      // as requested (may be unknown)
  std::string peer;          // "203.0.113.7:53122"
  std::string token_digest;  // hex SHA-256 of the token bytes ("" if none)
  std::string measurements;  // JSON object: RIM, REMs, RPV, matched set
  std::string decision;      // "release" or "deny"
  std::string reason;        // the verdict summary (first failed check)
  std::string checks;        // JSON array of the verdict's checks
};

struct AuditRecord {
  std::int64_t sequence = 0;  // 1, 2, 3, ...
  std::string time;           // RFC 3339, set by the store
  AuditEntry entry;
  std::string previous_hash;  // hex; 64 zeros for the first record
  std::string hash;           // hex SHA-256 over previous_hash and every field above
};

struct AuditQuery {
  std::optional<std::string> image_id;
  std::optional<std::string> decision;
  std::optional<std::int64_t> after_sequence;
  std::size_t limit = 100;  // newest first; capped at 10000 by the SQLite store
};

struct AuditChainReport {
  bool intact = false;
  std::int64_t records = 0;
  std::optional<std::int64_t> first_bad_sequence;
  std::string problem;  // "record 17: hash does not match its contents"
};

// The canonical hash of a record (previous_hash || fields with length prefixes), shared by
// every backend so chains are comparable.
std::string audit_record_hash(const AuditRecord& record);

class Store {
 public:
  virtual ~Store() = default;
  // Fails with Errc::invalid_argument if the image exists. The key is wrapped with the KEK.
  virtual Result<void> enroll(const ImageRecord& image, const SecretBytes& disk_key) = 0;
  virtual Result<std::optional<ImageRecord>> find_image(std::string_view image_id) = 0;
  virtual Result<std::vector<ImageRecord>> list_images() = 0;
  // Unwraps the disk key of an image that is active at this moment. Status and key are read
  // from one row in one statement, so this read, not an earlier find_image(), is what decides
  // whether a key may leave: an image revoked after the caller's checks yields nullopt.
  // Errc::not_found for an unknown image.
  virtual Result<std::optional<SecretBytes>> disk_key(std::string_view image_id) = 0;
  virtual Result<void> update_reference(std::string_view image_id, const reference::ReferenceValues& reference) = 0;
  virtual Result<void> set_status(std::string_view image_id, ImageStatus status) = 0;
  // Appends atomically: reads the last hash and writes the new record in one transaction.
  virtual Result<AuditRecord> append_audit(const AuditEntry& entry) = 0;
  virtual Result<std::vector<AuditRecord>> query_audit(const AuditQuery& query) = 0;
  // Recomputes every record's hash and link, oldest first.
  virtual Result<AuditChainReport> verify_audit_chain() = 0;
  // Cheap liveness probe for /readyz.
  virtual Result<void> ping() = 0;
};

// SQLite in WAL mode; creates the file (0600) and schema on first open.
// The store may be shared by any number of threads (one connection behind a mutex), and
// several processes may open the same file (writes take BEGIN IMMEDIATE, 5 s busy timeout).
// An existing file with group or other permission bits is refused, like the KEK file.
Result<std::unique_ptr<Store>> open_sqlite_store(const std::string& path, KeyEncryptionKey kek);

}  // namespace fde::verifier
