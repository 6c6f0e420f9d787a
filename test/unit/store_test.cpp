// Store tests, each run against SQLite and PostgreSQL (STORE_BACKEND) unless it is about the
// SQLite file: images and wrapped keys, the MAC-chained audit log (admin changes, exported
// heads, the revoke/release order, stores from before the chain was keyed) and tampering,
// file mode, schema versions, concurrency.
#include <catch2/catch.hpp>

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <functional>
#include <limits>
#include <fstream>
#include <iterator>
#include <optional>
#include <regex>
#include <set>
#include <thread>
#include <condition_variable>
#include <future>
#include <mutex>

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <rapidjson/document.h>
#include <sqlite3.h>

#include "common/reference/reference_values.hpp"
#include "common/util/file.hpp"
#include "verifier-daemon/store/store.hpp"
#include "test/support/postgres_server.hpp"

using namespace fde;
using namespace fde::verifier;

namespace {

struct TempDir {
  std::string path;
  TempDir() {
    std::string pattern = (std::filesystem::temp_directory_path() / "fde-store-test-XXXXXX").string();
    REQUIRE(::mkdtemp(pattern.data()) != nullptr);
    path = pattern;
  }
  ~TempDir() { std::filesystem::remove_all(path); }
  std::string file(const std::string& name) const { return path + "/" + name; }
};

KeyEncryptionKey test_kek(std::uint8_t fill = 0x5c) {
  auto kek = KeyEncryptionKey::from_bytes(Bytes(32, fill));
  REQUIRE(kek.has_value());
  return std::move(*kek);
}

std::unique_ptr<Store> open_store(const std::string& path, std::uint8_t kek_fill = 0x5c) {
  auto store = open_sqlite_store(path, test_kek(kek_fill));
  INFO((store ? std::string() : store.error().describe()));
  REQUIRE(store.has_value());
  return std::move(*store);
}

// A recognisable 64-byte disk key per image.
SecretBytes disk_key_for(int seed) {
  Bytes key(64);
  for (std::size_t i = 0; i < key.size(); ++i) key[i] = static_cast<std::uint8_t>(static_cast<std::size_t>(seed) * 31 + i * 7 + 3);
  return SecretBytes::copy_of(key);
}

reference::ReferenceValues example_reference(const std::string& image_id) {
  std::ifstream in(std::string(FDE_TEST_DATA) + "/reference-values-example.json", std::ios::binary);
  REQUIRE(in.good());
  std::string json((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  auto values = reference::parse_reference_values(json);
  REQUIRE(values.has_value());
  values->image_id = image_id;
  return std::move(*values);
}

ImageRecord image_record(const std::string& id) {
  ImageRecord image;
  image.image_id = id;
  image.luks_uuid = "0f2a7c1e-3b4d-4e5f-8a9b-" + std::string(12, static_cast<char>('0' + id.size() % 10));
  image.reference = example_reference(id);
  return image;
}

std::string canonical(const reference::ReferenceValues& values) {
  auto json = reference::serialize_reference_values(values);
  REQUIRE(json.has_value());
  return *json;
}

// The operator as the admin socket would name them.
const AdminActor operator_actor{0, 4242};

// A denial (append_audit takes nothing else); release_entry() for append_release.
AuditEntry audit_entry(int i, const std::string& image_id = "img-a") {
  AuditEntry e;
  e.image_id = image_id;
  e.peer = "203.0.113.7:" + std::to_string(50000 + i);
  e.token_digest = std::string(64, 'a');
  e.measurements = R"({"rim":"00"})";
  e.decision = "deny";
  e.reason = i % 3 == 0 ? "rim: not in the accepted set" : "nonce: expired";
  e.checks = R"([{"name":"nonce","passed":true}])";
  return e;
}

AuditEntry release_entry(int i, const std::string& image_id = "img-a") {
  AuditEntry e = audit_entry(i, image_id);
  e.decision = "release";
  e.reason = "all checks passed";
  return e;
}

bool contains(const Bytes& haystack, ByteView needle) {
  return std::search(haystack.begin(), haystack.end(), needle.begin(), needle.end()) != haystack.end();
}

Bytes file_bytes(const std::string& path) {
  if (!std::filesystem::exists(path)) return {};
  auto bytes = read_file(path, 64 * 1024 * 1024);
  REQUIRE(bytes.has_value());
  return std::move(*bytes);
}

// Edits the database behind the store's back, as someone with write access to the file would.
void tamper(const std::string& path, const std::string& sql) {
  sqlite3* db = nullptr;
  REQUIRE(sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE, nullptr) == SQLITE_OK);
  sqlite3_busy_timeout(db, 5000);
  char* error = nullptr;
  int rc = sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &error);
  INFO((error != nullptr ? error : ""));
  sqlite3_free(error);
  sqlite3_close(db);
  REQUIRE(rc == SQLITE_OK);
}


// The backend under test: a fresh store of it, opened and edited behind the store's back.
// SQLite: a file in a temporary directory. PostgreSQL: a fresh database on the test
// process's server (test/support/postgres_server.hpp; started on first use).
class Backend {
 public:
  explicit Backend(std::string name) : name_(std::move(name)) {
    if (name_ == "sqlite") {
      dir_.emplace();
      path_ = dir_->file("fde.db");
    } else {
      REQUIRE(name_ == "postgresql");
      database_ = testing::PostgresServer::shared().create_database();
    }
  }
  // A Backend for an SQLite file that already exists (the version 1 store tests).
  static Backend sqlite_file(const std::string& path) { return Backend(path, 0); }

  const std::string& name() const { return name_; }
  bool is_sqlite() const { return name_ == "sqlite"; }

  std::unique_ptr<Store> open(std::uint8_t kek_fill = 0x5c) const {
    auto store = try_open(kek_fill);
    INFO((store ? std::string() : store.error().describe()));
    REQUIRE(store.has_value());
    return std::move(*store);
  }
  Result<std::unique_ptr<Store>> try_open(std::uint8_t kek_fill = 0x5c) const {
    if (is_sqlite()) return open_sqlite_store(path_, test_kek(kek_fill));
    return open_postgres_store(postgres_options(), test_kek(kek_fill));
  }
  PostgresOptions postgres_options() const {
    PostgresOptions options;
    options.conninfo = testing::PostgresServer::shared().conninfo(database_);
    options.password = SecretBytes::copy_of(as_bytes(std::string_view(testing::PostgresServer::password)));
    return options;
  }
  // SQL run behind the store's back (SQLite syntax; PostgreSQL needs "ON audit" after a
  // trigger name and takes the rest as it is).
  void tamper(const std::string& sql) const {
    std::string error = run_sql(sql);
    INFO(error);
    REQUIRE(error.empty());
  }
  bool try_sql(const std::string& sql) const { return run_sql(sql).empty(); }

 private:
  Backend(std::string path, int) : name_("sqlite"), path_(std::move(path)) {}
  std::string run_sql(const std::string& sql) const {
    if (is_sqlite()) {
      sqlite3* db = nullptr;
      REQUIRE(sqlite3_open_v2(path_.c_str(), &db, SQLITE_OPEN_READWRITE, nullptr) == SQLITE_OK);
      sqlite3_busy_timeout(db, 5000);
      char* error = nullptr;
      int rc = sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &error);
      std::string message = rc == SQLITE_OK ? "" : error != nullptr ? error : "sqlite error";
      sqlite3_free(error);
      sqlite3_close(db);
      return message;
    }
    static const std::regex drop_trigger(R"(DROP TRIGGER (IF EXISTS )?(\w+))");
    return testing::PostgresServer::shared().try_execute(database_,
                                                         std::regex_replace(sql, drop_trigger, "DROP TRIGGER $1$2 ON audit"));
  }

  std::string name_;
  std::optional<TempDir> dir_;
  std::string path_;
  std::string database_;
};

// Runs the test case once per backend.
#define STORE_BACKEND()                                                            \
  const Backend backend(GENERATE(as<std::string>{}, "sqlite", "postgresql")); \
  INFO("backend: " << backend.name())

void append_records(Store& store, int count) {
  for (int i = 1; i <= count; ++i) REQUIRE(store.append_audit(audit_entry(i)).has_value());
}

// The documented encoding, written out independently of audit_hash.cpp.
std::string independent_hash(const AuditRecord& r) {
  std::string input;
  auto field = [&](std::string_view bytes) {
    for (int shift = 56; shift >= 0; shift -= 8) input.push_back(static_cast<char>((bytes.size() >> shift) & 0xff));
    input.append(bytes);
  };
  field(r.previous_hash);
  std::string sequence;
  for (int shift = 56; shift >= 0; shift -= 8)
    sequence.push_back(static_cast<char>((static_cast<std::uint64_t>(r.sequence) >> shift) & 0xff));
  field(sequence);
  for (const std::string* f : {&r.time, &r.entry.image_id, &r.entry.peer, &r.entry.token_digest, &r.entry.measurements,
                               &r.entry.decision, &r.entry.reason, &r.entry.checks})
    field(*f);
  Bytes digest(32);
  unsigned int length = 0;
  REQUIRE(EVP_Digest(input.data(), input.size(), digest.data(), &length, EVP_sha256(), nullptr) == 1);
  return hex_encode(digest);
}

// The documented keyed encoding, also written out independently: HMAC-SHA-256 under
// HKDF-SHA-256(KEK, info = label), over the label field and then the same fields.
std::string independent_mac(const KeyEncryptionKey& kek, const AuditRecord& r) {
  auto key = kek.derive_key("virtcca-fde/v1 audit chain MAC key");
  REQUIRE(key.has_value());
  std::string input;
  auto field = [&](std::string_view bytes) {
    for (int shift = 56; shift >= 0; shift -= 8) input.push_back(static_cast<char>((bytes.size() >> shift) & 0xff));
    input.append(bytes);
  };
  field("virtcca-fde/v1 audit record");
  field(r.previous_hash);
  std::string sequence;
  for (int shift = 56; shift >= 0; shift -= 8)
    sequence.push_back(static_cast<char>((static_cast<std::uint64_t>(r.sequence) >> shift) & 0xff));
  field(sequence);
  for (const std::string* f : {&r.time, &r.entry.image_id, &r.entry.peer, &r.entry.token_digest, &r.entry.measurements,
                               &r.entry.decision, &r.entry.reason, &r.entry.checks})
    field(*f);
  Bytes mac(32);
  unsigned int length = 0;
  REQUIRE(HMAC(EVP_sha256(), key->data(), static_cast<int>(key->size()), reinterpret_cast<const unsigned char*>(input.data()),
               input.size(), mac.data(), &length) != nullptr);
  return hex_encode(mac);
}

// AuditQuery with only the named filters set (designated initializers would warn about the rest).
AuditQuery audit_query(std::size_t limit, std::optional<std::string> image_id = std::nullopt,
                       std::optional<std::string> decision = std::nullopt,
                       std::optional<std::int64_t> after_sequence = std::nullopt) {
  AuditQuery query;
  query.image_id = std::move(image_id);
  query.decision = std::move(decision);
  query.after_sequence = after_sequence;
  query.limit = limit;
  return query;
}

}  // namespace

TEST_CASE("the audit record hash covers every field with length prefixes") {
  AuditRecord record;
  record.sequence = 3;
  record.time = "2026-11-29T01:02:03Z";
  record.entry = audit_entry(1);
  record.previous_hash = std::string(64, '0');
  std::string hash = audit_record_hash(record);
  CHECK(hash.size() == 64);
  CHECK(hash == independent_hash(record));

  auto changed = [&](auto edit) {
    AuditRecord other = record;
    edit(other);
    return audit_record_hash(other) != hash;
  };
  CHECK(changed([](AuditRecord& r) { r.sequence = 4; }));
  CHECK(changed([](AuditRecord& r) { r.time = "2026-11-29T01:02:04Z"; }));
  CHECK(changed([](AuditRecord& r) { r.previous_hash[0] = '1'; }));
  CHECK(changed([](AuditRecord& r) { r.entry.image_id += "x"; }));
  CHECK(changed([](AuditRecord& r) { r.entry.peer += "x"; }));
  CHECK(changed([](AuditRecord& r) { r.entry.token_digest += "x"; }));
  CHECK(changed([](AuditRecord& r) { r.entry.measurements += "x"; }));
  CHECK(changed([](AuditRecord& r) { r.entry.decision = "release"; }));
  CHECK(changed([](AuditRecord& r) { r.entry.reason += "x"; }));
  CHECK(changed([](AuditRecord& r) { r.entry.checks += "x"; }));
  // Moving bytes across a field boundary changes the hash.
  CHECK(changed([](AuditRecord& r) {
    r.entry.checks = r.entry.reason.substr(r.entry.reason.size() - 1) + r.entry.checks;
    r.entry.reason.pop_back();
  }));
  // The stored hash itself is not an input.
  CHECK_FALSE(changed([](AuditRecord& r) { r.hash = "anything"; }));
}

