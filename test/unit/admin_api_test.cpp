// The admin socket protocol (api/admin_api.hpp) on a real SQLite store, the enrollment bundle
// it imports, and the fde-admin commands that drive it (wired to the API in process).
#include <sys/stat.h>

#include <rapidjson/document.h>
#include <sqlite3.h>

#include <sstream>

#include "common/crypto/random.hpp"
#include "common/protocol/enrollment_bundle.hpp"
#include "common/util/file.hpp"
#include "common/util/strict_json.hpp"
#include "test/unit/verifier_fixture.hpp"
#include "verifier-daemon/admin/admin_commands.hpp"
#include "verifier-daemon/api/admin_api.hpp"
#include "verifier-daemon/policy/verdict_json.hpp"

using namespace fde;
using namespace fde::test;
using namespace fde::verifier;

namespace {

protocol::EnrollmentBundle sample_bundle(const SecretBytes& key) {
  protocol::EnrollmentBundle bundle;
  bundle.image_id = std::string(test_image_id);
  bundle.luks_uuid = std::string(test_luks_uuid);
  bundle.disk_key = key.clone();
  bundle.reference = sample_reference();
  return bundle;
}

std::string bundle_text(const SecretBytes& key) {
  auto text = expect_ok(protocol::serialize_enrollment_bundle(sample_bundle(key)));
  return std::string(as_text(text.view()));
}

struct Admin {
  TempDir dir;
  std::unique_ptr<Store> store;
  std::string log;
  Logger logger{LogLevel::debug, [this](std::string_view line) { log.append(line); }};
  std::unique_ptr<AdminApi> api;
  SecretBytes disk_key = crypto::random_secret(32);
  // Who the admin socket says is calling (SO_PEERCRED).
  AdminPeer peer{1000, 1000, 4321};

  Admin() {
    auto kek = expect_ok(KeyEncryptionKey::from_bytes(crypto::random_bytes(KeyEncryptionKey::key_size)));
    store = expect_ok(open_sqlite_store(dir.path("verifier.db"), std::move(kek)));
    api = std::make_unique<AdminApi>(*store, logger);
  }

  rapidjson::Document call(const std::string& line) {
    const std::string response = api->handle(peer, line);
    INFO("response: " << response);
    CHECK(response.find('\n') == std::string::npos);
    rapidjson::Document doc;
    doc.Parse(response.c_str());
    REQUIRE_FALSE(doc.HasParseError());
    REQUIRE(doc.IsObject());
    return doc;
  }
  rapidjson::Document enroll() { return call("{\"command\":\"enroll\",\"bundle\":" + bundle_text(disk_key) + "}"); }

  // fde-admin as a shell runs it, its requests answered by this API.
  struct Run {
    int code;
    std::string out;
    std::string err;
  };
  Run cli(const std::string& command, const std::vector<std::string>& args) {
    std::ostringstream out;
    std::ostringstream err;
    std::vector<std::string> sent_to;
    const int code = run_admin_command(command, args, out, err,
                                       [&](const std::string& socket, const std::string& line) -> Result<std::string> {
                                         sent_to.push_back(socket);
                                         return api->handle(peer, line);
                                       });
    for (const auto& socket : sent_to) CHECK(socket == dir.path("admin.sock"));
    return {code, out.str(), err.str()};
  }
  Run cli(const std::string& command) { return cli(command, {}); }
  std::vector<std::string> socket_args(std::vector<std::string> args) {
    args.push_back("--socket");
    args.push_back(dir.path("admin.sock"));
    return args;
  }
};

bool ok(const rapidjson::Document& response) { return response["ok"].GetBool(); }
std::string error_of(const rapidjson::Document& response) {
  return response.HasMember("error") ? response["error"].GetString() : "";
}

}  // namespace

// --- the enrollment bundle ---

TEST_CASE("an enrollment bundle survives serialization and parsing with its key as a secret") {
  const SecretBytes key = crypto::random_secret(64);
  const std::string text = bundle_text(key);
  auto parsed = expect_ok(protocol::parse_enrollment_bundle(text));
  CHECK(parsed.image_id == test_image_id);
  CHECK(parsed.luks_uuid == test_luks_uuid);
  CHECK(equal_constant_time(parsed.disk_key.view(), key.view()));
  CHECK(parsed.reference.sets.size() == 2);
}

TEST_CASE("the example bundle in test/data parses: a 64-byte key and the example reference document") {
  auto text = expect_ok(read_file(std::string(FDE_TEST_DATA) + "/enrollment-bundle/example.json", 1024 * 1024));
  auto bundle = expect_ok(protocol::parse_enrollment_bundle(as_text(text)));
  CHECK(bundle.image_id == "openeuler-2403-web");
  CHECK(bundle.disk_key.size() == 64);
  CHECK(bundle.reference.sets.size() == 3);
}

