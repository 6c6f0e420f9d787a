// The SQLite store backend: one WAL-mode database file (0600) holding images and the audit chain.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <functional>
#include <iterator>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>
#include <optional>
#include <utility>

#include <openssl/crypto.h>
#include <sqlite3.h>

#include "common/protocol/messages.hpp"
#include "common/util/strict_json.hpp"
#include "verifier-daemon/nonce/nonce_service.hpp"
#include "verifier-daemon/store/store.hpp"
#include "verifier-daemon/store/store_internal.hpp"

namespace fde::verifier {

namespace {

using namespace store_detail;

// Each entry upgrades the schema by one version, applied in order inside one transaction;
// schema_version records how far a file has come. Never edit a shipped entry: append.
constexpr const char* migrations[] = {
    // Version 1. STRICT tables refuse values of the wrong type. The triggers make the audit
    // table append-only for every client that goes through SQL; the hash chain then catches
    // anyone who edits the file behind SQLite's back (or drops the triggers first).
    R"sql(
CREATE TABLE images (
  id TEXT PRIMARY KEY NOT NULL,
  luks_uuid TEXT NOT NULL,
  status TEXT NOT NULL CHECK (status IN ('active', 'revoked')),
  wrapped_key BLOB NOT NULL,
  reference_json TEXT NOT NULL,
  created_at TEXT NOT NULL,
  updated_at TEXT NOT NULL
) STRICT;
CREATE TABLE audit (
  sequence INTEGER PRIMARY KEY CHECK (sequence > 0),
  time TEXT NOT NULL,
  image_id TEXT NOT NULL,
  peer TEXT NOT NULL,
  token_digest TEXT NOT NULL,
  measurements TEXT NOT NULL,
  decision TEXT NOT NULL,
  reason TEXT NOT NULL,
  checks TEXT NOT NULL,
  previous_hash TEXT NOT NULL,
  hash TEXT NOT NULL
) STRICT;
CREATE INDEX audit_by_image ON audit (image_id, sequence);
CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
  BEGIN SELECT RAISE(ABORT, 'audit records are append-only'); END;
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
  BEGIN SELECT RAISE(ABORT, 'audit records are append-only'); END;
)sql",
    // Version 2: the chain is keyed. Existing records keep their unkeyed SHA-256 hashes as
    // format 1; every record from here on is format 2 (HMAC under a KEK-derived key).
    // migrate() then seals the format 1 records with one keyed record that links to them.
    R"sql(
ALTER TABLE audit ADD COLUMN format INTEGER NOT NULL DEFAULT 1 CHECK (format IN (1, 2));
)sql",
    // Version 3: the KEK check value (store_meta 'kek_check', written by check_kek() on the
    // first open with a KEK that is shown to be the store's), and the audit chain's retired
    // MAC keys, one per KEK rotation, each wrapped under the current KEK.
    R"sql(
CREATE TABLE store_meta (
  name TEXT PRIMARY KEY NOT NULL,
  value TEXT NOT NULL
) STRICT;
CREATE TABLE audit_keys (
  epoch INTEGER PRIMARY KEY CHECK (epoch >= 0),
  wrapped_key BLOB NOT NULL
) STRICT;
)sql",
};
constexpr int first_keyed_schema_version = 2;
constexpr int latest_schema_version = static_cast<int>(std::size(migrations));

constexpr int busy_timeout_ms = 5000;
// Checkpoints on a second connection after a group sync instead of inside a commit. Off: in
// the benchmark on the shared 2-core machine it lowered single-threaded throughput (cause
// not yet found), so SQLite's own checkpoint (about every 1,000 pages) stays under the lock.
constexpr bool separate_checkpoints = false;
constexpr std::size_t max_audit_query_limit = 10000;

tl::unexpected<Error> sqlite_error(sqlite3* db, std::string_view operation) {
  return fail(Errc::io, "sqlite store: " + std::string(operation) + ": " + sqlite3_errmsg(db));
}

// A cached prepared statement in use: values are bound by index and the statement is reset
// and its bindings cleared when the object goes away, whatever path the caller leaves by.
// The first bind failure is kept and reported by step().
class Query {
 public:
  Query(sqlite3* db, sqlite3_stmt* statement, std::string_view operation)
      : db_(db), statement_(statement), operation_(operation) {}
  Query(Query&& other) noexcept
      : db_(other.db_), statement_(std::exchange(other.statement_, nullptr)), operation_(other.operation_),
        bind_failed_(other.bind_failed_), code_(other.code_) {}
  Query(const Query&) = delete;
  Query& operator=(const Query&) = delete;
  Query& operator=(Query&&) = delete;
  ~Query() {
    if (statement_ == nullptr) return;
    sqlite3_reset(statement_);
    sqlite3_clear_bindings(statement_);
  }

  // SQLITE_TRANSIENT: SQLite copies, so a temporary argument cannot dangle before step().
  // An empty view may have a null pointer, which SQLite would bind as NULL, not as empty.
  Query& bind(int index, std::string_view text) {
    const char* data = text.data() != nullptr ? text.data() : "";
    return check_bind(sqlite3_bind_text64(statement_, index, data, text.size(), SQLITE_TRANSIENT, SQLITE_UTF8));
  }
  Query& bind(int index, ByteView blob) {
    if (blob.empty()) return check_bind(sqlite3_bind_zeroblob(statement_, index, 0));
    return check_bind(sqlite3_bind_blob64(statement_, index, blob.data(), blob.size(), SQLITE_TRANSIENT));
  }
  Query& bind(int index, std::int64_t value) { return check_bind(sqlite3_bind_int64(statement_, index, value)); }
  Query& bind_null(int index) { return check_bind(sqlite3_bind_null(statement_, index)); }

  // true: a row is available; false: done.
  Result<bool> step() {
    if (bind_failed_) return sqlite_error(db_, std::string(operation_) + ": bind");
    code_ = sqlite3_step(statement_);
    if (code_ == SQLITE_ROW) return true;
    if (code_ == SQLITE_DONE) return false;
    return sqlite_error(db_, operation_);
  }
  Result<void> run() {
    auto row = step();
    if (!row) return tl::unexpected(row.error());
    return {};
  }
  int code() const { return code_; }

  std::string text(int column) const {
    const unsigned char* data = sqlite3_column_text(statement_, column);
    int size = sqlite3_column_bytes(statement_, column);
    return data == nullptr ? std::string() : std::string(reinterpret_cast<const char*>(data), static_cast<std::size_t>(size));
  }
  Bytes blob(int column) const {
    const void* data = sqlite3_column_blob(statement_, column);
    int size = sqlite3_column_bytes(statement_, column);
    const auto* bytes = static_cast<const std::uint8_t*>(data);
    return data == nullptr ? Bytes() : Bytes(bytes, bytes + size);
  }
  std::int64_t integer(int column) const { return sqlite3_column_int64(statement_, column); }

 private:
  Query& check_bind(int rc) {
    if (rc != SQLITE_OK) bind_failed_ = true;
    return *this;
  }
  sqlite3* db_;
  sqlite3_stmt* statement_;
  std::string_view operation_;
  bool bind_failed_ = false;
  int code_ = SQLITE_OK;
};

// The store mutex, held for as short as possible, and timed: the held time is a metric.
class HeldLock {
 public:
  HeldLock(std::mutex& mutex, std::atomic<std::uint64_t>& held_ns) : lock_(mutex), held_ns_(held_ns) {}
  HeldLock(const HeldLock&) = delete;
  HeldLock& operator=(const HeldLock&) = delete;
  ~HeldLock() { unlock(); }
  void unlock() {
    if (!lock_.owns_lock()) return;
    held_ns_.fetch_add(static_cast<std::uint64_t>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - since_).count()));
    lock_.unlock();
  }

 private:
  std::unique_lock<std::mutex> lock_;
  std::chrono::steady_clock::time_point since_ = std::chrono::steady_clock::now();
  std::atomic<std::uint64_t>& held_ns_;
};

class SqliteStore final : public Store {
 public:
  SqliteStore(sqlite3* db, std::string path, KeyEncryptionKey kek, SecretBytes audit_key, SqliteOptions options)
      : db_(db),
        path_(std::move(path)),
        kek_(std::move(kek)),
        audit_key_(std::move(audit_key)),
        sync_file_(options.sync_file ? std::move(options.sync_file) : [](int fd) { return ::fdatasync(fd); }) {}
  ~SqliteStore() override {
    for (auto& [sql, statement] : statements_) sqlite3_finalize(statement);
    sqlite3_close_v2(checkpoint_db_);
    sqlite3_close_v2(db_);
    if (wal_fd_ >= 0) ::close(wal_fd_);
  }
  SqliteStore(const SqliteStore&) = delete;
  SqliteStore& operator=(const SqliteStore&) = delete;