TEST_CASE("an enrolled image is found, listed and its disk key unwraps to the same bytes") {
  STORE_BACKEND();
  auto store = backend.open();
  REQUIRE(store->ping().has_value());
  REQUIRE(store->enroll(image_record("img-b"), disk_key_for(2), operator_actor).has_value());
  REQUIRE(store->enroll(image_record("img-a"), disk_key_for(1), operator_actor).has_value());

  auto found = store->find_image("img-a");
  REQUIRE(found.has_value());
  REQUIRE(found->has_value());
  const ImageRecord& image = **found;
  CHECK(image.image_id == "img-a");
  CHECK(image.luks_uuid == image_record("img-a").luks_uuid);
  CHECK(image.status == ImageStatus::active);
  CHECK(canonical(image.reference) == canonical(example_reference("img-a")));
  CHECK(image.created_at.size() == 20);
  CHECK(image.updated_at == image.created_at);

  auto listed = store->list_images();
  REQUIRE(listed.has_value());
  REQUIRE(listed->size() == 2);
  CHECK((*listed)[0].image_id == "img-a");
  CHECK((*listed)[1].image_id == "img-b");

  for (int seed : {1, 2}) {
    auto key = store->disk_key(seed == 1 ? "img-a" : "img-b");
    REQUIRE(key.has_value());
    REQUIRE(key->has_value());
    CHECK(equal_constant_time((*key)->view(), disk_key_for(seed).view()));
  }

  auto missing = store->find_image("img-c");
  REQUIRE(missing.has_value());
  CHECK_FALSE(missing->has_value());
  CHECK(store->disk_key("img-c").error().code == Errc::not_found);
}

TEST_CASE("the database file never contains a raw disk key") {
  TempDir dir;
  std::string path = dir.file("fde.db");
  auto key = disk_key_for(9);
  {
    auto store = open_store(path);
    REQUIRE(store->enroll(image_record("img-a"), key, operator_actor).has_value());
    REQUIRE(store->disk_key("img-a").value_or(std::nullopt).has_value());
    // While open, the row may still be in the write-ahead log.
    for (const char* suffix : {"", "-wal", "-shm"}) {
      Bytes content = file_bytes(path + suffix);
      INFO(suffix);
      CHECK_FALSE(contains(content, key.view()));
      CHECK_FALSE(contains(content, key.view().first(16)));
      CHECK_FALSE(contains(content, key.view().last(16)));
    }
  }
  // Closed: the log is checkpointed into the main file.
  Bytes content = file_bytes(path);
  REQUIRE(content.size() > 0);
  CHECK_FALSE(contains(content, key.view()));
  CHECK_FALSE(contains(content, key.view().first(16)));
  CHECK_FALSE(contains(content, key.view().subspan(24, 16)));
  // The sanity check of the search itself: the image id is in there.
  CHECK(contains(content, as_bytes("img-a")));
}

TEST_CASE("enrolling an image twice is refused and keeps the first key") {
  STORE_BACKEND();
  auto store = backend.open();
  REQUIRE(store->enroll(image_record("img-a"), disk_key_for(1), operator_actor).has_value());
  auto again = store->enroll(image_record("img-a"), disk_key_for(2), operator_actor);
  REQUIRE_FALSE(again.has_value());
  CHECK(again.error().code == Errc::invalid_argument);
  CHECK(again.error().message.find("already enrolled") != std::string::npos);
  auto key = store->disk_key("img-a");
  REQUIRE(key.has_value());
  REQUIRE(key->has_value());
  CHECK(equal_constant_time((*key)->view(), disk_key_for(1).view()));
  CHECK(store->list_images()->size() == 1);
}

TEST_CASE("enrollment refuses a bad image id, a bad key size or reference values for another image") {
  STORE_BACKEND();
  auto store = backend.open();
  CHECK(store->enroll(image_record("a/b"), disk_key_for(1), operator_actor).error().code == Errc::invalid_argument);
  CHECK(store->enroll(image_record(""), disk_key_for(1), operator_actor).error().code == Errc::invalid_argument);
  CHECK(store->enroll(image_record("img-a"), SecretBytes(), operator_actor).error().code == Errc::invalid_argument);
  CHECK(store->enroll(image_record("img-a"), SecretBytes(65), operator_actor).error().code == Errc::invalid_argument);
  ImageRecord mismatched = image_record("img-a");
  mismatched.reference.image_id = "img-b";
  CHECK(store->enroll(mismatched, disk_key_for(1), operator_actor).error().code == Errc::invalid_argument);
  ImageRecord invalid = image_record("img-a");
  invalid.reference.sets.clear();
  CHECK_FALSE(store->enroll(invalid, disk_key_for(1), operator_actor).has_value());
  CHECK(store->list_images()->empty());
  // Reference values that name no image are fine.
  ImageRecord unnamed = image_record("img-a");
  unnamed.reference.image_id.reset();
  CHECK(store->enroll(unnamed, SecretBytes::copy_of(Bytes(32, 1)), operator_actor).has_value());
}

TEST_CASE("reference values and status can be updated") {
  STORE_BACKEND();
  auto store = backend.open();
  REQUIRE(store->enroll(image_record("img-a"), disk_key_for(1), operator_actor).has_value());

  auto updated = example_reference("img-a");
  REQUIRE(reference::retire_reference_set(updated, "kernel-6.6.0-28").has_value());
  REQUIRE(store->update_reference("img-a", updated, operator_actor).has_value());
  auto found = store->find_image("img-a");
  REQUIRE(found.has_value());
  REQUIRE(found->has_value());
  CHECK(canonical((*found)->reference) == canonical(updated));
  CHECK((*found)->reference.find_set("kernel-6.6.0-28") == nullptr);
  CHECK((*found)->updated_at >= (*found)->created_at);

  REQUIRE(store->set_status("img-a", ImageStatus::revoked, operator_actor).has_value());
  CHECK((*store->find_image("img-a"))->status == ImageStatus::revoked);
  REQUIRE(store->set_status("img-a", ImageStatus::active, operator_actor).has_value());
  CHECK((*store->find_image("img-a"))->status == ImageStatus::active);

  CHECK(store->update_reference("img-x", example_reference("img-x"), operator_actor).error().code == Errc::not_found);
  CHECK(store->set_status("img-x", ImageStatus::revoked, operator_actor).error().code == Errc::not_found);
  auto other = example_reference("img-b");
  CHECK(store->update_reference("img-a", other, operator_actor).error().code == Errc::invalid_argument);
  // The disk key is untouched by either update.
  CHECK(equal_constant_time(store->disk_key("img-a")->value().view(), disk_key_for(1).view()));
}

TEST_CASE("the disk key of a revoked image is withheld by the store itself, whatever the caller read before") {
  STORE_BACKEND();
  auto store = backend.open();
  REQUIRE(store->enroll(image_record("img-a"), disk_key_for(1), operator_actor).has_value());
  REQUIRE(store->enroll(image_record("img-b"), disk_key_for(2), operator_actor).has_value());
  // A caller reads the image while it is active and decides to release...
  auto seen = store->find_image("img-a");
  REQUIRE(seen.has_value());
  REQUIRE(seen->has_value());
  REQUIRE((*seen)->status == ImageStatus::active);
  // ...the operator revokes it in the meantime...
  REQUIRE(store->set_status("img-a", ImageStatus::revoked, operator_actor).has_value());
  // ...and the key read, not the earlier look, decides: no key leaves the store.
  auto key = store->disk_key("img-a");
  REQUIRE(key.has_value());
  CHECK_FALSE(key->has_value());
  // Another image is not affected, and reinstating brings the same key back.
  CHECK(equal_constant_time(store->disk_key("img-b")->value().view(), disk_key_for(2).view()));
  REQUIRE(store->set_status("img-a", ImageStatus::active, operator_actor).has_value());
  CHECK(equal_constant_time(store->disk_key("img-a")->value().view(), disk_key_for(1).view()));
}

TEST_CASE("a revoke committed by another process is seen by the next key read of an open store") {
  STORE_BACKEND();
  auto daemon = backend.open();
  REQUIRE(daemon->enroll(image_record("img-a"), disk_key_for(1), operator_actor).has_value());
  REQUIRE(daemon->disk_key("img-a").value_or(std::nullopt).has_value());
  // A second connection (another fde-verifierd replica, or the file edited by hand) revokes.
  auto other = backend.open();
  REQUIRE(other->set_status("img-a", ImageStatus::revoked, operator_actor).has_value());
  auto key = daemon->disk_key("img-a");
  REQUIRE(key.has_value());
  CHECK_FALSE(key->has_value());
  CHECK(daemon->disk_key("img-x").error().code == Errc::not_found);
}

TEST_CASE("image status names round-trip") {
  CHECK(image_status_name(ImageStatus::active) == "active");
  CHECK(image_status_name(ImageStatus::revoked) == "revoked");
  CHECK(image_status_from_name("revoked") == ImageStatus::revoked);
  CHECK_FALSE(image_status_from_name("Revoked").has_value());
}

TEST_CASE("an audit chain of many records links and verifies") {
  STORE_BACKEND();
  auto store = backend.open();
  auto empty = store->verify_audit_chain();
  REQUIRE(empty.has_value());
  CHECK(empty->intact);
  CHECK(empty->records == 0);
  CHECK(format_audit_head(empty->head) == "0:" + std::string(64, '0'));

  // Records 1 and 2 are the enrollments; then 40 decisions, a denial every third.
  REQUIRE(store->enroll(image_record("img-a"), disk_key_for(1), operator_actor).has_value());
  REQUIRE(store->enroll(image_record("img-b"), disk_key_for(2), operator_actor).has_value());
  std::vector<AuditRecord> appended = store->query_audit(audit_query(2)).value();
  std::reverse(appended.begin(), appended.end());
  for (int i = 1; i <= 40; ++i) {
    const std::string image = i % 2 == 0 ? "img-a" : "img-b";
    if (i % 3 == 0) {
      auto record = store->append_audit(audit_entry(i, image));
      REQUIRE(record.has_value());
      appended.push_back(*record);
    } else {
      auto released = store->append_release(release_entry(i, image));
      REQUIRE(released.has_value());
      REQUIRE(released->has_value());
      CHECK(equal_constant_time((*released)->disk_key.view(), disk_key_for(i % 2 == 0 ? 1 : 2).view()));
      appended.push_back((*released)->record);
    }
  }
  CHECK(appended.front().sequence == 1);
  CHECK(appended.front().previous_hash == std::string(64, '0'));
  const KeyEncryptionKey kek = test_kek();
  for (std::size_t i = 0; i < appended.size(); ++i) {
    CHECK(appended[i].sequence == static_cast<std::int64_t>(i + 1));
    CHECK(appended[i].format == audit_format_keyed);
    CHECK(appended[i].hash == independent_mac(kek, appended[i]));
    // Not the unkeyed hash anyone could recompute.
    CHECK(appended[i].hash != independent_hash(appended[i]));
    if (i > 0) CHECK(appended[i].previous_hash == appended[i - 1].hash);
  }
  auto report = store->verify_audit_chain();
  REQUIRE(report.has_value());
  CHECK(report->intact);
  CHECK(report->records == 42);
  CHECK(report->unkeyed_records == 0);
  CHECK_FALSE(report->first_bad_sequence.has_value());
  CHECK(report->head.sequence == 42);
  CHECK(report->head.hash == appended.back().hash);

  auto newest = store->query_audit(audit_query(5));
  REQUIRE(newest.has_value());
  REQUIRE(newest->size() == 5);
  CHECK((*newest)[0].sequence == 42);
  CHECK((*newest)[4].sequence == 38);
  CHECK((*newest)[0].hash == appended[41].hash);
  CHECK((*newest)[0].entry.checks == appended[41].entry.checks);

  auto img_a = store->query_audit(audit_query(100, "img-a"));
  REQUIRE(img_a.has_value());
  CHECK(img_a->size() == 21);
  CHECK(std::all_of(img_a->begin(), img_a->end(), [](const AuditRecord& r) { return r.entry.image_id == "img-a"; }));
  auto denials = store->query_audit(audit_query(100, std::nullopt, "deny"));
  REQUIRE(denials.has_value());
  CHECK(denials->size() == 13);
  auto changes = store->query_audit(audit_query(100, std::nullopt, "admin"));
  REQUIRE(changes.has_value());
  CHECK(changes->size() == 2);
  auto later = store->query_audit(audit_query(100, std::nullopt, std::nullopt, 37));
  REQUIRE(later.has_value());
  CHECK(later->size() == 5);
  auto combined = store->query_audit(audit_query(2, "img-b", "deny", 22));
  REQUIRE(combined.has_value());
  REQUIRE(combined->size() == 2);
  CHECK((*combined)[0].sequence == 41);
  CHECK((*combined)[1].sequence == 35);
  // Values are bound, never spliced into SQL.
  auto injection = store->query_audit(audit_query(100, "x' OR '1'='1"));
  REQUIRE(injection.has_value());
  CHECK(injection->empty());
}

