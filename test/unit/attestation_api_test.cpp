// The attestation port's application end to end in process: real SQLite store in a temporary
// directory, real simulated tokens, HTTP requests in and responses out (no TLS: the transport
// is tested by the integration tests).
#include <rapidjson/document.h>

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <functional>
#include <filesystem>
#include <mutex>

#include "common/crypto/hash.hpp"
#include "common/crypto/random.hpp"
#include "test/unit/verifier_fixture.hpp"
#include "verifier-daemon/api/admin_api.hpp"
#include "verifier-daemon/api/attestation_api.hpp"
#include "verifier-daemon/api/operator_api.hpp"
#include "verifier-daemon/policy/verdict_json.hpp"

using namespace fde;
using namespace fde::test;
using namespace fde::verifier;

namespace {

// Every Verifier's store syncs through this: fdatasync, unless a test makes it fail.
std::atomic<int> failing_sync_errno{0};

int test_sync(int fd) {
  if (const int e = failing_sync_errno.load(); e != 0) {
    errno = e;
    return -1;
  }
  return ::fdatasync(fd);
}

// One verifier: store, policy, metrics, a log captured in memory, clocks the test moves. The
// rate limit is the daemon's default unless a test names another.
struct Verifier {
  explicit Verifier(RateLimit rate_limit = {})
      : api{policy, *open_store(), metrics, logger, [this] { return now; }, options_with(rate_limit)} {
    // The enrollment is audit record 1; the decisions follow.
    expect_ok(store->enroll(sample_image(), disk_key, AdminActor{0, 4242}));
  }

  TempDir dir;
  std::unique_ptr<Store> store;
  std::shared_ptr<const VerificationPolicy> policy = make_policy();
  Metrics metrics;
  std::mutex log_mutex;
  std::string log;
  Logger logger{LogLevel::debug, [this](std::string_view line) {
                  std::lock_guard lock(log_mutex);
                  log.append(line);
                }};
  Clock::time_point now = Clock::now();
  std::chrono::steady_clock::time_point steady = std::chrono::steady_clock::now();
  AttestationApi api;
  OperatorApi operator_api{*store, metrics, logger};
  AdminApi admin{*store, logger};
  SecretBytes disk_key = crypto::random_secret(64);
  // The operator at the admin socket.
  AdminPeer operator_peer{0, 0, 4242};

  AttestationOptions options_with(RateLimit rate_limit) {
    AttestationOptions options;
    options.rate_limit = rate_limit;
    options.steady_now = [this] { return steady; };
    return options;
  }

  Store* open_store() {
    auto kek = expect_ok(KeyEncryptionKey::from_bytes(crypto::random_bytes(KeyEncryptionKey::key_size)));
    SqliteOptions sqlite;
    sqlite.sync_file = test_sync;
    store = expect_ok(open_sqlite_store(dir.path("verifier.db"), std::move(kek), std::move(sqlite)));
    return store.get();
  }

  HttpResponse post(const std::string& target, const std::string& body) {
    return api.handle(HttpRequest{"POST", target, "application/json", body, "192.0.2.10:40000"});
  }
  HttpResponse post_from(const std::string& peer, const std::string& body) {
    return api.handle(HttpRequest{"POST", "/v1/attest", "application/json", body, peer});
  }
  HttpResponse get(const std::string& target) { return api.handle(HttpRequest{"GET", target, "", "", "192.0.2.10:40001"}); }
  // The operator listener's application (health, readiness, metrics).
  HttpResponse operator_get(const std::string& target) {
    return operator_api.handle(HttpRequest{"GET", target, "", "", "127.0.0.1:40002"});
  }
  std::string metrics_text() { return operator_get("/metrics").body; }
  // The database and its write-ahead log, in bytes.
  std::uintmax_t database_bytes() {
    std::uintmax_t total = 0;
    for (const char* name : {"verifier.db", "verifier.db-wal"}) {
      std::error_code ec;
      const auto size = std::filesystem::file_size(dir.path(name), ec);
      if (!ec) total += size;
    }
    return total;
  }