TEST_CASE("an enrollment bundle is parsed strictly and its errors never quote the key") {
  const SecretBytes key = crypto::random_secret(32);
  const std::string key_b64 = base64_encode(key.view());
  auto bundle_with = [&](const std::string& field) {
    std::string text = bundle_text(key);
    text.insert(text.find('{') + 1, field);
    return text;
  };
  auto refused = [&](const std::string& text, std::string_view mentions) {
    auto parsed = protocol::parse_enrollment_bundle(text);
    REQUIRE_FALSE(parsed);
    INFO(parsed.error().describe());
    CHECK(parsed.error().message.find(mentions) != std::string::npos);
    CHECK(parsed.error().message.find(key_b64) == std::string::npos);
  };
  refused(bundle_with("\"extra\": 1,"), "extra: unknown field");
  refused(bundle_with("\"image_id\": \"again\","), "duplicate field");

  std::string text = bundle_text(key);
  SECTION("a wrong format") {
    text.replace(text.find("enrollment/v1"), 13, "enrollment/v9");
    refused(text, "format");
  }
  SECTION("a short key") {
    text.replace(text.find(key_b64), key_b64.size(), base64_encode(crypto::random_bytes(16)));
    refused(text, "disk_key: expected 32 to 64 bytes, found 16");
  }
  SECTION("a key that is not base64") {
    text.replace(text.find(key_b64), 4, "!!!!");
    refused(text, "disk_key: not valid base64");
  }
  SECTION("a malformed UUID") {
    text.replace(text.find(test_luks_uuid), 4, "zzzz");
    refused(text, "luks_uuid");
  }
  SECTION("a reference document for another image") {
    text.replace(text.find("\"image_id\": \"sim-openeuler-fde\"", text.find("\"reference\"")), 31,
                 "\"image_id\": \"some-other-image\"");
    refused(text, "reference.image_id");
  }
  SECTION("an upper-case UUID is normalized") {
    std::string upper = text;
    upper.replace(upper.find(test_luks_uuid), 36, "0F1E2D3C-4B5A-6978-8796-A5B4C3D2E1F0");
    CHECK(expect_ok(protocol::parse_enrollment_bundle(upper)).luks_uuid == test_luks_uuid);
  }
}

// --- the socket protocol ---

TEST_CASE("enroll, list and show: the image is stored and shown without its key") {
  Admin admin;
  auto enrolled = admin.enroll();
  REQUIRE(ok(enrolled));
  CHECK(std::string(enrolled["result"]["image_id"].GetString()) == test_image_id);
  CHECK(std::string(enrolled["result"]["status"].GetString()) == "active");
  CHECK(admin.log.find("event=admin_enroll") != std::string::npos);
  auto stored = expect_ok(admin.store->disk_key(test_image_id));
  REQUIRE(stored.has_value());
  CHECK(equal_constant_time(stored->view(), admin.disk_key.view()));

  auto again = admin.enroll();
  CHECK_FALSE(ok(again));
  CHECK(error_of(again) == "invalid_argument");

  auto list = admin.call("{\"command\":\"list\"}");
  REQUIRE(ok(list));
  REQUIRE(list["result"]["images"].Size() == 1);
  CHECK(list["result"]["images"][0]["sets"].Size() == 2);

  const std::string shown = admin.api->handle(admin.peer, "{\"command\":\"show\",\"image_id\":\"sim-openeuler-fde\"}");
  CHECK(shown.find("\"ok\":true") != std::string::npos);
  CHECK(shown.find("\"firmware_rims\"") != std::string::npos);
  CHECK(shown.find(base64_encode(admin.disk_key.view())) == std::string::npos);
  CHECK(shown.find(hex_encode(admin.disk_key.view())) == std::string::npos);
  CHECK(admin.log.find(base64_encode(admin.disk_key.view())) == std::string::npos);

  auto missing = admin.call("{\"command\":\"show\",\"image_id\":\"nope\"}");
  CHECK(error_of(missing) == "not_found");
}