TEST_CASE("audit text with NUL bytes, invalid UTF-8 or empty fields reads back byte for byte") {
  STORE_BACKEND();
  auto store = backend.open();
  AuditEntry entry = audit_entry(3);
  entry.image_id = "";
  entry.token_digest = "";
  static constexpr char raw_reason[] = "bad \0 claim \xff\xfe";
  entry.reason = std::string(raw_reason, sizeof raw_reason - 1);
  entry.peer = "[2001:db8::1]:443";
  auto appended = store->append_audit(entry);
  REQUIRE(appended.has_value());
  auto read = store->query_audit(audit_query(1));
  REQUIRE(read.has_value());
  REQUIRE(read->size() == 1);
  CHECK(read->front().entry.reason == entry.reason);
  CHECK(read->front().entry.image_id.empty());
  CHECK(read->front().hash == appended->hash);
  CHECK(store->verify_audit_chain()->intact);
}

TEST_CASE("append_audit takes denials only: a release needs append_release, a change its own call") {
  STORE_BACKEND();
  auto store = backend.open();
  REQUIRE(store->enroll(image_record("img-a"), disk_key_for(1), operator_actor).has_value());
  for (const char* decision : {"maybe", "release", "admin"}) {
    AuditEntry entry = audit_entry(1);
    entry.decision = decision;
    INFO(decision);
    CHECK(store->append_audit(entry).error().code == Errc::invalid_argument);
  }
  CHECK(store->append_release(audit_entry(1)).error().code == Errc::invalid_argument);
  CHECK(store->verify_audit_chain()->records == 1);
}

TEST_CASE("audit records cannot be changed through SQL while the triggers stand") {
  STORE_BACKEND();
  auto store = backend.open();
  append_records(*store, 3);
  CHECK(!backend.try_sql("UPDATE audit SET reason = 'nothing to see' WHERE sequence = 2"));
  CHECK(!backend.try_sql("DELETE FROM audit WHERE sequence = 2"));
  CHECK(store->verify_audit_chain()->intact);
}

TEST_CASE("an audit record whose reason or decision was edited is detected at its sequence") {
  STORE_BACKEND();
  auto store = backend.open();
  append_records(*store, 12);
  REQUIRE(store->verify_audit_chain()->intact);

  SECTION("reason") {
    backend.tamper("DROP TRIGGER audit_no_update; UPDATE audit SET reason = 'all checks passed' WHERE sequence = 6");
    auto report = store->verify_audit_chain();
    REQUIRE(report.has_value());
    CHECK_FALSE(report->intact);
    CHECK(report->first_bad_sequence == 6);
    CHECK(report->records == 12);
    CHECK(report->problem.find("record 6") != std::string::npos);
  }
  SECTION("decision") {
    backend.tamper("DROP TRIGGER audit_no_update; UPDATE audit SET decision = 'release' WHERE sequence = 9");
    auto report = store->verify_audit_chain();
    REQUIRE(report.has_value());
    CHECK_FALSE(report->intact);
    CHECK(report->first_bad_sequence == 9);
  }
  SECTION("time") {
    backend.tamper("DROP TRIGGER audit_no_update; UPDATE audit SET time = '2000-01-01T00:00:00Z' WHERE sequence = 1");
    CHECK(store->verify_audit_chain()->first_bad_sequence == 1);
  }
  SECTION("an edit with a recomputed unkeyed hash is found at the record itself: its MAC fails") {
    auto records = store->query_audit(audit_query(100));
    REQUIRE(records.has_value());
    AuditRecord forged = *std::find_if(records->begin(), records->end(),
                                       [](const AuditRecord& r) { return r.sequence == 6; });
    forged.entry.reason = "all checks passed";
    forged.hash = audit_record_hash(forged);
    backend.tamper("DROP TRIGGER audit_no_update; UPDATE audit SET reason = 'all checks passed', "
                 "hash = '" + forged.hash + "' WHERE sequence = 6");
    auto report = store->verify_audit_chain();
    REQUIRE(report.has_value());
    CHECK_FALSE(report->intact);
    CHECK(report->first_bad_sequence == 6);
    CHECK(report->problem.find("MAC") != std::string::npos);
  }
}

// Rewrites the chain from record `from` on as someone with the file but without the KEK
// would: `edit` changes record `from`, and every hash from there is recomputed (unkeyed, the
// only hash such a person can compute) and relinked; `format` is what the rows then claim.
static void rewrite_chain(Store& store, const Backend& backend, std::int64_t from,
                          const std::function<void(AuditRecord&)>& edit, int format,
                          std::int64_t to = std::numeric_limits<std::int64_t>::max()) {
  auto records = store.query_audit(audit_query(10000));
  REQUIRE(records.has_value());
  std::reverse(records->begin(), records->end());
  std::string sql = "DROP TRIGGER IF EXISTS audit_no_update;";
  std::string previous = from == 1 ? std::string(64, '0') : (*records)[static_cast<std::size_t>(from - 2)].hash;
  for (auto& record : *records) {
    if (record.sequence < from || record.sequence > to) continue;
    if (record.sequence == from) edit(record);
    record.previous_hash = previous;
    record.hash = audit_record_hash(record);
    previous = record.hash;
    sql += "UPDATE audit SET reason = '" + record.entry.reason + "', decision = '" + record.entry.decision +
           "', previous_hash = '" + record.previous_hash + "', hash = '" + record.hash +
           "', format = " + std::to_string(format) + " WHERE sequence = " + std::to_string(record.sequence) + ";";
  }
  backend.tamper(sql);
}

TEST_CASE("a table rewritten with recomputed hashes does not verify: the records are MAC'd with a KEK-derived key") {
  STORE_BACKEND();
  auto store = backend.open();
  append_records(*store, 12);
  REQUIRE(store->verify_audit_chain()->intact);
  auto whitewash = [](AuditRecord& r) { r.entry.reason = "nothing to see"; };

  SECTION("from the middle, rows still claiming to be keyed") {
    rewrite_chain(*store, backend, 6, whitewash, audit_format_keyed);
    auto report = store->verify_audit_chain();
    REQUIRE(report.has_value());
    CHECK_FALSE(report->intact);
    CHECK(report->first_bad_sequence == 6);
    CHECK(report->problem.find("MAC does not match") != std::string::npos);
  }
  SECTION("from the middle, rows claiming to be unkeyed records from before the upgrade") {
    rewrite_chain(*store, backend, 6, whitewash, audit_format_unkeyed);
    auto report = store->verify_audit_chain();
    REQUIRE(report.has_value());
    CHECK_FALSE(report->intact);
    CHECK(report->first_bad_sequence == 6);
    CHECK(report->problem.find("unkeyed record after keyed") != std::string::npos);
  }
  SECTION("the whole table, passed off as an unkeyed store") {
    rewrite_chain(*store, backend, 1, whitewash, audit_format_unkeyed);
    auto report = store->verify_audit_chain();
    REQUIRE(report.has_value());
    CHECK_FALSE(report->intact);
    CHECK(report->first_bad_sequence == 13);
    CHECK(report->problem.find("not followed by the schema upgrade's keyed record") != std::string::npos);
  }
  SECTION("the whole table, rows claiming to be keyed") {
    rewrite_chain(*store, backend, 1, whitewash, audit_format_keyed);
    CHECK(store->verify_audit_chain()->first_bad_sequence == 1);
  }
}

TEST_CASE("both backends refuse another KEK at open, before anything is served") {
  STORE_BACKEND();
  { append_records(*backend.open(), 3); }
  auto other = backend.try_open(0x77);
  REQUIRE_FALSE(other.has_value());
  CHECK(other.error().code == Errc::verification_failed);
  CHECK(other.error().message.find("KEK check value differs") != std::string::npos);
  // The right KEK still opens it, and the chain it wrote is intact.
  auto store = backend.open();
  CHECK(store->verify_audit_chain()->intact);
}

TEST_CASE("sqlite: another KEK is refused at open, even in a store without the check value") {
  TempDir dir;
  std::string path = dir.file("fde.db");
  { append_records(*open_store(path), 3); }
  // Without the check value (as a store from before it existed), another KEK is still refused
  // at open: the newest record's MAC does not verify under it.
  tamper(path, "DELETE FROM store_meta");
  auto other = open_sqlite_store(path, test_kek(0x77));
  REQUIRE_FALSE(other.has_value());
  CHECK(other.error().code == Errc::verification_failed);
  CHECK(other.error().message.find("audit record 3 is not MAC'd under it") != std::string::npos);
}

TEST_CASE("the newest records removed are found only against a head exported earlier") {
  STORE_BACKEND();
  auto store = backend.open();
  append_records(*store, 10);
  const AuditHead exported = store->verify_audit_chain()->head;
  CHECK(exported.sequence == 10);
  auto matched = store->verify_audit_chain(exported);
  REQUIRE(matched.has_value());
  CHECK(matched->intact);
  CHECK(matched->expected_head_matched);

  // An older head is still in a longer chain.
  const AuditHead older{5, store->query_audit(audit_query(10000, std::nullopt, std::nullopt, 4))->back().hash};
  append_records(*store, 2);
  CHECK(store->verify_audit_chain(older)->expected_head_matched);

  SECTION("truncated: what is left is a well-formed chain, but the exported record is gone") {
    backend.tamper("DROP TRIGGER audit_no_delete; DELETE FROM audit WHERE sequence > 7");
    // Alone, a truncated chain cannot be told from a shorter one: this is what the head is for.
    CHECK(store->verify_audit_chain()->intact);
    auto report = store->verify_audit_chain(exported);
    REQUIRE(report.has_value());
    CHECK_FALSE(report->intact);
    CHECK_FALSE(report->expected_head_matched);
    CHECK(report->first_bad_sequence == 8);
    CHECK(report->problem.find("records were removed from the end") != std::string::npos);
    CHECK(report->head.sequence == 7);
  }
  SECTION("truncated and then grown again by the daemon: the exported record differs") {
    backend.tamper("DROP TRIGGER audit_no_delete; DELETE FROM audit WHERE sequence > 7");
    append_records(*store, 5);
    CHECK(store->verify_audit_chain()->intact);
    auto report = store->verify_audit_chain(exported);
    REQUIRE(report.has_value());
    CHECK_FALSE(report->intact);
    CHECK(report->first_bad_sequence == 10);
    CHECK(report->problem.find("differs from the exported head") != std::string::npos);
  }
  SECTION("a head that was never this chain's") {
    AuditHead forged = exported;
    forged.hash[0] = forged.hash[0] == '0' ? '1' : '0';
    CHECK(store->verify_audit_chain(forged)->first_bad_sequence == 10);
  }
}

TEST_CASE("an audit head is written and read as SEQ:HEX") {
  const std::string hex(64, 'a');
  auto head = parse_audit_head("17:" + hex);
  REQUIRE(head.has_value());
  CHECK(head->sequence == 17);
  CHECK(head->hash == hex);
  CHECK(format_audit_head(*head) == "17:" + hex);
  CHECK(parse_audit_head("17:" + std::string(64, 'A'))->hash == hex);
  for (const std::string& bad : std::vector<std::string>{"", "17", "17:", ":" + hex, "-1:" + hex, "1x:" + hex, "17:" + hex + "0",
                                "17:" + std::string(63, 'a') + "g", "1234567890123456789:" + hex})
    CHECK(parse_audit_head(bad).error().code == Errc::invalid_argument);
}

TEST_CASE("a deleted audit record is detected") {
  STORE_BACKEND();
  auto store = backend.open();
  append_records(*store, 10);

  SECTION("in the middle") {
    backend.tamper("DROP TRIGGER audit_no_delete; DELETE FROM audit WHERE sequence = 5");
    auto report = store->verify_audit_chain();
    REQUIRE(report.has_value());
    CHECK_FALSE(report->intact);
    CHECK(report->first_bad_sequence == 6);
    CHECK(report->records == 9);
    CHECK(report->problem.find("record 5 is missing") != std::string::npos);
  }
  SECTION("at the start") {
    backend.tamper("DROP TRIGGER audit_no_delete; DELETE FROM audit WHERE sequence = 1");
    auto report = store->verify_audit_chain();
    REQUIRE(report.has_value());
    CHECK_FALSE(report->intact);
    CHECK(report->first_bad_sequence == 2);
  }
  SECTION("renumbered to hide the gap") {
    backend.tamper("DROP TRIGGER audit_no_delete; DROP TRIGGER audit_no_update; DELETE FROM audit WHERE sequence = 5; "
                 "UPDATE audit SET sequence = sequence - 1 WHERE sequence > 5");
    auto report = store->verify_audit_chain();
    REQUIRE(report.has_value());
    CHECK_FALSE(report->intact);
    CHECK(report->first_bad_sequence == 5);
  }
}

