// Backend-independent parts of the store interface: the canonical encodings that link the
// audit chain (the same for every backend), the exported head's text form, and image status
// names.
//
// Every record is encoded as a sequence of fields, each an 8-byte big-endian length followed
// by its bytes, in this order: previous_hash, sequence (8-byte big-endian two's complement),
// time, image_id, peer, token_digest, measurements, decision, reason, checks. The length
// prefixes keep bytes from moving across a field boundary ("ab"+"c" and "a"+"bc" differ); the
// sequence and time are covered so neither can be rewritten.
//
//   format 1 (unkeyed, stores before schema version 2): hash = hex(SHA-256(fields))
//   format 2 (keyed):  hash = hex(HMAC-SHA-256(K, field("virtcca-fde/v1 audit record") || fields))
//   K = HKDF-SHA-256(ikm = KEK, salt = none, info = "virtcca-fde/v1 audit chain MAC key", 32 bytes)
//
// Anyone can recompute a format 1 hash; only a holder of the KEK can compute a format 2 MAC.
#include <cstdint>

#include "common/crypto/hash.hpp"
#include "common/crypto/mac.hpp"
#include "verifier-daemon/store/store.hpp"

namespace fde::verifier {

namespace {

constexpr std::string_view keyed_record_label = "virtcca-fde/v1 audit record";
constexpr std::size_t hash_hex_size = 64;

void append_be64(Bytes& out, std::uint64_t value) {
  for (int shift = 56; shift >= 0; shift -= 8) out.push_back(static_cast<std::uint8_t>(value >> shift));
}

void append_field(Bytes& out, ByteView field) {
  append_be64(out, field.size());
  out.insert(out.end(), field.begin(), field.end());
}

Bytes encode_fields(const AuditRecord& record, std::string_view label) {
  const AuditEntry& e = record.entry;
  Bytes input;
  input.reserve(11 * 8 + 8 + label.size() + record.previous_hash.size() + record.time.size() + e.image_id.size() +
                e.peer.size() + e.token_digest.size() + e.measurements.size() + e.decision.size() + e.reason.size() +
                e.checks.size());
  if (!label.empty()) append_field(input, as_bytes(label));
  append_field(input, as_bytes(record.previous_hash));
  Bytes sequence;
  append_be64(sequence, static_cast<std::uint64_t>(record.sequence));
  append_field(input, sequence);
  for (std::string_view field : {std::string_view(record.time), std::string_view(e.image_id),
                                 std::string_view(e.peer), std::string_view(e.token_digest),
                                 std::string_view(e.measurements), std::string_view(e.decision),
                                 std::string_view(e.reason), std::string_view(e.checks)})
    append_field(input, as_bytes(field));
  return input;
}

bool is_lower_hex(std::string_view text) {
  for (char c : text)
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  return true;
}

}  // namespace

std::string_view image_status_name(ImageStatus status) {
  switch (status) {
    case ImageStatus::active: return "active";
    case ImageStatus::revoked: return "revoked";
  }
  return "revoked";
}

std::optional<ImageStatus> image_status_from_name(std::string_view name) {
  if (name == "active") return ImageStatus::active;
  if (name == "revoked") return ImageStatus::revoked;
  return std::nullopt;
}

std::string audit_record_hash(const AuditRecord& record) { return hex_encode(crypto::sha256(encode_fields(record, {}))); }

Result<std::string> audit_record_mac(const SecretBytes& key, const AuditRecord& record) {
  if (key.size() != KeyEncryptionKey::key_size) return fail(Errc::invalid_argument, "audit MAC key: wrong size");
  auto mac = crypto::hmac_sha256(key.view(), encode_fields(record, keyed_record_label));
  if (!mac) return tl::unexpected(mac.error());
  return hex_encode(*mac);
}

std::string format_audit_head(const AuditHead& head) { return std::to_string(head.sequence) + ":" + head.hash; }

Result<AuditHead> parse_audit_head(std::string_view text) {
  const auto colon = text.find(':');
  const std::string_view number = text.substr(0, colon);
  const auto bad = [&] {
    return fail(Errc::invalid_argument, "an audit head is SEQ:HEX (a sequence number, a colon and 64 hex digits), as "
                                        "`fde-admin audit --head` prints it");
  };
  if (colon == std::string_view::npos || number.empty() || number.size() > 18) return bad();
  AuditHead head;
  for (char c : number) {
    if (c < '0' || c > '9') return bad();
    head.sequence = head.sequence * 10 + (c - '0');
  }
  std::string hash(text.substr(colon + 1));
  for (char& c : hash)
    if (c >= 'A' && c <= 'F') c = static_cast<char>(c - 'A' + 'a');
  if (hash.size() != hash_hex_size || !is_lower_hex(hash)) return bad();
  head.hash = std::move(hash);
  return head;
}

}  // namespace fde::verifier