TEST_CASE("reference sets are added as a set or a whole document and retired, never the last one") {
  Admin admin;
  REQUIRE(ok(admin.enroll()));
  auto reference = sample_reference();
  auto set = reference.sets.front();
  set.name = "kernel-6.6.0-72";
  set.grub.kernel = crypto::random_bytes(32);

  reference::ReferenceValues one_set;
  one_set.hash_alg = reference.hash_alg;
  one_set.firmware_rims = reference.firmware_rims;
  one_set.sets = {set};
  const std::string document = expect_ok(reference::serialize_reference_values(one_set));
  rapidjson::Document parsed;
  parsed.Parse(document.c_str());
  const std::string set_json = json::to_string(parsed["sets"][0]);

  SECTION("a lone set") {
    auto added = admin.call("{\"command\":\"add-reference\",\"image_id\":\"sim-openeuler-fde\",\"reference\":" + set_json + "}");
    REQUIRE(ok(added));
    CHECK(added["result"]["sets"].Size() == 3);
    CHECK(std::string(added["result"]["added"][0].GetString()) == "kernel-6.6.0-72");
  }
  SECTION("a whole document, whose new firmware RIM is merged") {
    one_set.firmware_rims.push_back(crypto::random_bytes(32));
    const std::string with_rim = expect_ok(reference::serialize_reference_values(one_set));
    auto added = admin.call("{\"command\":\"add-reference\",\"image_id\":\"sim-openeuler-fde\",\"reference\":" +
                            json::to_string(rapidjson::Document().Parse(with_rim.c_str())) + "}");
    REQUIRE(ok(added));
    auto image = expect_ok(admin.store->find_image(test_image_id));
    REQUIRE(image);
    CHECK(image->reference.firmware_rims.size() == 2);
    CHECK(image->reference.sets.size() == 3);
  }
  SECTION("a set whose name exists already is refused") {
    const std::string duplicate = json::to_string(
        rapidjson::Document().Parse(expect_ok(reference::serialize_reference_values(reference)).c_str())["sets"][0]);
    auto refused =
        admin.call("{\"command\":\"add-reference\",\"image_id\":\"sim-openeuler-fde\",\"reference\":" + duplicate + "}");
    CHECK_FALSE(ok(refused));
  }
  SECTION("a set with a wrong digest size names the field") {
    std::string bad = set_json;
    bad.replace(bad.find("\"kernel\":\"") + 10, 2, "");
    auto refused = admin.call("{\"command\":\"add-reference\",\"image_id\":\"sim-openeuler-fde\",\"reference\":" + bad + "}");
    CHECK_FALSE(ok(refused));
    CHECK(std::string(refused["message"].GetString()).find("kernel") != std::string::npos);
  }
  SECTION("retire one, then refuse to retire the last") {
    auto retired = admin.call("{\"command\":\"retire-reference\",\"image_id\":\"sim-openeuler-fde\",\"set\":\"direct-6.6.0-28\"}");
    REQUIRE(ok(retired));
    CHECK(retired["result"]["sets"].Size() == 1);
    auto last = admin.call("{\"command\":\"retire-reference\",\"image_id\":\"sim-openeuler-fde\",\"set\":\"kernel-6.6.0-28\"}");
    CHECK_FALSE(ok(last));
    auto unknown = admin.call("{\"command\":\"retire-reference\",\"image_id\":\"sim-openeuler-fde\",\"set\":\"nope\"}");
    CHECK_FALSE(ok(unknown));
  }
}

TEST_CASE("revoke and reinstate change the status and say what it was") {
  Admin admin;
  REQUIRE(ok(admin.enroll()));
  auto revoked = admin.call("{\"command\":\"revoke\",\"image_id\":\"sim-openeuler-fde\"}");
  REQUIRE(ok(revoked));
  CHECK(std::string(revoked["result"]["status"].GetString()) == "revoked");
  CHECK(std::string(revoked["result"]["previous_status"].GetString()) == "active");
  CHECK(expect_ok(admin.store->find_image(test_image_id))->status == ImageStatus::revoked);
  auto reinstated = admin.call("{\"command\":\"reinstate\",\"image_id\":\"sim-openeuler-fde\"}");
  REQUIRE(ok(reinstated));
  CHECK(expect_ok(admin.store->find_image(test_image_id))->status == ImageStatus::active);
  CHECK(error_of(admin.call("{\"command\":\"revoke\",\"image_id\":\"nope\"}")) == "not_found");
}