  Result<void> configure();
  Result<void> migrate();
  Result<void> check_kek();

  Result<AuditRecord> enroll(const ImageRecord& image, const SecretBytes& disk_key, const AdminActor& by) override;
  Result<std::optional<ImageRecord>> find_image(std::string_view image_id) override;
  Result<std::vector<ImageRecord>> list_images() override;
  Result<std::optional<SecretBytes>> disk_key(std::string_view image_id) override;
  Result<AuditRecord> update_reference(std::string_view image_id, const reference::ReferenceValues& reference,
                                       const AdminActor& by) override;
  Result<AuditRecord> set_status(std::string_view image_id, ImageStatus status, const AdminActor& by) override;
  Result<std::optional<Release>> append_release(const AuditEntry& entry) override;
  Result<AuditRecord> append_audit(const AuditEntry& entry) override;
  Result<std::vector<AuditRecord>> query_audit(const AuditQuery& query) override;
  Result<AuditChainReport> verify_audit_chain(const std::optional<AuditHead>& expected_head) override;
  Result<AuditRecord> delete_image(std::string_view image_id, const AdminActor& by) override;
  Result<BackupReport> backup(const std::string& path) override;
  Result<KekRotation> rotate_kek(KeyEncryptionKey new_kek, const AdminActor& by) override;
  Result<void> ping() override;
  Result<StoreContent> export_content() override;
  Result<void> import_content(const StoreContent& content) override;
  StoreStats stats() const override;

 private:
  // Group commit. The connection runs with synchronous = NORMAL: COMMIT writes the
  // transaction's frames to the WAL without syncing it. commit() then counts the commit
  // (its ticket), and wait_durable(ticket), called after the store mutex is released,
  // returns once an fdatasync of the WAL that began after that commit has completed: one
  // waiter syncs for every commit made so far while the others wait for it (leader and
  // followers). A failed sync fails every waiter it covered and every later commit, until
  // restart: after a failed fdatasync the kernel may have dropped the dirty pages, so
  // nothing written since can be called durable. Checkpoints stay SQLite's: in NORMAL mode
  // it syncs the WAL before copying it into the database and the database after.
  Result<std::uint64_t> commit(const char* operation);
  Result<void> wait_durable(std::uint64_t ticket);
  Result<void> sync_wal();
  // After a sync, by the thread that made it: copies the WAL into the database (PASSIVE, on
  // its own connection, without the store's lock) once the WAL has grown past a few MiB.
  void checkpoint_if_due();
  // Write transactions other than releases and denials (rare) wait with the lock held.
  Result<void> commit_durably(const char* operation);
  // Callers hold mutex_ (except during open): one connection serves every thread, so
  // statements, transactions and sqlite3_errmsg() must never interleave.
  Result<Query> query(const char* sql, std::string_view operation);
  Result<void> execute(const char* sql, std::string_view operation);
  Result<void> begin_immediate(std::string_view operation);
  void rollback();
  // Inside a write transaction: links `entry` to the chain head and inserts it, MAC'd.
  Result<AuditRecord> append_keyed(const AuditEntry& entry);
  Result<void> insert_audit_row(const AuditRecord& record, const char* what);
  Result<AuditChainReport> walk_chain(const std::optional<AuditHead>& expected_head, bool require_sealed);
  Result<void> seal_unkeyed_records();
  // The audit chain's MAC keys, oldest epoch first; the last is audit_key_'s (copied).
  Result<std::vector<SecretBytes>> chain_keys();
  Result<void> write_meta(const char* name, const std::string& value);

  std::mutex mutex_;
  std::atomic<std::uint64_t> lock_held_ns_{0};
  sqlite3* db_;
  std::string path_;
  KeyEncryptionKey kek_;
  SecretBytes audit_key_;  // HKDF(KEK, audit_mac_key_label); wiped with the store
  std::map<std::string, sqlite3_stmt*, std::less<>> statements_;

  const std::function<int(int)> sync_file_;
  std::atomic<std::uint64_t> committed_{0};  // commits made (tickets handed out), under mutex_
  std::mutex durable_mutex_;                 // guards what follows
  std::condition_variable durable_changed_;
  std::uint64_t durable_ = 0;  // every commit up to this ticket is on disk
  bool syncing_ = false;       // a leader is in fdatasync
  std::optional<Error> sync_failed_;
  int wal_fd_ = -1;
  std::atomic<std::uint64_t> syncs_{0};
  std::mutex checkpoint_mutex_;  // one checkpointer at a time; guards checkpoint_db_
  sqlite3* checkpoint_db_ = nullptr;
};

// Rolls back on every path that does not reach committed().
class Transaction {
 public:
  explicit Transaction(std::function<void()> rollback) : rollback_(std::move(rollback)) {}
  Transaction(const Transaction&) = delete;
  Transaction& operator=(const Transaction&) = delete;
  ~Transaction() {
    if (rollback_) rollback_();
  }
  void committed() { rollback_ = nullptr; }

 private:
  std::function<void()> rollback_;
};

Result<Query> SqliteStore::query(const char* sql, std::string_view operation) {
  auto it = statements_.find(std::string_view(sql));
  if (it == statements_.end()) {
    sqlite3_stmt* statement = nullptr;
    if (sqlite3_prepare_v3(db_, sql, -1, SQLITE_PREPARE_PERSISTENT, &statement, nullptr) != SQLITE_OK) {
      sqlite3_finalize(statement);
      return sqlite_error(db_, std::string(operation) + ": prepare");
    }
    it = statements_.emplace(sql, statement).first;
  }
  return Query(db_, it->second, operation);
}

Result<void> SqliteStore::execute(const char* sql, std::string_view operation) {
  auto q = query(sql, operation);
  if (!q) return tl::unexpected(q.error());
  return q->run();
}

Result<void> SqliteStore::begin_immediate(std::string_view operation) {
  // IMMEDIATE takes the write lock up front, so two writers (threads or processes) never both
  // read the same chain head; the second waits up to busy_timeout.
  return execute("BEGIN IMMEDIATE", operation);
}

Result<std::uint64_t> SqliteStore::commit(const char* operation) {
  {
    std::lock_guard durable(durable_mutex_);
    if (sync_failed_) return fail(sync_failed_->code, std::string(operation) + ": " + sync_failed_->message);
  }
  if (auto ok = execute("COMMIT", operation); !ok) return tl::unexpected(ok.error());
  return committed_.fetch_add(1) + 1;
}

Result<void> SqliteStore::commit_durably(const char* operation) {
  auto ticket = commit(operation);
  if (!ticket) return tl::unexpected(ticket.error());
  return wait_durable(*ticket);
}

Result<void> SqliteStore::wait_durable(std::uint64_t ticket) {
  std::unique_lock lock(durable_mutex_);
  for (;;) {
    if (durable_ >= ticket) return {};
    if (sync_failed_) return tl::unexpected(*sync_failed_);
    if (syncing_) {
      durable_changed_.wait(lock);
      continue;
    }
    // Leader: one sync covers every commit made so far (their frames are written).
    syncing_ = true;
    const std::uint64_t covered = committed_.load();
    lock.unlock();
    Result<void> synced = sync_wal();
    lock.lock();
    syncing_ = false;
    syncs_.fetch_add(1);
    if (synced)
      durable_ = std::max(durable_, covered);
    else
      sync_failed_ = Error{Errc::io, "sqlite store: a committed change could not be made durable (" +
                                         synced.error().message +
                                         "; after a crash it may or may not be in force); restart the daemon "
                                         "after fixing the disk"};
    durable_changed_.notify_all();
    if (synced && durable_ >= ticket && separate_checkpoints) {
      lock.unlock();
      checkpoint_if_due();
      return {};
    }
  }
}

void SqliteStore::checkpoint_if_due() {
  constexpr off_t checkpoint_after_bytes = 4 * 1024 * 1024;
  std::unique_lock lock(checkpoint_mutex_, std::try_to_lock);
  if (!lock.owns_lock()) return;  // another thread is at it
  struct stat wal {};
  if (::stat((path_ + "-wal").c_str(), &wal) != 0 || wal.st_size < checkpoint_after_bytes) return;
  if (checkpoint_db_ == nullptr) {
    if (sqlite3_open_v2(path_.c_str(), &checkpoint_db_,
                        SQLITE_OPEN_READWRITE | SQLITE_OPEN_FULLMUTEX | SQLITE_OPEN_NOFOLLOW, nullptr) != SQLITE_OK) {
      sqlite3_close_v2(checkpoint_db_);
      checkpoint_db_ = nullptr;
      return;
    }
    sqlite3_busy_timeout(checkpoint_db_, busy_timeout_ms);
    (void)sqlite3_exec(checkpoint_db_, "PRAGMA synchronous = FULL", nullptr, nullptr, nullptr);
  }
  // PASSIVE: copies what no reader still needs and never waits for writers. A failure is
  // harmless (the WAL keeps the data; the next sync tries again).
  (void)sqlite3_wal_checkpoint_v2(checkpoint_db_, "main", SQLITE_CHECKPOINT_PASSIVE, nullptr, nullptr);
}

