// Verifier state behind one interface (docs/fde-verifierd.md): images with their wrapped disk
// keys, reference values and status, and the append-only audit log, chained and MAC'd with a
// key derived from the KEK (audit_hash.cpp has the format).
#pragma once

#include <cstdint>
#include <functional>
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

// One release or denial, as the policy step produced it. Administrative changes are
// recorded by the store itself, in the same shape (decision "admin"; see AdminActor).
struct AuditEntry {
  std::string image_id;      // as requested (may be unknown)
  std::string peer;          // "203.0.113.7:53122"; for admin records "uid=0 pid=4242"
  std::string token_digest;  // hex SHA-256 of the token bytes ("" if none)
  std::string measurements;  // JSON object: RIM, REMs, RPV, matched set; for admin records what changed
  std::string decision;      // "release", "deny", or "admin" for an administrative change
  std::string reason;        // the verdict summary (first failed check); for admin records the action
  std::string checks;        // JSON array of the verdict's checks ("[]" for admin records)
};

// How a record's `hash` is computed: format 1 records are the unkeyed SHA-256 records of
// stores written before the chain was keyed (schema version 1); every record written since
// is format 2, an HMAC-SHA-256 under a key derived from the KEK (audit_hash.cpp).
constexpr int audit_format_unkeyed = 1;
constexpr int audit_format_keyed = 2;

struct AuditRecord {
  std::int64_t sequence = 0;  // 1, 2, 3, ...
  std::string time;           // RFC 3339, set by the store
  AuditEntry entry;
  std::string previous_hash;  // hex; the previous record's hash, 64 zeros for the first record
  std::string hash;           // hex; SHA-256 (format 1) or HMAC-SHA-256 (format 2) over every field above
  int format = audit_format_keyed;
};

// The administrative actions the store records, as AuditEntry::reason of an "admin" record.
namespace audit_action {
constexpr std::string_view enroll = "enroll";
constexpr std::string_view add_reference = "add-reference";
constexpr std::string_view retire_reference = "retire-reference";
constexpr std::string_view update_reference = "update-reference";  // sets both added and retired
constexpr std::string_view revoke = "revoke";
constexpr std::string_view reinstate = "reinstate";
constexpr std::string_view delete_image = "delete";     // the row and its wrapped key are gone
constexpr std::string_view rotate_kek = "rotate-kek";   // MAC'd under the old key; the next record under the new
// Written once by the schema upgrade: seals the unkeyed records of an older store.
constexpr std::string_view seal_unkeyed = "seal-unkeyed-records";
}  // namespace audit_action

// Who made an administrative change, as the admin socket's SO_PEERCRED reported the peer.
struct AdminActor {
  std::int64_t uid = -1;
  std::int64_t pid = 0;
};

// The newest record of a chain as an operator keeps it outside the database, "SEQ:HEX".
struct AuditHead {
  std::int64_t sequence = 0;  // 0 with the genesis hash for an empty chain
  std::string hash;           // 64 lowercase hex digits
};
std::string format_audit_head(const AuditHead& head);
Result<AuditHead> parse_audit_head(std::string_view text);

struct AuditQuery {
  std::optional<std::string> image_id;
  std::optional<std::string> decision;
  std::optional<std::int64_t> after_sequence;
  std::size_t limit = 100;  // newest first; capped at 10000 by the SQLite store
};

struct AuditChainReport {
  bool intact = false;
  std::int64_t records = 0;
  std::int64_t unkeyed_records = 0;  // format 1 records at the start (sealed by the upgrade)
  std::optional<std::int64_t> first_bad_sequence;
  std::string problem;  // "record 17: MAC does not match its contents"
  AuditHead head;       // the newest record (as found, even when the chain is broken)
  bool expected_head_matched = false;  // an expected head was given and the chain holds it
};

// The canonical unkeyed hash of a format 1 record (previous_hash || fields with length
// prefixes), as stores before schema version 2 wrote it.
std::string audit_record_hash(const AuditRecord& record);
// The keyed MAC of a format 2 record: HMAC-SHA-256 under `key` over the same fields, with a
// domain label in front. `key` comes from KeyEncryptionKey::derive_key(audit_mac_key_label).
Result<std::string> audit_record_mac(const SecretBytes& key, const AuditRecord& record);
constexpr std::string_view audit_mac_key_label = "virtcca-fde/v1 audit chain MAC key";

// The KEK check value kept in the store (schema version 3): HKDF-SHA-256(KEK, info = this
// label), 32 bytes. It reveals nothing about the KEK or the keys derived from it under other
// labels, and lets open refuse a KEK that is not the store's before anything is served.
constexpr std::string_view kek_check_label = "virtcca-fde/v1 KEK check value";

