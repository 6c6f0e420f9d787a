// Admin commands over the Unix socket: enroll, inspect and change images, query and verify
// the audit chain, explain a decision. Each command checks its members strictly, calls the
// store and writes its result; the response line is built only from what the store returned.
#include "verifier-daemon/api/admin_api.hpp"

#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <algorithm>

#include "common/protocol/enrollment_bundle.hpp"
#include "common/protocol/messages.hpp"
#include "common/util/strict_json.hpp"
#include "verifier-daemon/policy/verdict_json.hpp"

namespace fde::verifier {

namespace {

using Value = json::Value;
using Writer = rapidjson::Writer<rapidjson::StringBuffer>;

void write_text(Writer& w, std::string_view text) {
  const std::string valid = json::valid_utf8(text);
  w.String(valid.c_str(), static_cast<rapidjson::SizeType>(valid.size()));
}

void write_key_text(Writer& w, const char* key, std::string_view text) {
  w.Key(key);
  write_text(w, text);
}

// JSON the store holds as text (reference documents, measurements) is embedded as JSON; if a
// damaged row does not parse, it is shown as a string rather than failing the whole answer.
void write_embedded_json(Writer& w, const std::string& text) {
  rapidjson::Document doc;
  if (json::parse(doc, text, 4 * 1024 * 1024, "stored JSON") && (doc.IsObject() || doc.IsArray())) {
    doc.Accept(w);
    return;
  }
  write_text(w, text);
}

void write_set_names(Writer& w, const reference::ReferenceValues& reference) {
  w.StartArray();
  for (const auto& set : reference.sets) write_text(w, set.name);
  w.EndArray();
}

void write_image_summary(Writer& w, const ImageRecord& image) {
  w.StartObject();
  write_key_text(w, "image_id", image.image_id);
  write_key_text(w, "luks_uuid", image.luks_uuid);
  write_key_text(w, "status", image_status_name(image.status));
  w.Key("sets");
  write_set_names(w, image.reference);
  write_key_text(w, "created_at", image.created_at);
  write_key_text(w, "updated_at", image.updated_at);
  w.EndObject();
}

bool is_admin_record(const AuditRecord& record) { return record.entry.decision == "admin"; }

// An admin record's measurements column holds what changed; it is shown as "change".
void write_record(Writer& w, const AuditRecord& record, bool with_checks) {
  const AuditEntry& e = record.entry;
  const bool admin = is_admin_record(record);
  w.StartObject();
  w.Key("sequence");
  w.Int64(record.sequence);
  write_key_text(w, "time", record.time);
  write_key_text(w, "image_id", e.image_id);
  write_key_text(w, "peer", e.peer);
  write_key_text(w, "decision", e.decision);
  write_key_text(w, "reason", e.reason);
  write_key_text(w, "token_digest", e.token_digest);
  w.Key(admin ? "change" : "measurements");
  write_embedded_json(w, e.measurements);
  if (with_checks && !admin) {
    w.Key("checks");
    write_embedded_json(w, e.checks);
  }
  write_key_text(w, "previous_hash", record.previous_hash);
  write_key_text(w, "hash", record.hash);
  w.Key("keyed");
  w.Bool(record.format == audit_format_keyed);
  w.EndObject();
}

Result<std::string> required_text(const Value& request, std::string_view name) {
  auto value = json::require(request, "", name);
  if (!value) return tl::unexpected(value.error());
  auto text = json::get_string(**value, name);
  if (!text) return tl::unexpected(text.error());
  return std::string(*text);
}

Result<std::string> required_image_id(const Value& request) {
  auto image_id = required_text(request, "image_id");
  if (!image_id) return image_id;
  if (auto ok = protocol::validate_image_id(*image_id); !ok)
    return fail(Errc::invalid_argument, "image_id: " + ok.error().message);
  return image_id;
}

Result<ImageRecord> existing_image(Store& store, const std::string& image_id) {
  auto image = store.find_image(image_id);
  if (!image) return tl::unexpected(image.error());
  if (!*image) return fail(Errc::not_found, "image " + image_id + " is not enrolled");
  return std::move(**image);
}

// --- commands ---

class Commands {
 public:
  Commands(Store& store, Logger& logger, const AdminPeer& peer, const AdminApi::ReloadHandler& reload)
      : store_(store), logger_(logger), reload_(reload),
        actor_{static_cast<std::int64_t>(peer.uid), static_cast<std::int64_t>(peer.pid)} {}

