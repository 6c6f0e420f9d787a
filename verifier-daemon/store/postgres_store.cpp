// The PostgreSQL store backend (libpq): several fde-verifierd replicas share one database.
//
// Concurrency. Every write transaction takes one transaction-scoped advisory lock (the chain
// lock) as its first statement, before it reads anything: appends to the audit chain are
// serialised across every replica, so the chain never forks and never has a gap (the sequence
// is also the primary key, a second line of defence). Because a revoke, a reference change,
// an enrollment and a release all take the same lock before reading the image row, a release
// re-reads the status after any revoke committed before it, on whichever replica. Reads are
// single statements (READ COMMITTED) with no cache, so every decision sees the newest
// committed status. The chain walk reads pages inside one REPEATABLE READ snapshot.
//
// The only crypto work inside a transaction is what append_release() needs: the key unwrap
// (one AES-GCM decryption) and the record's HMAC, both microseconds; token and signature
// checks happen before the store is called.
//
// Connections: a pool of at most pool_size connections per store object. A connection that
// fails (server restarted, network cut) is dropped and, with it, every idle connection of
// the pool; the next request connects afresh. A statement that starts a transaction or a
// lone read is retried once on a fresh connection, since nothing was written yet.
//
// The KEK. The store keeps the KEK check value (as the SQLite store does): open refuses a KEK
// that is not the store's. A KEK rotation through one replica re-wraps every key, keeps the
// retired audit chain keys wrapped under the new KEK and replaces the check value, all in one
// transaction under the chain lock. Every write transaction re-reads the check value right
// after taking the chain lock, so a replica still holding the old KEK refuses to write (its
// attestations answer 503, its /readyz fails) instead of wrapping keys or MAC'ing records
// under a retired key; it serves again once restarted with the new KEK.
//
// Text of audit records is kept as bytea, byte for byte (PostgreSQL text refuses NUL and
// invalid UTF-8, which a requester's image id may carry into a denial record).
#include <libpq-fe.h>

#include <chrono>
#include <condition_variable>
#include <cstring>
#include <limits>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <utility>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include <openssl/crypto.h>

#include "common/protocol/messages.hpp"
#include "verifier-daemon/store/store.hpp"
#include "verifier-daemon/store/store_internal.hpp"

namespace fde::verifier {

namespace {

using namespace store_detail;

// Each entry upgrades the schema by one version, applied in order inside one transaction
// under the migration lock; schema_version records how far the database has come. Never
// edit a shipped entry: append.
constexpr const char* migrations[] = {
    // Version 1: the chain is keyed from the start (format 1 rows only arrive by copying an
    // older SQLite store with fde-admin migrate-store). The triggers make the audit table
    // append-only for every client that is not its owner disabling them; the MAC chain then
    // catches an edit made by someone who did.
    R"sql(
CREATE TABLE images (
  id text PRIMARY KEY,
  luks_uuid text NOT NULL,
  status text NOT NULL CHECK (status IN ('active', 'revoked')),
  wrapped_key bytea NOT NULL,
  reference_json text NOT NULL,
  created_at text NOT NULL,
  updated_at text NOT NULL
);
CREATE TABLE audit (
  sequence bigint PRIMARY KEY CHECK (sequence > 0),
  time text NOT NULL,
  image_id bytea NOT NULL,
  peer bytea NOT NULL,
  token_digest bytea NOT NULL,
  measurements bytea NOT NULL,
  decision bytea NOT NULL,
  reason bytea NOT NULL,
  checks bytea NOT NULL,
  previous_hash text NOT NULL,
  hash text NOT NULL,
  format integer NOT NULL CHECK (format IN (1, 2))
);
CREATE INDEX audit_by_image ON audit (image_id, sequence);
CREATE FUNCTION fde_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'audit records are append-only';
END
$$;
CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit FOR EACH ROW EXECUTE FUNCTION fde_audit_append_only();
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit FOR EACH ROW EXECUTE FUNCTION fde_audit_append_only();
CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit FOR EACH STATEMENT EXECUTE FUNCTION fde_audit_append_only();
)sql",
    // Version 2: the KEK check value (store_meta 'kek_check', written by check_kek() on the
    // first open with a KEK shown to be the store's) and the audit chain's retired MAC keys,
    // one per KEK rotation, each wrapped under the current KEK (as the SQLite store keeps them).
    R"sql(
CREATE TABLE store_meta (
  name text PRIMARY KEY,
  value text NOT NULL
);
CREATE TABLE audit_keys (
  epoch bigint PRIMARY KEY CHECK (epoch >= 0),
  wrapped_key bytea NOT NULL
);
)sql",
};
constexpr int latest_schema_version = static_cast<int>(std::size(migrations));

// pg_advisory_xact_lock keys, fixed for this program ("fde" and a number).
constexpr const char* chain_lock_sql = "SELECT pg_advisory_xact_lock(6669413001)";
constexpr const char* migration_lock_sql = "SELECT pg_advisory_xact_lock(6669413000)";

constexpr std::size_t max_audit_query_limit = 10000;
constexpr std::size_t chain_page_size = 1000;
constexpr auto pool_wait = std::chrono::seconds(10);
constexpr const char* audit_columns =
    "sequence, time, image_id, peer, token_digest, measurements, decision, reason, checks, previous_hash, hash, "
    "format::bigint";

// A result, freed with the object.
using PgResult = std::unique_ptr<PGresult, decltype(&PQclear)>;

// Statement parameters, all sent with their length (binary format for text and bytea, so
// neither is cut at a NUL; text is still checked by the server for valid encoding), and
// integers as decimal text.
class Params {
 public:
  Params& text(std::string_view value) { return add(std::string(value), 1); }
  Params& bytes(ByteView value) { return add(std::string(value.begin(), value.end()), 1); }
  Params& integer(std::int64_t value) { return add(std::to_string(value), 0); }
  Params& null() {
    values_.emplace_back();
    nulls_.push_back(true);
    formats_.push_back(0);
    return *this;
  }
  int size() const { return static_cast<int>(values_.size()); }
  // Pointers into values_: valid until the next add.
  void pointers(std::vector<const char*>& data, std::vector<int>& lengths) const {
    for (std::size_t i = 0; i < values_.size(); ++i) {
      data.push_back(nulls_[i] ? nullptr : values_[i].data());
      lengths.push_back(static_cast<int>(values_[i].size()));
    }
  }
  const int* formats() const { return formats_.data(); }
  ~Params() {
    // Parameters may be wrapped keys; wipe what we copied.
    for (auto& value : values_) OPENSSL_cleanse(value.data(), value.size());
  }

 private:
  Params& add(std::string value, int format) {
    values_.push_back(std::move(value));
    nulls_.push_back(false);
    formats_.push_back(format);
    return *this;
  }
  std::vector<std::string> values_;
  std::vector<bool> nulls_;
  std::vector<int> formats_;
};

// Result columns are requested in binary format: text and bytea arrive as their bytes,
// bigint as 8 bytes big-endian.
std::string column_text(const PGresult* result, int row, int column) {
  return std::string(PQgetvalue(result, row, column), static_cast<std::size_t>(PQgetlength(result, row, column)));
}
Bytes column_bytes(const PGresult* result, int row, int column) {
  const auto* data = reinterpret_cast<const std::uint8_t*>(PQgetvalue(result, row, column));
  return Bytes(data, data + PQgetlength(result, row, column));
}
std::int64_t column_int64(const PGresult* result, int row, int column) {
  if (PQgetlength(result, row, column) != 8) return 0;
  const auto* data = reinterpret_cast<const std::uint8_t*>(PQgetvalue(result, row, column));
  std::uint64_t value = 0;
  for (int i = 0; i < 8; ++i) value = value << 8 | data[i];
  return static_cast<std::int64_t>(value);
}