TEST_CASE("reopening the database keeps images, keys and the audit chain") {
  STORE_BACKEND();
  std::string last_hash;
  {
    auto store = backend.open();
    REQUIRE(store->enroll(image_record("img-a"), disk_key_for(1), operator_actor).has_value());
    REQUIRE(store->set_status("img-a", ImageStatus::revoked, operator_actor).has_value());
    append_records(*store, 7);
    last_hash = store->query_audit(audit_query(1))->front().hash;
  }
  {
    auto store = backend.open();
    auto found = store->find_image("img-a");
    REQUIRE(found.has_value());
    REQUIRE(found->has_value());
    CHECK((*found)->status == ImageStatus::revoked);
    CHECK(canonical((*found)->reference) == canonical(example_reference("img-a")));
    // Still revoked after the reopen: no key until it is reinstated.
    auto withheld = store->disk_key("img-a");
    REQUIRE(withheld.has_value());
    CHECK_FALSE(withheld->has_value());
    REQUIRE(store->set_status("img-a", ImageStatus::active, operator_actor).has_value());
    auto key = store->disk_key("img-a");
    REQUIRE(key.has_value());
    REQUIRE(key->has_value());
    CHECK(equal_constant_time((*key)->view(), disk_key_for(1).view()));
    // The chain continues where it stopped: enroll, revoke, 7 denials, then the reinstate.
    auto records = store->query_audit(audit_query(2));
    REQUIRE(records->size() == 2);
    CHECK(records->front().sequence == 10);
    CHECK(records->front().entry.reason == "reinstate");
    CHECK(records->front().previous_hash == last_hash);
    auto report = store->verify_audit_chain();
    REQUIRE(report.has_value());
    CHECK(report->intact);
    CHECK(report->records == 10);
    auto next = store->append_audit(audit_entry(8));
    REQUIRE(next.has_value());
    CHECK(next->sequence == 11);
    CHECK(next->previous_hash == records->front().hash);
    CHECK(store->verify_audit_chain()->intact);
  }
  {
    // Another KEK does not open the store at all (the store's KEK check value differs).
    auto other = backend.try_open(0x77);
    REQUIRE_FALSE(other.has_value());
    CHECK(other.error().code == Errc::verification_failed);
  }
}

TEST_CASE("a wrapped key moved to another image's row does not unwrap") {
  STORE_BACKEND();
  auto store = backend.open();
  REQUIRE(store->enroll(image_record("img-a"), disk_key_for(1), operator_actor).has_value());
  REQUIRE(store->enroll(image_record("img-b"), disk_key_for(2), operator_actor).has_value());
  backend.tamper("UPDATE images SET wrapped_key = (SELECT wrapped_key FROM images WHERE id = 'img-a') WHERE id = 'img-b'");
  auto moved = store->disk_key("img-b");
  REQUIRE_FALSE(moved.has_value());
  CHECK(moved.error().code == Errc::verification_failed);
  CHECK(store->disk_key("img-a").value_or(std::nullopt).has_value());
}

TEST_CASE("the database file is created with mode 0600 whatever the umask") {
  TempDir dir;
  std::string path = dir.file("fde.db");
  mode_t saved = ::umask(0);
  auto store = open_sqlite_store(path, test_kek());
  ::umask(saved);
  REQUIRE(store.has_value());
  REQUIRE((*store)->append_audit(audit_entry(1)).has_value());
  struct stat st {};
  REQUIRE(::stat(path.c_str(), &st) == 0);
  CHECK((st.st_mode & 07777) == 0600);
  REQUIRE(::stat((path + "-wal").c_str(), &st) == 0);
  CHECK((st.st_mode & 07777) == 0600);

  // A restrictive umask does not leave the owner unable to write either.
  std::string second = dir.file("second.db");
  saved = ::umask(0377);
  auto restricted = open_sqlite_store(second, test_kek());
  ::umask(saved);
  REQUIRE(restricted.has_value());
  REQUIRE(::stat(second.c_str(), &st) == 0);
  CHECK((st.st_mode & 07777) == 0600);
}

TEST_CASE("an existing database file open to group or others is refused") {
  TempDir dir;
  std::string path = dir.file("fde.db");
  { open_store(path); }
  REQUIRE(::chmod(path.c_str(), 0644) == 0);
  auto store = open_sqlite_store(path, test_kek());
  REQUIRE_FALSE(store.has_value());
  CHECK(store.error().message.find("group or others") != std::string::npos);
}

TEST_CASE("opening refuses a missing KEK, a directory and a newer schema") {
  TempDir dir;
  CHECK(open_sqlite_store(dir.file("a.db"), KeyEncryptionKey()).error().code == Errc::invalid_argument);
  CHECK_FALSE(open_sqlite_store(dir.path, test_kek()).has_value());
  CHECK_FALSE(open_sqlite_store("", test_kek()).has_value());
  std::string path = dir.file("fde.db");
  { open_store(path); }
  tamper(path, "UPDATE schema_version SET version = 99");
  auto store = open_sqlite_store(path, test_kek());
  REQUIRE_FALSE(store.has_value());
  CHECK(store.error().code == Errc::unsupported);
}

TEST_CASE("concurrent appends from four threads produce one intact chain") {
  STORE_BACKEND();
  auto store = backend.open();
  REQUIRE(store->enroll(image_record("img-a"), disk_key_for(1), operator_actor).has_value());
  constexpr int threads = 4;
  constexpr int per_thread = 50;
  std::vector<std::vector<std::int64_t>> sequences(threads);
  std::vector<std::thread> workers;
  std::atomic<int> failures{0};
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&, t] {
      for (int i = 0; i < per_thread; ++i) {
        auto record = store->append_audit(audit_entry(t * 1000 + i));
        if (!record) {
          ++failures;
          continue;
        }
        sequences[static_cast<std::size_t>(t)].push_back(record->sequence);
        // Readers interleave with the writers.
        if (i % 10 == 0 && (!store->find_image("img-a") || !store->disk_key("img-a").value_or(std::nullopt))) ++failures;
      }
    });
  }
  for (auto& w : workers) w.join();
  CHECK(failures == 0);
  std::set<std::int64_t> all;
  for (const auto& s : sequences) all.insert(s.begin(), s.end());
  CHECK(all.size() == threads * per_thread);
  CHECK(*all.begin() == 2);  // record 1 is the enrollment
  CHECK(*all.rbegin() == threads * per_thread + 1);
  auto report = store->verify_audit_chain();
  REQUIRE(report.has_value());
  CHECK(report->intact);
  CHECK(report->records == threads * per_thread + 1);
}

TEST_CASE("two store objects on one file, as two processes would have, keep one chain") {
  STORE_BACKEND();
  auto first = backend.open();
  auto second = backend.open();
  std::atomic<int> failures{0};
  auto work = [&](Store& store) {
    for (int i = 0; i < 40; ++i)
      if (!store.append_audit(audit_entry(i))) ++failures;
  };
  std::thread a(work, std::ref(*first));
  std::thread b(work, std::ref(*second));
  std::thread c(work, std::ref(*first));
  a.join();
  b.join();
  c.join();
  CHECK(failures == 0);
  auto report = second->verify_audit_chain();
  REQUIRE(report.has_value());
  CHECK(report->intact);
  CHECK(report->records == 120);
}

// ---------------------------------------------------------------------------------------
// Administrative changes in the chain, and the revoke/release order
// ---------------------------------------------------------------------------------------

namespace {

rapidjson::Document parse_change(const AuditRecord& record) {
  rapidjson::Document doc;
  doc.Parse(record.entry.measurements.c_str());
  REQUIRE_FALSE(doc.HasParseError());
  REQUIRE(doc.IsObject());
  return doc;
}

}  // namespace

TEST_CASE("every change to an image is an admin record in the chain: who, which action, what changed") {
  STORE_BACKEND();
  auto store = backend.open();
  const AdminActor alice{1001, 777};
  auto enrolled = store->enroll(image_record("img-a"), disk_key_for(1), alice);
  REQUIRE(enrolled.has_value());
  CHECK(enrolled->sequence == 1);
  CHECK(enrolled->entry.decision == "admin");
  CHECK(enrolled->entry.reason == "enroll");
  CHECK(enrolled->entry.image_id == "img-a");
  CHECK(enrolled->entry.peer == "uid=1001 pid=777");
  {
    auto change = parse_change(*enrolled);
    CHECK(change["uid"].GetInt64() == 1001);
    CHECK(change["pid"].GetInt64() == 777);
    CHECK(std::string(change["luks_uuid"].GetString()) == image_record("img-a").luks_uuid);
    CHECK(change["reference"]["sets"].Size() == example_reference("img-a").sets.size());
    // The key never enters the record, wrapped or not.
    CHECK(enrolled->entry.measurements.find(hex_encode(disk_key_for(1).view())) == std::string::npos);
  }

  auto added_reference = example_reference("img-a");
  auto extra = added_reference.sets.front();
  extra.name = "kernel-added";
  added_reference.sets.push_back(extra);
  auto added = store->update_reference("img-a", added_reference, operator_actor);
  REQUIRE(added.has_value());
  CHECK(added->entry.reason == "add-reference");
  CHECK(added->entry.peer == "uid=0 pid=4242");
  {
    auto change = parse_change(*added);
    REQUIRE(change["added"].Size() == 1);
    CHECK(std::string(change["added"][0].GetString()) == "kernel-added");
    CHECK(change["retired"].Size() == 0);
    // The content of what was added, not only its name.
    bool found = false;
    for (const auto& set : change["reference"]["sets"].GetArray())
      found = found || std::string(set["name"].GetString()) == "kernel-added";
    CHECK(found);
  }
  REQUIRE(reference::retire_reference_set(added_reference, "kernel-added").has_value());
  auto retired = store->update_reference("img-a", added_reference, operator_actor);
  REQUIRE(retired.has_value());
  CHECK(retired->entry.reason == "retire-reference");
  CHECK(std::string(parse_change(*retired)["retired"][0].GetString()) == "kernel-added");

  auto revoked = store->set_status("img-a", ImageStatus::revoked, alice);
  REQUIRE(revoked.has_value());
  CHECK(revoked->entry.reason == "revoke");
  CHECK(std::string(parse_change(*revoked)["previous_status"].GetString()) == "active");
  CHECK(std::string(parse_change(*revoked)["status"].GetString()) == "revoked");
  auto reinstated = store->set_status("img-a", ImageStatus::active, alice);
  REQUIRE(reinstated.has_value());
  CHECK(reinstated->entry.reason == "reinstate");
  CHECK(reinstated->sequence == 5);

  // A refused change leaves no record.
  CHECK_FALSE(store->enroll(image_record("img-a"), disk_key_for(1), alice).has_value());
  CHECK_FALSE(store->set_status("img-x", ImageStatus::revoked, alice).has_value());
  auto report = store->verify_audit_chain();
  CHECK(report->intact);
  CHECK(report->records == 5);
}

TEST_CASE("a release is withheld by a revoke committed before it, and recorded before one committed after it") {
  STORE_BACKEND();
  auto store = backend.open();
  REQUIRE(store->enroll(image_record("img-a"), disk_key_for(1), operator_actor).has_value());

  auto released = store->append_release(release_entry(1));
  REQUIRE(released.has_value());
  REQUIRE(released->has_value());
  CHECK((*released)->record.sequence == 2);
  CHECK(equal_constant_time((*released)->disk_key.view(), disk_key_for(1).view()));
  auto revoked = store->set_status("img-a", ImageStatus::revoked, operator_actor);
  REQUIRE(revoked.has_value());
  CHECK(revoked->sequence == 3);

  // Revoked first: no key, and nothing written (the caller records the denial).
  auto withheld = store->append_release(release_entry(2));
  REQUIRE(withheld.has_value());
  CHECK_FALSE(withheld->has_value());
  CHECK(store->verify_audit_chain()->records == 3);
  CHECK(store->append_release(release_entry(3, "img-unknown")).error().code == Errc::not_found);
}

TEST_CASE("releases racing revokes in threads: the chain never shows a release while the image is revoked") {
  STORE_BACKEND();
  auto store = backend.open();
  REQUIRE(store->enroll(image_record("img-a"), disk_key_for(1), operator_actor).has_value());
  std::atomic<int> failures{0};
  std::atomic<int> releases{0};
  std::atomic<int> withheld{0};
  std::atomic<bool> toggled{false};
  std::thread toggler([&] {
    // Ends active, so the releases after it succeed.
    for (int i = 0; i < 40; ++i) {
      if (!store->set_status("img-a", i % 2 == 0 ? ImageStatus::revoked : ImageStatus::active, operator_actor))
        ++failures;
      std::this_thread::yield();
    }
    toggled = true;
  });
  std::vector<std::thread> releasers;
  for (int t = 0; t < 2; ++t)
    releasers.emplace_back([&, t] {
      // Until the toggling is over (bounded by it), then a few more.
      for (int i = 0, after = 0; after < 5 && i < 100000; ++i) {
        if (toggled) ++after;
        auto released = store->append_release(release_entry(t * 100000 + i));
        if (!released) ++failures;
        else if (*released) ++releases;
        else ++withheld;
        std::this_thread::yield();
      }
    });
  toggler.join();
  for (auto& thread : releasers) thread.join();
  CHECK(failures == 0);
  INFO("releases " << releases << ", withheld " << withheld);
  CHECK(releases > 0);

  // Replay the chain: the status its admin records establish must be active at every release.
  auto records = store->query_audit(audit_query(10000));
  REQUIRE(records.has_value());
  std::reverse(records->begin(), records->end());
  std::string status = "active";
  int seen_releases = 0;
  for (const auto& record : *records) {
    if (record.entry.reason == "revoke") status = "revoked";
    if (record.entry.reason == "reinstate") status = "active";
    if (record.entry.decision == "release") {
      ++seen_releases;
      INFO("release at record " << record.sequence);
      CHECK(status == "active");
    }
  }
  CHECK(seen_releases == releases);
  CHECK(store->verify_audit_chain()->intact);
}