TEST_CASE("audit queries filter by image and decision, verify-audit checks the chain, explain reads the checks") {
  Admin admin;
  REQUIRE(ok(admin.enroll()));  // record 1
  Verdict denied;
  denied.add_pass("request.nonce", "fresh", "fresh");
  denied.add_fail("reference.rim", "one of {aa}", "bb");
  Verdict released;
  released.add_pass("request.nonce", "fresh", "fresh");
  for (int i = 0; i < 3; ++i) {  // records 2 (deny), 3 (release), 4 (deny, another image)
    const bool release = i == 1;
    AuditEntry entry{i == 2 ? "other-image" : std::string(test_image_id), "192.0.2.1:1", "00", "{\"rim\":\"bb\"}",
                     release ? "release" : "deny", release ? released.summary() : denied.summary(),
                     checks_to_json(release ? released : denied)};
    if (release)
      REQUIRE(expect_ok(admin.store->append_release(entry)).has_value());
    else
      expect_ok(admin.store->append_audit(entry));
  }
  auto all = admin.call("{\"command\":\"audit\"}");
  REQUIRE(ok(all));
  REQUIRE(all["result"]["records"].Size() == 4);
  CHECK(all["result"]["records"][0]["sequence"].GetInt64() == 4);  // newest first
  CHECK(all["result"]["records"][0]["measurements"].IsObject());
  CHECK(all["result"]["records"][0]["keyed"].GetBool());
  CHECK_FALSE(all["result"]["records"][0].HasMember("checks"));
  // The enrollment: what changed, instead of measurements.
  CHECK(all["result"]["records"][3]["change"]["reference"].IsObject());
  CHECK_FALSE(all["result"]["records"][3].HasMember("measurements"));
  CHECK(admin.call("{\"command\":\"audit\",\"image_id\":\"sim-openeuler-fde\"}")["result"]["records"].Size() == 3);
  CHECK(admin.call("{\"command\":\"audit\",\"decision\":\"deny\"}")["result"]["records"].Size() == 2);
  CHECK(admin.call("{\"command\":\"audit\",\"decision\":\"admin\"}")["result"]["records"].Size() == 1);
  CHECK(admin.call("{\"command\":\"audit\",\"after_sequence\":3}")["result"]["records"].Size() == 1);
  CHECK(admin.call("{\"command\":\"audit\",\"limit\":1,\"checks\":true}")["result"]["records"][0]["checks"].IsArray());
  CHECK_FALSE(ok(admin.call("{\"command\":\"audit\",\"decision\":\"maybe\"}")));
  CHECK_FALSE(ok(admin.call("{\"command\":\"audit\",\"limit\":0}")));

  auto chain = admin.call("{\"command\":\"verify-audit\"}");
  REQUIRE(ok(chain));
  CHECK(chain["result"]["intact"].GetBool());
  CHECK(chain["result"]["records"].GetInt64() == 4);
  CHECK(std::string(chain["result"]["head"].GetString()).rfind("4:", 0) == 0);
  CHECK(chain["result"]["expected_head"].IsNull());

  auto latest = admin.call("{\"command\":\"explain\",\"image_id\":\"sim-openeuler-fde\"}");
  REQUIRE(ok(latest));
  CHECK(latest["result"]["record"]["sequence"].GetInt64() == 2);  // the latest denial, not the release
  CHECK(std::string(latest["result"]["failed"][0].GetString()) == "reference.rim");
  auto release = admin.call("{\"command\":\"explain\",\"sequence\":3}");
  REQUIRE(ok(release));
  CHECK(release["result"]["failed"].Size() == 0);
  // An admin record is no decision: explain says so rather than "every check passed".
  auto change = admin.call("{\"command\":\"explain\",\"sequence\":1}");
  CHECK(error_of(change) == "invalid_argument");
  CHECK(std::string(change["message"].GetString()).find("enroll by uid=1000") != std::string::npos);
  CHECK(error_of(admin.call("{\"command\":\"explain\",\"sequence\":99}")) == "not_found");
  CHECK(error_of(admin.call("{\"command\":\"explain\",\"image_id\":\"never-enrolled\"}")) == "not_found");
  CHECK(error_of(admin.call("{\"command\":\"explain\"}")) == "invalid_argument");
}

TEST_CASE("every admin command that changes state is in the audit chain with the caller's uid") {
  Admin admin;
  admin.peer = AdminPeer{4242, 4242, 999};
  REQUIRE(ok(admin.enroll()));
  auto set = sample_reference().sets.front();
  set.name = "kernel-6.6.0-72";
  reference::ReferenceValues one_set = sample_reference();
  one_set.sets = {set};
  rapidjson::Document parsed;
  const std::string document = expect_ok(reference::serialize_reference_values(one_set));
  parsed.Parse(document.c_str());
  const std::string set_json = json::to_string(parsed["sets"][0]);
  REQUIRE(ok(admin.call("{\"command\":\"add-reference\",\"image_id\":\"sim-openeuler-fde\",\"reference\":" + set_json + "}")));
  REQUIRE(ok(admin.call("{\"command\":\"retire-reference\",\"image_id\":\"sim-openeuler-fde\",\"set\":\"kernel-6.6.0-72\"}")));
  admin.peer = AdminPeer{0, 0, 1};
  REQUIRE(ok(admin.call("{\"command\":\"revoke\",\"image_id\":\"sim-openeuler-fde\"}")));
  REQUIRE(ok(admin.call("{\"command\":\"reinstate\",\"image_id\":\"sim-openeuler-fde\"}")));
  // Reading changes nothing and records nothing; a refused change records nothing either.
  REQUIRE(ok(admin.call("{\"command\":\"list\"}")));
  CHECK_FALSE(ok(admin.call("{\"command\":\"revoke\",\"image_id\":\"nope\"}")));

  auto listed = admin.call("{\"command\":\"audit\",\"decision\":\"admin\"}");
  REQUIRE(ok(listed));
  const auto& records = listed["result"]["records"];
  REQUIRE(records.Size() == 5);
  const std::vector<std::pair<std::string, std::string>> expected = {
      {"reinstate", "uid=0 pid=1"}, {"revoke", "uid=0 pid=1"}, {"retire-reference", "uid=4242 pid=999"},
      {"add-reference", "uid=4242 pid=999"}, {"enroll", "uid=4242 pid=999"}};
  for (rapidjson::SizeType i = 0; i < records.Size(); ++i) {
    INFO("record " << records[i]["sequence"].GetInt64());
    CHECK(records[i]["sequence"].GetInt64() == 5 - static_cast<std::int64_t>(i));
    CHECK(std::string(records[i]["reason"].GetString()) == expected[i].first);
    CHECK(std::string(records[i]["peer"].GetString()) == expected[i].second);
    CHECK(std::string(records[i]["image_id"].GetString()) == test_image_id);
    CHECK(records[i]["change"]["uid"].GetInt64() == (i < 2 ? 0 : 4242));
  }
  CHECK(std::string(records[3]["change"]["added"][0].GetString()) == "kernel-6.6.0-72");
  CHECK(std::string(records[2]["change"]["retired"][0].GetString()) == "kernel-6.6.0-72");
  CHECK(std::string(records[1]["change"]["previous_status"].GetString()) == "active");
  CHECK(std::string(records[1]["change"]["status"].GetString()) == "revoked");
  CHECK(admin.log.find("event=admin_set_status image=sim-openeuler-fde status=revoked uid=0 pid=1 audit=4") !=
        std::string::npos);
  CHECK(expect_ok(admin.store->verify_audit_chain()).intact);

  // fde-admin shows them in the listing.
  auto run = admin.cli("audit", admin.socket_args({"--decision", "admin"}));
  CHECK(run.code == admin_exit_ok);
  CHECK(run.out.find("uid=0 pid=1") != std::string::npos);
  CHECK(run.out.find("revoke") != std::string::npos);
}