std::string trimmed(const char* message) {
  std::string text = message != nullptr ? message : "";
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  return text;
}

// Connections of one store: at most `limit` open, handed out one per operation.
class Pool {
 public:
  Pool(std::string conninfo, SecretBytes password, std::size_t limit, int connect_timeout_s)
      : conninfo_(std::move(conninfo)), password_(std::move(password)), limit_(limit),
        connect_timeout_(std::to_string(connect_timeout_s)) {}
  ~Pool() {
    for (PGconn* conn : idle_) PQfinish(conn);
  }
  Pool(const Pool&) = delete;
  Pool& operator=(const Pool&) = delete;

  Result<PGconn*> acquire() {
    {
      std::unique_lock lock(mutex_);
      if (!available_.wait_for(lock, pool_wait, [&] { return !idle_.empty() || open_ < limit_; }))
        return fail(Errc::io, "postgresql store: all " + std::to_string(limit_) + " connections stayed busy for " +
                                  std::to_string(pool_wait.count()) + " s");
      if (!idle_.empty()) {
        PGconn* conn = idle_.back();
        idle_.pop_back();
        return conn;
      }
      ++open_;  // a slot reserved for the connection made below, outside the lock
    }
    auto conn = connect();
    if (!conn) {
      std::lock_guard lock(mutex_);
      --open_;
      available_.notify_one();
    }
    return conn;
  }

  // A connection in any state but idle and healthy is closed; a broken one also closes the
  // idle ones, which a restarted server has cut too.
  void give_back(PGconn* conn) {
    const bool healthy = PQstatus(conn) == CONNECTION_OK && PQtransactionStatus(conn) == PQTRANS_IDLE;
    std::vector<PGconn*> to_close;
    {
      std::lock_guard lock(mutex_);
      if (healthy) {
        idle_.push_back(conn);
      } else {
        to_close.push_back(conn);
        if (PQstatus(conn) != CONNECTION_OK) {
          to_close.insert(to_close.end(), idle_.begin(), idle_.end());
          idle_.clear();
        }
        open_ -= to_close.size();
      }
    }
    for (PGconn* c : to_close) PQfinish(c);
    available_.notify_all();
  }

  // Replaces a broken connection held by the caller with a new one (same pool slot).
  Result<PGconn*> replace(PGconn* broken) {
    PQfinish(broken);
    std::vector<PGconn*> stale;
    {
      std::lock_guard lock(mutex_);
      stale.swap(idle_);
      open_ -= stale.size();
    }
    for (PGconn* c : stale) PQfinish(c);
    auto conn = connect();
    if (!conn) {
      std::lock_guard lock(mutex_);
      --open_;
      available_.notify_all();
    }
    return conn;
  }

 private:
  Result<PGconn*> connect() {
    // The connection string is expanded in place of "dbname": its values override the
    // defaults before it, and the password after it overrides any in the string. The
    // password is copied only for the call and wiped.
    std::string password(password_.view().begin(), password_.view().end());
    std::vector<const char*> keys{"connect_timeout", "application_name", "dbname"};
    std::vector<const char*> values{connect_timeout_.c_str(), "fde-verifierd", conninfo_.c_str()};
    if (!password.empty()) {
      keys.push_back("password");
      values.push_back(password.c_str());
    }
    keys.push_back(nullptr);
    values.push_back(nullptr);
    PGconn* conn = PQconnectdbParams(keys.data(), values.data(), 1);
    OPENSSL_cleanse(password.data(), password.size());
    if (conn == nullptr) return fail(Errc::io, "postgresql store: cannot connect: out of memory");
    if (PQstatus(conn) != CONNECTION_OK) {
      std::string message = trimmed(PQerrorMessage(conn));
      PQfinish(conn);
      return fail(Errc::io, "postgresql store: cannot connect: " + message);
    }
    // Notices (e.g. "relation already exists, skipping") are not errors; keep them off stderr.
    PQsetNoticeProcessor(conn, [](void*, const char*) {}, nullptr);
    // A statement stuck behind a lock fails instead of holding a request for ever.
    PGresult* set = PQexec(conn, "SET statement_timeout = '15s'");
    const bool ok = PQresultStatus(set) == PGRES_COMMAND_OK;
    PQclear(set);
    if (!ok) {
      std::string message = trimmed(PQerrorMessage(conn));
      PQfinish(conn);
      return fail(Errc::io, "postgresql store: cannot configure the connection: " + message);
    }
    return conn;
  }

  std::string conninfo_;
  SecretBytes password_;
  std::size_t limit_;
  std::string connect_timeout_;
  std::mutex mutex_;
  std::condition_variable available_;
  std::vector<PGconn*> idle_;
  std::size_t open_ = 0;
};

// One connection taken from the pool for one operation, given back (or closed) on every path.
class Session {
 public:
  Session(Pool& pool, PGconn* conn) : pool_(pool), conn_(conn) {}
  ~Session() {
    if (conn_ == nullptr) return;
    if (in_transaction_ && PQstatus(conn_) == CONNECTION_OK) PQclear(PQexec(conn_, "ROLLBACK"));
    pool_.give_back(conn_);
  }
  Session(Session&& other) noexcept
      : pool_(other.pool_), conn_(std::exchange(other.conn_, nullptr)),
        in_transaction_(std::exchange(other.in_transaction_, false)) {}
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;
  Session& operator=(Session&&) = delete;

  // `retry_on_fresh_connection`: the statement is the first of the operation (a BEGIN or a
  // lone read), so a connection found broken can be replaced and the statement resent.
  Result<PgResult> run(const char* sql, const Params& params, std::string_view operation,
                       bool retry_on_fresh_connection = false) {
    auto result = send(sql, params, operation);
    if (!result && retry_on_fresh_connection && PQstatus(conn_) != CONNECTION_OK) {
      auto fresh = pool_.replace(std::exchange(conn_, nullptr));
      if (!fresh) return tl::unexpected(fresh.error());
      conn_ = *fresh;
      result = send(sql, params, operation);
    }
    return result;
  }
  Result<PgResult> run(const char* sql, std::string_view operation, bool retry_on_fresh_connection = false) {
    return run(sql, Params(), operation, retry_on_fresh_connection);
  }

  // Several statements in one string (a migration), through the simple query protocol.
  Result<void> run_script(const char* sql, std::string_view operation) {
    PgResult result(PQexec(conn_, sql), &PQclear);
    if (result && PQresultStatus(result.get()) == PGRES_COMMAND_OK) return {};
    std::string message = result ? trimmed(PQresultErrorMessage(result.get())) : trimmed(PQerrorMessage(conn_));
    return fail(Errc::io, "postgresql store: " + std::string(operation) + ": " + message);
  }

  // BEGIN (of the given kind), then the chain lock when `writes`. READ COMMITTED is named, not
  // left to the server's default_transaction_isolation: under REPEATABLE READ the snapshot
  // would be taken before the chain lock is granted, and the chain head and the KEK check
  // value read after it could be stale.
  Result<void> begin(std::string_view operation, bool writes,
                     const char* begin_sql = "BEGIN ISOLATION LEVEL READ COMMITTED") {
    if (auto ok = run(begin_sql, operation, true); !ok) return tl::unexpected(ok.error());
    in_transaction_ = true;
    if (writes)
      if (auto ok = run(chain_lock_sql, operation); !ok) return tl::unexpected(ok.error());
    return {};
  }
  Result<void> commit(std::string_view operation) {
    auto ok = run("COMMIT", operation);
    in_transaction_ = false;
    if (!ok) return tl::unexpected(ok.error());
    return {};
  }
  // The caller's Session ends with a rollback if commit() was not reached.