Result<void> SqliteStore::sync_wal() {
  // Our own descriptor of the WAL file (SQLite's is not ours to use from another thread);
  // opened again if the file was replaced. The directory is synced when the descriptor is
  // first opened, so a WAL created since is found after a power cut.
  const std::string wal = path_ + "-wal";
  struct stat on_disk {};
  struct stat held {};
  if (wal_fd_ >= 0 && (::stat(wal.c_str(), &on_disk) != 0 || ::fstat(wal_fd_, &held) != 0 ||
                       on_disk.st_ino != held.st_ino || on_disk.st_dev != held.st_dev)) {
    ::close(wal_fd_);
    wal_fd_ = -1;
  }
  if (wal_fd_ < 0) {
    wal_fd_ = ::open(wal.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (wal_fd_ < 0) return fail(Errc::io, wal + ": " + std::strerror(errno));
    const auto slash = path_.rfind('/');
    const std::string directory = slash == std::string::npos ? "." : (slash == 0 ? "/" : path_.substr(0, slash));
    const int dir = ::open(directory.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dir < 0) return fail(Errc::io, directory + ": " + std::strerror(errno));
    const int rc = sync_file_(dir);
    const int saved = errno;
    ::close(dir);
    if (rc != 0) return fail(Errc::io, "fsync " + directory + ": " + std::strerror(saved));
  }
  if (sync_file_(wal_fd_) != 0) return fail(Errc::io, "fdatasync " + wal + ": " + std::strerror(errno));
  return {};
}

StoreStats SqliteStore::stats() const {
  StoreStats out;
  out.lock_held_seconds = static_cast<double>(lock_held_ns_.load()) * 1e-9;
  out.commits = committed_.load();
  out.syncs = syncs_.load();
  return out;
}

void SqliteStore::rollback() {
  // Nothing useful to do if ROLLBACK fails: SQLite has then already rolled back.
  (void)execute("ROLLBACK", "rollback");
}

Result<void> SqliteStore::configure() {
  sqlite3_extended_result_codes(db_, 1);
  sqlite3_busy_timeout(db_, busy_timeout_ms);
  // Defensive mode refuses writable_schema and other ways to corrupt the file through SQL.
  sqlite3_db_config(db_, SQLITE_DBCONFIG_DEFENSIVE, 1, nullptr);
  sqlite3_db_config(db_, SQLITE_DBCONFIG_TRUSTED_SCHEMA, 0, nullptr);
  for (const char* pragma : {"PRAGMA foreign_keys = ON",
                             // NORMAL: COMMIT does not sync the WAL; every write
                             // transaction then waits for a (shared) fdatasync of the WAL
                             // before it returns (commit() and wait_durable()), so an
                             // acknowledged audit record or enrollment survives a power cut.
                             "PRAGMA synchronous = NORMAL",
                             // Freed pages are zeroed, so replaced rows do not linger in the file.
                             "PRAGMA secure_delete = ON",
                             // Checkpoints (which sync the WAL and the database): SQLite's
                             // own, inside the commit that passes 1,000 pages, unless
                             // separate_checkpoints moves them to a second connection.
                             separate_checkpoints ? "PRAGMA wal_autocheckpoint = 0"
                                                  : "PRAGMA wal_autocheckpoint = 1000"}) {
    if (sqlite3_exec(db_, pragma, nullptr, nullptr, nullptr) != SQLITE_OK) return sqlite_error(db_, pragma);
  }
  // journal_mode answers with the mode in force; a file that cannot do WAL is refused
  // rather than silently run with a rollback journal.
  auto q = query("PRAGMA journal_mode = WAL", "enable WAL");
  if (!q) return tl::unexpected(q.error());
  auto row = q->step();
  if (!row) return tl::unexpected(row.error());
  if (!*row || q->text(0) != "wal")
    return fail(Errc::io, "sqlite store: the database could not be switched to WAL mode");
  return {};
}

Result<void> SqliteStore::migrate() {
  HeldLock lock(mutex_, lock_held_ns_);
  if (auto ok = begin_immediate("migrate"); !ok) return ok;
  Transaction transaction([this] { rollback(); });
  if (sqlite3_exec(db_, "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL) STRICT", nullptr,
                   nullptr, nullptr) != SQLITE_OK)
    return sqlite_error(db_, "create schema_version");
  int version = 0;
  bool has_row = false;
  {
    auto q = query("SELECT version FROM schema_version", "read schema version");
    if (!q) return tl::unexpected(q.error());
    auto row = q->step();
    if (!row) return tl::unexpected(row.error());
    if (*row) {
      has_row = true;
      version = static_cast<int>(q->integer(0));
    }
  }
  if (version > latest_schema_version || version < 0)
    return fail(Errc::unsupported, "sqlite store: database schema version " + std::to_string(version) +
                                       " is newer than this program's (" + std::to_string(latest_schema_version) +
                                       "); upgrade fde-verifierd");
  if (version == latest_schema_version) {
    if (auto ok = commit_durably("migrate"); !ok) return ok;
    transaction.committed();
    return {};
  }
  for (int v = version; v < latest_schema_version; ++v) {
    // Migration text is a constant of this file, never built from values.
    if (sqlite3_exec(db_, migrations[v], nullptr, nullptr, nullptr) != SQLITE_OK)
      return sqlite_error(db_, "migrate to schema version " + std::to_string(v + 1));
  }
  // A store written before the chain was keyed: its records stay as they are, and one keyed
  // record seals them, in the same transaction as the upgrade (no window without a seal).
  if (version > 0 && version < first_keyed_schema_version)
    if (auto ok = seal_unkeyed_records(); !ok) return ok;
  auto q = query(has_row ? "UPDATE schema_version SET version = ?1" : "INSERT INTO schema_version (version) VALUES (?1)",
                 "write schema version");
  if (!q) return tl::unexpected(q.error());
  if (auto ok = q->bind(1, std::int64_t{latest_schema_version}).run(); !ok) return ok;
  if (auto ok = commit_durably("migrate"); !ok) return ok;
  transaction.committed();
  return {};
}

// Columns: id, luks_uuid, status, reference_json, created_at, updated_at.
Result<ImageRecord> read_image(const Query& row) {
  ImageRecord image;
  image.image_id = row.text(0);
  image.luks_uuid = row.text(1);
  auto status = image_status_from_name(row.text(2));
  if (!status) return fail(Errc::malformed, "sqlite store: image " + image.image_id + ": unknown status in the database");
  image.status = *status;
  auto reference = reference::parse_reference_values(row.text(3));
  if (!reference) return fail_with_context("sqlite store: image " + image.image_id, reference.error());
  image.reference = std::move(*reference);
  image.created_at = row.text(4);
  image.updated_at = row.text(5);
  return image;
}

Result<AuditRecord> SqliteStore::enroll(const ImageRecord& image, const SecretBytes& disk_key, const AdminActor& by) {
  if (auto ok = protocol::validate_image_id(image.image_id); !ok)
    return fail(Errc::invalid_argument, "enroll: " + ok.error().message);
  if (disk_key.empty() || disk_key.size() > protocol::max_disk_key_size)
    return fail(Errc::invalid_argument, "enroll " + image.image_id + ": the disk key must be 1.." +
                                            std::to_string(protocol::max_disk_key_size) + " bytes");
  if (auto ok = check_reference_image(image.image_id, image.reference); !ok) return tl::unexpected(ok.error());
  auto reference_json = reference::serialize_reference_values(image.reference);
  if (!reference_json) return fail_with_context("enroll " + image.image_id, reference_json.error());
  Bytes wrapped = kek_.wrap(image.image_id, disk_key);
  std::string now = now_text();
  const std::string change = ChangeJson(by)
                                 .text("luks_uuid", image.luks_uuid)
                                 .text("status", image_status_name(image.status))
                                 .embedded("reference", *reference_json)
                                 .done();

  HeldLock lock(mutex_, lock_held_ns_);
  if (auto ok = begin_immediate("enroll"); !ok) return tl::unexpected(ok.error());
  Transaction transaction([this] { rollback(); });
  {
    auto q = query("INSERT INTO images (id, luks_uuid, status, wrapped_key, reference_json, created_at, updated_at) "
                   "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                   "enroll");
    if (!q) return tl::unexpected(q.error());
    q->bind(1, image.image_id)
        .bind(2, image.luks_uuid)
        .bind(3, image_status_name(image.status))
        .bind(4, ByteView(wrapped))
        .bind(5, *reference_json)
        .bind(6, now)
        .bind(7, now);
    auto done = q->run();
    if (!done && q->code() == SQLITE_CONSTRAINT_PRIMARYKEY)
      return fail(Errc::invalid_argument, "image " + image.image_id + " is already enrolled");
    if (!done) return tl::unexpected(done.error());
  }
  auto record = append_keyed(admin_entry(image.image_id, by, audit_action::enroll, change));
  if (!record) return record;
  if (auto ok = commit_durably("enroll: commit"); !ok) return tl::unexpected(ok.error());
  transaction.committed();
  return record;
}

Result<std::optional<ImageRecord>> SqliteStore::find_image(std::string_view image_id) {
  // The row's text is copied under the lock; the reference values are parsed after it (every
  // attestation reads its image: the parse should not serialise them).
  ImageRecord image;
  std::string status;
  std::string reference_json;
  {
    HeldLock lock(mutex_, lock_held_ns_);
    auto q = query("SELECT id, luks_uuid, status, reference_json, created_at, updated_at FROM images WHERE id = ?1",
                   "find image");
    if (!q) return tl::unexpected(q.error());
    auto row = q->bind(1, image_id).step();
    if (!row) return tl::unexpected(row.error());
    if (!*row) return std::optional<ImageRecord>{};
    image.image_id = q->text(0);
    image.luks_uuid = q->text(1);
    status = q->text(2);
    reference_json = q->text(3);
    image.created_at = q->text(4);
    image.updated_at = q->text(5);
  }
  auto parsed_status = image_status_from_name(status);
  if (!parsed_status)
    return fail(Errc::malformed, "sqlite store: image " + image.image_id + ": unknown status in the database");
  image.status = *parsed_status;
  auto reference = reference::parse_reference_values(reference_json);
  if (!reference) return fail_with_context("sqlite store: image " + image.image_id, reference.error());
  image.reference = std::move(*reference);
  return std::optional<ImageRecord>(std::move(image));
}

Result<std::vector<ImageRecord>> SqliteStore::list_images() {
  HeldLock lock(mutex_, lock_held_ns_);
  auto q = query("SELECT id, luks_uuid, status, reference_json, created_at, updated_at FROM images ORDER BY id",
                 "list images");
  if (!q) return tl::unexpected(q.error());
  std::vector<ImageRecord> images;
  for (;;) {
    auto row = q->step();
    if (!row) return tl::unexpected(row.error());
    if (!*row) break;
    auto image = read_image(*q);
    if (!image) return tl::unexpected(image.error());
    images.push_back(std::move(*image));
  }
  return images;
}

Result<std::optional<SecretBytes>> SqliteStore::disk_key(std::string_view image_id) {
  Bytes wrapped;
  {
    HeldLock lock(mutex_, lock_held_ns_);
    // The status is read with the key, from the same row: a revoke committed before this
    // statement is always seen, whatever the caller decided from an earlier read.
    auto q = query("SELECT status, wrapped_key FROM images WHERE id = ?1", "read disk key");
    if (!q) return tl::unexpected(q.error());
    auto row = q->bind(1, image_id).step();
    if (!row) return tl::unexpected(row.error());
    if (!*row) return fail(Errc::not_found, "image " + std::string(image_id) + " is not enrolled");
    if (image_status_from_name(q->text(0)) != ImageStatus::active) return std::optional<SecretBytes>{};
    wrapped = q->blob(1);
  }
  // The image id is the AAD: a wrapped key moved to another row fails here.
  auto key = kek_.unwrap(image_id, wrapped);
  if (!key) return tl::unexpected(key.error());
  return std::optional<SecretBytes>(std::move(*key));
}

Result<AuditRecord> SqliteStore::update_reference(std::string_view image_id,
                                                  const reference::ReferenceValues& reference, const AdminActor& by) {
  if (auto ok = check_reference_image(image_id, reference); !ok) return tl::unexpected(ok.error());
  auto reference_json = reference::serialize_reference_values(reference);
  if (!reference_json) return fail_with_context("update reference values of " + std::string(image_id), reference_json.error());
  std::string now = now_text();
  HeldLock lock(mutex_, lock_held_ns_);
  if (auto ok = begin_immediate("update reference values"); !ok) return tl::unexpected(ok.error());
  Transaction transaction([this] { rollback(); });
  // The sets before the change, read in this transaction, so the record's added/retired
  // names describe exactly this change.
  reference::ReferenceValues before;
  {
    auto q = query("SELECT reference_json FROM images WHERE id = ?1", "update reference values: read");
    if (!q) return tl::unexpected(q.error());
    auto row = q->bind(1, image_id).step();
    if (!row) return tl::unexpected(row.error());
    if (!*row) return fail(Errc::not_found, "image " + std::string(image_id) + " is not enrolled");
    auto previous = reference::parse_reference_values(q->text(0));
    if (!previous) return fail_with_context("sqlite store: image " + std::string(image_id), previous.error());
    before = std::move(*previous);
  }
  {
    auto q = query("UPDATE images SET reference_json = ?2, updated_at = ?3 WHERE id = ?1", "update reference values");
    if (!q) return tl::unexpected(q.error());
    if (auto ok = q->bind(1, image_id).bind(2, *reference_json).bind(3, now).run(); !ok) return tl::unexpected(ok.error());
  }
  auto record = append_keyed(reference_change_entry(image_id, by, before, reference, *reference_json));
  if (!record) return record;
  if (auto ok = commit_durably("update reference values: commit"); !ok) return tl::unexpected(ok.error());
  transaction.committed();
  return record;
}

Result<AuditRecord> SqliteStore::set_status(std::string_view image_id, ImageStatus status, const AdminActor& by) {
  std::string now = now_text();
  HeldLock lock(mutex_, lock_held_ns_);
  if (auto ok = begin_immediate("set image status"); !ok) return tl::unexpected(ok.error());
  Transaction transaction([this] { rollback(); });
  std::string previous;
  {
    auto q = query("SELECT status FROM images WHERE id = ?1", "set image status: read");
    if (!q) return tl::unexpected(q.error());
    auto row = q->bind(1, image_id).step();
    if (!row) return tl::unexpected(row.error());
    if (!*row) return fail(Errc::not_found, "image " + std::string(image_id) + " is not enrolled");
    previous = q->text(0);
  }
  {
    auto q = query("UPDATE images SET status = ?2, updated_at = ?3 WHERE id = ?1", "set image status");
    if (!q) return tl::unexpected(q.error());
    if (auto ok = q->bind(1, image_id).bind(2, image_status_name(status)).bind(3, now).run(); !ok)
      return tl::unexpected(ok.error());
  }
  const std::string change =
      ChangeJson(by).text("previous_status", previous).text("status", image_status_name(status)).done();
  const auto action = status == ImageStatus::revoked ? audit_action::revoke : audit_action::reinstate;
  auto record = append_keyed(admin_entry(image_id, by, action, change));
  if (!record) return record;
  if (auto ok = commit_durably("set image status: commit"); !ok) return tl::unexpected(ok.error());
  transaction.committed();
  return record;
}

// Columns: sequence, time, image_id, peer, token_digest, measurements, decision, reason,
// checks, previous_hash, hash, format.
AuditRecord read_audit(const Query& row) {
  AuditRecord record;
  record.sequence = row.integer(0);
  record.time = row.text(1);
  record.entry.image_id = row.text(2);
  record.entry.peer = row.text(3);
  record.entry.token_digest = row.text(4);
  record.entry.measurements = row.text(5);
  record.entry.decision = row.text(6);
  record.entry.reason = row.text(7);
  record.entry.checks = row.text(8);
  record.previous_hash = row.text(9);
  record.hash = row.text(10);
  record.format = static_cast<int>(row.integer(11));
  return record;
}

// One audit row, exactly as `record` has it (sequence, link and MAC already computed).
Result<void> SqliteStore::insert_audit_row(const AuditRecord& record, const char* what) {
  auto q = query("INSERT INTO audit (sequence, time, image_id, peer, token_digest, measurements, decision, reason, "
                 "checks, previous_hash, hash, format) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                 what);
  if (!q) return tl::unexpected(q.error());
  const AuditEntry& e = record.entry;
  q->bind(1, record.sequence)
      .bind(2, record.time)
      .bind(3, e.image_id)
      .bind(4, e.peer)
      .bind(5, e.token_digest)
      .bind(6, e.measurements)
      .bind(7, e.decision)
      .bind(8, e.reason)
      .bind(9, e.checks)
      .bind(10, record.previous_hash)
      .bind(11, record.hash)
      .bind(12, std::int64_t{record.format});
  return q->run();
}

Result<AuditRecord> SqliteStore::append_keyed(const AuditEntry& entry) {
  AuditRecord record;
  record.entry = entry;
  record.format = audit_format_keyed;
  {
    auto q = query("SELECT sequence, hash FROM audit ORDER BY sequence DESC LIMIT 1", "append audit: read chain head");
    if (!q) return tl::unexpected(q.error());
    auto row = q->step();
    if (!row) return tl::unexpected(row.error());
    record.sequence = *row ? q->integer(0) + 1 : 1;
    record.previous_hash = *row ? q->text(1) : genesis_hash;
  }
  // Taken inside the write lock, so times never go backwards along the chain on one host.
  record.time = now_text();
  auto mac = audit_record_mac(audit_key_, record);
  if (!mac) return tl::unexpected(mac.error());
  record.hash = std::move(*mac);
  if (auto ok = insert_audit_row(record, "append audit"); !ok) return tl::unexpected(ok.error());
  return record;
}

Result<AuditRecord> SqliteStore::append_audit(const AuditEntry& entry) {
  // Denials only: a release must come with its status re-check (append_release), an admin
  // record with its change, so neither can be written on its own.
  if (entry.decision != "deny")
    return fail(Errc::invalid_argument, "audit: append_audit records denials, not \"" + entry.decision + "\"");
  HeldLock lock(mutex_, lock_held_ns_);
  if (auto ok = begin_immediate("append audit"); !ok) return tl::unexpected(ok.error());
  Transaction transaction([this] { rollback(); });
  auto record = append_keyed(entry);
  if (!record) return record;
  auto ticket = commit("append audit: commit");
  if (!ticket) return tl::unexpected(ticket.error());
  transaction.committed();
  // Durable before the caller answers; the store is free for others meanwhile.
  lock.unlock();
  if (auto ok = wait_durable(*ticket); !ok) return tl::unexpected(ok.error());
  return record;
}

Result<std::optional<Release>> SqliteStore::append_release(const AuditEntry& entry) {
  if (entry.decision != "release")
    return fail(Errc::invalid_argument, "audit: append_release records releases, not \"" + entry.decision + "\"");
  HeldLock lock(mutex_, lock_held_ns_);
  // The write lock is taken before the status is read: a revoke (also a write transaction)
  // commits either before this read, and is seen, or after this commit, and is chained after.
  if (auto ok = begin_immediate("release"); !ok) return tl::unexpected(ok.error());
  Transaction transaction([this] { rollback(); });
  Bytes wrapped;
  {
    auto q = query("SELECT status, wrapped_key FROM images WHERE id = ?1", "release: read disk key");
    if (!q) return tl::unexpected(q.error());
    auto row = q->bind(1, entry.image_id).step();
    if (!row) return tl::unexpected(row.error());
    if (!*row) return fail(Errc::not_found, "image " + entry.image_id + " is not enrolled");
    if (image_status_from_name(q->text(0)) != ImageStatus::active) return std::optional<Release>{};
    wrapped = q->blob(1);
  }
  // Unwrapped before the record is written: a key that does not unwrap leaves no release record.
  auto key = kek_.unwrap(entry.image_id, wrapped);
  if (!key) return tl::unexpected(key.error());
  auto record = append_keyed(entry);
  if (!record) return tl::unexpected(record.error());
  auto ticket = commit("release: commit");
  if (!ticket) return tl::unexpected(ticket.error());
  transaction.committed();
  // The key goes back to the caller only once the record that covers it is durable; the
  // store is free for other releases meanwhile, which share the sync.
  lock.unlock();
  if (auto ok = wait_durable(*ticket); !ok) {
    key->wipe();
    return tl::unexpected(ok.error());
  }
  return std::optional<Release>(Release{std::move(*record), std::move(*key)});
}

Result<std::vector<AuditRecord>> SqliteStore::query_audit(const AuditQuery& filter) {
  HeldLock lock(mutex_, lock_held_ns_);
  // One fixed statement; an unset filter is bound as NULL and matches everything.
  auto q = query("SELECT sequence, time, image_id, peer, token_digest, measurements, decision, reason, checks, "
                 "previous_hash, hash, format FROM audit WHERE (?1 IS NULL OR image_id = ?1) AND "
                 "(?2 IS NULL OR decision = ?2) AND (?3 IS NULL OR sequence > ?3) ORDER BY sequence DESC LIMIT ?4",
                 "query audit");
  if (!q) return tl::unexpected(q.error());
  if (filter.image_id) q->bind(1, *filter.image_id); else q->bind_null(1);
  if (filter.decision) q->bind(2, *filter.decision); else q->bind_null(2);
  if (filter.after_sequence) q->bind(3, *filter.after_sequence); else q->bind_null(3);
  q->bind(4, static_cast<std::int64_t>(std::min(filter.limit, max_audit_query_limit)));
  std::vector<AuditRecord> records;
  for (;;) {
    auto row = q->step();
    if (!row) return tl::unexpected(row.error());
    if (!*row) break;
    records.push_back(read_audit(*q));
  }
  return records;
}

// Oldest first through store_detail::ChainWalk, which has the rules.
Result<AuditChainReport> SqliteStore::walk_chain(const std::optional<AuditHead>& expected_head, bool require_sealed) {
  // One SELECT reads one consistent snapshot of the table, even with writers in other processes.
  auto q = query("SELECT sequence, time, image_id, peer, token_digest, measurements, decision, reason, checks, "
                 "previous_hash, hash, format FROM audit ORDER BY sequence ASC",
                 "verify audit chain");
  if (!q) return tl::unexpected(q.error());
  auto keys = chain_keys();
  if (!keys) return tl::unexpected(keys.error());
  std::vector<const SecretBytes*> epoch_keys;
  for (const auto& key : *keys) epoch_keys.push_back(&key);
  ChainWalk walk(std::move(epoch_keys), expected_head);
  for (;;) {
    auto row = q->step();
    if (!row) return tl::unexpected(row.error());
    if (!*row) break;
    if (auto ok = walk.add(read_audit(*q)); !ok) return tl::unexpected(ok.error());
  }
  return walk.finish(require_sealed);
}

Result<AuditChainReport> SqliteStore::verify_audit_chain(const std::optional<AuditHead>& expected_head) {
  HeldLock lock(mutex_, lock_held_ns_);
  return walk_chain(expected_head, true);
}

// Runs inside migrate()'s transaction, right after the format column was added: every
// existing record is format 1. Their chain is checked as it stands and one keyed record is
// appended after them, linked to the last one's hash: from now on, changing any of them
// breaks that record's link, and only a holder of the KEK can make a new one.
Result<void> SqliteStore::seal_unkeyed_records() {
  auto walk = walk_chain(std::nullopt, false);
  if (!walk) return tl::unexpected(walk.error());
  const AuditChainReport& found = *walk;
  if (found.records == 0) return {};
  AdminActor self{static_cast<std::int64_t>(::getuid()), static_cast<std::int64_t>(::getpid())};
  ChangeJson change(self);
  change.number("unkeyed_records", found.records)
      .text("unkeyed_head", found.head.hash)
      .text("unkeyed_chain", found.intact ? "intact" : found.problem);
  auto record = append_keyed(admin_entry("", self, audit_action::seal_unkeyed, change.done()));
  if (!record) return tl::unexpected(record.error());
  return {};
}

Result<std::vector<SecretBytes>> SqliteStore::chain_keys() {
  std::vector<SecretBytes> keys;
  auto q = query("SELECT epoch, wrapped_key FROM audit_keys ORDER BY epoch", "read audit chain keys");
  if (!q) return tl::unexpected(q.error());
  for (;;) {
    auto row = q->step();
    if (!row) return tl::unexpected(row.error());
    if (!*row) break;
    const auto epoch = q->integer(0);
    if (epoch != static_cast<std::int64_t>(keys.size()))
      return fail(Errc::malformed, "sqlite store: audit chain key epochs are not 0, 1, 2, ... (epoch " +
                                       std::to_string(epoch) + " out of place)");
    auto key = kek_.unwrap(audit_key_aad(epoch), q->blob(1));
    if (!key) return fail_with_context("sqlite store: audit chain key of epoch " + std::to_string(epoch), key.error());
    keys.push_back(std::move(*key));
  }
  keys.push_back(SecretBytes::copy_of(audit_key_.view()));
  return keys;
}

Result<void> SqliteStore::write_meta(const char* name, const std::string& value) {
  auto q = query("INSERT INTO store_meta (name, value) VALUES (?1, ?2) ON CONFLICT (name) DO UPDATE SET value = ?2",
                 "write store metadata");
  if (!q) return tl::unexpected(q.error());
  return q->bind(1, std::string_view(name)).bind(2, value).run();
}

// At open, before anything is served. With a check value: it must match. Without one (a store
// from before schema version 3, or a new one): the KEK must unwrap a disk key, or else verify
// the newest keyed audit record; an empty store accepts any KEK. Then the value is written.
Result<void> SqliteStore::check_kek() {
  HeldLock lock(mutex_, lock_held_ns_);
  if (auto ok = begin_immediate("check the key-encryption key"); !ok) return ok;
  Transaction transaction([this] { rollback(); });
  auto expected = kek_check_value(kek_);
  if (!expected) return tl::unexpected(expected.error());
  const auto wrong = [](std::string why) {
    return fail(Errc::verification_failed,
                "the key-encryption key does not open this store (" + why +
                    "): a wrong KEK file or credential, or a database restored from another verifier or from before "
                    "a KEK rotation; no key could be released with it");
  };
  {
    auto q = query("SELECT value FROM store_meta WHERE name = ?1", "read the KEK check value");
    if (!q) return tl::unexpected(q.error());
    auto row = q->bind(1, kek_check_meta).step();
    if (!row) return tl::unexpected(row.error());
    if (*row) {
      if (!same_text_constant_time(q->text(0), *expected)) return wrong("its KEK check value differs");
      if (auto ok = commit_durably("check the key-encryption key: commit"); !ok) return ok;
      transaction.committed();
      return {};
    }
  }
  bool checked = false;
  {
    auto q = query("SELECT id, wrapped_key FROM images ORDER BY id LIMIT 1", "check the key-encryption key: read a key");
    if (!q) return tl::unexpected(q.error());
    auto row = q->step();
    if (!row) return tl::unexpected(row.error());
    if (*row) {
      if (!kek_.unwrap(q->text(0), q->blob(1))) return wrong("the disk key of image " + q->text(0) + " does not unwrap");
      checked = true;
    }
  }
  if (!checked) {
    auto q = query("SELECT sequence, time, image_id, peer, token_digest, measurements, decision, reason, checks, "
                   "previous_hash, hash, format FROM audit WHERE format = 2 ORDER BY sequence DESC LIMIT 1",
                   "check the key-encryption key: read the newest record");
    if (!q) return tl::unexpected(q.error());
    auto row = q->step();
    if (!row) return tl::unexpected(row.error());
    if (*row) {
      AuditRecord record = read_audit(*q);
      auto mac = audit_record_mac(audit_key_, record);
      if (!mac) return tl::unexpected(mac.error());
      if (!same_text_constant_time(*mac, record.hash))
        return wrong("audit record " + std::to_string(record.sequence) + " is not MAC'd under it");
    }
  }
  if (auto ok = write_meta(kek_check_meta.data(), *expected); !ok) return ok;
  if (auto ok = commit_durably("check the key-encryption key: commit"); !ok) return ok;
  transaction.committed();
  (void)sqlite3_exec(db_, "PRAGMA wal_checkpoint(TRUNCATE)", nullptr, nullptr, nullptr);
  return {};
}

Result<AuditRecord> SqliteStore::delete_image(std::string_view image_id, const AdminActor& by) {
  Result<AuditRecord> record = fail(Errc::internal, "not deleted");
  {
    HeldLock lock(mutex_, lock_held_ns_);
    if (auto ok = begin_immediate("delete image"); !ok) return tl::unexpected(ok.error());
    Transaction transaction([this] { rollback(); });
    std::string change;
    {
      auto q = query("SELECT luks_uuid, status, reference_json FROM images WHERE id = ?1", "delete image: read");
      if (!q) return tl::unexpected(q.error());
      auto row = q->bind(1, image_id).step();
      if (!row) return tl::unexpected(row.error());
      if (!*row) return fail(Errc::not_found, "image " + std::string(image_id) + " is not enrolled");
      std::vector<std::string> sets;
      if (auto reference = reference::parse_reference_values(q->text(2))) sets = set_names(*reference);
      change = ChangeJson(by).text("luks_uuid", q->text(0)).text("status", q->text(1)).names("sets", sets).done();
    }
    {
      auto q = query("DELETE FROM images WHERE id = ?1", "delete image");
      if (!q) return tl::unexpected(q.error());
      if (auto ok = q->bind(1, image_id).run(); !ok) return tl::unexpected(ok.error());
    }
    record = append_keyed(admin_entry(image_id, by, audit_action::delete_image, change));
    if (!record) return record;
    if (auto ok = commit_durably("delete image: commit"); !ok) return tl::unexpected(ok.error());
    transaction.committed();
    // secure_delete zeroed the row's page in the new page image; the old image may still sit
    // in the WAL until a checkpoint copies and truncates it. Best effort: a reader in another
    // process may hold the WAL, and the next automatic checkpoint then does it.
    (void)sqlite3_exec(db_, "PRAGMA wal_checkpoint(TRUNCATE)", nullptr, nullptr, nullptr);
  }
  return record;
}

Result<BackupReport> SqliteStore::backup(const std::string& path) {
  auto file = store_detail::BackupFile::create(path);
  if (!file) return tl::unexpected(file.error());

  struct Db {
    sqlite3* db = nullptr;
    ~Db() { sqlite3_close_v2(db); }
  } source, copy;
  // A connection of its own, read-only: its read transaction sees one snapshot of the WAL
  // store while this store's connection goes on writing releases and denials.
  if (sqlite3_open_v2(path_.c_str(), &source.db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOFOLLOW, nullptr) != SQLITE_OK)
    return sqlite_error(source.db, "backup: open the store for reading");
  sqlite3_busy_timeout(source.db, busy_timeout_ms);
  if (sqlite3_open_v2(path.c_str(), &copy.db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOFOLLOW, nullptr) != SQLITE_OK)
    return sqlite_error(copy.db, "backup: open " + path);
  sqlite3_busy_timeout(copy.db, busy_timeout_ms);
  sqlite3_backup* job = sqlite3_backup_init(copy.db, "main", source.db, "main");
  if (job == nullptr) return sqlite_error(copy.db, "backup: start");
  // -1: every page in one step, under one read transaction of the source.
  const int stepped = sqlite3_backup_step(job, -1);
  const int finished = sqlite3_backup_finish(job);
  if (stepped != SQLITE_DONE || finished != SQLITE_OK) return sqlite_error(copy.db, "backup: copy");
  // The copy is one self-contained file (no -wal beside it); the daemon that opens it after a
  // restore switches it back to WAL. Then it is read back and checked before it is reported.
  BackupReport report;
  report.path = path;
  report.audit_head = AuditHead{0, genesis_hash};
  auto single_text = [&](const char* sql, std::string& out) -> Result<bool> {
    sqlite3_stmt* statement = nullptr;
    if (sqlite3_prepare_v2(copy.db, sql, -1, &statement, nullptr) != SQLITE_OK) {
      sqlite3_finalize(statement);
      return sqlite_error(copy.db, std::string("backup: ") + sql);
    }
    const int rc = sqlite3_step(statement);
    const bool row = rc == SQLITE_ROW;
    if (row) {
      const auto* text = sqlite3_column_text(statement, 0);
      out = text != nullptr ? reinterpret_cast<const char*>(text) : "";
      if (sqlite3_column_count(statement) > 1) {
        const auto* second = sqlite3_column_text(statement, 1);
        out += std::string(":") + (second != nullptr ? reinterpret_cast<const char*>(second) : "");
      }
    }
    sqlite3_finalize(statement);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) return sqlite_error(copy.db, std::string("backup: ") + sql);
    return row;
  };
  std::string text;
  for (const char* sql : {"PRAGMA journal_mode = DELETE", "PRAGMA quick_check"}) {
    auto row = single_text(sql, text);
    if (!row) return tl::unexpected(row.error());
    if (std::string_view(sql) == "PRAGMA quick_check" && (!*row || text != "ok"))
      return fail(Errc::io, "backup: the copy does not pass SQLite's quick_check: " + text);
  }
  if (auto row = single_text("SELECT count(*) FROM images", text); !row || !*row)
    return row ? fail(Errc::io, "backup: cannot count the copy's images") : tl::unexpected(row.error());
  report.images = std::stoll(text);
  auto head_row = single_text("SELECT sequence, hash FROM audit ORDER BY sequence DESC LIMIT 1", text);
  if (!head_row) return tl::unexpected(head_row.error());
  if (*head_row) {
    auto head = parse_audit_head(text);
    if (!head) return fail_with_context("backup: the copy's audit head", head.error());
    report.audit_head = std::move(*head);
  }
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0) report.bytes = static_cast<std::int64_t>(st.st_size);
  file->keep();
  return report;
}

Result<KekRotation> SqliteStore::rotate_kek(KeyEncryptionKey new_kek, const AdminActor& by) {
  if (!new_kek.loaded()) return fail(Errc::invalid_argument, "rotate KEK: no new key-encryption key loaded");
  auto new_check = kek_check_value(new_kek);
  if (!new_check) return tl::unexpected(new_check.error());
  auto new_audit_key = new_kek.derive_key(audit_mac_key_label);
  if (!new_audit_key) return tl::unexpected(new_audit_key.error());

  HeldLock lock(mutex_, lock_held_ns_);
  auto old_check = kek_check_value(kek_);
  if (!old_check) return tl::unexpected(old_check.error());
  if (same_text_constant_time(*old_check, *new_check))
    return fail(Errc::invalid_argument, "rotate KEK: the new key-encryption key is the one in use");
  if (auto ok = begin_immediate("rotate KEK"); !ok) return tl::unexpected(ok.error());
  Transaction transaction([this] { rollback(); });
  // A broken chain is not carried over into a new key: it would look re-authenticated.
  auto walk = walk_chain(std::nullopt, true);
  if (!walk) return tl::unexpected(walk.error());
  if (!walk->intact)
    return fail(Errc::verification_failed, "rotate KEK: refused, the audit chain is broken (" + walk->problem +
                                               "); investigate it first");
  KekRotation rotation;
  // Every wrapped key, re-wrapped under the new KEK (unwrapped under the old one first: a row
  // that does not unwrap stops the whole rotation, and nothing is changed).
  std::vector<std::pair<std::string, Bytes>> rewrapped;
  {
    auto q = query("SELECT id, wrapped_key FROM images ORDER BY id", "rotate KEK: read keys");
    if (!q) return tl::unexpected(q.error());
    for (;;) {
      auto row = q->step();
      if (!row) return tl::unexpected(row.error());
      if (!*row) break;
      std::string id = q->text(0);
      auto key = kek_.unwrap(id, q->blob(1));
      if (!key) return fail_with_context("rotate KEK", key.error());
      Bytes wrapped = new_kek.wrap(id, *key);
      rewrapped.emplace_back(std::move(id), std::move(wrapped));
    }
  }
  for (const auto& [id, wrapped] : rewrapped) {
    auto q = query("UPDATE images SET wrapped_key = ?2 WHERE id = ?1", "rotate KEK: write key");
    if (!q) return tl::unexpected(q.error());
    if (auto ok = q->bind(1, id).bind(2, ByteView(wrapped)).run(); !ok) return tl::unexpected(ok.error());
  }
  rotation.images = static_cast<std::int64_t>(rewrapped.size());
  // The retired chain keys, and the one in use until now, wrapped under the new KEK.
  auto keys = chain_keys();
  if (!keys) return tl::unexpected(keys.error());
  for (std::size_t epoch = 0; epoch < keys->size(); ++epoch) {
    Bytes wrapped = new_kek.wrap(audit_key_aad(static_cast<std::int64_t>(epoch)), (*keys)[epoch]);
    auto q = query("INSERT INTO audit_keys (epoch, wrapped_key) VALUES (?1, ?2) "
                   "ON CONFLICT (epoch) DO UPDATE SET wrapped_key = ?2",
                   "rotate KEK: write chain key");
    if (!q) return tl::unexpected(q.error());
    if (auto ok = q->bind(1, static_cast<std::int64_t>(epoch)).bind(2, ByteView(wrapped)).run(); !ok)
      return tl::unexpected(ok.error());
  }
  rotation.key_epoch = static_cast<std::int64_t>(keys->size());
  const std::string change = ChangeJson(by)
                                 .number("images_rewrapped", rotation.images)
                                 .number("key_epoch", rotation.key_epoch)
                                 .text("new_kek_check", *new_check)
                                 .done();
  // The rotation's own record, MAC'd under the old key: it links the two halves of the chain.
  auto record = append_keyed(admin_entry("", by, audit_action::rotate_kek, change));
  if (!record) return tl::unexpected(record.error());
  rotation.record = std::move(*record);
  if (auto ok = write_meta(kek_check_meta.data(), *new_check); !ok) return tl::unexpected(ok.error());
  auto ticket = commit("rotate KEK: commit");
  if (!ticket) return tl::unexpected(ticket.error());
  // Committed: from here the store opens with the new KEK only, whatever the sync says, so
  // this daemon uses it too; a failed sync must not read as "nothing changed".
  transaction.committed();
  kek_ = std::move(new_kek);
  audit_key_ = std::move(*new_audit_key);
  if (auto durable = wait_durable(*ticket); !durable)
    return fail(Errc::io, "rotate KEK: the rotation is committed (the store now opens with the new KEK) but the "
                          "disk did not confirm it (" + durable.error().message +
                          "); keep BOTH KEK files: after fixing the disk, `fde-verifierd --check-config` with "
                          "each tells which one opens the store");
  // Into the main file at once, where `--check-config` reads the check value (best effort).
  (void)sqlite3_exec(db_, "PRAGMA wal_checkpoint(TRUNCATE)", nullptr, nullptr, nullptr);
  return rotation;
}

Result<void> SqliteStore::ping() {
  {
    // After a failed sync every write is refused until restart: not ready.
    std::lock_guard durable(durable_mutex_);
    if (sync_failed_) return tl::unexpected(*sync_failed_);
  }
  HeldLock lock(mutex_, lock_held_ns_);
  auto q = query("SELECT version FROM schema_version", "ping");
  if (!q) return tl::unexpected(q.error());
  return q->run();
}

Result<StoreContent> SqliteStore::export_content() {
  HeldLock lock(mutex_, lock_held_ns_);
  // A read transaction: both tables from one snapshot.
  if (auto ok = execute("BEGIN", "export"); !ok) return tl::unexpected(ok.error());
  Transaction transaction([this] { rollback(); });
  StoreContent content;
  // A rotated store's retired chain keys, as stored (wrapped under the KEK that opens both
  // stores); checked here by unwrapping, so a copy never carries a key it could not use.
  if (auto keys = chain_keys(); !keys) return tl::unexpected(keys.error());
  {
    auto q = query("SELECT wrapped_key FROM audit_keys ORDER BY epoch", "export audit chain keys");
    if (!q) return tl::unexpected(q.error());
    for (;;) {
      auto row = q->step();
      if (!row) return tl::unexpected(row.error());
      if (!*row) break;
      content.retired_audit_keys.push_back(q->blob(0));
    }
  }
  {
    auto q = query("SELECT id, luks_uuid, status, reference_json, created_at, updated_at, wrapped_key FROM images "
                   "ORDER BY id",
                   "export images");
    if (!q) return tl::unexpected(q.error());
    for (;;) {
      auto row = q->step();
      if (!row) return tl::unexpected(row.error());
      if (!*row) break;
      auto image = read_image(*q);
      if (!image) return tl::unexpected(image.error());
      content.images.push_back(StoredImage{std::move(*image), q->blob(6)});
    }
  }
  {
    auto q = query("SELECT sequence, time, image_id, peer, token_digest, measurements, decision, reason, checks, "
                   "previous_hash, hash, format FROM audit ORDER BY sequence ASC",
                   "export audit");
    if (!q) return tl::unexpected(q.error());
    for (;;) {
      auto row = q->step();
      if (!row) return tl::unexpected(row.error());
      if (!*row) break;
      content.audit.push_back(read_audit(*q));
    }
  }
  if (auto ok = execute("COMMIT", "export"); !ok) return tl::unexpected(ok.error());
  transaction.committed();
  return content;
}

Result<void> SqliteStore::import_content(const StoreContent& content) {
  HeldLock lock(mutex_, lock_held_ns_);
  if (auto ok = begin_immediate("import"); !ok) return ok;
  Transaction transaction([this] { rollback(); });
  {
    auto q = query("SELECT (SELECT count(*) FROM images) + (SELECT count(*) FROM audit)", "import: check empty");
    if (!q) return tl::unexpected(q.error());
    auto row = q->step();
    if (!row) return tl::unexpected(row.error());
    if (*row && q->integer(0) != 0)
      return fail(Errc::invalid_argument, "sqlite store: import needs an empty store (it has images or audit records)");
  }
  {
    auto q = query("SELECT count(*) FROM audit_keys", "import: check empty");
    if (!q) return tl::unexpected(q.error());
    auto row = q->step();
    if (!row) return tl::unexpected(row.error());
    if (*row && q->integer(0) != 0)
      return fail(Errc::invalid_argument, "sqlite store: import needs an empty store (it has retired audit chain keys)");
  }
  for (const auto& stored : content.images) {
    const ImageRecord& image = stored.image;
    auto reference_json = reference::serialize_reference_values(image.reference);
    if (!reference_json) return fail_with_context("import " + image.image_id, reference_json.error());
    auto q = query("INSERT INTO images (id, luks_uuid, status, wrapped_key, reference_json, created_at, updated_at) "
                   "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                   "import image");
    if (!q) return tl::unexpected(q.error());
    q->bind(1, image.image_id)
        .bind(2, image.luks_uuid)
        .bind(3, image_status_name(image.status))
        .bind(4, ByteView(stored.wrapped_key))
        .bind(5, *reference_json)
        .bind(6, image.created_at)
        .bind(7, image.updated_at);
    if (auto ok = q->run(); !ok) return ok;
  }
  for (const auto& record : content.audit) {
    if (auto ok = insert_audit_row(record, "import audit record"); !ok) return ok;
  }
  for (std::size_t epoch = 0; epoch < content.retired_audit_keys.size(); ++epoch) {
    auto q = query("INSERT INTO audit_keys (epoch, wrapped_key) VALUES (?1, ?2)", "import audit chain key");
    if (!q) return tl::unexpected(q.error());
    if (auto ok = q->bind(1, static_cast<std::int64_t>(epoch)).bind(2, ByteView(content.retired_audit_keys[epoch])).run();
        !ok)
      return ok;
  }
  // Each retired key must unwrap under this store's KEK, or the chain could not be checked.
  if (auto keys = chain_keys(); !keys) return fail_with_context("import", keys.error());
  if (auto ok = commit_durably("import: commit"); !ok) return ok;
  transaction.committed();
  return {};
}

// Creates the file 0600 ourselves before SQLite sees it (SQLite would use 0644 & ~umask);
// the -wal and -shm files then inherit the database file's mode. An existing file open to
// group or others is refused rather than silently repaired, as the KEK file is.
Result<void> prepare_database_file(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
  bool created = fd >= 0;
  if (!created && errno == EEXIST) fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) return fail(Errc::io, "sqlite store: " + path + ": " + std::strerror(errno));
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  if (created && ::fchmod(fd, 0600) != 0) return fail(Errc::io, "sqlite store: " + path + ": " + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) return fail(Errc::io, "sqlite store: " + path + ": " + std::strerror(errno));
  if (!S_ISREG(st.st_mode)) return fail(Errc::invalid_argument, "sqlite store: " + path + ": not a regular file");
  if ((st.st_mode & 077) != 0) {
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
    return fail(Errc::invalid_argument, "sqlite store: " + path + ": mode " + mode +
                                            " gives group or others access; chmod 600 it");
  }
  return {};
}

}  // namespace