TEST_CASE("fde-admin audit --head exports the head and --verify --expect-head finds records removed after it") {
  Admin admin;
  REQUIRE(ok(admin.enroll()));
  Verdict denied;
  denied.add_fail("reference.rim", "aa", "bb");
  auto deny = [&] {
    expect_ok(admin.store->append_audit(AuditEntry{std::string(test_image_id), "192.0.2.1:1", "00", "{}", "deny",
                                                   denied.summary(), checks_to_json(denied)}));
  };
  for (int i = 0; i < 4; ++i) deny();
  auto run = admin.cli("audit", admin.socket_args({"--head"}));
  REQUIRE(run.code == admin_exit_ok);
  REQUIRE(run.out.size() == 2 + 64 + 1);  // "5:", the hash, a newline
  CHECK(run.out.rfind("5:", 0) == 0);
  const std::string head = run.out.substr(0, run.out.size() - 1);

  run = admin.cli("audit", admin.socket_args({"--verify", "--expect-head", head}));
  CHECK(run.code == admin_exit_ok);
  CHECK(run.out.find("the exported head " + head + " is in the chain, unchanged") != std::string::npos);
  deny();
  CHECK(admin.cli("audit", admin.socket_args({"--verify", "--expect-head", head})).code == admin_exit_ok);

  // Someone with the database file drops the newest records.
  sqlite3* db = nullptr;
  REQUIRE(sqlite3_open(admin.dir.path("verifier.db").c_str(), &db) == SQLITE_OK);
  sqlite3_busy_timeout(db, 5000);
  REQUIRE(sqlite3_exec(db, "DROP TRIGGER audit_no_delete; DELETE FROM audit WHERE sequence >= 4", nullptr, nullptr,
                       nullptr) == SQLITE_OK);
  sqlite3_close(db);

  run = admin.cli("audit", admin.socket_args({"--verify"}));
  CHECK(run.code == admin_exit_ok);  // what is left is a well-formed, shorter chain
  run = admin.cli("audit", admin.socket_args({"--verify", "--expect-head", head}));
  CHECK(run.code == admin_exit_refused);
  CHECK(run.out.find("BROKEN at record 4") != std::string::npos);
  CHECK(run.out.find("records were removed from the end") != std::string::npos);
  CHECK(admin.log.find("event=audit_chain_broken") != std::string::npos);
  // The truncated chain itself verifies, so --head still prints its (new, shorter) head...
  run = admin.cli("audit", admin.socket_args({"--head"}));
  CHECK(run.code == admin_exit_ok);
  CHECK(run.out.rfind("3:", 0) == 0);
  // ...but never one of a broken chain.
  sqlite3* edit = nullptr;
  REQUIRE(sqlite3_open(admin.dir.path("verifier.db").c_str(), &edit) == SQLITE_OK);
  REQUIRE(sqlite3_exec(edit, "DROP TRIGGER audit_no_update; UPDATE audit SET reason = 'x' WHERE sequence = 2", nullptr,
                       nullptr, nullptr) == SQLITE_OK);
  sqlite3_close(edit);
  run = admin.cli("audit", admin.socket_args({"--head"}));
  CHECK(run.code == admin_exit_refused);
  CHECK(run.out.empty());
  CHECK(run.err.find("no head printed") != std::string::npos);

  // Usage errors are caught before the daemon is asked.
  CHECK(admin.cli("audit", admin.socket_args({"--verify", "--expect-head", "5:zz"})).code == admin_exit_usage);
  CHECK(admin.cli("audit", admin.socket_args({"--expect-head", head})).code == admin_exit_usage);
  CHECK(admin.cli("audit", admin.socket_args({"--head", "--image", "x"})).code == admin_exit_usage);
  CHECK(error_of(admin.call("{\"command\":\"verify-audit\",\"expect_head\":\"x\"}")) == "invalid_argument");
}