 private:
  Result<PgResult> send(const char* sql, const Params& params, std::string_view operation) {
    std::vector<const char*> data;
    std::vector<int> lengths;
    params.pointers(data, lengths);
    PgResult result(PQexecParams(conn_, sql, params.size(), nullptr, data.data(), lengths.data(), params.formats(), 1),
                    &PQclear);
    const ExecStatusType status = result ? PQresultStatus(result.get()) : PGRES_FATAL_ERROR;
    if (status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK) return result;
    std::string message = result ? trimmed(PQresultErrorMessage(result.get())) : "";
    if (message.empty()) message = trimmed(PQerrorMessage(conn_));
    if (PQstatus(conn_) != CONNECTION_OK) message = "the connection to the database was lost: " + message;
    return fail(Errc::io, "postgresql store: " + std::string(operation) + ": " + message);
  }

  Pool& pool_;
  PGconn* conn_;
  bool in_transaction_ = false;
};

// Columns: id, luks_uuid, status, reference_json, created_at, updated_at.
Result<ImageRecord> read_image(const PGresult* result, int row) {
  ImageRecord image;
  image.image_id = column_text(result, row, 0);
  image.luks_uuid = column_text(result, row, 1);
  auto status = image_status_from_name(column_text(result, row, 2));
  if (!status)
    return fail(Errc::malformed, "postgresql store: image " + image.image_id + ": unknown status in the database");
  image.status = *status;
  auto reference = reference::parse_reference_values(column_text(result, row, 3));
  if (!reference) return fail_with_context("postgresql store: image " + image.image_id, reference.error());
  image.reference = std::move(*reference);
  image.created_at = column_text(result, row, 4);
  image.updated_at = column_text(result, row, 5);
  return image;
}

// Columns: audit_columns.
AuditRecord read_audit(const PGresult* result, int row) {
  AuditRecord record;
  record.sequence = column_int64(result, row, 0);
  record.time = column_text(result, row, 1);
  record.entry.image_id = column_text(result, row, 2);
  record.entry.peer = column_text(result, row, 3);
  record.entry.token_digest = column_text(result, row, 4);
  record.entry.measurements = column_text(result, row, 5);
  record.entry.decision = column_text(result, row, 6);
  record.entry.reason = column_text(result, row, 7);
  record.entry.checks = column_text(result, row, 8);
  record.previous_hash = column_text(result, row, 9);
  record.hash = column_text(result, row, 10);
  record.format = static_cast<int>(column_int64(result, row, 11));
  return record;
}

tl::unexpected<Error> not_enrolled(std::string_view image_id) {
  return fail(Errc::not_found, "image " + std::string(image_id) + " is not enrolled");
}

// Inside a transaction: one audit row as it is (already linked and MAC'd); the one writer of
// audit rows, for appends and for imports.
Result<void> insert_audit_row(Session& session, const AuditRecord& record, std::string_view operation) {
  const AuditEntry& e = record.entry;
  Params p;
  p.integer(record.sequence)
      .text(record.time)
      .bytes(as_bytes(e.image_id))
      .bytes(as_bytes(e.peer))
      .bytes(as_bytes(e.token_digest))
      .bytes(as_bytes(e.measurements))
      .bytes(as_bytes(e.decision))
      .bytes(as_bytes(e.reason))
      .bytes(as_bytes(e.checks))
      .text(record.previous_hash)
      .text(record.hash)
      .integer(record.format);
  auto inserted = session.run(
      "INSERT INTO audit (sequence, time, image_id, peer, token_digest, measurements, decision, reason, checks, "
      "previous_hash, hash, format) VALUES ($1::bigint, $2::text, $3::bytea, $4::bytea, $5::bytea, $6::bytea, "
      "$7::bytea, $8::bytea, $9::bytea, $10::text, $11::text, $12::integer)",
      p, operation);
  if (!inserted) return tl::unexpected(inserted.error());
  return {};
}

class PostgresStore final : public Store {
 public:
  PostgresStore(PostgresOptions options, KeyEncryptionKey kek, SecretBytes audit_key, std::string kek_check)
      : pool_(std::move(options.conninfo), std::move(options.password), options.pool_size,
              options.connect_timeout_seconds),
        kek_(std::move(kek)), audit_key_(std::move(audit_key)), kek_check_(std::move(kek_check)) {}

  Result<void> migrate();
  Result<void> check_kek();

  Result<AuditRecord> enroll(const ImageRecord& image, const SecretBytes& disk_key, const AdminActor& by) override;
  Result<std::optional<ImageRecord>> find_image(std::string_view image_id) override;
  Result<std::vector<ImageRecord>> list_images() override;
  Result<std::optional<SecretBytes>> disk_key(std::string_view image_id) override;
  Result<AuditRecord> update_reference(std::string_view image_id, const reference::ReferenceValues& reference,
                                       const AdminActor& by) override;
  Result<AuditRecord> set_status(std::string_view image_id, ImageStatus status, const AdminActor& by) override;
  Result<AuditRecord> delete_image(std::string_view image_id, const AdminActor& by) override;
  Result<BackupReport> backup(const std::string& path) override;
  Result<KekRotation> rotate_kek(KeyEncryptionKey new_kek, const AdminActor& by) override;
  Result<std::optional<Release>> append_release(const AuditEntry& entry) override;
  Result<AuditRecord> append_audit(const AuditEntry& entry) override;
  Result<std::vector<AuditRecord>> query_audit(const AuditQuery& query) override;
  Result<AuditChainReport> verify_audit_chain(const std::optional<AuditHead>& expected_head) override;
  Result<void> ping() override;
  Result<StoreContent> export_content() override;
  Result<void> import_content(const StoreContent& content) override;

 private:
  Result<Session> session() {
    auto conn = pool_.acquire();
    if (!conn) return tl::unexpected(conn.error());
    return Session(pool_, *conn);
  }
  // BEGIN, the chain lock, then the store's KEK check value, which must still be this
  // object's KEK: a replica left with a KEK that another replica rotated away writes nothing.
  // Callers hold keys_mutex_ (shared or exclusive).
  Result<void> begin_write(Session& session, std::string_view operation);
  // Inside a transaction: the audit chain's MAC keys, oldest epoch first; the last is
  // audit_key_'s (copied). Callers hold keys_mutex_.
  Result<std::vector<SecretBytes>> chain_keys(Session& session);
  // Inside a transaction: every record oldest first, page by page, through ChainWalk.
  Result<AuditChainReport> walk_chain(Session& session, const std::optional<AuditHead>& expected_head);
  // Inside a transaction holding the chain lock: links `entry` to the chain head and inserts it, MAC'd.
  Result<AuditRecord> append_keyed(Session& session, const AuditEntry& entry);
  // Inside a write transaction: the image's status and wrapped key; nullopt if not enrolled.
  Result<std::optional<std::pair<std::string, Bytes>>> read_key_row(Session& session, std::string_view image_id,
                                                                     std::string_view operation);

  Pool pool_;
  // kek_, audit_key_ and kek_check_ change together, only in rotate_kek() (exclusive); every
  // operation that wraps, unwraps or MACs holds the lock shared for its whole transaction.
  std::shared_mutex keys_mutex_;
  KeyEncryptionKey kek_;
  SecretBytes audit_key_;  // HKDF(KEK, audit_mac_key_label); wiped with the store
  std::string kek_check_;  // hex of HKDF(KEK, kek_check_label), as store_meta must hold it
};