// What a backup wrote: the copy was opened again and checked before this is returned.
struct BackupReport {
  std::string path;
  std::int64_t bytes = 0;
  std::int64_t images = 0;
  AuditHead audit_head;  // the newest record in the copy
};

// What a KEK rotation did, in one transaction.
struct KekRotation {
  std::int64_t images = 0;     // wrapped keys re-wrapped
  std::int64_t key_epoch = 0;  // the audit chain's key epoch from now on (0 = the store's first KEK)
  AuditRecord record;          // the rotate-kek record, MAC'd under the old key
};

// What append_release() hands back: the release's record and the image's unwrapped key.
struct Release {
  AuditRecord record;
  SecretBytes disk_key;
};

// A store's whole content as stored, for fde-admin migrate-store: wrapped keys stay wrapped
// (the same KEK opens both stores) and records keep their bytes, hashes and MACs.
struct StoredImage {
  ImageRecord image;
  Bytes wrapped_key;
};
struct StoreContent {
  std::vector<StoredImage> images;
  std::vector<AuditRecord> audit;  // oldest first
  // The audit chain's retired MAC keys of a store whose KEK was rotated, epoch 0, 1, ... in
  // order, each still wrapped under the current KEK (empty: never rotated). Without them the
  // records before the last rotation could not be checked in the copy.
  std::vector<Bytes> retired_audit_keys;
};

// What a store reports for the daemon's metrics; a backend that does not measure leaves zeros.
struct StoreStats {
  double lock_held_seconds = 0;  // time the store's own lock was held (SQLite: the one connection's mutex)
  std::uint64_t commits = 0;     // write transactions committed
  std::uint64_t syncs = 0;       // fdatasync calls that made them durable (group commit: fewer)
};

class Store {
 public:
  virtual ~Store() = default;
  // Each change below writes its "admin" audit record (who, what changed) in the same
  // transaction as the change itself, and returns that record: no change without its record.
  // Fails with Errc::invalid_argument if the image exists. The key is wrapped with the KEK.
  virtual Result<AuditRecord> enroll(const ImageRecord& image, const SecretBytes& disk_key, const AdminActor& by) = 0;
  virtual Result<std::optional<ImageRecord>> find_image(std::string_view image_id) = 0;
  virtual Result<std::vector<ImageRecord>> list_images() = 0;
  // Unwraps the disk key of an image that is active at this moment (status and key from one
  // row). For inspection; the release path uses append_release(), which also records.
  // Errc::not_found for an unknown image.
  virtual Result<std::optional<SecretBytes>> disk_key(std::string_view image_id) = 0;
  virtual Result<AuditRecord> update_reference(std::string_view image_id, const reference::ReferenceValues& reference,
                                               const AdminActor& by) = 0;
  virtual Result<AuditRecord> set_status(std::string_view image_id, ImageStatus status, const AdminActor& by) = 0;
  // The release path's last step, in one write transaction: re-reads the image's status, and
  // only if it is active unwraps the key and appends `entry` (decision "release"). So a revoke
  // is ordered against every release in the chain: committed first, the release is withheld
  // (nullopt, nothing written; the caller records a denial); committed later, its record
  // follows the release's. Errc::not_found if the image is no longer enrolled.
  virtual Result<std::optional<Release>> append_release(const AuditEntry& entry) = 0;
  // Appends a denial atomically: reads the chain head and writes the new record in one
  // transaction. Only "deny": a release is recorded by append_release(), an admin change by
  // the change itself.
  virtual Result<AuditRecord> append_audit(const AuditEntry& entry) = 0;
  virtual Result<std::vector<AuditRecord>> query_audit(const AuditQuery& query) = 0;
  // Recomputes every record's hash or MAC and link, oldest first; with `expected_head`
  // (exported earlier), also that the chain still holds that record unchanged, so records
  // removed from the end are found too.
  virtual Result<AuditChainReport> verify_audit_chain(const std::optional<AuditHead>& expected_head) = 0;
  Result<AuditChainReport> verify_audit_chain() { return verify_audit_chain(std::nullopt); }
  // Removes the image and its wrapped key (crypto-shredding: without the row, no KEK opens
  // the disk again; the freed pages are zeroed and the WAL checkpointed). The image id may be
  // enrolled again afterwards. Errc::not_found for an unknown image.
  virtual Result<AuditRecord> delete_image(std::string_view image_id, const AdminActor& by) = 0;
  // A consistent copy of the whole store, taken while the store stays in use, written to a new
  // file `path` (created 0600 with O_EXCL; an existing file or a symlink is refused). The copy
  // opens only with the same KEK. SQLite copies its pages; PostgreSQL writes a logical copy
  // of one snapshot into a new SQLite store (restored with fde-admin migrate-store).
  virtual Result<BackupReport> backup(const std::string& path) = 0;
  // Re-wraps every disk key under `new_kek` in one transaction and continues the audit chain
  // under the new KEK's MAC key: a "rotate-kek" record MAC'd under the old key, then every
  // later record under the new one. The retired chain keys are kept wrapped under the new KEK,
  // so verify_audit_chain() still checks every record. After it returns, this store object uses
  // the new KEK, and the store no longer opens with the old one. Refused when the audit chain
  // is broken (rotation must not launder a tampered chain) or the new KEK equals the old one.
  virtual Result<KekRotation> rotate_kek(KeyEncryptionKey new_kek, const AdminActor& by) = 0;
  // Cheap liveness probe for /readyz.
  virtual Result<void> ping() = 0;
  // Everything, in one consistent read (for a migration; the audit log is held in memory).
  virtual Result<StoreContent> export_content() = 0;
  // Writes `content` as is into a store with no images and no audit records, in one
  // transaction; Errc::invalid_argument if the store is not empty.
  virtual Result<void> import_content(const StoreContent& content) = 0;
  virtual StoreStats stats() const { return {}; }
};