  Result<void> run(std::string_view command, const Value& request, Writer& w) {
    if (command == "enroll") return enroll(request, w);
    if (command == "list") return list(request, w);
    if (command == "show") return show(request, w);
    if (command == "add-reference") return add_reference(request, w);
    if (command == "retire-reference") return retire_reference(request, w);
    if (command == "revoke") return set_status(request, ImageStatus::revoked, w);
    if (command == "reinstate") return set_status(request, ImageStatus::active, w);
    if (command == "audit") return audit(request, w);
    if (command == "verify-audit") return verify_audit(request, w);
    if (command == "explain") return explain(request, w);
    if (command == "delete") return delete_image(request, w);
    if (command == "backup") return backup(request, w);
    if (command == "rotate-kek") return rotate_kek(request, w);
    if (command == "reload") return reload(request, w);
    return fail(Errc::invalid_argument, "unknown command \"" + json::valid_utf8(command) + "\"");
  }

 private:
  Result<void> enroll(const Value& request, Writer& w) {
    if (auto ok = json::check_members(request, "", {"command", "bundle"}); !ok) return ok;
    auto bundle_value = json::require(request, "", "bundle");
    if (!bundle_value) return tl::unexpected(bundle_value.error());
    auto bundle = protocol::parse_enrollment_bundle(**bundle_value);
    if (!bundle) return tl::unexpected(bundle.error());
    ImageRecord image;
    image.image_id = bundle->image_id;
    image.luks_uuid = bundle->luks_uuid;
    image.status = ImageStatus::active;
    image.reference = bundle->reference;
    if (!image.reference.image_id) image.reference.image_id = image.image_id;
    auto recorded = store_.enroll(image, bundle->disk_key, actor_);
    bundle->disk_key.wipe();
    if (!recorded) return tl::unexpected(recorded.error());
    auto stored = existing_image(store_, image.image_id);
    if (!stored) return tl::unexpected(stored.error());
    log_change("admin_enroll", *recorded, image.image_id, {"luks_uuid", image.luks_uuid});
    write_image_summary(w, *stored);
    return {};
  }

  Result<void> list(const Value& request, Writer& w) {
    if (auto ok = json::check_members(request, "", {"command"}); !ok) return ok;
    auto images = store_.list_images();
    if (!images) return tl::unexpected(images.error());
    w.StartObject();
    w.Key("images");
    w.StartArray();
    for (const ImageRecord& image : *images) write_image_summary(w, image);
    w.EndArray();
    w.EndObject();
    return {};
  }

  Result<void> show(const Value& request, Writer& w) {
    if (auto ok = json::check_members(request, "", {"command", "image_id"}); !ok) return ok;
    auto image_id = required_image_id(request);
    if (!image_id) return tl::unexpected(image_id.error());
    auto image = existing_image(store_, *image_id);
    if (!image) return tl::unexpected(image.error());
    auto document = reference::serialize_reference_values(image->reference);
    if (!document) return tl::unexpected(document.error());
    w.StartObject();
    write_key_text(w, "image_id", image->image_id);
    write_key_text(w, "luks_uuid", image->luks_uuid);
    write_key_text(w, "status", image_status_name(image->status));
    write_key_text(w, "created_at", image->created_at);
    write_key_text(w, "updated_at", image->updated_at);
    w.Key("reference");
    write_embedded_json(w, *document);
    w.EndObject();
    return {};
  }

