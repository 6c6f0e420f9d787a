// SQLite store tests: images and wrapped keys, the hash-chained audit log and tampering, file mode, concurrency.
#include <catch2/catch.hpp>

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>
#include <thread>

#include <openssl/evp.h>
#include <sqlite3.h>

#include "common/reference/reference_values.hpp"
#include "common/util/file.hpp"
#include "verifier-daemon/store/store.hpp"

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

AuditEntry audit_entry(int i, const std::string& image_id = "img-a") {
  AuditEntry e;
  e.image_id = image_id;
  e.peer = "203.0.113.7:" + std::to_string(50000 + i);
  e.token_digest = std::string(64, 'a');
  e.measurements = R"({"rim":"00"})";
  e.decision = i % 3 == 0 ? "deny" : "release";
  e.reason = i % 3 == 0 ? "rim: not in the accepted set" : "all checks passed";
  e.checks = R"([{"name":"nonce","passed":true}])";
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

int try_sql(const std::string& path, const std::string& sql) {
  sqlite3* db = nullptr;
  REQUIRE(sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE, nullptr) == SQLITE_OK);
  int rc = sqlite3_exec(db, sql.c_str(), nullptr, nullptr, nullptr);
  sqlite3_close(db);
  return rc;
}

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
  CHECK(changed([](AuditRecord& r) { r.entry.decision = "deny"; }));
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
  TempDir dir;
  auto store = open_store(dir.file("fde.db"));
  REQUIRE(store->ping().has_value());
  REQUIRE(store->enroll(image_record("img-b"), disk_key_for(2)).has_value());
  REQUIRE(store->enroll(image_record("img-a"), disk_key_for(1)).has_value());

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
    REQUIRE(store->enroll(image_record("img-a"), key).has_value());
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
  TempDir dir;
  auto store = open_store(dir.file("fde.db"));
  REQUIRE(store->enroll(image_record("img-a"), disk_key_for(1)).has_value());
  auto again = store->enroll(image_record("img-a"), disk_key_for(2));
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
  TempDir dir;
  auto store = open_store(dir.file("fde.db"));
  CHECK(store->enroll(image_record("a/b"), disk_key_for(1)).error().code == Errc::invalid_argument);
  CHECK(store->enroll(image_record(""), disk_key_for(1)).error().code == Errc::invalid_argument);
  CHECK(store->enroll(image_record("img-a"), SecretBytes()).error().code == Errc::invalid_argument);
  CHECK(store->enroll(image_record("img-a"), SecretBytes(65)).error().code == Errc::invalid_argument);
  ImageRecord mismatched = image_record("img-a");
  mismatched.reference.image_id = "img-b";
  CHECK(store->enroll(mismatched, disk_key_for(1)).error().code == Errc::invalid_argument);
  ImageRecord invalid = image_record("img-a");
  invalid.reference.sets.clear();
  CHECK_FALSE(store->enroll(invalid, disk_key_for(1)).has_value());
  CHECK(store->list_images()->empty());
  // Reference values that name no image are fine.
  ImageRecord unnamed = image_record("img-a");
  unnamed.reference.image_id.reset();
  CHECK(store->enroll(unnamed, SecretBytes::copy_of(Bytes(32, 1))).has_value());
}

TEST_CASE("reference values and status can be updated") {
  TempDir dir;
  auto store = open_store(dir.file("fde.db"));
  REQUIRE(store->enroll(image_record("img-a"), disk_key_for(1)).has_value());

  auto updated = example_reference("img-a");
  REQUIRE(reference::retire_reference_set(updated, "kernel-6.6.0-28").has_value());
  REQUIRE(store->update_reference("img-a", updated).has_value());
  auto found = store->find_image("img-a");
  REQUIRE(found.has_value());
  REQUIRE(found->has_value());
  CHECK(canonical((*found)->reference) == canonical(updated));
  CHECK((*found)->reference.find_set("kernel-6.6.0-28") == nullptr);
  CHECK((*found)->updated_at >= (*found)->created_at);

  REQUIRE(store->set_status("img-a", ImageStatus::revoked).has_value());
  CHECK((*store->find_image("img-a"))->status == ImageStatus::revoked);
  REQUIRE(store->set_status("img-a", ImageStatus::active).has_value());
  CHECK((*store->find_image("img-a"))->status == ImageStatus::active);

  CHECK(store->update_reference("img-x", example_reference("img-x")).error().code == Errc::not_found);
  CHECK(store->set_status("img-x", ImageStatus::revoked).error().code == Errc::not_found);
  auto other = example_reference("img-b");
  CHECK(store->update_reference("img-a", other).error().code == Errc::invalid_argument);
  // The disk key is untouched by either update.
  CHECK(equal_constant_time(store->disk_key("img-a")->value().view(), disk_key_for(1).view()));
}