TEST_CASE("malformed admin requests are refused with a stable error code and one line") {
  Admin admin;
  CHECK(error_of(admin.call("not json")) == "malformed");
  CHECK(error_of(admin.call("[]")) == "malformed");
  CHECK(error_of(admin.call("{}")) == "malformed");
  CHECK(error_of(admin.call("{\"command\":7}")) == "malformed");
  CHECK(error_of(admin.call("{\"command\":\"format-disk\"}")) == "invalid_argument");
  CHECK(error_of(admin.call("{\"command\":\"list\",\"verbose\":true}")) == "malformed");
  CHECK(error_of(admin.call("{\"command\":\"list\",\"command\":\"list\"}")) == "malformed");
  CHECK(error_of(admin.call("{\"command\":\"show\",\"image_id\":\"../../etc\"}")) == "invalid_argument");
  CHECK(error_of(admin.call("{\"command\":\"enroll\",\"bundle\":{}}")) == "malformed");
}

// --- fde-admin ---

TEST_CASE("fde-admin enroll refuses a bundle file that group or others can read") {
  Admin admin;
  const std::string text = bundle_text(admin.disk_key);
  const auto readable = admin.dir.write("readable.json", text, 0644);
  auto run = admin.cli("enroll", admin.socket_args({"--bundle", readable}));
  CHECK(run.code == admin_exit_usage);
  CHECK(run.err.find("mode 0644") != std::string::npos);
  CHECK(expect_ok(admin.store->list_images()).empty());

  const auto private_file = admin.dir.write("private.json", text, 0600);
  run = admin.cli("enroll", admin.socket_args({"--bundle", private_file}));
  INFO(run.err);
  CHECK(run.code == admin_exit_ok);
  CHECK(run.out.find("enrolled sim-openeuler-fde") != std::string::npos);
  CHECK(run.out.find(base64_encode(admin.disk_key.view())) == std::string::npos);

  run = admin.cli("enroll", admin.socket_args({"--bundle", private_file}));
  CHECK(run.code == admin_exit_refused);
  CHECK(run.err.find("already enrolled") != std::string::npos);
}

TEST_CASE("fde-admin prints tables for people and the daemon's JSON for scripts") {
  Admin admin;
  REQUIRE(ok(admin.enroll()));
  auto run = admin.cli("list", admin.socket_args({}));
  CHECK(run.code == admin_exit_ok);
  CHECK(run.out.rfind("IMAGE", 0) == 0);
  CHECK(run.out.find("sim-openeuler-fde  active") != std::string::npos);

  run = admin.cli("list", admin.socket_args({"--json"}));
  CHECK(run.code == admin_exit_ok);
  rapidjson::Document doc;
  doc.Parse(run.out.c_str());
  REQUIRE_FALSE(doc.HasParseError());
  CHECK(doc["ok"].GetBool());
  CHECK(doc["result"]["images"].Size() == 1);

  run = admin.cli("show", admin.socket_args({"sim-openeuler-fde"}));
  CHECK(run.code == admin_exit_ok);
  CHECK(run.out.find("kernel-6.6.0-28 (grub boot") != std::string::npos);

  run = admin.cli("revoke", admin.socket_args({"sim-openeuler-fde"}));
  CHECK(run.out == "sim-openeuler-fde: revoked (was active)\n");
  run = admin.cli("show", admin.socket_args({"no-such-image"}));
  CHECK(run.code == admin_exit_refused);
  // The message, not the protocol's code name (that one is for --json).
  CHECK(run.err == "fde-admin show: refused: image no-such-image is not enrolled\n");
  CHECK(run.err.find("not_found") == std::string::npos);
}

TEST_CASE("fde-admin audit --verify and explain report what the daemon found") {
  Admin admin;
  REQUIRE(ok(admin.enroll()));
  Verdict denied;
  denied.add_pass("request.nonce", "fresh", "fresh");
  denied.add_fail("reference.kernel", "kernel aa", "kernel bb \x1b[2J");
  expect_ok(admin.store->append_audit(AuditEntry{std::string(test_image_id), "192.0.2.1:1", "00", "{}", "deny",
                                                 denied.summary(), checks_to_json(denied)}));
  auto run = admin.cli("audit", admin.socket_args({"--verify"}));
  CHECK(run.code == admin_exit_ok);
  CHECK(run.out.rfind("audit chain intact: 2 records; head 2:", 0) == 0);

  run = admin.cli("audit", admin.socket_args({"--decision", "deny"}));
  CHECK(run.code == admin_exit_ok);
  CHECK(run.out.find("reference.kernel") != std::string::npos);

  run = admin.cli("explain", admin.socket_args({"sim-openeuler-fde"}));
  CHECK(run.code == admin_exit_ok);
  CHECK(run.out.find("  FAIL reference.kernel\n") != std::string::npos);
  CHECK(run.out.find("  PASS request.nonce\n") != std::string::npos);
  // A terminal escape in evidence text is shown, not executed.
  CHECK(run.out.find('\x1b') == std::string::npos);
  CHECK(run.out.find("\\x1b[2J") != std::string::npos);

  run = admin.cli("explain", admin.socket_args({"--sequence", "2"}));
  CHECK(run.code == admin_exit_ok);

  CHECK(admin.cli("explain", admin.socket_args({})).code == admin_exit_usage);
  CHECK(admin.cli("explain", admin.socket_args({"a", "--sequence", "1"})).code == admin_exit_usage);
  CHECK(admin.cli("audit", admin.socket_args({"--limit", "zero"})).code == admin_exit_usage);
  CHECK(admin.cli("audit", admin.socket_args({"--verify", "--image", "x"})).code == admin_exit_usage);
  CHECK(admin.cli("retire-reference", admin.socket_args({"sim-openeuler-fde"})).code == admin_exit_usage);
  CHECK(admin.cli("frobnicate").code == admin_exit_usage);
}