  // The protocol as the agent runs it: challenge over HTTP, then the attest request.
  Guest challenge_and_prepare(GuestOptions options = {}) {
    // The nonce comes from /v1/challenge; make_guest builds the rest around it.
    const std::string for_image = options.nonce_image_id.value_or(options.image_id);
    const HttpResponse challenge = post("/v1/challenge", "{\"image_id\":\"" + for_image + "\"}");
    REQUIRE(challenge.status == 200);
    auto parsed = expect_ok(protocol::parse_challenge_response(challenge.body));
    CHECK(parsed.nonce.size() == protocol::nonce_size);
    options.nonce = parsed.nonce;
    return make_guest(policy->nonces(), now, options);
  }

  // The decisions (release and deny records), newest first; chain() has the admin records too.
  std::vector<AuditRecord> audit() {
    std::vector<AuditRecord> decisions;
    for (auto& record : expect_ok(store->query_audit(AuditQuery{})))
      if (record.entry.decision != "admin") decisions.push_back(std::move(record));
    return decisions;
  }
  // Every record, oldest first.
  std::vector<AuditRecord> chain() {
    auto records = expect_ok(store->query_audit(AuditQuery{}));
    std::reverse(records.begin(), records.end());
    return records;
  }
  std::string admin_call(const std::string& line) { return admin.handle(operator_peer, line); }
};

std::string error_code(const HttpResponse& response) {
  auto parsed = protocol::parse_error_response(response.body);
  if (!parsed) return "unparseable: " + response.body;
  return std::string(protocol::error_code_name(parsed->error));
}

rapidjson::Document parse_json(const std::string& text) {
  rapidjson::Document doc;
  doc.Parse(text.c_str());
  REQUIRE_FALSE(doc.HasParseError());
  return doc;
}

// The real store with hooks at the moments a concurrent operator could act: right after the
// API has read the image (and so decides on what it read), and just before or just after the
// release's own transaction. Everything else is passed through.
class HookedStore final : public Store {
 public:
  explicit HookedStore(Store& store) : store_(store) {}
  Result<AuditRecord> enroll(const ImageRecord& image, const SecretBytes& disk_key, const AdminActor& by) override {
    return store_.enroll(image, disk_key, by);
  }
  Result<std::optional<ImageRecord>> find_image(std::string_view image_id) override {
    auto found = store_.find_image(image_id);
    if (after_lookup) after_lookup();
    return found;
  }
  Result<std::vector<ImageRecord>> list_images() override { return store_.list_images(); }
  Result<std::optional<SecretBytes>> disk_key(std::string_view image_id) override { return store_.disk_key(image_id); }
  Result<AuditRecord> update_reference(std::string_view image_id, const reference::ReferenceValues& reference,
                                       const AdminActor& by) override {
    return store_.update_reference(image_id, reference, by);
  }
  Result<AuditRecord> set_status(std::string_view image_id, ImageStatus status, const AdminActor& by) override {
    return store_.set_status(image_id, status, by);
  }
  Result<std::optional<Release>> append_release(const AuditEntry& entry) override {
    ++release_calls;
    if (before_release) before_release();
    auto released = store_.append_release(entry);
    if (after_release) after_release();
    return released;
  }
  Result<AuditRecord> append_audit(const AuditEntry& entry) override { return store_.append_audit(entry); }
  Result<std::vector<AuditRecord>> query_audit(const AuditQuery& query) override { return store_.query_audit(query); }
  Result<AuditChainReport> verify_audit_chain(const std::optional<AuditHead>& expected_head) override {
    return store_.verify_audit_chain(expected_head);
  }
  Result<AuditRecord> delete_image(std::string_view image_id, const AdminActor& by) override {
    return store_.delete_image(image_id, by);
  }
  Result<BackupReport> backup(const std::string& path) override { return store_.backup(path); }
  Result<KekRotation> rotate_kek(KeyEncryptionKey new_kek, const AdminActor& by) override {
    return store_.rotate_kek(std::move(new_kek), by);
  }
  Result<void> ping() override { return store_.ping(); }
  Result<StoreContent> export_content() override { return store_.export_content(); }
  Result<void> import_content(const StoreContent& content) override { return store_.import_content(content); }

  std::function<void()> after_lookup;
  std::function<void()> before_release;
  std::function<void()> after_release;
  int release_calls = 0;

 private:
  Store& store_;
};

// The operator's revoke, through the admin API as fde-admin sends it, run once.
std::function<void()> revoke_once(Verifier& v) {
  return [&v, done = false]() mutable {
    if (done) return;
    done = true;
    auto revoked = parse_json(v.admin_call("{\"command\":\"revoke\",\"image_id\":\"sim-openeuler-fde\"}"));
    REQUIRE(revoked["ok"].GetBool());
  };
}

std::vector<std::string> chain_summary(Verifier& v) {
  std::vector<std::string> out;
  for (const auto& record : v.chain())
    out.push_back(record.entry.decision == "admin" ? record.entry.reason : record.entry.decision);
  return out;
}

}  // namespace