tl::unexpected<Error> kek_not_the_stores(const std::string& why) {
  return fail(Errc::verification_failed,
              "the key-encryption key does not open this store (" + why +
                  "): a wrong KEK file or credential, a database restored from another verifier or from before a "
                  "KEK rotation, or a KEK rotated through another replica (install the new KEK and restart)");
}

Result<void> PostgresStore::begin_write(Session& session, std::string_view operation) {
  if (auto ok = session.begin(operation, true); !ok) return ok;
  Params p;
  p.text(kek_check_meta);
  auto row = session.run("SELECT value FROM store_meta WHERE name = $1::text", p, operation);
  if (!row) return tl::unexpected(row.error());
  if (PQntuples(row->get()) == 0) return kek_not_the_stores("its KEK check value is missing");
  if (!same_text_constant_time(column_text(row->get(), 0, 0), kek_check_))
    return kek_not_the_stores("its KEK check value differs; nothing written");
  return {};
}

Result<std::vector<SecretBytes>> PostgresStore::chain_keys(Session& session) {
  auto rows = session.run("SELECT epoch, wrapped_key FROM audit_keys ORDER BY epoch", "read audit chain keys");
  if (!rows) return tl::unexpected(rows.error());
  std::vector<SecretBytes> keys;
  for (int i = 0; i < PQntuples(rows->get()); ++i) {
    const std::int64_t epoch = column_int64(rows->get(), i, 0);
    if (epoch != static_cast<std::int64_t>(keys.size()))
      return fail(Errc::malformed, "postgresql store: audit chain key epochs are not 0, 1, 2, ... (epoch " +
                                       std::to_string(epoch) + " out of place)");
    auto key = kek_.unwrap(audit_key_aad(epoch), column_bytes(rows->get(), i, 1));
    if (!key)
      return fail_with_context("postgresql store: audit chain key of epoch " + std::to_string(epoch), key.error());
    keys.push_back(std::move(*key));
  }
  keys.push_back(SecretBytes::copy_of(audit_key_.view()));
  return keys;
}

Result<AuditChainReport> PostgresStore::walk_chain(Session& session, const std::optional<AuditHead>& expected_head) {
  auto keys = chain_keys(session);
  if (!keys) return tl::unexpected(keys.error());
  std::vector<const SecretBytes*> epoch_keys;
  for (const auto& key : *keys) epoch_keys.push_back(&key);
  ChainWalk walk(std::move(epoch_keys), expected_head);
  const std::string sql = std::string("SELECT ") + audit_columns +
                          " FROM audit WHERE sequence > $1::bigint ORDER BY sequence ASC LIMIT $2::bigint";
  std::int64_t after = std::numeric_limits<std::int64_t>::min();
  for (;;) {
    Params p;
    p.integer(after).integer(static_cast<std::int64_t>(chain_page_size));
    auto rows = session.run(sql.c_str(), p, "verify audit chain");
    if (!rows) return tl::unexpected(rows.error());
    const int count = PQntuples(rows->get());
    for (int i = 0; i < count; ++i) {
      AuditRecord record = read_audit(rows->get(), i);
      after = record.sequence;
      if (auto ok = walk.add(record); !ok) return tl::unexpected(ok.error());
    }
    if (static_cast<std::size_t>(count) < chain_page_size) break;
  }
  return walk.finish(true);
}

// At open, before anything is served, as the SQLite store does: with a check value it must
// match; without one (a new database, or one written before schema version 2) the KEK must
// unwrap a disk key, or else verify the newest keyed audit record; an empty store accepts any
// KEK. Then the value is written. Under the chain lock, so replicas starting together agree.
Result<void> PostgresStore::check_kek() {
  std::shared_lock keys(keys_mutex_);
  auto s = session();
  if (!s) return tl::unexpected(s.error());
  if (auto ok = s->begin("check the key-encryption key", true); !ok) return ok;
  Params name;
  name.text(kek_check_meta);
  auto stored = s->run("SELECT value FROM store_meta WHERE name = $1::text", name, "read the KEK check value");
  if (!stored) return tl::unexpected(stored.error());
  if (PQntuples(stored->get()) > 0) {
    if (!same_text_constant_time(column_text(stored->get(), 0, 0), kek_check_))
      return kek_not_the_stores("its KEK check value differs");
    return s->commit("check the key-encryption key: commit");
  }
  auto image = s->run("SELECT id, wrapped_key FROM images ORDER BY id COLLATE \"C\" LIMIT 1",
                      "check the key-encryption key: read a key");
  if (!image) return tl::unexpected(image.error());
  if (PQntuples(image->get()) > 0) {
    const std::string id = column_text(image->get(), 0, 0);
    if (!kek_.unwrap(id, column_bytes(image->get(), 0, 1)))
      return kek_not_the_stores("the disk key of image " + id + " does not unwrap");
  } else {
    auto newest = s->run((std::string("SELECT ") + audit_columns +
                          " FROM audit WHERE format = 2 ORDER BY sequence DESC LIMIT 1")
                             .c_str(),
                         "check the key-encryption key: read the newest record");
    if (!newest) return tl::unexpected(newest.error());
    if (PQntuples(newest->get()) > 0) {
      AuditRecord record = read_audit(newest->get(), 0);
      auto mac = audit_record_mac(audit_key_, record);
      if (!mac) return tl::unexpected(mac.error());
      if (!same_text_constant_time(*mac, record.hash))
        return kek_not_the_stores("audit record " + std::to_string(record.sequence) + " is not MAC'd under it");
    }
  }
  Params write;
  write.text(kek_check_meta).text(kek_check_);
  if (auto ok = s->run("INSERT INTO store_meta (name, value) VALUES ($1::text, $2::text)", write,
                       "write the KEK check value");
      !ok)
    return tl::unexpected(ok.error());
  return s->commit("check the key-encryption key: commit");
}

Result<void> PostgresStore::migrate() {
  auto s = session();
  if (!s) return tl::unexpected(s.error());
  if (auto ok = s->begin("migrate", false); !ok) return ok;
  // Replicas starting together: one upgrades, the others wait here and then find it done.
  if (auto ok = s->run(migration_lock_sql, "migrate"); !ok) return tl::unexpected(ok.error());
  if (auto ok = s->run("CREATE TABLE IF NOT EXISTS schema_version (version integer NOT NULL)", "create schema_version");
      !ok)
    return tl::unexpected(ok.error());
  auto current = s->run("SELECT version::bigint FROM schema_version", "read schema version");
  if (!current) return tl::unexpected(current.error());
  const bool has_row = PQntuples(current->get()) > 0;
  const std::int64_t version = has_row ? column_int64(current->get(), 0, 0) : 0;
  if (version > latest_schema_version || version < 0)
    return fail(Errc::unsupported, "postgresql store: database schema version " + std::to_string(version) +
                                       " is newer than this program's (" + std::to_string(latest_schema_version) +
                                       "); upgrade fde-verifierd");
  if (version == latest_schema_version) return s->commit("migrate");
  for (auto v = version; v < latest_schema_version; ++v) {
    // Migration text is a constant of this file, never built from values. Several
    // statements in one string go through the simple query protocol.
    if (auto ok = s->run_script(migrations[v], "migrate to schema version " + std::to_string(v + 1)); !ok) return ok;
  }
  Params p;
  p.integer(latest_schema_version);
  if (auto ok = s->run(has_row ? "UPDATE schema_version SET version = $1::integer"
                               : "INSERT INTO schema_version (version) VALUES ($1::integer)",
                       p, "write schema version");
      !ok)
    return tl::unexpected(ok.error());
  return s->commit("migrate");
}