Result<void> check_sqlite_store_kek(const std::string& path, const KeyEncryptionKey& kek) {
  if (!kek.loaded()) return fail(Errc::invalid_argument, "sqlite store: no key-encryption key loaded");
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return {};  // created at the first start, with this KEK's check value
    return fail(Errc::io, "sqlite store: " + path + ": " + std::strerror(errno));
  }
  if (!S_ISREG(st.st_mode)) return fail(Errc::invalid_argument, "sqlite store: " + path + ": not a regular file");
  // immutable: the main file only, nothing created or written (no -shm, no lock), so the check
  // is safe as root next to a running daemon. The daemon checkpoints after writing the value.
  std::string uri = "file:";
  for (char c : path) {
    if (c == '?' || c == '#' || c == '%') {
      char escaped[4];
      std::snprintf(escaped, sizeof escaped, "%%%02X", static_cast<unsigned char>(c));
      uri += escaped;
    } else {
      uri += c;
    }
  }
  uri += "?immutable=1";
  struct Db {
    sqlite3* db = nullptr;
    ~Db() { sqlite3_close_v2(db); }
  } handle;
  if (sqlite3_open_v2(uri.c_str(), &handle.db, SQLITE_OPEN_READONLY | SQLITE_OPEN_URI | SQLITE_OPEN_NOFOLLOW, nullptr) !=
      SQLITE_OK)
    return sqlite_error(handle.db, "open " + path);
  auto expected = kek_check_value(kek);
  if (!expected) return tl::unexpected(expected.error());
  auto first_row = [&](const char* sql, std::string& text, Bytes* blob) -> Result<bool> {
    sqlite3_stmt* statement = nullptr;
    if (sqlite3_prepare_v2(handle.db, sql, -1, &statement, nullptr) != SQLITE_OK) {
      sqlite3_finalize(statement);
      // SQLITE_ERROR: no such table yet (a store from before the check value, or a new one
      // whose first commits are still in its WAL). Anything else (not a database) fails.
      if (sqlite3_errcode(handle.db) == SQLITE_ERROR) return false;
      return sqlite_error(handle.db, "check the key-encryption key");
    }
    const int rc = sqlite3_step(statement);
    if (rc == SQLITE_ROW) {
      const auto* value = sqlite3_column_text(statement, 0);
      text = value != nullptr ? reinterpret_cast<const char*>(value) : "";
      if (blob != nullptr) {
        const auto* bytes = static_cast<const std::uint8_t*>(sqlite3_column_blob(statement, 1));
        blob->assign(bytes, bytes + sqlite3_column_bytes(statement, 1));
      }
    }
    sqlite3_finalize(statement);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) return sqlite_error(handle.db, "check the key-encryption key");
    return rc == SQLITE_ROW;
  };
  const auto wrong = [&](const std::string& why) {
    return fail(Errc::verification_failed, "sqlite store " + path + ": the key-encryption key does not open it (" +
                                               why + "); the daemon would refuse to start");
  };
  std::string text;
  auto check = first_row("SELECT value FROM store_meta WHERE name = 'kek_check'", text, nullptr);
  if (!check) return tl::unexpected(check.error());
  if (*check) return same_text_constant_time(text, *expected) ? Result<void>{} : wrong("its KEK check value differs");
  Bytes wrapped;
  auto image = first_row("SELECT id, wrapped_key FROM images ORDER BY id LIMIT 1", text, &wrapped);
  if (!image) return tl::unexpected(image.error());
  if (*image && !kek.unwrap(text, wrapped)) return wrong("the disk key of image " + text + " does not unwrap");
  return {};
}