TEST_CASE("the API releases the key to a genuine guest, which opens it, and audits the release") {
  Verifier v;
  const Guest guest = v.challenge_and_prepare();
  const HttpResponse response = v.post("/v1/attest", protocol::serialize(guest.request));
  INFO(response.body << "\n" << v.log);
  REQUIRE(response.status == 200);
  CHECK(response.content_type == "application/json");
  auto sealed = expect_ok(protocol::parse_attest_response(response.body));
  auto opened = expect_ok(crypto::hpke::open(guest.ephemeral, sealed.enc,
                                             protocol::hpke_info(test_image_id, guest.request.nonce), {},
                                             sealed.sealed_key));
  CHECK(equal_constant_time(opened.view(), v.disk_key.view()));

  const auto records = v.audit();
  REQUIRE(records.size() == 1);
  CHECK(records[0].entry.decision == "release");
  CHECK(records[0].entry.image_id == test_image_id);
  CHECK(records[0].entry.peer == "192.0.2.10:40000");
  CHECK(records[0].entry.token_digest == hex_encode(crypto::sha256(guest.request.token)));
  CHECK(records[0].entry.measurements.find("kernel-6.6.0-28") != std::string::npos);

  SECTION("the log has one line for the decision and no key material") {
    CHECK(v.log.find("event=attest") != std::string::npos);
    CHECK(v.log.find("decision=release") != std::string::npos);
    CHECK(v.log.find(hex_encode(v.disk_key.view())) == std::string::npos);
    CHECK(v.log.find(base64_encode(v.disk_key.view())) == std::string::npos);
    CHECK(v.log.find(base64_encode(sealed.sealed_key)) == std::string::npos);
  }
  SECTION("metrics count the release and the requests") {
    const HttpResponse metrics = v.operator_get("/metrics");
    CHECK(metrics.status == 200);
    CHECK(metrics.content_type.rfind("text/plain; version=0.0.4", 0) == 0);
    CHECK(metrics.body.find("fde_releases_total 1\n") != std::string::npos);
    CHECK(metrics.body.find("fde_requests_total{endpoint=\"/v1/attest\",code=\"200\"} 1\n") != std::string::npos);
    CHECK(metrics.body.find("fde_requests_total{endpoint=\"/v1/challenge\",code=\"200\"} 1\n") != std::string::npos);
    CHECK(metrics.body.find("fde_request_duration_seconds_bucket{endpoint=\"/v1/attest\",le=\"+Inf\"} 1\n") !=
          std::string::npos);
    CHECK(metrics.body.find("# TYPE fde_request_duration_seconds histogram\n") != std::string::npos);
    // The operator listener's own requests are not attestation requests.
    CHECK(metrics.body.find("fde_requests_in_flight 0\n") != std::string::npos);
    CHECK(metrics.body.find("/metrics") == std::string::npos);
  }
}

TEST_CASE("a release whose audit record cannot be made durable is answered 503 and no key leaves") {
  Verifier v;
  const Guest guest = v.challenge_and_prepare();
  failing_sync_errno = EIO;
  struct Restore {
    ~Restore() { failing_sync_errno = 0; }
  } restore;
  const HttpResponse response = v.post("/v1/attest", protocol::serialize(guest.request));
  INFO(response.body << "\n" << v.log);
  CHECK(response.status == 503);
  CHECK(error_code(response) == "unavailable");
  CHECK(response.body.find("sealed_key") == std::string::npos);
  CHECK(response.body.find("\"enc\"") == std::string::npos);
  CHECK(v.log.find("release_failed") != std::string::npos);
  CHECK(v.log.find("decision=release") == std::string::npos);
  CHECK(v.metrics_text().find("fde_releases_total 1") == std::string::npos);
}