  // One set: parsed in the image's own document context (its hash algorithm and firmware
  // RIMs), so the reference parser applies every rule it applies to whole documents.
  Result<reference::ReferenceSet> parse_set(const Value& set, const reference::ReferenceValues& current) {
    rapidjson::Document wrapper(rapidjson::kObjectType);
    auto& allocator = wrapper.GetAllocator();
    wrapper.AddMember("version", static_cast<std::int64_t>(reference::format_version), allocator);
    const std::string alg(crypto::hash_alg_name(current.hash_alg));
    wrapper.AddMember("hash_alg", Value(alg.c_str(), allocator), allocator);
    if (!current.firmware_rims.empty()) {
      Value rims(rapidjson::kArrayType);
      for (const Bytes& rim : current.firmware_rims) rims.PushBack(Value(hex_encode(rim).c_str(), allocator), allocator);
      wrapper.AddMember("firmware_rims", rims, allocator);
    }
    Value sets(rapidjson::kArrayType);
    sets.PushBack(Value(set, allocator), allocator);
    wrapper.AddMember("sets", sets, allocator);
    auto parsed = reference::parse_reference_values(json::to_string(wrapper));
    if (!parsed) return fail(parsed.error().code, "reference set: " + parsed.error().message);
    return std::move(parsed->sets.front());
  }

  // A whole document (fde-image's output for a new kernel): its sets are added and its
  // firmware RIMs merged. It may not change the hash algorithm or the RPV policy.
  Result<std::vector<reference::ReferenceSet>> merge_document(const Value& document,
                                                              reference::ReferenceValues& current,
                                                              const std::string& image_id) {
    auto parsed = reference::parse_reference_values(json::to_string(document));
    if (!parsed) return tl::unexpected(parsed.error());
    if (parsed->image_id && *parsed->image_id != image_id)
      return fail(Errc::invalid_argument, "the document is for image " + *parsed->image_id + ", not " + image_id);
    if (parsed->hash_alg != current.hash_alg)
      return fail(Errc::invalid_argument, "the document uses " + std::string(crypto::hash_alg_name(parsed->hash_alg)) +
                                              ", the image " + std::string(crypto::hash_alg_name(current.hash_alg)));
    if (!parsed->allowed_rpvs.empty() && parsed->allowed_rpvs != current.allowed_rpvs)
      return fail(Errc::invalid_argument,
                  "the document's allowed_rpvs differ from the image's; adding reference sets does not change the "
                  "RPV policy");
    for (const Bytes& rim : parsed->firmware_rims)
      if (std::find(current.firmware_rims.begin(), current.firmware_rims.end(), rim) == current.firmware_rims.end())
        current.firmware_rims.push_back(rim);
    return std::move(parsed->sets);
  }

  Result<void> add_reference(const Value& request, Writer& w) {
    if (auto ok = json::check_members(request, "", {"command", "image_id", "reference", "replace"}); !ok) return ok;
    auto replace = json::optional_string(request, "", "replace");
    if (!replace) return tl::unexpected(replace.error());
    auto image_id = required_image_id(request);
    if (!image_id) return tl::unexpected(image_id.error());
    auto given = json::require(request, "", "reference");
    if (!given) return tl::unexpected(given.error());
    if (!(*given)->IsObject()) return fail(Errc::malformed, "reference: expected a set or a document (an object)");
    auto image = existing_image(store_, *image_id);
    if (!image) return tl::unexpected(image.error());

    reference::ReferenceValues updated = image->reference;
    std::vector<reference::ReferenceSet> sets;
    const bool whole_document = json::find(**given, "sets") != nullptr || json::find(**given, "version") != nullptr;
    if (whole_document) {
      auto merged = merge_document(**given, updated, *image_id);
      if (!merged) return tl::unexpected(merged.error());
      sets = std::move(*merged);
    } else {
      auto set = parse_set(**given, updated);
      if (!set) return tl::unexpected(set.error());
      sets.push_back(std::move(*set));
    }
    std::vector<std::string> added;
    for (auto& set : sets) {
      added.push_back(set.name);
      if (auto ok = reference::add_reference_set(updated, std::move(set)); !ok) return ok;
    }
    // --replace: the old set goes in the same change, after the new ones are in, so even the
    // image's only set can be replaced (a rebuilt initramfs on the same kernel).
    if (*replace) {
      if (std::find(added.begin(), added.end(), **replace) != added.end())
        return fail(Errc::invalid_argument, "--replace names \"" + json::valid_utf8(**replace) +
                                                "\", a set being added; give the old set's name");
      if (auto ok = reference::retire_reference_set(updated, **replace); !ok) return ok;
    }
    if (auto ok = reference::validate_reference_values(updated); !ok) return ok;
    auto recorded = store_.update_reference(*image_id, updated, actor_);
    if (!recorded) return tl::unexpected(recorded.error());
    std::string names;
    for (const auto& name : added) names += (names.empty() ? "" : ",") + name;
    log_change("admin_add_reference", *recorded, *image_id, {"sets", names});
    w.StartObject();
    write_key_text(w, "image_id", *image_id);
    if (*replace) write_key_text(w, "retired", **replace);
    w.Key("added");
    w.StartArray();
    for (const auto& name : added) write_text(w, name);
    w.EndArray();
    w.Key("sets");
    write_set_names(w, updated);
    w.EndObject();
    return {};
  }