TEST_CASE("fde-admin reports an unreachable daemon with exit status 2") {
  std::ostringstream out;
  std::ostringstream err;
  const int code = run_admin_command("list", {"--socket", "/nonexistent/admin.sock"}, out, err,
                                     [](const std::string&, const std::string&) -> Result<std::string> {
                                       return fail(Errc::io, "connect: No such file or directory");
                                     });
  CHECK(code == admin_exit_usage);
  CHECK(err.str().find("cannot reach fde-verifierd at /nonexistent/admin.sock") != std::string::npos);
}

// --- the store's lifecycle over the admin socket ---

TEST_CASE("add-reference --replace swaps the only set for a rebuilt initramfs in one audited change") {
  Admin admin;
  REQUIRE(ok(admin.enroll()));
  REQUIRE(ok(admin.call(R"({"command":"retire-reference","image_id":"sim-openeuler-fde","set":"direct-6.6.0-28"})")));
  // The rebuilt initramfs on the same kernel: a new set, named apart by its digest.
  auto reference = sample_reference();
  reference::ReferenceValues rebuilt;
  rebuilt.hash_alg = reference.hash_alg;
  rebuilt.firmware_rims = reference.firmware_rims;
  for (auto& set : reference.sets)
    if (set.name == "kernel-6.6.0-28") rebuilt.sets.push_back(set);
  REQUIRE(rebuilt.sets.size() == 1);
  rebuilt.sets.front().name = "kernel-6.6.0-28-initrd-0a1b2c3d";
  rebuilt.sets.front().grub.initramfs = crypto::random_bytes(32);
  const std::string file = admin.dir.path("newref.json");
  REQUIRE(write_file_atomic(file, as_bytes(expect_ok(reference::serialize_reference_values(rebuilt))), 0644));

  // Without --replace: the new set is added, the old one stays (two sets).
  // The old way failed here: the last set could not be retired before the new one was in.
  auto refused = admin.cli("retire-reference", admin.socket_args({"sim-openeuler-fde", "--set", "kernel-6.6.0-28"}));
  CHECK(refused.code == admin_exit_refused);
  auto replaced = admin.cli("add-reference",
                            admin.socket_args({"sim-openeuler-fde", "--file", file, "--replace", "kernel-6.6.0-28"}));
  INFO(replaced.err);
  REQUIRE(replaced.code == admin_exit_ok);
  CHECK(replaced.out.find("added kernel-6.6.0-28-initrd-0a1b2c3d, retired kernel-6.6.0-28") != std::string::npos);
  auto image = expect_ok(admin.store->find_image(test_image_id));
  REQUIRE(image);
  REQUIRE(image->reference.sets.size() == 1);
  CHECK(image->reference.sets.front().name == "kernel-6.6.0-28-initrd-0a1b2c3d");
  // One record says both.
  auto records = expect_ok(admin.store->query_audit(AuditQuery{}));
  REQUIRE_FALSE(records.empty());
  CHECK(records.front().entry.reason == "update-reference");
  CHECK(records.front().entry.measurements.find(R"("added":["kernel-6.6.0-28-initrd-0a1b2c3d"],"retired":["kernel-6.6.0-28"])") !=
        std::string::npos);
  CHECK(records.front().entry.peer == "uid=1000 pid=4321");
  SECTION("replacing a set that does not exist changes nothing") {
    rebuilt.sets.front().name = "kernel-6.6.0-28-initrd-ffffffff";
    REQUIRE(write_file_atomic(file, as_bytes(expect_ok(reference::serialize_reference_values(rebuilt))), 0644));
    auto unknown = admin.cli("add-reference", admin.socket_args({"sim-openeuler-fde", "--file", file, "--replace", "nope"}));
    CHECK(unknown.code == admin_exit_refused);
    CHECK(expect_ok(admin.store->find_image(test_image_id))->reference.sets.size() == 1);
  }
}

