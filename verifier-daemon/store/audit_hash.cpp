// Backend-independent parts of the store interface: the canonical audit record hash that
// links the chain (the same for every backend) and image status names.
//
// hash = hex(SHA-256(field_1 || ... || field_n)) where every field is an 8-byte big-endian
// length followed by its bytes, in this order: previous_hash, sequence (8-byte big-endian
// two's complement), time, image_id, peer, token_digest, measurements, decision, reason,
// checks. The length prefixes keep bytes from moving across a field boundary ("ab"+"c" and
// "a"+"bc" hash differently); the sequence and time are covered so neither can be rewritten.
#include <cstdint>

#include "common/crypto/hash.hpp"
#include "verifier-daemon/store/store.hpp"

namespace fde::verifier {

namespace {

void append_be64(Bytes& out, std::uint64_t value) {
  for (int shift = 56; shift >= 0; shift -= 8) out.push_back(static_cast<std::uint8_t>(value >> shift));
}

void append_field(Bytes& out, ByteView field) {
  append_be64(out, field.size());
  out.insert(out.end(), field.begin(), field.end());
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

std::string audit_record_hash(const AuditRecord& record) {
  const AuditEntry& e = record.entry;
  Bytes input;
  input.reserve(10 * 8 + 8 + record.previous_hash.size() + record.time.size() + e.image_id.size() + e.peer.size() +
                e.token_digest.size() + e.measurements.size() + e.decision.size() + e.reason.size() +
                e.checks.size());
  append_field(input, as_bytes(record.previous_hash));
  Bytes sequence;
  append_be64(sequence, static_cast<std::uint64_t>(record.sequence));
  append_field(input, sequence);
  for (std::string_view field : {std::string_view(record.time), std::string_view(e.image_id),
                                 std::string_view(e.peer), std::string_view(e.token_digest),
                                 std::string_view(e.measurements), std::string_view(e.decision),
                                 std::string_view(e.reason), std::string_view(e.checks)})
    append_field(input, as_bytes(field));
  return hex_encode(crypto::sha256(input));
}

}  // namespace fde::verifier