  Result<void> retire_reference(const Value& request, Writer& w) {
    if (auto ok = json::check_members(request, "", {"command", "image_id", "set"}); !ok) return ok;
    auto image_id = required_image_id(request);
    if (!image_id) return tl::unexpected(image_id.error());
    auto set_name = required_text(request, "set");
    if (!set_name) return tl::unexpected(set_name.error());
    auto image = existing_image(store_, *image_id);
    if (!image) return tl::unexpected(image.error());
    reference::ReferenceValues updated = image->reference;
    if (auto ok = reference::retire_reference_set(updated, *set_name); !ok) return ok;
    auto recorded = store_.update_reference(*image_id, updated, actor_);
    if (!recorded) return tl::unexpected(recorded.error());
    log_change("admin_retire_reference", *recorded, *image_id, {"set", *set_name});
    w.StartObject();
    write_key_text(w, "image_id", *image_id);
    write_key_text(w, "retired", *set_name);
    w.Key("sets");
    write_set_names(w, updated);
    w.EndObject();
    return {};
  }

  Result<void> set_status(const Value& request, ImageStatus status, Writer& w) {
    if (auto ok = json::check_members(request, "", {"command", "image_id"}); !ok) return ok;
    auto image_id = required_image_id(request);
    if (!image_id) return tl::unexpected(image_id.error());
    auto image = existing_image(store_, *image_id);
    if (!image) return tl::unexpected(image.error());
    const ImageStatus previous = image->status;
    // Recorded even when nothing changes: the chain shows who asked, and when.
    auto recorded = store_.set_status(*image_id, status, actor_);
    if (!recorded) return tl::unexpected(recorded.error());
    log_change("admin_set_status", *recorded, *image_id, {"status", image_status_name(status)});
    w.StartObject();
    write_key_text(w, "image_id", *image_id);
    write_key_text(w, "status", image_status_name(status));
    write_key_text(w, "previous_status", image_status_name(previous));
    w.EndObject();
    return {};
  }

  Result<void> audit(const Value& request, Writer& w) {
    if (auto ok = json::check_members(request, "",
                                      {"command", "image_id", "decision", "after_sequence", "limit", "checks"});
        !ok)
      return ok;
    AuditQuery query;
    query.limit = AdminApi::default_audit_limit;
    auto image_id = json::optional_string(request, "", "image_id");
    if (!image_id) return tl::unexpected(image_id.error());
    query.image_id = *image_id;
    auto decision = json::optional_string(request, "", "decision");
    if (!decision) return tl::unexpected(decision.error());
    if (*decision && **decision != "release" && **decision != "deny" && **decision != "admin")
      return fail(Errc::invalid_argument, "decision must be \"release\", \"deny\" or \"admin\"");
    query.decision = *decision;
    auto after = json::optional_int(request, "", "after_sequence");
    if (!after) return tl::unexpected(after.error());
    if (*after && **after < 0) return fail(Errc::invalid_argument, "after_sequence must not be negative");
    query.after_sequence = *after;
    auto limit = json::optional_int(request, "", "limit");
    if (!limit) return tl::unexpected(limit.error());
    if (*limit) {
      if (**limit < 1 || **limit > static_cast<std::int64_t>(AdminApi::max_audit_limit))
        return fail(Errc::invalid_argument, "limit must be 1.." + std::to_string(AdminApi::max_audit_limit));
      query.limit = static_cast<std::size_t>(**limit);
    }
    auto with_checks = json::optional_bool(request, "", "checks");
    if (!with_checks) return tl::unexpected(with_checks.error());
    auto records = store_.query_audit(query);
    if (!records) return tl::unexpected(records.error());
    w.StartObject();
    w.Key("records");
    w.StartArray();
    for (const AuditRecord& record : *records) write_record(w, record, with_checks->value_or(false));
    w.EndArray();
    w.EndObject();
    return {};
  }