TEST_CASE("the API denies a tampered boot with 403 attestation_failed, audits it, and explain shows the failed check") {
  Verifier v;
  GuestOptions options;
  options.rim = crypto::sha256(as_bytes("firmware someone else built"));
  const Guest guest = v.challenge_and_prepare(options);
  const HttpResponse response = v.post("/v1/attest", protocol::serialize(guest.request));
  CHECK(response.status == 403);
  CHECK(error_code(response) == "attestation_failed");
  // The guest learns neither the reason nor the audit sequence (how many decisions were made).
  CHECK(response.body.find("reference.rim") == std::string::npos);
  CHECK(response.body.find("audit record") == std::string::npos);
  CHECK(response.body.find('1') == std::string::npos);

  const auto records = v.audit();
  REQUIRE(records.size() == 1);
  CHECK(records[0].entry.decision == "deny");
  CHECK(records[0].entry.reason.rfind("reference.rim:", 0) == 0);
  CHECK(v.log.find("decision=deny reason=reference.rim") != std::string::npos);

  const auto metrics = v.metrics_text();
  CHECK(metrics.find("fde_denials_total{reason=\"reference.rim\"} 1\n") != std::string::npos);
  CHECK(metrics.find("fde_releases_total 0\n") != std::string::npos);

  for (const std::string request : {"{\"command\":\"explain\",\"image_id\":\"sim-openeuler-fde\"}",
                                    "{\"command\":\"explain\",\"sequence\":2}"}) {
    auto explained = parse_json(v.admin_call(request));
    INFO(request);
    REQUIRE(explained["ok"].GetBool());
    const auto& result = explained["result"];
    CHECK(result["record"]["sequence"].GetInt64() == 2);
    REQUIRE(result["failed"].Size() >= 1);
    CHECK(std::string(result["failed"][0].GetString()) == "reference.rim");
    bool found = false;
    for (const auto& check : result["checks"].GetArray())
      if (std::string(check["name"].GetString()) == "reference.rim") {
        found = true;
        CHECK_FALSE(check["passed"].GetBool());
        CHECK(std::string(check["found"].GetString()) == hex_encode(*options.rim));
      }
    CHECK(found);
  }
}

TEST_CASE("a nonce that is not valid is refused before any check: coarse code, counted, logged, never audited") {
  Verifier v;
  SECTION("expired nonce: 410 expired_nonce") {
    const Guest guest = v.challenge_and_prepare();
    v.now += std::chrono::minutes(5);
    const HttpResponse response = v.post("/v1/attest", protocol::serialize(guest.request));
    CHECK(response.status == 410);
    CHECK(error_code(response) == "expired_nonce");
    CHECK(v.metrics_text().find("fde_attest_refused_total{reason=\"nonce_expired\"} 1\n") != std::string::npos);
  }
  SECTION("forged nonce: 400 bad_request") {
    GuestOptions options;
    options.tamper_nonce = [](Bytes& nonce) { nonce[40] ^= 0x80; };
    const Guest guest = v.challenge_and_prepare(options);
    const HttpResponse response = v.post("/v1/attest", protocol::serialize(guest.request));
    CHECK(response.status == 400);
    CHECK(error_code(response) == "bad_request");
    CHECK(v.metrics_text().find("fde_attest_refused_total{reason=\"nonce_forged\"} 1\n") != std::string::npos);
  }
  SECTION("a nonce issued for another image: 400 bad_request") {
    GuestOptions options;
    options.nonce_image_id = "some-other-image";
    const Guest guest = v.challenge_and_prepare(options);
    const HttpResponse response = v.post("/v1/attest", protocol::serialize(guest.request));
    CHECK(response.status == 400);
    CHECK(error_code(response) == "bad_request");
  }
  CHECK(v.audit().empty());
  CHECK(v.log.find("event=attest_refused reason=nonce_") != std::string::npos);
  // No decision was made: no check ran, nothing was denied.
  CHECK(v.log.find("event=attest ") == std::string::npos);
  CHECK(v.metrics_text().find("fde_denials_total{") == std::string::npos);
}