Result<AuditRecord> PostgresStore::append_keyed(Session& session, const AuditEntry& entry) {
  AuditRecord record;
  record.entry = entry;
  record.format = audit_format_keyed;
  {
    auto head = session.run("SELECT sequence, hash FROM audit ORDER BY sequence DESC LIMIT 1",
                            "append audit: read chain head");
    if (!head) return tl::unexpected(head.error());
    const bool any = PQntuples(head->get()) > 0;
    record.sequence = any ? column_int64(head->get(), 0, 0) + 1 : 1;
    record.previous_hash = any ? column_text(head->get(), 0, 1) : genesis_hash;
  }
  // Taken under the chain lock; replicas' clocks may differ, so times along the chain are
  // as each replica saw them (the sequence is the order).
  record.time = now_text();
  auto mac = audit_record_mac(audit_key_, record);
  if (!mac) return tl::unexpected(mac.error());
  record.hash = std::move(*mac);
  if (auto ok = insert_audit_row(session, record, "append audit"); !ok) return tl::unexpected(ok.error());
  return record;
}

Result<std::optional<std::pair<std::string, Bytes>>> PostgresStore::read_key_row(Session& session,
                                                                                  std::string_view image_id,
                                                                                  std::string_view operation) {
  Params p;
  p.text(image_id);
  auto row = session.run("SELECT status, wrapped_key FROM images WHERE id = $1::text", p, operation);
  if (!row) return tl::unexpected(row.error());
  if (PQntuples(row->get()) == 0) return std::optional<std::pair<std::string, Bytes>>{};
  return std::optional<std::pair<std::string, Bytes>>(
      std::in_place, column_text(row->get(), 0, 0), column_bytes(row->get(), 0, 1));
}

Result<AuditRecord> PostgresStore::enroll(const ImageRecord& image, const SecretBytes& disk_key, const AdminActor& by) {
  std::shared_lock keys(keys_mutex_);
  if (auto ok = protocol::validate_image_id(image.image_id); !ok)
    return fail(Errc::invalid_argument, "enroll: " + ok.error().message);
  if (disk_key.empty() || disk_key.size() > protocol::max_disk_key_size)
    return fail(Errc::invalid_argument, "enroll " + image.image_id + ": the disk key must be 1.." +
                                            std::to_string(protocol::max_disk_key_size) + " bytes");
  if (auto ok = check_reference_image(image.image_id, image.reference); !ok) return tl::unexpected(ok.error());
  auto reference_json = reference::serialize_reference_values(image.reference);
  if (!reference_json) return fail_with_context("enroll " + image.image_id, reference_json.error());
  Bytes wrapped = kek_.wrap(image.image_id, disk_key);
  const std::string now = now_text();
  const std::string change = ChangeJson(by)
                                 .text("luks_uuid", image.luks_uuid)
                                 .text("status", image_status_name(image.status))
                                 .embedded("reference", *reference_json)
                                 .done();
  auto s = session();
  if (!s) return tl::unexpected(s.error());
  if (auto ok = begin_write(*s, "enroll"); !ok) return tl::unexpected(ok.error());
  Params p;
  p.text(image.image_id)
      .text(image.luks_uuid)
      .text(image_status_name(image.status))
      .bytes(wrapped)
      .text(*reference_json)
      .text(now)
      .text(now);
  // Two replicas enrolling the same image: the second waits for the chain lock, then finds
  // the row and inserts nothing.
  auto inserted = s->run("INSERT INTO images (id, luks_uuid, status, wrapped_key, reference_json, created_at, "
                         "updated_at) VALUES ($1::text, $2::text, $3::text, $4::bytea, $5::text, $6::text, $7::text) "
                         "ON CONFLICT (id) DO NOTHING RETURNING id",
                         p, "enroll");
  if (!inserted) return tl::unexpected(inserted.error());
  if (PQntuples(inserted->get()) == 0)
    return fail(Errc::invalid_argument, "image " + image.image_id + " is already enrolled");
  auto record = append_keyed(*s, admin_entry(image.image_id, by, audit_action::enroll, change));
  if (!record) return record;
  if (auto ok = s->commit("enroll: commit"); !ok) return tl::unexpected(ok.error());
  return record;
}

Result<std::optional<ImageRecord>> PostgresStore::find_image(std::string_view image_id) {
  auto s = session();
  if (!s) return tl::unexpected(s.error());
  Params p;
  p.text(image_id);
  auto rows = s->run("SELECT id, luks_uuid, status, reference_json, created_at, updated_at FROM images "
                     "WHERE id = $1::text",
                     p, "find image", true);
  if (!rows) return tl::unexpected(rows.error());
  if (PQntuples(rows->get()) == 0) return std::optional<ImageRecord>{};
  auto image = read_image(rows->get(), 0);
  if (!image) return tl::unexpected(image.error());
  return std::optional<ImageRecord>(std::move(*image));
}

Result<std::vector<ImageRecord>> PostgresStore::list_images() {
  auto s = session();
  if (!s) return tl::unexpected(s.error());
  auto rows = s->run("SELECT id, luks_uuid, status, reference_json, created_at, updated_at FROM images "
                     "ORDER BY id COLLATE \"C\"",
                     "list images", true);
  if (!rows) return tl::unexpected(rows.error());
  std::vector<ImageRecord> images;
  for (int i = 0; i < PQntuples(rows->get()); ++i) {
    auto image = read_image(rows->get(), i);
    if (!image) return tl::unexpected(image.error());
    images.push_back(std::move(*image));
  }
  return images;
}

Result<std::optional<SecretBytes>> PostgresStore::disk_key(std::string_view image_id) {
  std::shared_lock keys(keys_mutex_);
  Bytes wrapped;
  {
    auto s = session();
    if (!s) return tl::unexpected(s.error());
    Params p;
    p.text(image_id);
    // Status and key from one row in one statement: a revoke committed before it is seen.
    auto row = s->run("SELECT status, wrapped_key FROM images WHERE id = $1::text", p, "read disk key", true);
    if (!row) return tl::unexpected(row.error());
    if (PQntuples(row->get()) == 0) return not_enrolled(image_id);
    if (image_status_from_name(column_text(row->get(), 0, 0)) != ImageStatus::active)
      return std::optional<SecretBytes>{};
    wrapped = column_bytes(row->get(), 0, 1);
  }
  // The image id is the AAD: a wrapped key moved to another row fails here.
  auto key = kek_.unwrap(image_id, wrapped);
  if (!key) return tl::unexpected(key.error());
  return std::optional<SecretBytes>(std::move(*key));
}

Result<AuditRecord> PostgresStore::update_reference(std::string_view image_id,
                                                    const reference::ReferenceValues& reference, const AdminActor& by) {
  std::shared_lock keys(keys_mutex_);
  if (auto ok = check_reference_image(image_id, reference); !ok) return tl::unexpected(ok.error());
  auto reference_json = reference::serialize_reference_values(reference);
  if (!reference_json)
    return fail_with_context("update reference values of " + std::string(image_id), reference_json.error());
  const std::string now = now_text();
  auto s = session();
  if (!s) return tl::unexpected(s.error());
  if (auto ok = begin_write(*s, "update reference values"); !ok) return tl::unexpected(ok.error());
  Params read;
  read.text(image_id);
  auto row = s->run("SELECT reference_json FROM images WHERE id = $1::text", read, "update reference values: read");
  if (!row) return tl::unexpected(row.error());
  if (PQntuples(row->get()) == 0) return not_enrolled(image_id);
  auto before = reference::parse_reference_values(column_text(row->get(), 0, 0));
  if (!before) return fail_with_context("postgresql store: image " + std::string(image_id), before.error());
  Params write;
  write.text(image_id).text(*reference_json).text(now);
  if (auto ok = s->run("UPDATE images SET reference_json = $2::text, updated_at = $3::text WHERE id = $1::text", write,
                       "update reference values");
      !ok)
    return tl::unexpected(ok.error());
  auto record = append_keyed(*s, reference_change_entry(image_id, by, *before, reference, *reference_json));
  if (!record) return record;
  if (auto ok = s->commit("update reference values: commit"); !ok) return tl::unexpected(ok.error());
  return record;
}