TEST_CASE("the disk key of a revoked image is withheld by the store itself, whatever the caller read before") {
  TempDir dir;
  auto store = open_store(dir.file("fde.db"));
  REQUIRE(store->enroll(image_record("img-a"), disk_key_for(1)).has_value());
  REQUIRE(store->enroll(image_record("img-b"), disk_key_for(2)).has_value());
  // A caller reads the image while it is active and decides to release...
  auto seen = store->find_image("img-a");
  REQUIRE(seen.has_value());
  REQUIRE(seen->has_value());
  REQUIRE((*seen)->status == ImageStatus::active);
  // ...the operator revokes it in the meantime...
  REQUIRE(store->set_status("img-a", ImageStatus::revoked).has_value());
  // ...and the key read, not the earlier look, decides: no key leaves the store.
  auto key = store->disk_key("img-a");
  REQUIRE(key.has_value());
  CHECK_FALSE(key->has_value());
  // Another image is not affected, and reinstating brings the same key back.
  CHECK(equal_constant_time(store->disk_key("img-b")->value().view(), disk_key_for(2).view()));
  REQUIRE(store->set_status("img-a", ImageStatus::active).has_value());
  CHECK(equal_constant_time(store->disk_key("img-a")->value().view(), disk_key_for(1).view()));
}

TEST_CASE("a revoke committed by another process is seen by the next key read of an open store") {
  TempDir dir;
  const std::string path = dir.file("fde.db");
  auto daemon = open_store(path);
  REQUIRE(daemon->enroll(image_record("img-a"), disk_key_for(1)).has_value());
  REQUIRE(daemon->disk_key("img-a").value_or(std::nullopt).has_value());
  // A second connection (another fde-verifierd replica, or the file edited by hand) revokes.
  auto other = open_store(path);
  REQUIRE(other->set_status("img-a", ImageStatus::revoked).has_value());
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
  TempDir dir;
  auto store = open_store(dir.file("fde.db"));
  auto empty = store->verify_audit_chain();
  REQUIRE(empty.has_value());
  CHECK(empty->intact);
  CHECK(empty->records == 0);

  std::vector<AuditRecord> appended;
  for (int i = 1; i <= 40; ++i) {
    auto record = store->append_audit(audit_entry(i, i % 2 == 0 ? "img-a" : "img-b"));
    REQUIRE(record.has_value());
    appended.push_back(*record);
  }
  CHECK(appended.front().sequence == 1);
  CHECK(appended.front().previous_hash == std::string(64, '0'));
  for (std::size_t i = 0; i < appended.size(); ++i) {
    CHECK(appended[i].sequence == static_cast<std::int64_t>(i + 1));
    CHECK(appended[i].hash == audit_record_hash(appended[i]));
    CHECK(appended[i].hash == independent_hash(appended[i]));
    if (i > 0) CHECK(appended[i].previous_hash == appended[i - 1].hash);
  }
  auto report = store->verify_audit_chain();
  REQUIRE(report.has_value());
  CHECK(report->intact);
  CHECK(report->records == 40);
  CHECK_FALSE(report->first_bad_sequence.has_value());

  auto newest = store->query_audit(audit_query(5));
  REQUIRE(newest.has_value());
  REQUIRE(newest->size() == 5);
  CHECK((*newest)[0].sequence == 40);
  CHECK((*newest)[4].sequence == 36);
  CHECK((*newest)[0].hash == appended[39].hash);
  CHECK((*newest)[0].entry.checks == appended[39].entry.checks);

  auto img_a = store->query_audit(audit_query(100, "img-a"));
  REQUIRE(img_a.has_value());
  CHECK(img_a->size() == 20);
  CHECK(std::all_of(img_a->begin(), img_a->end(), [](const AuditRecord& r) { return r.entry.image_id == "img-a"; }));
  auto denials = store->query_audit(audit_query(100, std::nullopt, "deny"));
  REQUIRE(denials.has_value());
  CHECK(denials->size() == 13);
  auto later = store->query_audit(audit_query(100, std::nullopt, std::nullopt, 35));
  REQUIRE(later.has_value());
  CHECK(later->size() == 5);
  auto combined = store->query_audit(audit_query(2, "img-b", "deny", 20));
  REQUIRE(combined.has_value());
  REQUIRE(combined->size() == 2);
  CHECK((*combined)[0].sequence == 39);
  CHECK((*combined)[1].sequence == 33);
  // Values are bound, never spliced into SQL.
  auto injection = store->query_audit(audit_query(100, "x' OR '1'='1"));
  REQUIRE(injection.has_value());
  CHECK(injection->empty());
}