TEST_CASE("a flood of forged nonces does not grow the database") {
  // Rate limit off: this is about what one request costs, whoever sends it.
  Verifier v(RateLimit{0, 1});
  // One honest release first, so the store has its pages and a WAL to compare against.
  const Guest honest = v.challenge_and_prepare();
  REQUIRE(v.post("/v1/attest", protocol::serialize(honest.request)).status == 200);
  const std::size_t records_before = v.audit().size();
  const std::uintmax_t bytes_before = v.database_bytes();
  REQUIRE(bytes_before > 0);

  // A genuine token and event log under a nonce whose MAC is wrong: the expensive checks
  // would pass, so only the nonce can stop the request early.
  GuestOptions options;
  options.tamper_nonce = [](Bytes& nonce) { nonce[50] ^= 0x01; };
  const Guest forged = v.challenge_and_prepare(options);
  const std::string body = protocol::serialize(forged.request);
  constexpr int flood = 2000;
  const auto started = std::chrono::steady_clock::now();
  for (int i = 0; i < flood; ++i) {
    const HttpResponse response = v.post("/v1/attest", body);
    if (response.status != 400) FAIL("request " << i << ": " << response.status << " " << response.body);
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  WARN(flood << " forged-nonce requests in " << seconds << " s");

  CHECK(v.audit().size() == records_before);
  CHECK(v.database_bytes() == bytes_before);
  CHECK(v.metrics_text().find("fde_attest_refused_total{reason=\"nonce_forged\"} " + std::to_string(flood) + "\n") !=
        std::string::npos);
  // The log has one line for the first refusal; the rest wait for the next interval.
  std::size_t lines = 0;
  for (std::size_t at = v.log.find("event=attest_refused"); at != std::string::npos;
       at = v.log.find("event=attest_refused", at + 1))
    ++lines;
  CHECK(lines == 1);
  // The next line, an interval later, says how many were held back.
  v.steady += std::chrono::seconds(11);
  CHECK(v.post("/v1/attest", body).status == 400);
  CHECK(v.log.find("reason=nonce_forged peer=192.0.2.10:40000 detail=forged suppressed=" +
                   std::to_string(flood - 1)) != std::string::npos);
  CHECK(expect_ok(v.store->verify_audit_chain()).intact);
}

TEST_CASE("a nonce buys one decision: a replay is refused cheaply and not audited again") {
  Verifier v;
  GuestOptions options;
  options.rim = crypto::sha256(as_bytes("firmware someone else built"));
  const Guest guest = v.challenge_and_prepare(options);
  const std::string body = protocol::serialize(guest.request);
  CHECK(v.post("/v1/attest", body).status == 403);
  REQUIRE(v.audit().size() == 1);
  for (int i = 0; i < 20; ++i) {
    const HttpResponse replay = v.post("/v1/attest", body);
    CHECK(replay.status == 410);
    CHECK(error_code(replay) == "expired_nonce");
  }
  CHECK(v.audit().size() == 1);
  CHECK(v.metrics_text().find("fde_attest_refused_total{reason=\"nonce_replayed\"} 20\n") != std::string::npos);

  SECTION("a released nonce cannot be used again either") {
    const Guest good = v.challenge_and_prepare();
    const std::string good_body = protocol::serialize(good.request);
    CHECK(v.post("/v1/attest", good_body).status == 200);
    CHECK(v.post("/v1/attest", good_body).status == 410);
    CHECK(v.audit().size() == 2);
  }
}

TEST_CASE("attest requests are rate limited per source address, with 429 and Retry-After") {
  Verifier v(RateLimit{60, 3});  // one a second, three at once
  const std::string body = "{}";  // refused after the rate check; malformed costs no audit
  for (int i = 0; i < 3; ++i) CHECK(v.post_from("198.51.100.7:1000", body).status == 400);
  HttpResponse limited = v.post_from("198.51.100.7:1001", body);
  CHECK(limited.status == 429);
  CHECK(error_code(limited) == "unavailable");
  REQUIRE(limited.headers.size() == 1);
  CHECK(limited.headers[0].first == "Retry-After");
  CHECK(limited.headers[0].second == "1");
  // Another address has its own bucket; the limited one gets a token back after a second.
  CHECK(v.post_from("198.51.100.8:1000", body).status == 400);
  v.steady += std::chrono::seconds(1);
  CHECK(v.post_from("198.51.100.7:1002", body).status == 400);
  CHECK(v.post_from("198.51.100.7:1003", body).status == 429);
  // IPv6 peers share a bucket per /64.
  for (int i = 0; i < 3; ++i) CHECK(v.post_from("[2001:db8:1:2::" + std::to_string(i + 1) + "]:443", body).status == 400);
  CHECK(v.post_from("[2001:db8:1:2:ffff::9]:443", body).status == 429);
  CHECK(v.post_from("[2001:db8:1:3::1]:443", body).status == 400);
  // Challenges are cheap and not limited.
  for (int i = 0; i < 10; ++i)
    CHECK(v.api.handle(HttpRequest{"POST", "/v1/challenge", "application/json", "{\"image_id\":\"x\"}",
                                   "198.51.100.7:1004"})
              .status == 200);
  CHECK(v.metrics_text().find("fde_attest_refused_total{reason=\"rate_limited\"} 3\n") != std::string::npos);
  CHECK(v.audit().empty());
}

TEST_CASE("an unknown image and a denied one get the same answer; the audit keeps the difference") {
  Verifier v;
  auto answer = [&](const std::string& image_id) {
    GuestOptions options;
    options.image_id = image_id;
    options.rim = crypto::sha256(as_bytes("firmware someone else built"));
    const Guest guest = v.challenge_and_prepare(options);
    return v.post("/v1/attest", protocol::serialize(guest.request));
  };
  const HttpResponse enrolled = answer(std::string(test_image_id));
  const HttpResponse unknown = answer("never-enrolled");
  auto revoked_answer = [&] {
    REQUIRE(parse_json(v.admin_call("{\"command\":\"revoke\",\"image_id\":\"sim-openeuler-fde\"}"))["ok"].GetBool());
    const Guest guest = v.challenge_and_prepare();
    return v.post("/v1/attest", protocol::serialize(guest.request));
  };
  const HttpResponse revoked = revoked_answer();
  for (const HttpResponse* response : {&enrolled, &unknown, &revoked}) {
    CHECK(response->status == 403);
    CHECK(response->content_type == enrolled.content_type);
    CHECK(response->body == enrolled.body);
  }
  CHECK(error_code(unknown) == "attestation_failed");
  CHECK(unknown.body.find("never-enrolled") == std::string::npos);

  const auto records = v.audit();
  REQUIRE(records.size() == 3);
  CHECK(records[0].entry.reason.rfind("image.status:", 0) == 0);
  CHECK(records[1].entry.image_id == "never-enrolled");
  CHECK(records[1].entry.reason.rfind("request.image:", 0) == 0);
  CHECK(records[2].entry.reason.rfind("reference.rim:", 0) == 0);
  CHECK(expect_ok(v.store->verify_audit_chain()).intact);
}

TEST_CASE("malformed requests are refused with 400 bad_request and are not audited") {
  Verifier v;
  for (const std::string body : {"", "garbage", "{}", "[]", "{\"image_id\":\"x\"}",
                                 "{\"image_id\":\"x\",\"nonce\":\"!!\",\"ephemeral_public\":\"\",\"token\":\"\","
                                 "\"device_cert\":\"\"}"}) {
    INFO("body: " << body);
    const HttpResponse response = v.post("/v1/attest", body);
    CHECK(response.status == 400);
    CHECK(error_code(response) == "bad_request");
  }
  CHECK(v.post("/v1/challenge", "{\"image_id\":\"../etc\"}").status == 400);
  CHECK(v.post("/v1/challenge", "{\"image_id\":\"ok\",\"extra\":1}").status == 400);
  CHECK(v.audit().empty());

  SECTION("an extra field in an otherwise genuine request is refused") {
    const Guest guest = v.challenge_and_prepare();
    std::string body = protocol::serialize(guest.request);
    body.insert(body.size() - 1, ",\"debug\":true");
    CHECK(v.post("/v1/attest", body).status == 400);
  }
}

TEST_CASE("oversized bodies are refused before parsing") {
  CHECK(AttestationApi::body_limit("POST", "/v1/challenge") == protocol::max_challenge_body);
  CHECK(AttestationApi::body_limit("POST", "/v1/attest") == protocol::max_attest_body);
  CHECK(AttestationApi::body_limit("GET", "/healthz") == 0);
  CHECK(AttestationApi::body_limit("GET", "/v1/attest") == 0);
  CHECK(AttestationApi::body_limit("POST", "/unknown") == 0);
  CHECK(AttestationApi::body_limit("PUT", "/v1/attest") == 0);

  // Should a transport hand one over anyway, the parser's own limit refuses it.
  Verifier v;
  const std::string huge(protocol::max_attest_body + 1, ' ');
  const HttpResponse response = v.post("/v1/attest", huge);
  CHECK(response.status == 400);
  CHECK(error_code(response) == "bad_request");
  CHECK(v.post("/v1/challenge", std::string(protocol::max_challenge_body + 1, ' ')).status == 400);
}

TEST_CASE("routing: wrong methods get 405, unknown paths 404; health, readiness and metrics are not on this port") {
  Verifier v;
  CHECK(v.get("/v1/attest").status == 405);
  CHECK(v.get("/v1/challenge").status == 405);
  CHECK(v.get("/nope").status == 404);
  CHECK(v.get("/v1/attest/").status == 404);
  CHECK(error_code(v.get("/nope")) == "bad_request");
  CHECK(v.api.handle(HttpRequest{"POST", "/v1/challenge", "text/plain", "{\"image_id\":\"x\"}", "p"}).status == 415);
  for (const char* path : {"/healthz", "/readyz", "/metrics"}) {
    CAPTURE(path);
    CHECK(v.get(path).status == 404);
    CHECK(v.post(path, "").status == 404);
  }
  CHECK(v.metrics_text().find("fde_requests_total{endpoint=\"other\",code=\"404\"} 9\n") != std::string::npos);
}

TEST_CASE("the operator API answers health, readiness and metrics") {
  Verifier v;
  const HttpResponse health = v.operator_get("/healthz");
  CHECK(health.status == 200);
  CHECK(health.body == "ok\n");
  const HttpResponse ready = v.operator_get("/readyz");
  CHECK(ready.status == 200);
  CHECK(ready.body == "ready\n");
  const HttpResponse metrics = v.operator_get("/metrics");
  CHECK(metrics.status == 200);
  CHECK(metrics.content_type.rfind("text/plain; version=0.0.4", 0) == 0);
  CHECK(metrics.body.find("# TYPE fde_attest_refused_total counter\n") != std::string::npos);
  CHECK(v.operator_get("/v1/attest").status == 404);
  CHECK(v.operator_api.handle(HttpRequest{"POST", "/metrics", "", "", "127.0.0.1:1"}).status == 405);
}

TEST_CASE("a challenge does not reveal whether an image is enrolled") {
  Verifier v;
  const HttpResponse known = v.post("/v1/challenge", "{\"image_id\":\"sim-openeuler-fde\"}");
  const HttpResponse unknown = v.post("/v1/challenge", "{\"image_id\":\"never-enrolled\"}");
  CHECK(known.status == 200);
  CHECK(unknown.status == 200);
  auto parsed = expect_ok(protocol::parse_challenge_response(unknown.body));
  CHECK(parsed.nonce.size() == protocol::nonce_size);
  CHECK(parsed.expires_at.size() == 20);
}

TEST_CASE("a new policy applies to requests after set_policy (SIGHUP)") {
  Verifier v;
  const Guest guest = v.challenge_and_prepare();
  // New nonce secret and roots that no longer trust the simulator's CA.
  v.api.set_policy(make_policy({.roots = {foreign_device().ca_certificate()}}));
  const HttpResponse response = v.post("/v1/attest", protocol::serialize(guest.request));
  CHECK(response.status == 400);  // the old nonce no longer authenticates
  CHECK(v.audit().empty());       // and buys no checks
  // A nonce of the new secret runs the checks under the new roots.
  const Guest again = v.challenge_and_prepare();
  CHECK(v.post("/v1/attest", protocol::serialize(again.request)).status == 403);
  const auto records = v.audit();
  REQUIRE(records.size() == 1);
  CHECK(has_check(expect_ok(checks_from_json(records[0].entry.checks)), "device.chain", false));
}

TEST_CASE("an image revoked between the decision and the key read is denied like a revoked image, and audited") {
  Verifier v;
  HookedStore racing(*v.store);
  racing.after_lookup = revoke_once(v);
  AttestationApi api{v.policy, racing, v.metrics, v.logger, [&v] { return v.now; }};
  const Guest guest = v.challenge_and_prepare();
  const HttpResponse response =
      api.handle(HttpRequest{"POST", "/v1/attest", "application/json", protocol::serialize(guest.request), "192.0.2.10:40002"});
  INFO(response.body << "\n" << v.log);
  // The decision saw an active image and passed every check; the key read said revoked.
  CHECK(racing.release_calls == 1);
  CHECK(response.status == 403);
  CHECK(error_code(response) == "attestation_failed");
  CHECK(response.body.find("audit record") == std::string::npos);
  CHECK(chain_summary(v) == std::vector<std::string>{"enroll", "revoke", "deny"});
  CHECK(response.body.find("sealed_key") == std::string::npos);

  const auto records = v.audit();
  REQUIRE(records.size() == 1);
  CHECK(records[0].entry.decision == "deny");
  CHECK(records[0].entry.reason.rfind("image.status:", 0) == 0);
  const Verdict checks = expect_ok(checks_from_json(records[0].entry.checks));
  CHECK(failed_checks(checks) == std::vector<std::string>{"image.status"});
  CHECK(has_check(checks, "cvm.signature", true));
  CHECK(v.log.find("decision=deny reason=image.status") != std::string::npos);
  CHECK(v.log.find("decision=release") == std::string::npos);
  CHECK(v.log.find(hex_encode(v.disk_key.view())) == std::string::npos);
  CHECK(v.log.find(base64_encode(v.disk_key.view())) == std::string::npos);
  CHECK(v.metrics.render().find("fde_releases_total 0\n") != std::string::npos);

  // The same response as for an image that was already revoked when the request came in.
  const Guest again = v.challenge_and_prepare();
  const HttpResponse revoked = v.post("/v1/attest", protocol::serialize(again.request));
  CHECK(revoked.status == response.status);
  CHECK(revoked.body == response.body);
  CHECK(expect_ok(v.store->verify_audit_chain()).intact);
}

TEST_CASE("a revoke committed while an attestation is in flight is ordered before or after its release, never lost") {
  Verifier v;
  HookedStore racing(*v.store);
  AttestationApi api{v.policy, racing, v.metrics, v.logger, [&v] { return v.now; }};
  const Guest guest = v.challenge_and_prepare();
  auto attest = [&] {
    return api.handle(
        HttpRequest{"POST", "/v1/attest", "application/json", protocol::serialize(guest.request), "192.0.2.10:40003"});
  };

  SECTION("the revoke commits after every check passed, just before the release is recorded: denied") {
    racing.before_release = revoke_once(v);
    const HttpResponse response = attest();
    INFO(response.body << "\n" << v.log);
    CHECK(response.status == 403);
    CHECK(response.body.find("sealed_key") == std::string::npos);
    CHECK(chain_summary(v) == std::vector<std::string>{"enroll", "revoke", "deny"});
    CHECK(v.audit().front().entry.reason.rfind("image.status:", 0) == 0);
    CHECK(v.metrics.render().find("fde_releases_total 0\n") != std::string::npos);
  }
  SECTION("the revoke commits just after the release is recorded: the release comes first in the chain") {
    racing.after_release = revoke_once(v);
    const HttpResponse response = attest();
    INFO(response.body << "\n" << v.log);
    CHECK(response.status == 200);
    CHECK(chain_summary(v) == std::vector<std::string>{"enroll", "release", "revoke"});
    // Everything after the revoke is denied.
    const Guest later = v.challenge_and_prepare();
    CHECK(v.post("/v1/attest", protocol::serialize(later.request)).status == 403);
    CHECK(chain_summary(v) == std::vector<std::string>{"enroll", "release", "revoke", "deny"});
  }
  // Either way the revoke is in the chain with who made it, and the chain verifies.
  const auto records = v.chain();
  const auto revoke = std::find_if(records.begin(), records.end(),
                                   [](const AuditRecord& r) { return r.entry.reason == "revoke"; });
  REQUIRE(revoke != records.end());
  CHECK(revoke->entry.peer == "uid=0 pid=4242");
  CHECK(expect_ok(v.store->verify_audit_chain()).intact);
}


TEST_CASE("a revoked image is denied with 403 until reinstated, and both changes are in the chain") {
  Verifier v;
  auto revoked = parse_json(v.admin_call("{\"command\":\"revoke\",\"image_id\":\"sim-openeuler-fde\"}"));
  REQUIRE(revoked["ok"].GetBool());
  Guest guest = v.challenge_and_prepare();
  HttpResponse response = v.post("/v1/attest", protocol::serialize(guest.request));
  CHECK(response.status == 403);
  CHECK(v.audit().front().entry.reason.rfind("image.status:", 0) == 0);

  REQUIRE(parse_json(v.admin_call("{\"command\":\"reinstate\",\"image_id\":\"sim-openeuler-fde\"}"))["ok"].GetBool());
  guest = v.challenge_and_prepare();
  response = v.post("/v1/attest", protocol::serialize(guest.request));
  CHECK(response.status == 200);
  REQUIRE(v.audit().size() == 2);
  CHECK(chain_summary(v) == std::vector<std::string>{"enroll", "revoke", "deny", "reinstate", "release"});
}