Result<std::unique_ptr<Store>> open_sqlite_store(const std::string& path, KeyEncryptionKey kek) {
  return open_sqlite_store(path, std::move(kek), SqliteOptions{});
}

Result<std::unique_ptr<Store>> open_sqlite_store(const std::string& path, KeyEncryptionKey kek, SqliteOptions options) {
  if (path.empty()) return fail(Errc::invalid_argument, "sqlite store: empty database path");
  if (!kek.loaded()) return fail(Errc::invalid_argument, "sqlite store: no key-encryption key loaded");
  if (auto ok = prepare_database_file(path); !ok) return tl::unexpected(ok.error());
  sqlite3* db = nullptr;
  int rc = sqlite3_open_v2(path.c_str(), &db,
                           SQLITE_OPEN_READWRITE | SQLITE_OPEN_FULLMUTEX | SQLITE_OPEN_NOFOLLOW | SQLITE_OPEN_EXRESCODE,
                           nullptr);
  if (rc != SQLITE_OK) {
    std::string message = db != nullptr ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
    sqlite3_close_v2(db);
    return fail(Errc::io, "sqlite store: " + path + ": " + message);
  }
  auto audit_key = kek.derive_key(audit_mac_key_label);
  if (!audit_key) {
    sqlite3_close_v2(db);
    return fail_with_context("sqlite store: audit MAC key", audit_key.error());
  }
  auto store = std::make_unique<SqliteStore>(db, path, std::move(kek), std::move(*audit_key), std::move(options));
  if (auto ok = store->configure(); !ok) return fail_with_context(path, ok.error());
  if (auto ok = store->migrate(); !ok) return fail_with_context(path, ok.error());
  if (auto ok = store->check_kek(); !ok) return fail_with_context(path, ok.error());
  return std::unique_ptr<Store>(std::move(store));
}

}  // namespace fde::verifier