TEST_CASE("delete needs a confirmation, is audited, and the image can be enrolled again") {
  Admin admin;
  REQUIRE(ok(admin.enroll()));
  auto unconfirmed = admin.cli("delete", admin.socket_args({"sim-openeuler-fde"}));
  CHECK(unconfirmed.code == admin_exit_usage);
  CHECK(unconfirmed.err.find("--yes") != std::string::npos);
  auto mismatched = admin.call(R"({"command":"delete","image_id":"sim-openeuler-fde","confirm":"other"})");
  CHECK_FALSE(ok(mismatched));
  REQUIRE(expect_ok(admin.store->find_image(test_image_id)));

  auto deleted = admin.cli("delete", admin.socket_args({"sim-openeuler-fde", "--yes"}));
  INFO(deleted.err);
  REQUIRE(deleted.code == admin_exit_ok);
  CHECK(deleted.out.find("deleted") != std::string::npos);
  CHECK_FALSE(expect_ok(admin.store->find_image(test_image_id)));
  auto records = expect_ok(admin.store->query_audit(AuditQuery{}));
  CHECK(records.front().entry.reason == "delete");
  CHECK(records.front().entry.peer == "uid=1000 pid=4321");

  // Re-enrollment under the same id (a rebuilt image) with a new key.
  admin.disk_key = crypto::random_secret(32);
  REQUIRE(ok(admin.enroll()));
  auto key = expect_ok(admin.store->disk_key(test_image_id));
  REQUIRE(key);
  CHECK(equal_constant_time(key->view(), admin.disk_key.view()));
  CHECK(expect_ok(admin.store->verify_audit_chain()).intact);
}

TEST_CASE("fde-admin backup has the daemon write a new 0600 copy") {
  Admin admin;
  REQUIRE(ok(admin.enroll()));
  const std::string copy = admin.dir.path("copy.db");
  auto backup = admin.cli("backup", admin.socket_args({"--output", copy}));
  INFO(backup.err);
  REQUIRE(backup.code == admin_exit_ok);
  CHECK(backup.out.find("1 images") != std::string::npos);
  struct stat st {};
  REQUIRE(::stat(copy.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
  auto again = admin.cli("backup", admin.socket_args({"--output", copy}));
  CHECK(again.code == admin_exit_refused);
  CHECK(again.err.find("never replaces") != std::string::npos);
  CHECK(admin.cli("backup", admin.socket_args({})).code == admin_exit_usage);
}

TEST_CASE("fde-admin rotate-kek re-wraps the keys under the new KEK file and refuses a readable one") {
  Admin admin;
  REQUIRE(ok(admin.enroll()));
  const std::string kek_file = admin.dir.path("kek.new");
  const Bytes new_kek = crypto::random_bytes(KeyEncryptionKey::key_size);
  REQUIRE(write_file_atomic(kek_file, as_bytes(hex_encode(new_kek) + "\n"), 0644));
  auto readable = admin.cli("rotate-kek", admin.socket_args({"--new-kek", kek_file}));
  CHECK(readable.code == admin_exit_usage);
  CHECK(readable.err.find("mode 0644") != std::string::npos);
  REQUIRE(::chmod(kek_file.c_str(), 0600) == 0);
  auto rotated = admin.cli("rotate-kek", admin.socket_args({"--new-kek", kek_file}));
  INFO(rotated.err);
  REQUIRE(rotated.code == admin_exit_ok);
  CHECK(rotated.out.find("1 disk keys re-wrapped") != std::string::npos);
  CHECK(admin.log.find(hex_encode(new_kek)) == std::string::npos);
  auto key = expect_ok(admin.store->disk_key(test_image_id));
  REQUIRE(key);
  CHECK(equal_constant_time(key->view(), admin.disk_key.view()));
  CHECK(expect_ok(admin.store->verify_audit_chain()).intact);
  // The store now opens with the new KEK only.
  admin.api.reset();
  admin.store.reset();
  auto reopened = expect_ok(open_sqlite_store(admin.dir.path("verifier.db"), expect_ok(KeyEncryptionKey::from_bytes(new_kek))));
  CHECK(expect_ok(reopened->verify_audit_chain()).intact);
}

TEST_CASE("fde-admin reload reports whether the daemon applied the new configuration") {
  Admin admin;
  auto unsupported = admin.cli("reload", admin.socket_args({}));
  CHECK(unsupported.code == admin_exit_refused);
  bool fails = true;
  int reloads = 0;
  admin.api->set_reload_handler([&]() -> Result<void> {
    ++reloads;
    if (fails) return fail(Errc::malformed, "fde-verifierd.toml:3:1: bad value");
    return {};
  });
  auto failed = admin.cli("reload", admin.socket_args({}));
  CHECK(failed.code == admin_exit_refused);
  CHECK(failed.err.find("reload failed, previous configuration kept: fde-verifierd.toml:3:1") != std::string::npos);
  fails = false;
  auto done = admin.cli("reload", admin.socket_args({}));
  CHECK(done.code == admin_exit_ok);
  CHECK(reloads == 2);
}