  // The daemon verifies, because only it holds the KEK that the records' MACs need.
  Result<void> verify_audit(const Value& request, Writer& w) {
    if (auto ok = json::check_members(request, "", {"command", "expect_head"}); !ok) return ok;
    auto expect_text = json::optional_string(request, "", "expect_head");
    if (!expect_text) return tl::unexpected(expect_text.error());
    std::optional<AuditHead> expected;
    if (*expect_text) {
      auto parsed = parse_audit_head(**expect_text);
      if (!parsed) return fail(parsed.error().code, "expect_head: " + parsed.error().message);
      expected = std::move(*parsed);
    }
    auto report = store_.verify_audit_chain(expected);
    if (!report) return tl::unexpected(report.error());
    if (!report->intact) logger_.error("audit_chain_broken", {{"problem", report->problem}});
    w.StartObject();
    w.Key("intact");
    w.Bool(report->intact);
    w.Key("records");
    w.Int64(report->records);
    w.Key("unkeyed_records");
    w.Int64(report->unkeyed_records);
    w.Key("first_bad_sequence");
    if (report->first_bad_sequence)
      w.Int64(*report->first_bad_sequence);
    else
      w.Null();
    write_key_text(w, "problem", report->problem);
    write_key_text(w, "head", format_audit_head(report->head));
    w.Key("expected_head");
    if (expected)
      write_text(w, format_audit_head(*expected));
    else
      w.Null();
    w.Key("expected_head_matched");
    w.Bool(report->expected_head_matched);
    w.EndObject();
    return {};
  }

  // The record by sequence. The store's query lists newest first after a sequence number, so
  // the record is found among the newest max_audit_scan records after it (explain is for
  // recent decisions; older ones remain readable with `audit`).
  Result<AuditRecord> record_by_sequence(std::int64_t sequence) {
    static constexpr std::size_t max_audit_scan = 10000;
    AuditQuery query;
    query.after_sequence = sequence - 1;
    query.limit = max_audit_scan;
    auto records = store_.query_audit(query);
    if (!records) return tl::unexpected(records.error());
    for (auto& record : *records)
      if (record.sequence == sequence) return std::move(record);
    if (records->size() == max_audit_scan)
      return fail(Errc::not_found, "audit record " + std::to_string(sequence) + " is older than the newest " +
                                       std::to_string(max_audit_scan) + " records; use `fde-admin audit`");
    return fail(Errc::not_found, "no audit record " + std::to_string(sequence));
  }