// ---------------------------------------------------------------------------------------
// A store written before the chain was keyed (schema version 1)
// ---------------------------------------------------------------------------------------

namespace {

// The schema as version 1 of the store created it, and records as it wrote them (unkeyed).
void write_version_1_store(const std::string& path, int records) {
  { std::ofstream create(path); }
  REQUIRE(::chmod(path.c_str(), 0600) == 0);
  tamper(path, R"sql(
CREATE TABLE schema_version (version INTEGER NOT NULL) STRICT;
INSERT INTO schema_version (version) VALUES (1);
CREATE TABLE images (
  id TEXT PRIMARY KEY NOT NULL, luks_uuid TEXT NOT NULL,
  status TEXT NOT NULL CHECK (status IN ('active', 'revoked')), wrapped_key BLOB NOT NULL,
  reference_json TEXT NOT NULL, created_at TEXT NOT NULL, updated_at TEXT NOT NULL
) STRICT;
CREATE TABLE audit (
  sequence INTEGER PRIMARY KEY CHECK (sequence > 0), time TEXT NOT NULL, image_id TEXT NOT NULL,
  peer TEXT NOT NULL, token_digest TEXT NOT NULL, measurements TEXT NOT NULL, decision TEXT NOT NULL,
  reason TEXT NOT NULL, checks TEXT NOT NULL, previous_hash TEXT NOT NULL, hash TEXT NOT NULL
) STRICT;
CREATE INDEX audit_by_image ON audit (image_id, sequence);
CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
  BEGIN SELECT RAISE(ABORT, 'audit records are append-only'); END;
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
  BEGIN SELECT RAISE(ABORT, 'audit records are append-only'); END;
)sql");
  const Bytes wrapped = test_kek().wrap("img-a", disk_key_for(1));
  std::string sql = "INSERT INTO images VALUES ('img-a', 'uuid-a', 'active', x'" + hex_encode(wrapped) + "', '" +
                    canonical(example_reference("img-a")) + "', '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z');";
  std::string previous(64, '0');
  for (int i = 1; i <= records; ++i) {
    AuditRecord r;
    r.sequence = i;
    r.time = "2026-01-01T00:00:0" + std::to_string(i % 10) + "Z";
    r.entry = i % 2 == 0 ? release_entry(i) : audit_entry(i);
    r.previous_hash = previous;
    r.hash = independent_hash(r);
    previous = r.hash;
    sql += "INSERT INTO audit VALUES (" + std::to_string(i) + ", '" + r.time + "', '" + r.entry.image_id + "', '" +
           r.entry.peer + "', '" + r.entry.token_digest + "', '" + r.entry.measurements + "', '" + r.entry.decision +
           "', '" + r.entry.reason + "', '" + r.entry.checks + "', '" + r.previous_hash + "', '" + r.hash + "');";
  }
  tamper(path, sql);
}

}  // namespace

TEST_CASE("a version 1 store is upgraded: its unkeyed records are kept and sealed by the first keyed record") {
  TempDir dir;
  const std::string path = dir.file("fde.db");
  write_version_1_store(path, 6);
  const std::string old_head = [&] {
    sqlite3* db = nullptr;
    REQUIRE(sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) == SQLITE_OK);
    sqlite3_stmt* statement = nullptr;
    REQUIRE(sqlite3_prepare_v2(db, "SELECT hash FROM audit WHERE sequence = 6", -1, &statement, nullptr) == SQLITE_OK);
    REQUIRE(sqlite3_step(statement) == SQLITE_ROW);
    std::string hash(reinterpret_cast<const char*>(sqlite3_column_text(statement, 0)));
    sqlite3_finalize(statement);
    sqlite3_close(db);
    return hash;
  }();

  auto store = open_store(path);
  auto records = store->query_audit(audit_query(100));
  REQUIRE(records.has_value());
  REQUIRE(records->size() == 7);
  std::reverse(records->begin(), records->end());
  for (int i = 0; i < 6; ++i) {
    CHECK((*records)[static_cast<std::size_t>(i)].format == audit_format_unkeyed);
    CHECK((*records)[static_cast<std::size_t>(i)].hash == independent_hash((*records)[static_cast<std::size_t>(i)]));
  }
  const AuditRecord& seal = (*records)[6];
  CHECK(seal.sequence == 7);
  CHECK(seal.format == audit_format_keyed);
  CHECK(seal.entry.decision == "admin");
  CHECK(seal.entry.reason == "seal-unkeyed-records");
  CHECK(seal.previous_hash == old_head);
  CHECK(seal.hash == independent_mac(test_kek(), seal));
  auto change = parse_change(seal);
  CHECK(change["unkeyed_records"].GetInt64() == 6);
  CHECK(std::string(change["unkeyed_head"].GetString()) == old_head);
  CHECK(std::string(change["unkeyed_chain"].GetString()) == "intact");

  auto report = store->verify_audit_chain();
  REQUIRE(report.has_value());
  CHECK(report->intact);
  CHECK(report->records == 7);
  CHECK(report->unkeyed_records == 6);
  // The image still releases, and the chain goes on keyed.
  auto released = store->append_release(release_entry(8));
  REQUIRE(released.has_value());
  REQUIRE(released->has_value());
  CHECK((*released)->record.sequence == 8);
  CHECK((*released)->record.previous_hash == seal.hash);
  CHECK(equal_constant_time((*released)->disk_key.view(), disk_key_for(1).view()));
  CHECK(store->verify_audit_chain()->intact);

  SECTION("reopening does not seal twice") {
    store.reset();
    auto again = open_store(path);
    CHECK(again->verify_audit_chain()->records == 8);
    CHECK(again->verify_audit_chain()->intact);
  }
  SECTION("an unkeyed record edited after the upgrade breaks the seal, even with recomputed hashes") {
    rewrite_chain(*store, Backend::sqlite_file(path), 3, [](AuditRecord& r) { r.entry.reason = "nothing to see"; }, audit_format_unkeyed, 6);
    auto broken = store->verify_audit_chain();
    REQUIRE(broken.has_value());
    CHECK_FALSE(broken->intact);
    // Records 3..6 recompute fine; the keyed seal's link to record 6 does not.
    CHECK(broken->first_bad_sequence == 7);
    CHECK(broken->problem.find("previous_hash") != std::string::npos);
  }
  SECTION("the unkeyed records and the seal rewritten: the seal's MAC cannot be recomputed") {
    rewrite_chain(*store, Backend::sqlite_file(path), 3, [](AuditRecord& r) { r.entry.reason = "nothing to see"; }, audit_format_unkeyed, 6);
    rewrite_chain(*store, Backend::sqlite_file(path), 7, [](AuditRecord&) {}, audit_format_keyed, 7);
    CHECK(store->verify_audit_chain()->first_bad_sequence == 7);
  }
  SECTION("the keyed records dropped so the unkeyed ones pass as a version 1 store") {
    tamper(path, "DROP TRIGGER audit_no_delete; DELETE FROM audit WHERE sequence > 6");
    auto broken = store->verify_audit_chain();
    REQUIRE(broken.has_value());
    CHECK_FALSE(broken->intact);
    CHECK(broken->first_bad_sequence == 7);
  }
}

TEST_CASE("a version 1 store with no audit records is upgraded without a seal") {
  TempDir dir;
  const std::string path = dir.file("fde.db");
  write_version_1_store(path, 0);
  auto store = open_store(path);
  CHECK(store->verify_audit_chain()->records == 0);
  REQUIRE(store->append_audit(audit_entry(1)).has_value());
  auto report = store->verify_audit_chain();
  CHECK(report->intact);
  CHECK(report->unkeyed_records == 0);
}

TEST_CASE("a version 1 store whose chain was already broken is sealed as found, and still reported broken") {
  TempDir dir;
  const std::string path = dir.file("fde.db");
  write_version_1_store(path, 4);
  tamper(path, "DROP TRIGGER audit_no_update; UPDATE audit SET reason = 'edited' WHERE sequence = 2");
  auto store = open_store(path);
  auto seal = store->query_audit(audit_query(1));
  REQUIRE(seal->size() == 1);
  CHECK(seal->front().entry.reason == "seal-unkeyed-records");
  CHECK(parse_change(seal->front())["unkeyed_chain"].GetString() == std::string("record 2: hash does not match its contents"));
  auto report = store->verify_audit_chain();
  CHECK_FALSE(report->intact);
  CHECK(report->first_bad_sequence == 2);
}

// ---------------------------------------------------------------------------------------
// PostgreSQL: schema versions, several replicas on one database, the server going away
// ---------------------------------------------------------------------------------------

TEST_CASE("both backends refuse a database whose schema is newer than the program") {
  STORE_BACKEND();
  { backend.open(); }
  backend.tamper("UPDATE schema_version SET version = 99");
  auto store = backend.try_open();
  REQUIRE_FALSE(store.has_value());
  CHECK(store.error().code == Errc::unsupported);
  CHECK(store.error().message.find("schema version 99 is newer") != std::string::npos);
}

TEST_CASE("postgresql: replicas starting together create the schema once") {
  const Backend backend("postgresql");
  std::vector<std::unique_ptr<Store>> stores(4);
  std::vector<std::string> errors(4);
  std::vector<std::thread> starts;
  for (std::size_t i = 0; i < stores.size(); ++i)
    starts.emplace_back([&, i] {
      auto store = backend.try_open();
      if (store) stores[i] = std::move(*store);
      else errors[i] = store.error().describe();
    });
  for (auto& t : starts) t.join();
  for (std::size_t i = 0; i < stores.size(); ++i) {
    INFO(errors[i]);
    CHECK(stores[i] != nullptr);
  }
}

TEST_CASE("postgresql: the same image enrolled through two replicas at once leaves one record") {
  const Backend backend("postgresql");
  auto a = backend.open();
  auto b = backend.open();
  std::atomic<int> enrolled{0};
  std::atomic<int> refused{0};
  auto enroll = [&](Store& store, int seed) {
    auto record = store.enroll(image_record("img-a"), disk_key_for(seed), operator_actor);
    if (record) ++enrolled;
    else if (record.error().code == Errc::invalid_argument && record.error().message.find("already enrolled") != std::string::npos)
      ++refused;
  };
  std::thread first(enroll, std::ref(*a), 1);
  std::thread second(enroll, std::ref(*b), 2);
  first.join();
  second.join();
  CHECK(enrolled == 1);
  CHECK(refused == 1);
  CHECK(a->list_images()->size() == 1);
  auto records = b->query_audit(audit_query(10, std::nullopt, std::string("admin")));
  REQUIRE(records.has_value());
  CHECK(records->size() == 1);
  CHECK(b->verify_audit_chain()->intact);
}

TEST_CASE("postgresql: a revoke through one replica withholds the key on another at its next decision") {
  const Backend backend("postgresql");
  auto a = backend.open();
  auto b = backend.open();
  REQUIRE(a->enroll(image_record("img-a"), disk_key_for(1), operator_actor).has_value());
  REQUIRE(b->append_release(release_entry(1)).value_or(std::nullopt).has_value());
  REQUIRE(a->set_status("img-a", ImageStatus::revoked, operator_actor).has_value());
  auto release = b->append_release(release_entry(2));
  REQUIRE(release.has_value());
  CHECK_FALSE(release->has_value());
  CHECK_FALSE(b->disk_key("img-a")->has_value());
}

TEST_CASE("postgresql: three replicas appending at once keep one chain, no fork and no gap") {
  const Backend backend("postgresql");
  std::vector<std::unique_ptr<Store>> replicas;
  for (int i = 0; i < 3; ++i) replicas.push_back(backend.open());
  REQUIRE(replicas[0]->enroll(image_record("img-a"), disk_key_for(1), operator_actor).has_value());
  std::atomic<int> failures{0};
  std::vector<std::thread> workers;
  for (int t = 0; t < 6; ++t)
    workers.emplace_back([&, t] {
      Store& store = *replicas[static_cast<std::size_t>(t % 3)];
      for (int i = 0; i < 25; ++i) {
        bool ok = i % 2 == 0 ? store.append_audit(audit_entry(t * 100 + i)).has_value()
                             : store.append_release(release_entry(t * 100 + i)).value_or(std::nullopt).has_value();
        if (!ok) ++failures;
      }
    });
  for (auto& w : workers) w.join();
  CHECK(failures == 0);
  for (auto& replica : replicas) {
    auto report = replica->verify_audit_chain();
    REQUIRE(report.has_value());
    CHECK(report->intact);
    CHECK(report->records == 6 * 25 + 1);
  }
}