TEST_CASE("audit text with NUL bytes, invalid UTF-8 or empty fields reads back byte for byte") {
  TempDir dir;
  auto store = open_store(dir.file("fde.db"));
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

TEST_CASE("an audit entry must say release or deny") {
  TempDir dir;
  auto store = open_store(dir.file("fde.db"));
  AuditEntry entry = audit_entry(1);
  entry.decision = "maybe";
  CHECK(store->append_audit(entry).error().code == Errc::invalid_argument);
  CHECK(store->verify_audit_chain()->records == 0);
}

TEST_CASE("audit records cannot be changed through SQL while the triggers stand") {
  TempDir dir;
  std::string path = dir.file("fde.db");
  auto store = open_store(path);
  append_records(*store, 3);
  CHECK(try_sql(path, "UPDATE audit SET reason = 'nothing to see' WHERE sequence = 2") != SQLITE_OK);
  CHECK(try_sql(path, "DELETE FROM audit WHERE sequence = 2") != SQLITE_OK);
  CHECK(store->verify_audit_chain()->intact);
}

TEST_CASE("an audit record whose reason or decision was edited is detected at its sequence") {
  TempDir dir;
  std::string path = dir.file("fde.db");
  auto store = open_store(path);
  append_records(*store, 12);
  REQUIRE(store->verify_audit_chain()->intact);

  SECTION("reason") {
    tamper(path, "DROP TRIGGER audit_no_update; UPDATE audit SET reason = 'all checks passed' WHERE sequence = 6");
    auto report = store->verify_audit_chain();
    REQUIRE(report.has_value());
    CHECK_FALSE(report->intact);
    CHECK(report->first_bad_sequence == 6);
    CHECK(report->records == 12);
    CHECK(report->problem.find("record 6") != std::string::npos);
  }
  SECTION("decision") {
    tamper(path, "DROP TRIGGER audit_no_update; UPDATE audit SET decision = 'release' WHERE sequence = 9");
    auto report = store->verify_audit_chain();
    REQUIRE(report.has_value());
    CHECK_FALSE(report->intact);
    CHECK(report->first_bad_sequence == 9);
  }
  SECTION("time") {
    tamper(path, "DROP TRIGGER audit_no_update; UPDATE audit SET time = '2000-01-01T00:00:00Z' WHERE sequence = 1");
    CHECK(store->verify_audit_chain()->first_bad_sequence == 1);
  }
  SECTION("an edit with a recomputed hash breaks the link to the next record") {
    auto records = store->query_audit(audit_query(100));
    REQUIRE(records.has_value());
    AuditRecord forged = *std::find_if(records->begin(), records->end(),
                                       [](const AuditRecord& r) { return r.sequence == 6; });
    forged.entry.decision = "release";
    forged.entry.reason = "all checks passed";
    forged.hash = audit_record_hash(forged);
    tamper(path, "DROP TRIGGER audit_no_update; UPDATE audit SET decision = 'release', reason = 'all checks passed', "
                 "hash = '" + forged.hash + "' WHERE sequence = 6");
    auto report = store->verify_audit_chain();
    REQUIRE(report.has_value());
    CHECK_FALSE(report->intact);
    CHECK(report->first_bad_sequence == 7);
    CHECK(report->problem.find("previous_hash") != std::string::npos);
  }
}

TEST_CASE("a deleted audit record is detected") {
  TempDir dir;
  std::string path = dir.file("fde.db");
  auto store = open_store(path);
  append_records(*store, 10);

  SECTION("in the middle") {
    tamper(path, "DROP TRIGGER audit_no_delete; DELETE FROM audit WHERE sequence = 5");
    auto report = store->verify_audit_chain();
    REQUIRE(report.has_value());
    CHECK_FALSE(report->intact);
    CHECK(report->first_bad_sequence == 6);
    CHECK(report->records == 9);
    CHECK(report->problem.find("record 5 is missing") != std::string::npos);
  }
  SECTION("at the start") {
    tamper(path, "DROP TRIGGER audit_no_delete; DELETE FROM audit WHERE sequence = 1");
    auto report = store->verify_audit_chain();
    REQUIRE(report.has_value());
    CHECK_FALSE(report->intact);
    CHECK(report->first_bad_sequence == 2);
  }
  SECTION("renumbered to hide the gap") {
    tamper(path, "DROP TRIGGER audit_no_delete; DROP TRIGGER audit_no_update; DELETE FROM audit WHERE sequence = 5; "
                 "UPDATE audit SET sequence = sequence - 1 WHERE sequence > 5");
    auto report = store->verify_audit_chain();
    REQUIRE(report.has_value());
    CHECK_FALSE(report->intact);
    CHECK(report->first_bad_sequence == 5);
  }
}

TEST_CASE("reopening the database keeps images, keys and the audit chain") {
  TempDir dir;
  std::string path = dir.file("fde.db");
  std::string last_hash;
  {
    auto store = open_store(path);
    REQUIRE(store->enroll(image_record("img-a"), disk_key_for(1)).has_value());
    REQUIRE(store->set_status("img-a", ImageStatus::revoked).has_value());
    append_records(*store, 7);
    last_hash = store->query_audit(audit_query(1))->front().hash;
  }
  {
    auto store = open_store(path);
    auto found = store->find_image("img-a");
    REQUIRE(found.has_value());
    REQUIRE(found->has_value());
    CHECK((*found)->status == ImageStatus::revoked);
    CHECK(canonical((*found)->reference) == canonical(example_reference("img-a")));
    // Still revoked after the reopen: no key until it is reinstated.
    auto withheld = store->disk_key("img-a");
    REQUIRE(withheld.has_value());
    CHECK_FALSE(withheld->has_value());
    REQUIRE(store->set_status("img-a", ImageStatus::active).has_value());
    auto key = store->disk_key("img-a");
    REQUIRE(key.has_value());
    REQUIRE(key->has_value());
    CHECK(equal_constant_time((*key)->view(), disk_key_for(1).view()));
    auto report = store->verify_audit_chain();
    REQUIRE(report.has_value());
    CHECK(report->intact);
    CHECK(report->records == 7);
    // The chain continues where it stopped.
    auto next = store->append_audit(audit_entry(8));
    REQUIRE(next.has_value());
    CHECK(next->sequence == 8);
    CHECK(next->previous_hash == last_hash);
    CHECK(store->verify_audit_chain()->intact);
  }
  {
    // Another KEK opens the file but unwraps nothing.
    auto store = open_store(path, 0x77);
    CHECK(store->find_image("img-a")->has_value());
    CHECK(store->disk_key("img-a").error().code == Errc::verification_failed);
  }
}

TEST_CASE("a wrapped key moved to another image's row does not unwrap") {
  TempDir dir;
  std::string path = dir.file("fde.db");
  auto store = open_store(path);
  REQUIRE(store->enroll(image_record("img-a"), disk_key_for(1)).has_value());
  REQUIRE(store->enroll(image_record("img-b"), disk_key_for(2)).has_value());
  tamper(path, "UPDATE images SET wrapped_key = (SELECT wrapped_key FROM images WHERE id = 'img-a') WHERE id = 'img-b'");
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
  TempDir dir;
  auto store = open_store(dir.file("fde.db"));
  REQUIRE(store->enroll(image_record("img-a"), disk_key_for(1)).has_value());
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
  CHECK(*all.begin() == 1);
  CHECK(*all.rbegin() == threads * per_thread);
  auto report = store->verify_audit_chain();
  REQUIRE(report.has_value());
  CHECK(report->intact);
  CHECK(report->records == threads * per_thread);
}

TEST_CASE("two store objects on one file, as two processes would have, keep one chain") {
  TempDir dir;
  std::string path = dir.file("fde.db");
  auto first = open_store(path);
  auto second = open_store(path);
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