  Result<void> explain(const Value& request, Writer& w) {
    if (auto ok = json::check_members(request, "", {"command", "image_id", "sequence"}); !ok) return ok;
    auto sequence = json::optional_int(request, "", "sequence");
    if (!sequence) return tl::unexpected(sequence.error());
    const bool by_image = json::find(request, "image_id") != nullptr;
    if (sequence->has_value() == by_image) return fail(Errc::invalid_argument, "give either sequence or image_id");
    AuditRecord record;
    if (*sequence) {
      if (**sequence < 1) return fail(Errc::invalid_argument, "sequence must be at least 1");
      auto found = record_by_sequence(**sequence);
      if (!found) return tl::unexpected(found.error());
      record = std::move(*found);
    } else {
      auto image_id = required_image_id(request);
      if (!image_id) return tl::unexpected(image_id.error());
      AuditQuery query;
      query.image_id = *image_id;
      query.decision = "deny";
      query.limit = 1;
      auto records = store_.query_audit(query);
      if (!records) return tl::unexpected(records.error());
      if (records->empty()) return fail(Errc::not_found, "no denial is recorded for image " + *image_id);
      record = std::move(records->front());
    }
    if (is_admin_record(record))
      return fail(Errc::invalid_argument, "audit record " + std::to_string(record.sequence) + " is an administrative "
                                          "change (" + json::valid_utf8(record.entry.reason) + " by " +
                                          json::valid_utf8(record.entry.peer) + "), not a decision; `fde-admin audit` "
                                          "shows it");
    // The checks are the verdict the decision was made from; explain only re-reads them.
    auto verdict = checks_from_json(record.entry.checks);
    if (!verdict) return fail_with_context("audit record " + std::to_string(record.sequence), verdict.error());
    w.StartObject();
    w.Key("record");
    write_record(w, record, false);
    w.Key("checks");
    w.StartArray();
    for (const Check& check : verdict->checks()) {
      w.StartObject();
      write_key_text(w, "name", check.name);
      write_key_text(w, "expected", check.expected);
      write_key_text(w, "found", check.found);
      w.Key("passed");
      w.Bool(check.passed);
      w.EndObject();
    }
    w.EndArray();
    w.Key("failed");
    w.StartArray();
    for (const Check& check : verdict->checks())
      if (!check.passed) write_text(w, check.name);
    w.EndArray();
    w.EndObject();
    return {};
  }

  Result<void> delete_image(const Value& request, Writer& w) {
    if (auto ok = json::check_members(request, "", {"command", "image_id", "confirm"}); !ok) return ok;
    auto image_id = required_image_id(request);
    if (!image_id) return tl::unexpected(image_id.error());
    auto confirm = json::optional_string(request, "", "confirm");
    if (!confirm) return tl::unexpected(confirm.error());
    // The key is destroyed for good: the request must say which image twice.
    if (!*confirm || **confirm != *image_id)
      return fail(Errc::invalid_argument, "delete destroys the disk key of " + *image_id +
                                              " for good; confirm must repeat the image id (fde-admin delete IMAGE --yes)");
    auto recorded = store_.delete_image(*image_id, actor_);
    if (!recorded) return tl::unexpected(recorded.error());
    log_change("admin_delete", *recorded, *image_id, {"state", "deleted"});
    w.StartObject();
    write_key_text(w, "image_id", *image_id);
    w.Key("audit");
    w.Int64(recorded->sequence);
    w.EndObject();
    return {};
  }

  Result<void> backup(const Value& request, Writer& w) {
    if (auto ok = json::check_members(request, "", {"command", "path"}); !ok) return ok;
    auto path = required_text(request, "path");
    if (!path) return tl::unexpected(path.error());
    if (path->empty() || path->front() != '/' || path->find('\0') != std::string::npos || path->size() > 4096)
      return fail(Errc::invalid_argument, "path: an absolute file name the daemon can write");
    auto report = store_.backup(*path);
    if (!report) return tl::unexpected(report.error());
    const std::string head = format_audit_head(report->audit_head);
    logger_.info("admin_backup", {{"path", *path}, {"images", std::to_string(report->images)}, {"audit_head", head},
                                  {"uid", std::to_string(actor_.uid)}, {"pid", std::to_string(actor_.pid)}});
    w.StartObject();
    write_key_text(w, "path", report->path);
    w.Key("bytes");
    w.Int64(report->bytes);
    w.Key("images");
    w.Int64(report->images);
    write_key_text(w, "audit_head", head);
    w.EndObject();
    return {};
  }