TEST_CASE("postgresql: a pool of two connections serves eight threads, waiting its turn") {
  const Backend backend("postgresql");
  PostgresOptions options;
  auto& server = testing::PostgresServer::shared();
  const std::string database = server.create_database();
  options.conninfo = server.conninfo(database);
  options.password = SecretBytes::copy_of(as_bytes(std::string_view(testing::PostgresServer::password)));
  options.pool_size = 2;
  auto store = open_postgres_store(std::move(options), test_kek());
  REQUIRE(store.has_value());
  std::atomic<int> failures{0};
  std::vector<std::thread> workers;
  for (int t = 0; t < 8; ++t)
    workers.emplace_back([&, t] {
      for (int i = 0; i < 10; ++i)
        if (!(*store)->append_audit(audit_entry(t * 100 + i))) ++failures;
    });
  for (auto& w : workers) w.join();
  CHECK(failures == 0);
  CHECK((*store)->verify_audit_chain()->records == 80);
  // At most two sessions of this program were ever open at once; now they idle.
  const std::string count_sql = "DO $$ BEGIN IF (SELECT count(*) FROM pg_stat_activity WHERE application_name = "
                                "'fde-verifierd' AND datname = '" + database + "') > 2 THEN RAISE EXCEPTION "
                                "'too many connections'; END IF; END $$";
  CHECK(server.try_execute(database, count_sql).empty());
  CHECK_FALSE(open_postgres_store(PostgresOptions{server.conninfo(database), {}, 0, 5}, test_kek()).has_value());
}

TEST_CASE("postgresql: a wrong password or an unreachable server is a clear error") {
  auto& server = testing::PostgresServer::shared();
  const std::string database = server.create_database();
  PostgresOptions wrong;
  wrong.conninfo = server.conninfo(database);
  wrong.password = SecretBytes::copy_of(as_bytes(std::string_view("not the password")));
  auto refused = open_postgres_store(std::move(wrong), test_kek());
  REQUIRE_FALSE(refused.has_value());
  CHECK(refused.error().code == Errc::io);
  CHECK(refused.error().message.find("cannot connect") != std::string::npos);
  CHECK(refused.error().message.find("not the password") == std::string::npos);
  PostgresOptions nowhere;
  nowhere.conninfo = "host=/nonexistent-fde-socket-dir dbname=x user=y";
  auto missing = open_postgres_store(std::move(nowhere), test_kek());
  REQUIRE_FALSE(missing.has_value());
  CHECK(missing.error().message.find("cannot connect") != std::string::npos);
  CHECK_FALSE(open_postgres_store(PostgresOptions{}, test_kek()).has_value());
  PostgresOptions no_kek;
  no_kek.conninfo = server.conninfo(database);
  CHECK(open_postgres_store(std::move(no_kek), KeyEncryptionKey()).error().code == Errc::invalid_argument);
}

TEST_CASE("postgresql: the server stopped gives errors, and the same store recovers when it returns") {
  testing::PostgresServer server;  // its own server: this test stops it
  const std::string database = server.create_database();
  PostgresOptions options;
  options.conninfo = server.conninfo(database);
  options.password = SecretBytes::copy_of(as_bytes(std::string_view(testing::PostgresServer::password)));
  options.pool_size = 3;
  auto opened = open_postgres_store(std::move(options), test_kek());
  REQUIRE(opened.has_value());
  Store& store = **opened;
  REQUIRE(store.enroll(image_record("img-a"), disk_key_for(1), operator_actor).has_value());
  // Fill the pool with idle connections, which the restart will cut.
  std::vector<std::thread> warm;
  for (int i = 0; i < 3; ++i) warm.emplace_back([&store, i] { (void)store.append_audit(audit_entry(i)); });
  for (auto& t : warm) t.join();

  server.stop();
  CHECK_FALSE(store.ping().has_value());
  auto release = store.append_release(release_entry(1));
  REQUIRE_FALSE(release.has_value());
  CHECK(release.error().code == Errc::io);
  CHECK(release.error().message.find("postgresql store") != std::string::npos);
  CHECK_FALSE(store.append_audit(audit_entry(2)).has_value());

  server.start();
  // The first request after the restart already succeeds: a lone read or a BEGIN on a
  // connection found cut is resent on a fresh one.
  CHECK(store.ping().has_value());
  auto after = store.append_release(release_entry(3));
  REQUIRE(after.has_value());
  CHECK(after->has_value());
  auto report = store.verify_audit_chain();
  REQUIRE(report.has_value());
  CHECK(report->intact);
  CHECK(report->records == 5);  // enroll, three denials, the release after the restart
}

TEST_CASE("copy_store moves a store from SQLite to PostgreSQL and back: keys, status, chain and head") {
  const Backend sqlite("sqlite");
  const Backend postgresql("postgresql");
  const Backend back("sqlite");
  auto original = sqlite.open();
  REQUIRE(original->enroll(image_record("img-a"), disk_key_for(1), operator_actor).has_value());
  REQUIRE(original->enroll(image_record("img-b"), disk_key_for(2), operator_actor).has_value());
  REQUIRE(original->append_release(release_entry(1)).value_or(std::nullopt).has_value());
  append_records(*original, 5);
  AuditEntry odd = audit_entry(9, std::string("img-\0\xff", 6));  // bytes PostgreSQL text would refuse
  REQUIRE(original->append_audit(odd).has_value());
  REQUIRE(original->set_status("img-b", ImageStatus::revoked, operator_actor).has_value());
  const AuditHead head = original->verify_audit_chain()->head;

  auto middle = postgresql.open();
  auto there = copy_store(*original, *middle);
  INFO((there ? std::string() : there.error().describe()));
  REQUIRE(there.has_value());
  CHECK(there->images == 2);
  CHECK(there->active_keys_checked == 1);
  CHECK(there->records == head.sequence);
  CHECK(there->head.hash == head.hash);
  // The copy is a working store: it releases, withholds the revoked image and chains on.
  auto release = middle->append_release(release_entry(20));
  REQUIRE(release.has_value());
  REQUIRE(release->has_value());
  CHECK(equal_constant_time((*release)->disk_key.view(), disk_key_for(1).view()));
  CHECK(release->value().record.previous_hash == head.hash);
  CHECK_FALSE(middle->append_release(release_entry(21, "img-b"))->has_value());
  auto odd_back = middle->query_audit(audit_query(1, std::string("img-\0\xff", 6)));
  REQUIRE(odd_back.has_value());
  REQUIRE(odd_back->size() == 1);
  CHECK(odd_back->front().entry.image_id == odd.image_id);

  auto last = back.open();
  auto home = copy_store(*middle, *last);
  REQUIRE(home.has_value());
  CHECK(home->records == head.sequence + 1);
  CHECK(last->verify_audit_chain(head)->intact);
  CHECK(equal_constant_time(last->disk_key("img-a")->value().view(), disk_key_for(1).view()));
  CHECK(last->find_image("img-b")->value().status == ImageStatus::revoked);

  // A target that is not empty is refused, and so is a source whose chain is broken.
  auto again = copy_store(*original, *middle);
  REQUIRE_FALSE(again.has_value());
  CHECK(again.error().message.find("empty store") != std::string::npos);
  sqlite.tamper("DROP TRIGGER audit_no_update; UPDATE audit SET reason = 'edited' WHERE sequence = 3");
  auto fresh = Backend("postgresql").open();
  auto broken = copy_store(*original, *fresh);
  REQUIRE_FALSE(broken.has_value());
  CHECK(broken.error().message.find("does not verify") != std::string::npos);
  CHECK(fresh->verify_audit_chain()->records == 0);
}

// --- the store's lifecycle: KEK check, delete, backup and restore, KEK rotation ---

namespace {

// A release of `image_id` through the release path, which unwraps the key and records it.
bool releases(Store& store, const std::string& image_id, int seed) {
  auto release = store.append_release(release_entry(seed, image_id));
  if (!release || !*release) return false;
  return equal_constant_time((*release)->disk_key.view(), disk_key_for(seed).view());
}

void enroll_images(Store& store, std::initializer_list<std::pair<const char*, int>> images) {
  for (const auto& [id, seed] : images) REQUIRE(store.enroll(image_record(id), disk_key_for(seed), operator_actor).has_value());
}

}  // namespace

TEST_CASE("a KEK that is not the store's is refused at open, before anything is served") {
  TempDir dir;
  const std::string path = dir.file("fde.db");
  { enroll_images(*open_store(path), {{"img-a", 1}}); }
  SECTION("with the check value written when the store was created") {
    auto wrong = open_sqlite_store(path, test_kek(0x77));
    REQUIRE_FALSE(wrong.has_value());
    CHECK(wrong.error().code == Errc::verification_failed);
    CHECK(wrong.error().message.find("KEK check value differs") != std::string::npos);
  }
  SECTION("a store from before the check value: one key must unwrap, then the value is written") {
    tamper(path, "DELETE FROM store_meta");
    auto wrong = open_sqlite_store(path, test_kek(0x77));
    REQUIRE_FALSE(wrong.has_value());
    CHECK(wrong.error().message.find("disk key of image img-a does not unwrap") != std::string::npos);
    { auto right = open_store(path); CHECK(releases(*right, "img-a", 1)); }
    // The right KEK wrote the check value on that open.
    auto again = open_sqlite_store(path, test_kek(0x77));
    REQUIRE_FALSE(again.has_value());
    CHECK(again.error().message.find("KEK check value differs") != std::string::npos);
  }
  SECTION("the right KEK opens it again") {
    auto store = open_store(path);
    CHECK(releases(*store, "img-a", 1));
  }
}

TEST_CASE("an empty store opens with its KEK and then refuses any other") {
  TempDir dir;
  const std::string path = dir.file("fde.db");
  { open_store(path); }
  { open_store(path); }
  CHECK_FALSE(open_sqlite_store(path, test_kek(0x01)).has_value());
}

TEST_CASE("a deleted image's key is gone, the deletion is audited, and the id can be enrolled again") {
  TempDir dir;
  const std::string path = dir.file("fde.db");
  auto store = open_store(path);
  enroll_images(*store, {{"img-a", 1}, {"img-b", 2}});
  const AdminActor remover{0, 777};
  auto deleted = store->delete_image("img-a", remover);
  REQUIRE(deleted.has_value());
  CHECK(deleted->entry.decision == "admin");
  CHECK(deleted->entry.reason == "delete");
  CHECK(deleted->entry.image_id == "img-a");
  CHECK(deleted->entry.peer == "uid=0 pid=777");
  CHECK(deleted->entry.measurements.find("\"sets\":[") != std::string::npos);
  CHECK_FALSE(store->find_image("img-a")->has_value());
  CHECK(store->disk_key("img-a").error().code == Errc::not_found);
  CHECK(store->delete_image("img-a", remover).error().code == Errc::not_found);
  // Neither the key nor its wrapped form is left in the files (the WAL was checkpointed).
  store.reset();
  store = open_store(path);
  CHECK(releases(*store, "img-b", 2));
  // Enrolled again under the same id with a new key: the new key releases.
  REQUIRE(store->enroll(image_record("img-a"), disk_key_for(9), operator_actor).has_value());
  CHECK(releases(*store, "img-a", 9));
  auto report = store->verify_audit_chain();
  REQUIRE(report.has_value());
  CHECK(report->intact);
}