Result<AuditRecord> PostgresStore::set_status(std::string_view image_id, ImageStatus status, const AdminActor& by) {
  std::shared_lock keys(keys_mutex_);
  const std::string now = now_text();
  auto s = session();
  if (!s) return tl::unexpected(s.error());
  if (auto ok = begin_write(*s, "set image status"); !ok) return tl::unexpected(ok.error());
  Params read;
  read.text(image_id);
  auto row = s->run("SELECT status FROM images WHERE id = $1::text", read, "set image status: read");
  if (!row) return tl::unexpected(row.error());
  if (PQntuples(row->get()) == 0) return not_enrolled(image_id);
  const std::string previous = column_text(row->get(), 0, 0);
  Params write;
  write.text(image_id).text(image_status_name(status)).text(now);
  if (auto ok = s->run("UPDATE images SET status = $2::text, updated_at = $3::text WHERE id = $1::text", write,
                       "set image status");
      !ok)
    return tl::unexpected(ok.error());
  const std::string change =
      ChangeJson(by).text("previous_status", previous).text("status", image_status_name(status)).done();
  const auto action = status == ImageStatus::revoked ? audit_action::revoke : audit_action::reinstate;
  auto record = append_keyed(*s, admin_entry(image_id, by, action, change));
  if (!record) return record;
  if (auto ok = s->commit("set image status: commit"); !ok) return tl::unexpected(ok.error());
  return record;
}

Result<AuditRecord> PostgresStore::delete_image(std::string_view image_id, const AdminActor& by) {
  std::shared_lock keys(keys_mutex_);
  auto s = session();
  if (!s) return tl::unexpected(s.error());
  if (auto ok = begin_write(*s, "delete image"); !ok) return tl::unexpected(ok.error());
  Params read;
  read.text(image_id);
  auto row = s->run("SELECT luks_uuid, status, reference_json FROM images WHERE id = $1::text", read,
                    "delete image: read");
  if (!row) return tl::unexpected(row.error());
  if (PQntuples(row->get()) == 0) return not_enrolled(image_id);
  std::vector<std::string> sets;
  if (auto reference = reference::parse_reference_values(column_text(row->get(), 0, 2))) sets = set_names(*reference);
  const std::string change = ChangeJson(by)
                                 .text("luks_uuid", column_text(row->get(), 0, 0))
                                 .text("status", column_text(row->get(), 0, 1))
                                 .names("sets", sets)
                                 .done();
  Params remove;
  remove.text(image_id);
  if (auto ok = s->run("DELETE FROM images WHERE id = $1::text", remove, "delete image"); !ok)
    return tl::unexpected(ok.error());
  auto record = append_keyed(*s, admin_entry(image_id, by, audit_action::delete_image, change));
  if (!record) return record;
  if (auto ok = s->commit("delete image: commit"); !ok) return tl::unexpected(ok.error());
  return record;
}

// A consistent logical copy into a new SQLite file, from one REPEATABLE READ snapshot while
// every replica goes on serving: the copy is a complete store that opens with the same KEK
// (one fde-verifierd can run on it, or `fde-admin migrate-store` puts it back into an empty
// PostgreSQL database). It is read back and its chain verified before this returns. The
// audit log is held in memory during the copy, as for a migration.
Result<BackupReport> PostgresStore::backup(const std::string& path) {
  auto file = store_detail::BackupFile::create(path);
  if (!file) return tl::unexpected(file.error());

  auto content = export_content();
  if (!content) return fail_with_context("backup", content.error());
  Result<KeyEncryptionKey> kek = fail(Errc::internal, "no KEK");
  {
    std::shared_lock keys(keys_mutex_);
    kek = KeyEncryptionKey::from_bytes(kek_.bytes());
  }
  if (!kek) return tl::unexpected(kek.error());
  BackupReport report;
  report.path = path;
  report.images = static_cast<std::int64_t>(content->images.size());
  report.audit_head = content->audit.empty()
                          ? AuditHead{0, genesis_hash}
                          : AuditHead{content->audit.back().sequence, content->audit.back().hash};
  {
    auto copy = open_sqlite_store(path, std::move(*kek));
    if (!copy) return fail_with_context("backup: " + path, copy.error());
    if (auto ok = (*copy)->import_content(*content); !ok) return fail_with_context("backup: " + path, ok.error());
    auto verified = (*copy)->verify_audit_chain(report.audit_head);
    if (!verified) return fail_with_context("backup: " + path, verified.error());
    if (!verified->intact || verified->records != static_cast<std::int64_t>(content->audit.size()))
      return fail(Errc::verification_failed, "backup: the copy's audit chain does not verify: " + verified->problem);
  }  // closed: the last connection folds its WAL into the one file
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0) report.bytes = static_cast<std::int64_t>(st.st_size);
  file->keep();
  return report;
}