  Result<void> rotate_kek(const Value& request, Writer& w) {
    if (auto ok = json::check_members(request, "", {"command", "new_kek"}); !ok) return ok;
    auto text = json::require(request, "", "new_kek");
    if (!text) return tl::unexpected(text.error());
    auto hex = json::get_string(**text, "new_kek");
    if (!hex) return tl::unexpected(hex.error());
    if (hex->size() != 2 * KeyEncryptionKey::key_size)
      return fail(Errc::invalid_argument, "new_kek: expected " + std::to_string(2 * KeyEncryptionKey::key_size) +
                                              " hex digits");
    // Decoded into a wiped buffer (the request line itself is wiped by handle()).
    SecretBytes key(KeyEncryptionKey::key_size);
    auto nibble = [](char c) -> int {
      if (c >= '0' && c <= '9') return c - '0';
      if (c >= 'a' && c <= 'f') return c - 'a' + 10;
      if (c >= 'A' && c <= 'F') return c - 'A' + 10;
      return -1;
    };
    for (std::size_t i = 0; i < key.size(); ++i) {
      const int high = nibble((*hex)[2 * i]);
      const int low = nibble((*hex)[2 * i + 1]);
      if (high < 0 || low < 0) return fail(Errc::invalid_argument, "new_kek: not hex digits");
      key.data()[i] = static_cast<std::uint8_t>((high << 4) | low);
    }
    auto kek = KeyEncryptionKey::from_bytes(key.view());
    if (!kek) return tl::unexpected(kek.error());
    auto rotation = store_.rotate_kek(std::move(*kek), actor_);
    if (!rotation) return tl::unexpected(rotation.error());
    log_change("admin_rotate_kek", rotation->record, "", {"images", std::to_string(rotation->images)});
    w.StartObject();
    w.Key("images");
    w.Int64(rotation->images);
    w.Key("key_epoch");
    w.Int64(rotation->key_epoch);
    w.Key("audit");
    w.Int64(rotation->record.sequence);
    w.EndObject();
    return {};
  }

  Result<void> reload(const Value& request, Writer& w) {
    if (auto ok = json::check_members(request, "", {"command"}); !ok) return ok;
    if (!reload_) return fail(Errc::unsupported, "this daemon cannot be reloaded over the admin socket");
    logger_.info("admin_reload", {{"uid", std::to_string(actor_.uid)}, {"pid", std::to_string(actor_.pid)}});
    if (auto ok = reload_(); !ok) return fail(ok.error().code, "reload failed, previous configuration kept: " + ok.error().message);
    w.StartObject();
    write_key_text(w, "reload", "done");
    w.EndObject();
    return {};
  }

  // A change's log line also names who made it and the audit record that holds it.
  void log_change(std::string_view event, const AuditRecord& record, std::string_view image, LogField detail) {
    const std::string uid = std::to_string(actor_.uid);
    const std::string pid = std::to_string(actor_.pid);
    const std::string sequence = std::to_string(record.sequence);
    logger_.info(event, {{"image", image}, detail, {"uid", uid}, {"pid", pid}, {"audit", sequence}});
  }

  Store& store_;
  Logger& logger_;
  const AdminApi::ReloadHandler& reload_;
  const AdminActor actor_;
};

std::string error_line(const Error& error) {
  std::string out = "{\"ok\":false,\"error\":";
  json::append_quoted(out, errc_name(error.code));
  out += ",\"message\":";
  json::append_quoted(out, json::valid_utf8(error.message));
  out += "}";
  return out;
}

}  // namespace

std::string AdminApi::handle(const AdminPeer& peer, const std::string& request_line) {
  // A private copy parsed in place and wiped on return: an enroll request carries a key.
  SecretBytes buffer;
  rapidjson::Document request;
  if (auto ok = json::parse_in_place(request, buffer, request_line, max_admin_request, "request"); !ok)
    return error_line(ok.error());
  if (!request.IsObject()) return error_line(Error{Errc::malformed, "request: expected an object"});
  auto command_value = json::require(request, "", "command");
  if (!command_value) return error_line(command_value.error());
  auto command = json::get_string(**command_value, "command");
  if (!command) return error_line(command.error());

  rapidjson::StringBuffer result;
  Writer writer(result);
  Commands commands(store_, logger_, peer, reload_);
  auto ran = commands.run(*command, request, writer);
  if (!ran) {
    logger_.info("admin_refused", {{"command", json::valid_utf8(*command)}, {"error", ran.error().describe()}});
    return error_line(ran.error());
  }
  return "{\"ok\":true,\"result\":" + std::string(result.GetString(), result.GetSize()) + "}";
}

}  // namespace fde::verifier