TEST_CASE("a backup taken while releases go on restores every key it holds and an intact chain") {
  TempDir dir;
  const std::string path = dir.file("fde.db");
  const std::string copy = dir.file("backup.db");
  AuditHead backup_head;
  {
    auto store = open_store(path);
    enroll_images(*store, {{"img-a", 1}, {"img-b", 2}, {"img-c", 3}});
    // Releases from another thread while the backup runs: they neither block nor break it.
    std::atomic<bool> stop{false};
    std::atomic<int> released{0};
    std::thread attestations([&] {
      while (!stop.load())
        if (releases(*store, "img-b", 2)) ++released;
    });
    // The releasing thread is under way before the backup starts (on a loaded machine it
    // might otherwise not run at all before the backup ends).
    const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (released.load() == 0 && std::chrono::steady_clock::now() < give_up) std::this_thread::yield();
    REQUIRE(released.load() > 0);
    auto report = store->backup(copy);
    stop = true;
    attestations.join();
    INFO((report ? std::string() : report.error().describe()));
    REQUIRE(report.has_value());
    CHECK(report->images == 3);
    backup_head = report->audit_head;
    CHECK(backup_head.sequence >= 3);
    struct stat st {};
    REQUIRE(::stat(copy.c_str(), &st) == 0);
    CHECK((st.st_mode & 0777) == 0600);
    CHECK(report->bytes == static_cast<std::int64_t>(st.st_size));
    // One self-contained file: nothing of it is left in a -wal beside it.
    CHECK_FALSE(std::filesystem::exists(copy + "-wal"));
    // More changes after the backup: one image deleted, one enrolled, more records.
    REQUIRE(store->delete_image("img-a", operator_actor).has_value());
    enroll_images(*store, {{"img-d", 4}});
    append_records(*store, 3);
  }
  // The documented restore: the daemon stopped, the copy put in place of the database (and
  // the old -wal and -shm removed), the daemon started with the same KEK.
  std::filesystem::remove(path + "-wal");
  std::filesystem::remove(path + "-shm");
  std::filesystem::copy_file(copy, path, std::filesystem::copy_options::overwrite_existing);
  auto restored = open_store(path);
  for (const auto& [id, seed] : {std::pair{"img-a", 1}, {"img-b", 2}, {"img-c", 3}}) CHECK(releases(*restored, id, seed));
  CHECK_FALSE(restored->find_image("img-d")->has_value());
  auto report = restored->verify_audit_chain(backup_head);
  REQUIRE(report.has_value());
  CHECK(report->intact);
  CHECK(report->expected_head_matched);
  // And only with the same KEK.
  restored.reset();
  CHECK_FALSE(open_sqlite_store(path, test_kek(0x77)).has_value());
}

TEST_CASE("a backup never replaces a file and never follows a symlink") {
  TempDir dir;
  auto store = open_store(dir.file("fde.db"));
  const std::string existing = dir.file("existing");
  { std::ofstream(existing) << "keep me"; }
  auto over = store->backup(existing);
  REQUIRE_FALSE(over.has_value());
  CHECK(file_bytes(existing) == Bytes{'k', 'e', 'e', 'p', ' ', 'm', 'e'});
  const std::string target = dir.file("target");
  const std::string link = dir.file("link");
  std::filesystem::create_symlink(target, link);
  CHECK_FALSE(store->backup(link).has_value());
  CHECK_FALSE(std::filesystem::exists(target));
  CHECK_FALSE(store->backup("relative.db").has_value());
}

TEST_CASE("a KEK rotation re-wraps every key, keeps the chain verifiable across it, and retires the old KEK") {
  TempDir dir;
  const std::string path = dir.file("fde.db");
  {
    auto store = open_store(path);
    enroll_images(*store, {{"img-a", 1}, {"img-b", 2}, {"img-c", 3}});
    append_records(*store, 2);
    auto rotation = store->rotate_kek(test_kek(0x11), operator_actor);
    INFO((rotation ? std::string() : rotation.error().describe()));
    REQUIRE(rotation.has_value());
    CHECK(rotation->images == 3);
    CHECK(rotation->key_epoch == 1);
    CHECK(rotation->record.entry.reason == "rotate-kek");
    // The rotation record is MAC'd under the old KEK's chain key, the records after it under the new one.
    CHECK(rotation->record.hash == independent_mac(test_kek(0x5c), rotation->record));
    CHECK(releases(*store, "img-a", 1));
    auto after = store->query_audit(audit_query(1));
    REQUIRE(after.has_value());
    CHECK(after->front().hash == independent_mac(test_kek(0x11), after->front()));
    CHECK(store->verify_audit_chain()->intact);
    // The KEK in use is refused as the new one; a third KEK rotates again.
    CHECK_FALSE(store->rotate_kek(test_kek(0x11), operator_actor).has_value());
    auto second = store->rotate_kek(test_kek(0x22), operator_actor);
    REQUIRE(second.has_value());
    CHECK(second->key_epoch == 2);
    CHECK(releases(*store, "img-c", 3));
  }
  // The old KEKs no longer open the store; the newest does, and every key and record checks.
  for (std::uint8_t old_kek : {std::uint8_t{0x5c}, std::uint8_t{0x11}}) {
    auto refused = open_sqlite_store(path, test_kek(old_kek));
    REQUIRE_FALSE(refused.has_value());
    CHECK(refused.error().code == Errc::verification_failed);
  }
  auto store = open_store(path, 0x22);
  for (const auto& [id, seed] : {std::pair{"img-a", 1}, {"img-b", 2}, {"img-c", 3}}) CHECK(releases(*store, id, seed));
  auto report = store->verify_audit_chain();
  REQUIRE(report.has_value());
  INFO(report->problem);
  CHECK(report->intact);
  SECTION("the records after a rotation removed from the end are found") {
    store.reset();
    tamper(path, "DROP TRIGGER audit_no_delete; DELETE FROM audit WHERE sequence > (SELECT max(sequence) FROM audit "
                 "WHERE reason = 'rotate-kek') - 1");
    auto truncated = open_store(path, 0x22);
    auto broken = truncated->verify_audit_chain();
    REQUIRE(broken.has_value());
    CHECK_FALSE(broken->intact);
    CHECK(broken->problem.find("KEK was rotated 2 times") != std::string::npos);
  }
}

TEST_CASE("a KEK rotation is refused on a broken chain and changes nothing") {
  TempDir dir;
  const std::string path = dir.file("fde.db");
  auto store = open_store(path);
  enroll_images(*store, {{"img-a", 1}});
  append_records(*store, 3);
  tamper(path, "DROP TRIGGER audit_no_update; UPDATE audit SET reason = 'edited' WHERE sequence = 2");
  auto refused = store->rotate_kek(test_kek(0x11), operator_actor);
  REQUIRE_FALSE(refused.has_value());
  CHECK(refused.error().code == Errc::verification_failed);
  store.reset();
  CHECK_FALSE(open_sqlite_store(path, test_kek(0x11)).has_value());
  auto reopened = open_store(path);
  CHECK(releases(*reopened, "img-a", 1));
}

TEST_CASE("--check-config's KEK check reads the store without writing anything beside it") {
  TempDir dir;
  const std::string path = dir.file("fde.db");
  CHECK(check_sqlite_store_kek(path, test_kek()).has_value());  // no store yet: created at start
  {
    auto store = open_store(path);
    enroll_images(*store, {{"img-a", 1}});
  }
  std::filesystem::remove(path + "-wal");
  std::filesystem::remove(path + "-shm");
  CHECK(check_sqlite_store_kek(path, test_kek()).has_value());
  auto wrong = check_sqlite_store_kek(path, test_kek(0x77));
  REQUIRE_FALSE(wrong.has_value());
  CHECK(wrong.error().code == Errc::verification_failed);
  CHECK_FALSE(std::filesystem::exists(path + "-wal"));
  CHECK_FALSE(std::filesystem::exists(path + "-shm"));
  // A store from before the check value: one disk key must unwrap.
  tamper(path, "DELETE FROM store_meta");
  std::filesystem::remove(path + "-wal");
  std::filesystem::remove(path + "-shm");
  CHECK(check_sqlite_store_kek(path, test_kek()).has_value());
  CHECK_FALSE(check_sqlite_store_kek(path, test_kek(0x77)).has_value());
  // Not a database at all.
  const std::string junk = dir.file("junk.db");
  { std::ofstream(junk) << std::string(4096, 'x'); }
  CHECK_FALSE(check_sqlite_store_kek(junk, test_kek()).has_value());
}

// --- PostgreSQL: the KEK check value, rotation with replicas running, backup, migration of a
// rotated store ---

TEST_CASE("postgresql: a store from before the check value is checked by one key, then gets its value") {
  const Backend backend("postgresql");
  { enroll_images(*backend.open(), {{"img-a", 1}}); }
  // As a database written by a version without the check value.
  backend.tamper("DELETE FROM store_meta");
  auto wrong = backend.try_open(0x77);
  REQUIRE_FALSE(wrong.has_value());
  CHECK(wrong.error().code == Errc::verification_failed);
  CHECK(wrong.error().message.find("disk key of image img-a does not unwrap") != std::string::npos);
  { auto right = backend.open(); CHECK(releases(*right, "img-a", 1)); }
  auto again = backend.try_open(0x77);
  REQUIRE_FALSE(again.has_value());
  CHECK(again.error().message.find("KEK check value differs") != std::string::npos);
}

TEST_CASE("postgresql: --check-config's KEK check reads the database and writes nothing") {
  const Backend backend("postgresql");
  // A database the daemon has not set up yet passes: the daemon creates the store.
  CHECK(check_postgres_store_kek(backend.postgres_options(), test_kek()).has_value());
  { enroll_images(*backend.open(), {{"img-a", 1}}); }
  CHECK(check_postgres_store_kek(backend.postgres_options(), test_kek()).has_value());
  auto wrong = check_postgres_store_kek(backend.postgres_options(), test_kek(0x77));
  REQUIRE_FALSE(wrong.has_value());
  CHECK(wrong.error().code == Errc::verification_failed);
  CHECK(wrong.error().message.find("would refuse to start") != std::string::npos);
  // Without a check value: one disk key must unwrap; and the check wrote none.
  backend.tamper("DELETE FROM store_meta");
  CHECK(check_postgres_store_kek(backend.postgres_options(), test_kek()).has_value());
  CHECK_FALSE(check_postgres_store_kek(backend.postgres_options(), test_kek(0x77)).has_value());
  CHECK(backend.try_sql("DO $$ BEGIN IF (SELECT count(*) FROM store_meta) <> 0 THEN RAISE EXCEPTION 'written'; END IF; END $$"));
  // A server that cannot be reached is an error, not a pass.
  PostgresOptions nowhere;
  nowhere.conninfo = "host=/nonexistent-fde-socket-dir dbname=none";
  nowhere.connect_timeout_seconds = 2;
  CHECK_FALSE(check_postgres_store_kek(std::move(nowhere), test_kek()).has_value());
}

TEST_CASE("postgresql: a KEK rotation through one replica re-wraps every key; a replica left with the old KEK refuses to write") {
  const Backend backend("postgresql");
  auto rotating = backend.open();
  auto stale = backend.open();  // a second replica on the same database, same KEK
  enroll_images(*rotating, {{"img-a", 1}, {"img-b", 2}, {"img-c", 3}});
  append_records(*stale, 2);
  CHECK(releases(*stale, "img-b", 2));

  auto rotation = rotating->rotate_kek(test_kek(0x11), operator_actor);
  INFO((rotation ? std::string() : rotation.error().describe()));
  REQUIRE(rotation.has_value());
  CHECK(rotation->images == 3);
  CHECK(rotation->key_epoch == 1);
  CHECK(rotation->record.entry.reason == "rotate-kek");
  CHECK(rotation->record.hash == independent_mac(test_kek(0x5c), rotation->record));
  CHECK(releases(*rotating, "img-a", 1));
  auto newest = rotating->query_audit(audit_query(1));
  REQUIRE(newest.has_value());
  CHECK(newest->front().hash == independent_mac(test_kek(0x11), newest->front()));

  // The replica still holding the old KEK: no release, no denial, no change is written (each
  // would be MAC'd under a retired key or wrap under a retired KEK), and it is not ready.
  auto release = stale->append_release(release_entry(7, "img-a"));
  REQUIRE_FALSE(release.has_value());
  CHECK(release.error().code == Errc::verification_failed);
  CHECK(release.error().message.find("KEK rotated through another replica") != std::string::npos);
  CHECK_FALSE(stale->append_audit(audit_entry(8)).has_value());
  CHECK_FALSE(stale->set_status("img-c", ImageStatus::revoked, operator_actor).has_value());
  CHECK_FALSE(stale->enroll(image_record("img-d"), disk_key_for(4), operator_actor).has_value());
  CHECK_FALSE(stale->ping().has_value());
  CHECK(rotating->ping().has_value());
  // Reads that need no key still work on it.
  CHECK(stale->find_image("img-a")->has_value());

  // A second rotation, then the chain checks across both from a fresh replica with the newest
  // KEK; the old KEKs no longer open the store.
  auto second = rotating->rotate_kek(test_kek(0x22), operator_actor);
  REQUIRE(second.has_value());
  CHECK(second->key_epoch == 2);
  CHECK_FALSE(rotating->rotate_kek(test_kek(0x22), operator_actor).has_value());
  for (std::uint8_t old_kek : {std::uint8_t{0x5c}, std::uint8_t{0x11}}) {
    auto refused = backend.try_open(old_kek);
    REQUIRE_FALSE(refused.has_value());
    CHECK(refused.error().code == Errc::verification_failed);
    CHECK_FALSE(check_postgres_store_kek(backend.postgres_options(), test_kek(old_kek)).has_value());
  }
  CHECK(check_postgres_store_kek(backend.postgres_options(), test_kek(0x22)).has_value());
  auto restarted = backend.open(0x22);
  for (const auto& [id, seed] : {std::pair{"img-a", 1}, {"img-b", 2}, {"img-c", 3}}) CHECK(releases(*restarted, id, seed));
  auto report = restarted->verify_audit_chain();
  REQUIRE(report.has_value());
  INFO(report->problem);
  CHECK(report->intact);
  CHECK(rotating->verify_audit_chain()->intact);
}