// One transaction under the chain lock, as on SQLite: the chain checked, every wrapped key
// re-wrapped, the retired chain keys wrapped under the new KEK, the rotate-kek record MAC'd
// under the old chain key, the check value replaced. Other replicas still holding the old
// KEK find the new check value at their next write and refuse it (503) until restarted with
// the new KEK; their reads of images and the audit log go on.
Result<KekRotation> PostgresStore::rotate_kek(KeyEncryptionKey new_kek, const AdminActor& by) {
  if (!new_kek.loaded()) return fail(Errc::invalid_argument, "rotate KEK: no new key-encryption key loaded");
  auto new_check = kek_check_value(new_kek);
  if (!new_check) return tl::unexpected(new_check.error());
  auto new_audit_key = new_kek.derive_key(audit_mac_key_label);
  if (!new_audit_key) return tl::unexpected(new_audit_key.error());

  std::unique_lock keys(keys_mutex_);
  if (same_text_constant_time(kek_check_, *new_check))
    return fail(Errc::invalid_argument, "rotate KEK: the new key-encryption key is the one in use");
  auto s = session();
  if (!s) return tl::unexpected(s.error());
  if (auto ok = begin_write(*s, "rotate KEK"); !ok) return tl::unexpected(ok.error());
  // Under the chain lock nobody appends: the walk sees the whole chain. A broken chain is not
  // carried over into a new key, where it would look re-authenticated.
  auto walk = walk_chain(*s, std::nullopt);
  if (!walk) return tl::unexpected(walk.error());
  if (!walk->intact)
    return fail(Errc::verification_failed, "rotate KEK: refused, the audit chain is broken (" + walk->problem +
                                               "); investigate it first");
  KekRotation rotation;
  auto rows = s->run("SELECT id, wrapped_key FROM images ORDER BY id COLLATE \"C\"", "rotate KEK: read keys");
  if (!rows) return tl::unexpected(rows.error());
  for (int i = 0; i < PQntuples(rows->get()); ++i) {
    const std::string id = column_text(rows->get(), i, 0);
    // A row that does not unwrap stops the whole rotation, and nothing is changed.
    auto key = kek_.unwrap(id, column_bytes(rows->get(), i, 1));
    if (!key) return fail_with_context("rotate KEK: image " + id, key.error());
    Params p;
    p.text(id).bytes(new_kek.wrap(id, *key));
    if (auto ok = s->run("UPDATE images SET wrapped_key = $2::bytea WHERE id = $1::text", p, "rotate KEK: write key");
        !ok)
      return tl::unexpected(ok.error());
    ++rotation.images;
  }
  auto chain = chain_keys(*s);
  if (!chain) return tl::unexpected(chain.error());
  for (std::size_t epoch = 0; epoch < chain->size(); ++epoch) {
    Params p;
    p.integer(static_cast<std::int64_t>(epoch))
        .bytes(new_kek.wrap(audit_key_aad(static_cast<std::int64_t>(epoch)), (*chain)[epoch]));
    if (auto ok = s->run("INSERT INTO audit_keys (epoch, wrapped_key) VALUES ($1::bigint, $2::bytea) "
                         "ON CONFLICT (epoch) DO UPDATE SET wrapped_key = EXCLUDED.wrapped_key",
                         p, "rotate KEK: write chain key");
        !ok)
      return tl::unexpected(ok.error());
  }
  rotation.key_epoch = static_cast<std::int64_t>(chain->size());
  const std::string change = ChangeJson(by)
                                 .number("images_rewrapped", rotation.images)
                                 .number("key_epoch", rotation.key_epoch)
                                 .text("new_kek_check", *new_check)
                                 .done();
  // The rotation's own record, MAC'd under the old key: it links the two halves of the chain.
  auto record = append_keyed(*s, admin_entry("", by, audit_action::rotate_kek, change));
  if (!record) return tl::unexpected(record.error());
  rotation.record = std::move(*record);
  Params meta;
  meta.text(kek_check_meta).text(*new_check);
  if (auto ok = s->run("UPDATE store_meta SET value = $2::text WHERE name = $1::text", meta,
                       "rotate KEK: write the check value");
      !ok)
    return tl::unexpected(ok.error());
  if (auto ok = s->commit("rotate KEK: commit"); !ok) return tl::unexpected(ok.error());
  kek_ = std::move(new_kek);
  audit_key_ = std::move(*new_audit_key);
  kek_check_ = std::move(*new_check);
  return rotation;
}

Result<std::optional<Release>> PostgresStore::append_release(const AuditEntry& entry) {
  std::shared_lock keys(keys_mutex_);
  if (entry.decision != "release")
    return fail(Errc::invalid_argument, "audit: append_release records releases, not \"" + entry.decision + "\"");
  auto s = session();
  if (!s) return tl::unexpected(s.error());
  // The chain lock is taken before the status is read: a revoke on any replica (which takes
  // it too) commits either before this read, and is seen, or after this commit, and is
  // chained after the release.
  if (auto ok = begin_write(*s, "release"); !ok) return tl::unexpected(ok.error());
  auto row = read_key_row(*s, entry.image_id, "release: read disk key");
  if (!row) return tl::unexpected(row.error());
  if (!*row) return not_enrolled(entry.image_id);
  if (image_status_from_name((*row)->first) != ImageStatus::active) return std::optional<Release>{};
  // Unwrapped before the record is written: a key that does not unwrap leaves no release record.
  auto key = kek_.unwrap(entry.image_id, (*row)->second);
  if (!key) return tl::unexpected(key.error());
  auto record = append_keyed(*s, entry);
  if (!record) return tl::unexpected(record.error());
  if (auto ok = s->commit("release: commit"); !ok) return tl::unexpected(ok.error());
  return std::optional<Release>(Release{std::move(*record), std::move(*key)});
}

Result<AuditRecord> PostgresStore::append_audit(const AuditEntry& entry) {
  std::shared_lock keys(keys_mutex_);
  if (entry.decision != "deny")
    return fail(Errc::invalid_argument, "audit: append_audit records denials, not \"" + entry.decision + "\"");
  auto s = session();
  if (!s) return tl::unexpected(s.error());
  if (auto ok = begin_write(*s, "append audit"); !ok) return tl::unexpected(ok.error());
  auto record = append_keyed(*s, entry);
  if (!record) return record;
  if (auto ok = s->commit("append audit: commit"); !ok) return tl::unexpected(ok.error());
  return record;
}

Result<std::vector<AuditRecord>> PostgresStore::query_audit(const AuditQuery& filter) {
  auto s = session();
  if (!s) return tl::unexpected(s.error());
  Params p;
  if (filter.image_id) p.bytes(as_bytes(*filter.image_id)); else p.null();
  if (filter.decision) p.bytes(as_bytes(*filter.decision)); else p.null();
  if (filter.after_sequence) p.integer(*filter.after_sequence); else p.null();
  p.integer(static_cast<std::int64_t>(std::min(filter.limit, max_audit_query_limit)));
  const std::string sql = std::string("SELECT ") + audit_columns +
                          " FROM audit WHERE ($1::bytea IS NULL OR image_id = $1::bytea) AND "
                          "($2::bytea IS NULL OR decision = $2::bytea) AND ($3::bigint IS NULL OR sequence > $3::bigint) "
                          "ORDER BY sequence DESC LIMIT $4::bigint";
  auto rows = s->run(sql.c_str(), p, "query audit", true);
  if (!rows) return tl::unexpected(rows.error());
  std::vector<AuditRecord> records;
  for (int i = 0; i < PQntuples(rows->get()); ++i) records.push_back(read_audit(rows->get(), i));
  return records;
}