// What copy_store() did and checked.
struct StoreCopyReport {
  std::size_t images = 0;
  std::size_t active_keys_checked = 0;  // unwrapped in the target, equal to the source's
  std::int64_t records = 0;
  AuditHead head;
};
// Copies every image (its key still wrapped) and every audit record from `source` into the
// empty `target` (both opened with the same KEK), refusing a source whose chain does not
// verify, then checks the copy: the target's chain verifies with the source's head, and every
// active image's key unwraps in the target to the source's bytes. Stop the daemons first:
// changes made to the source during the copy are not carried over.
Result<StoreCopyReport> copy_store(Store& source, Store& target);

// SQLite in WAL mode; creates the file (0600) and schema on first open.
// Every write transaction returns only once its commit is on disk; concurrent releases and
// denials share one fdatasync of the WAL (group commit), and none holds the store's lock
// while it waits for it.
// The store may be shared by any number of threads (one connection behind a mutex), and
// several processes may open the same file (writes take BEGIN IMMEDIATE, 5 s busy timeout).
// An existing file with group or other permission bits is refused, like the KEK file.
// Refuses a KEK that is not the store's (Errc::verification_failed): checked against the
// stored KEK check value; a store written before the check value existed is checked by
// unwrapping one disk key (or the newest keyed audit MAC) and then gets its check value.
Result<std::unique_ptr<Store>> open_sqlite_store(const std::string& path, KeyEncryptionKey kek);
struct SqliteOptions {
  // The call that makes a file's written data durable (fdatasync); tests substitute a slow
  // or failing one. Returns 0 or -1 with errno set.
  std::function<int(int fd)> sync_file;
};
Result<std::unique_ptr<Store>> open_sqlite_store(const std::string& path, KeyEncryptionKey kek, SqliteOptions options);

// PostgreSQL through libpq, for several replicas sharing one state (postgres_store.cpp has
// the locking). The schema is created or upgraded on open; a newer schema is refused. A KEK
// that is not the store's is refused (Errc::verification_failed) as on SQLite, at open and,
// after a rotation through another replica, at every write and every ping.
struct PostgresOptions {
  std::string conninfo;  // a libpq connection string or URI ("host=db.example dbname=fde sslmode=verify-full")
  SecretBytes password;  // empty: libpq's own sources (conninfo, ~/.pgpass) or none
  std::size_t pool_size = 4;  // connections this store object may hold open at once
  int connect_timeout_seconds = 5;
};
constexpr std::size_t max_postgres_pool_size = 64;
Result<std::unique_ptr<Store>> open_postgres_store(PostgresOptions options, KeyEncryptionKey kek);
// For `fde-verifierd --check-config`: whether `kek` opens the PostgreSQL store, read in one
// READ ONLY transaction (nothing written). A database without the store's tables passes (the
// daemon creates them); one without a check value passes if one disk key unwraps (or there is
// none). A database that cannot be reached is an error too: the check could not be made.
Result<void> check_postgres_store_kek(PostgresOptions options, const KeyEncryptionKey& kek);
// The connection string for logs: host, port, dbname, user and sslmode only (never a
// password written into it); "(unparsable connection string)" if libpq cannot read it.
std::string describe_postgres_conninfo(const std::string& conninfo);
// For `fde-verifierd --check-config`: whether `kek` opens the store at `path`, read without
// writing anything (no -wal/-shm created, so it is safe as root beside a running daemon). A
// missing file passes (the daemon creates it); a store without a check value passes if one
// disk key unwraps (or there is none).
Result<void> check_sqlite_store_kek(const std::string& path, const KeyEncryptionKey& kek);

}  // namespace fde::verifier