TEST_CASE("postgresql: a KEK rotation is refused on a broken chain and changes nothing") {
  const Backend backend("postgresql");
  auto store = backend.open();
  enroll_images(*store, {{"img-a", 1}});
  append_records(*store, 3);
  backend.tamper("DROP TRIGGER audit_no_update; UPDATE audit SET reason = 'edited' WHERE sequence = 2");
  auto refused = store->rotate_kek(test_kek(0x11), operator_actor);
  REQUIRE_FALSE(refused.has_value());
  CHECK(refused.error().code == Errc::verification_failed);
  CHECK_FALSE(backend.try_open(0x11).has_value());
  CHECK(releases(*store, "img-a", 1));
}

TEST_CASE("postgresql: a backup taken while releases go on is an SQLite store with every key and an intact chain") {
  const Backend backend("postgresql");
  TempDir dir;
  const std::string copy = dir.file("backup.db");
  auto store = backend.open();
  enroll_images(*store, {{"img-a", 1}, {"img-b", 2}});
  REQUIRE(store->rotate_kek(test_kek(0x11), operator_actor).has_value());  // the copy carries the key epochs
  enroll_images(*store, {{"img-c", 3}});
  std::atomic<bool> stop{false};
  std::atomic<int> released{0};
  auto other = backend.open(0x11);  // another replica releasing meanwhile
  std::thread attestations([&] {
    while (!stop.load())
      if (releases(*other, "img-b", 2)) ++released;
  });
  auto report = store->backup(copy);
  stop = true;
  attestations.join();
  INFO((report ? std::string() : report.error().describe()));
  REQUIRE(report.has_value());
  CHECK(report->images == 3);
  struct stat st {};
  REQUIRE(::stat(copy.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
  CHECK(report->bytes == static_cast<std::int64_t>(st.st_size));
  CHECK_FALSE(std::filesystem::exists(copy + "-wal"));
  CHECK_FALSE(contains(file_bytes(copy), disk_key_for(1).view()));
  // Only the current KEK opens the copy; it releases every key and its chain holds the head.
  CHECK_FALSE(open_sqlite_store(copy, test_kek(0x5c)).has_value());
  auto restored = open_store(copy, 0x11);
  for (const auto& [id, seed] : {std::pair{"img-a", 1}, {"img-b", 2}, {"img-c", 3}}) CHECK(releases(*restored, id, seed));
  auto verified = restored->verify_audit_chain(report->audit_head);
  REQUIRE(verified.has_value());
  INFO(verified->problem);
  CHECK(verified->intact);
  CHECK(verified->expected_head_matched);
  // Never over an existing file, never through a symlink, never a relative path.
  CHECK_FALSE(store->backup(copy).has_value());
  const std::string link = dir.file("link");
  std::filesystem::create_symlink(dir.file("target"), link);
  CHECK_FALSE(store->backup(link).has_value());
  CHECK_FALSE(std::filesystem::exists(dir.file("target")));
  CHECK_FALSE(store->backup("relative.db").has_value());
}

TEST_CASE("copy_store carries a rotated store's key epochs both ways: every key releases, every record checks") {
  const Backend sqlite("sqlite");
  const Backend postgresql("postgresql");
  const Backend back("sqlite");
  auto original = sqlite.open();
  enroll_images(*original, {{"img-a", 1}, {"img-b", 2}});
  append_records(*original, 2);
  REQUIRE(original->rotate_kek(test_kek(0x11), operator_actor).has_value());
  CHECK(releases(*original, "img-a", 1));
  REQUIRE(original->rotate_kek(test_kek(0x22), operator_actor).has_value());
  append_records(*original, 2);
  const AuditHead head = original->verify_audit_chain()->head;

  // The target opens with the current KEK (the source's): the older ones never open it.
  auto middle = postgresql.open(0x22);
  auto there = copy_store(*original, *middle);
  INFO((there ? std::string() : there.error().describe()));
  REQUIRE(there.has_value());
  CHECK(there->records == head.sequence);
  CHECK(there->head.hash == head.hash);
  auto in_postgres = middle->verify_audit_chain(head);
  REQUIRE(in_postgres.has_value());
  INFO(in_postgres->problem);
  CHECK(in_postgres->intact);
  CHECK(releases(*middle, "img-b", 2));
  // Rotated once more in PostgreSQL, then back into SQLite: three epochs carried.
  REQUIRE(middle->rotate_kek(test_kek(0x33), operator_actor).has_value());
  CHECK(releases(*middle, "img-a", 1));

  auto last = back.open(0x33);
  auto home = copy_store(*middle, *last);
  INFO((home ? std::string() : home.error().describe()));
  REQUIRE(home.has_value());
  auto in_sqlite = last->verify_audit_chain(head);
  REQUIRE(in_sqlite.has_value());
  INFO(in_sqlite->problem);
  CHECK(in_sqlite->intact);
  CHECK(in_sqlite->records == head.sequence + 3);  // a release, a rotation, a release
  for (const auto& [id, seed] : {std::pair{"img-a", 1}, {"img-b", 2}}) CHECK(releases(*last, id, seed));
  // And the copy rotates on.
  auto fourth = last->rotate_kek(test_kek(0x44), operator_actor);
  REQUIRE(fourth.has_value());
  CHECK(fourth->key_epoch == 4);
  CHECK(last->verify_audit_chain()->intact);
}

// Group commit (SQLite): the sync seam below stands for fdatasync; it really syncs.
namespace {

struct SyncProbe {
  std::atomic<int> calls{0};
  std::atomic<int> fail_errno{0};      // non-zero: the next syncs fail with it
  std::chrono::milliseconds delay{0};  // each sync takes at least this long
  // While `hold` is set, a sync waits until it is cleared (bounded).
  std::mutex mutex;
  std::condition_variable changed;
  bool hold = false;
  bool inside = false;

  std::function<int(int)> hook() {
    return [this](int fd) {
      calls.fetch_add(1);
      {
        std::unique_lock lock(mutex);
        inside = true;
        changed.notify_all();
        changed.wait_for(lock, std::chrono::seconds(10), [this] { return !hold; });
        inside = false;
      }
      if (delay.count() > 0) std::this_thread::sleep_for(delay);
      if (const int e = fail_errno.load(); e != 0) {
        errno = e;
        return -1;
      }
      return ::fdatasync(fd);
    };
  }
};

std::unique_ptr<Store> open_probed_store(const std::string& path, SyncProbe& probe) {
  SqliteOptions options;
  options.sync_file = probe.hook();
  auto store = open_sqlite_store(path, test_kek(), std::move(options));
  INFO((store ? std::string() : store.error().describe()));
  REQUIRE(store.has_value());
  return std::move(*store);
}

}  // namespace

TEST_CASE("concurrent releases share fdatasyncs and the audit chain stays one unbroken chain") {
  TempDir dir;
  SyncProbe probe;
  auto store = open_probed_store(dir.file("verifier.db"), probe);
  REQUIRE(store->enroll(image_record("img-a"), disk_key_for(1), operator_actor).has_value());
  // A sync that takes a while, as on a real disk under load: commits made meanwhile wait
  // for the next one together.
  probe.delay = std::chrono::milliseconds(4);
  const int before = probe.calls.load();
  constexpr int threads = 8;
  constexpr int per_thread = 30;
  std::atomic<int> released{0};
  std::atomic<int> wrong{0};
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t)
    workers.emplace_back([&, t] {
      for (int i = 0; i < per_thread; ++i) {
        const int n = t * per_thread + i;
        if (n % 5 == 0) {
          (store->append_audit(audit_entry(n)) ? released : wrong).fetch_add(1);
          continue;
        }
        auto release = store->append_release(release_entry(n));
        const bool ok = release && *release &&
                        equal_constant_time((*release)->disk_key.view(), disk_key_for(1).view());
        (ok ? released : wrong).fetch_add(1);
      }
    });
  for (auto& worker : workers) worker.join();
  CHECK(wrong == 0);
  CHECK(released == threads * per_thread);
  const int syncs = probe.calls.load() - before;
  INFO("syncs for " << threads * per_thread << " commits: " << syncs);
  CHECK(syncs < threads * per_thread / 2);
  CHECK(store->stats().syncs >= static_cast<std::uint64_t>(syncs));
  CHECK(store->stats().commits >= static_cast<std::uint64_t>(threads * per_thread + 1));

  auto report = store->verify_audit_chain();
  REQUIRE(report.has_value());
  CHECK(report->intact);
  CHECK(report->records == threads * per_thread + 1);
  CHECK(report->head.sequence == threads * per_thread + 1);
  // Reopened from the file (no cache): the same chain.
  store.reset();
  auto reopened = open_store(dir.file("verifier.db"));
  auto again = reopened->verify_audit_chain();
  REQUIRE(again.has_value());
  CHECK(again->intact);
  CHECK(again->records == threads * per_thread + 1);
}

TEST_CASE("a release is not handed back before its audit record has been synced") {
  TempDir dir;
  SyncProbe probe;
  auto store = open_probed_store(dir.file("verifier.db"), probe);
  REQUIRE(store->enroll(image_record("img-a"), disk_key_for(1), operator_actor).has_value());
  {
    std::lock_guard lock(probe.mutex);
    probe.hold = true;
  }
  auto pending = std::async(std::launch::async, [&] { return store->append_release(release_entry(1)); });
  {
    std::unique_lock lock(probe.mutex);
    REQUIRE(probe.changed.wait_for(lock, std::chrono::seconds(10), [&] { return probe.inside; }));
  }
  // Committed, but the sync has not completed: no key yet.
  CHECK(pending.wait_for(std::chrono::milliseconds(300)) == std::future_status::timeout);
  // Meanwhile the store is not locked: another thread can read.
  CHECK(store->find_image("img-a").has_value());
  {
    std::lock_guard lock(probe.mutex);
    probe.hold = false;
  }
  probe.changed.notify_all();
  auto released = pending.get();
  REQUIRE(released.has_value());
  REQUIRE(released->has_value());
  CHECK(equal_constant_time((*released)->disk_key.view(), disk_key_for(1).view()));
}

TEST_CASE("a failed sync fails the release without its key, and every later commit") {
  TempDir dir;
  SyncProbe probe;
  auto store = open_probed_store(dir.file("verifier.db"), probe);
  REQUIRE(store->enroll(image_record("img-a"), disk_key_for(1), operator_actor).has_value());
  probe.fail_errno = EIO;
  auto released = store->append_release(release_entry(1));
  REQUIRE_FALSE(released.has_value());
  CHECK(released.error().code == Errc::io);
  CHECK(released.error().message.find("durable") != std::string::npos);
  // The disk may have lost what it was given: nothing later is acknowledged either, even
  // once syncs would succeed again.
  probe.fail_errno = 0;
  CHECK_FALSE(store->append_release(release_entry(2)).has_value());
  CHECK_FALSE(store->append_audit(audit_entry(3)).has_value());
  CHECK_FALSE(store->set_status("img-a", ImageStatus::revoked, operator_actor).has_value());
}

TEST_CASE("after a failed sync the store is not ready") {
  TempDir dir;
  SyncProbe probe;
  auto store = open_probed_store(dir.file("verifier.db"), probe);
  REQUIRE(store->enroll(image_record("img-a"), disk_key_for(1), operator_actor).has_value());
  CHECK(store->ping().has_value());
  probe.fail_errno = EIO;
  REQUIRE_FALSE(store->append_release(release_entry(1)).has_value());
  probe.fail_errno = 0;
  // Every write is refused until restart, so /readyz must not say "ready".
  CHECK_FALSE(store->ping().has_value());
}

TEST_CASE("a KEK rotation whose sync fails says it is committed, and the store uses the new KEK") {
  TempDir dir;
  const std::string path = dir.file("verifier.db");
  SyncProbe probe;
  auto store = open_probed_store(path, probe);
  enroll_images(*store, {{"img-a", 1}, {"img-b", 2}});
  probe.fail_errno = EIO;
  auto rotation = store->rotate_kek(test_kek(0x11), operator_actor);
  probe.fail_errno = 0;
  REQUIRE_FALSE(rotation.has_value());
  // Not "nothing changed": the admin must keep both KEK files.
  CHECK(rotation.error().message.find("rotation is committed") != std::string::npos);
  CHECK(rotation.error().message.find("BOTH KEK files") != std::string::npos);
  // The running store reads with the KEK the database now has (its chain keys unwrap).
  CHECK(store->export_content().has_value());
  store.reset();
  CHECK_FALSE(open_sqlite_store(path, test_kek()).has_value());
  auto reopened = open_store(path, 0x11);
  for (const auto& [id, seed] : {std::pair{"img-a", 1}, {"img-b", 2}}) CHECK(releases(*reopened, id, seed));
}