Result<AuditChainReport> PostgresStore::verify_audit_chain(const std::optional<AuditHead>& expected_head) {
  std::shared_lock keys(keys_mutex_);
  auto s = session();
  if (!s) return tl::unexpected(s.error());
  // One snapshot for every page: records appended meanwhile by any replica are not seen,
  // and the walk's memory stays one page.
  if (auto ok = s->begin("verify audit chain", false, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"); !ok)
    return tl::unexpected(ok.error());
  auto report = walk_chain(*s, expected_head);
  if (!report) return report;
  if (auto ok = s->commit("verify audit chain"); !ok) return tl::unexpected(ok.error());
  return report;
}

Result<void> PostgresStore::ping() {
  std::shared_lock keys(keys_mutex_);
  auto s = session();
  if (!s) return tl::unexpected(s.error());
  // Ready only while this replica's KEK is still the store's: after a rotation through
  // another replica, /readyz fails here and a load balancer's health check takes it out.
  Params p;
  p.text(kek_check_meta);
  auto row = s->run("SELECT value FROM store_meta WHERE name = $1::text", p, "ping", true);
  if (!row) return tl::unexpected(row.error());
  if (PQntuples(row->get()) == 0 || !same_text_constant_time(column_text(row->get(), 0, 0), kek_check_))
    return kek_not_the_stores("its KEK check value differs");
  return {};
}

Result<StoreContent> PostgresStore::export_content() {
  std::shared_lock keys(keys_mutex_);
  auto s = session();
  if (!s) return tl::unexpected(s.error());
  if (auto ok = s->begin("export", false, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"); !ok)
    return tl::unexpected(ok.error());
  StoreContent content;
  auto images = s->run("SELECT id, luks_uuid, status, reference_json, created_at, updated_at, wrapped_key FROM images "
                       "ORDER BY id COLLATE \"C\"",
                       "export images");
  if (!images) return tl::unexpected(images.error());
  for (int i = 0; i < PQntuples(images->get()); ++i) {
    auto image = read_image(images->get(), i);
    if (!image) return tl::unexpected(image.error());
    content.images.push_back(StoredImage{std::move(*image), column_bytes(images->get(), i, 6)});
  }
  auto records = s->run((std::string("SELECT ") + audit_columns + " FROM audit ORDER BY sequence ASC").c_str(),
                        "export audit");
  if (!records) return tl::unexpected(records.error());
  for (int i = 0; i < PQntuples(records->get()); ++i) content.audit.push_back(read_audit(records->get(), i));
  // The retired chain keys as stored, checked by unwrapping (a copy never carries a key it
  // could not use).
  if (auto chain = chain_keys(*s); !chain) return tl::unexpected(chain.error());
  auto retired = s->run("SELECT wrapped_key FROM audit_keys ORDER BY epoch", "export audit chain keys");
  if (!retired) return tl::unexpected(retired.error());
  for (int i = 0; i < PQntuples(retired->get()); ++i) content.retired_audit_keys.push_back(column_bytes(retired->get(), i, 0));
  if (auto ok = s->commit("export"); !ok) return tl::unexpected(ok.error());
  return content;
}

Result<void> PostgresStore::import_content(const StoreContent& content) {
  std::shared_lock keys(keys_mutex_);
  auto s = session();
  if (!s) return tl::unexpected(s.error());
  if (auto ok = begin_write(*s, "import"); !ok) return ok;
  auto count = s->run("SELECT ((SELECT count(*) FROM images) + (SELECT count(*) FROM audit) + "
                      "(SELECT count(*) FROM audit_keys))::bigint",
                      "import: check empty");
  if (!count) return tl::unexpected(count.error());
  if (column_int64(count->get(), 0, 0) != 0)
    return fail(Errc::invalid_argument,
                "postgresql store: import needs an empty store (it has images, audit records or retired chain keys)");
  for (const auto& stored : content.images) {
    const ImageRecord& image = stored.image;
    auto reference_json = reference::serialize_reference_values(image.reference);
    if (!reference_json) return fail_with_context("import " + image.image_id, reference_json.error());
    Params p;
    p.text(image.image_id)
        .text(image.luks_uuid)
        .text(image_status_name(image.status))
        .bytes(stored.wrapped_key)
        .text(*reference_json)
        .text(image.created_at)
        .text(image.updated_at);
    if (auto ok = s->run("INSERT INTO images (id, luks_uuid, status, wrapped_key, reference_json, created_at, "
                         "updated_at) VALUES ($1::text, $2::text, $3::text, $4::bytea, $5::text, $6::text, $7::text)",
                         p, "import image");
        !ok)
      return tl::unexpected(ok.error());
  }
  for (const auto& record : content.audit)
    if (auto ok = insert_audit_row(*s, record, "import audit record"); !ok) return ok;
  for (std::size_t epoch = 0; epoch < content.retired_audit_keys.size(); ++epoch) {
    Params p;
    p.integer(static_cast<std::int64_t>(epoch)).bytes(content.retired_audit_keys[epoch]);
    if (auto ok = s->run("INSERT INTO audit_keys (epoch, wrapped_key) VALUES ($1::bigint, $2::bytea)", p,
                         "import audit chain key");
        !ok)
      return tl::unexpected(ok.error());
  }
  // Each retired key must unwrap under this store's KEK, or the chain could not be checked.
  if (auto chain = chain_keys(*s); !chain) return fail_with_context("import", chain.error());
  return s->commit("import: commit");
}

}  // namespace

std::string describe_postgres_conninfo(const std::string& conninfo) {
  char* error = nullptr;
  PQconninfoOption* options = PQconninfoParse(conninfo.c_str(), &error);
  if (options == nullptr) {
    PQfreemem(error);
    return "(unparsable connection string)";
  }
  std::string out;
  for (const PQconninfoOption* o = options; o->keyword != nullptr; ++o) {
    const std::string_view key = o->keyword;
    if (o->val == nullptr || !(key == "host" || key == "hostaddr" || key == "port" || key == "dbname" ||
                               key == "user" || key == "sslmode"))
      continue;
    out += (out.empty() ? "" : " ") + std::string(key) + "=" + o->val;
  }
  PQconninfoFree(options);
  return out;
}

Result<void> check_postgres_store_kek(PostgresOptions options, const KeyEncryptionKey& kek) {
  if (options.conninfo.empty()) return fail(Errc::invalid_argument, "postgresql store: empty connection string");
  if (!kek.loaded()) return fail(Errc::invalid_argument, "postgresql store: no key-encryption key loaded");
  auto expected = kek_check_value(kek);
  if (!expected) return tl::unexpected(expected.error());
  const std::string where = describe_postgres_conninfo(options.conninfo);
  Pool pool(std::move(options.conninfo), std::move(options.password), 1, options.connect_timeout_seconds);
  auto conn = pool.acquire();
  if (!conn) return tl::unexpected(conn.error());
  Session s(pool, *conn);
  if (auto ok = s.begin("check the key-encryption key", false, "BEGIN READ ONLY"); !ok) return ok;
  const auto wrong = [&](const std::string& why) {
    return fail(Errc::verification_failed, "postgresql store " + where + ": the key-encryption key does not open it (" +
                                               why + "); the daemon would refuse to start");
  };
  // A database the daemon has not set up yet has neither table; one from before schema
  // version 2 has images but no check value.
  auto tables = s.run("SELECT to_regclass('store_meta')::text, to_regclass('images')::text", "check the KEK: tables");
  if (!tables) return tl::unexpected(tables.error());
  if (!PQgetisnull(tables->get(), 0, 0)) {
    Params p;
    p.text(kek_check_meta);
    auto stored = s.run("SELECT value FROM store_meta WHERE name = $1::text", p, "read the KEK check value");
    if (!stored) return tl::unexpected(stored.error());
    if (PQntuples(stored->get()) > 0) {
      if (!same_text_constant_time(column_text(stored->get(), 0, 0), *expected)) return wrong("its KEK check value differs");
      return s.commit("check the key-encryption key");
    }
  }
  if (!PQgetisnull(tables->get(), 0, 1)) {
    auto image = s.run("SELECT id, wrapped_key FROM images ORDER BY id COLLATE \"C\" LIMIT 1", "check the KEK: a key");
    if (!image) return tl::unexpected(image.error());
    if (PQntuples(image->get()) > 0) {
      const std::string id = column_text(image->get(), 0, 0);
      if (!kek.unwrap(id, column_bytes(image->get(), 0, 1))) return wrong("the disk key of image " + id + " does not unwrap");
    }
  }
  return s.commit("check the key-encryption key");
}

Result<std::unique_ptr<Store>> open_postgres_store(PostgresOptions options, KeyEncryptionKey kek) {
  if (options.conninfo.empty()) return fail(Errc::invalid_argument, "postgresql store: empty connection string");
  if (!kek.loaded()) return fail(Errc::invalid_argument, "postgresql store: no key-encryption key loaded");
  if (options.pool_size < 1 || options.pool_size > max_postgres_pool_size)
    return fail(Errc::invalid_argument, "postgresql store: pool_size must be 1.." + std::to_string(max_postgres_pool_size));
  auto audit_key = kek.derive_key(audit_mac_key_label);
  if (!audit_key) return fail_with_context("postgresql store: audit MAC key", audit_key.error());
  auto check = kek_check_value(kek);
  if (!check) return tl::unexpected(check.error());
  auto store =
      std::make_unique<PostgresStore>(std::move(options), std::move(kek), std::move(*audit_key), std::move(*check));
  if (auto ok = store->migrate(); !ok) return tl::unexpected(ok.error());
  if (auto ok = store->check_kek(); !ok) return tl::unexpected(ok.error());
  return std::unique_ptr<Store>(std::move(store));
}

}  // namespace fde::verifier
