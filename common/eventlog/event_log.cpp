// Bounds-checked TCG2 crypto-agile event log parser and REM replay (sections d.2, d.3).
#include "common/eventlog/event_log.hpp"

#include <algorithm>

namespace fde::eventlog {

namespace {

// Section d.2: "Spec ID Event03\0", the signature of the TCG_EfiSpecIDEvent.
constexpr std::string_view spec_id_signature{"Spec ID Event03\0", 16};
constexpr std::size_t sha1_digest_size = 20;
constexpr std::uint32_t fill_word = 0xFFFFFFFF;

// A cursor over the log that refuses every read past the end, so no code below can overread.
class Reader {
 public:
  // `base` is where `data` starts in the whole log, so errors report absolute offsets.
  explicit Reader(ByteView data, std::size_t base = 0) : data_(data), base_(base) {}

  std::size_t offset() const { return offset_; }
  std::size_t remaining() const { return data_.size() - offset_; }
  ByteView rest() const { return data_.subspan(offset_); }

  Result<std::uint8_t> u8(std::string_view what) {
    if (remaining() < 1) return truncated(what);
    return data_[offset_++];
  }
  Result<std::uint16_t> u16(std::string_view what) {
    if (remaining() < 2) return truncated(what);
    auto v = load_le16(data_.data() + offset_);
    offset_ += 2;
    return v;
  }
  Result<std::uint32_t> u32(std::string_view what) {
    if (remaining() < 4) return truncated(what);
    auto v = load_le32(data_.data() + offset_);
    offset_ += 4;
    return v;
  }
  Result<ByteView> bytes(std::size_t n, std::string_view what) {
    if (remaining() < n) return truncated(what);
    ByteView v = data_.subspan(offset_, n);
    offset_ += n;
    return v;
  }

 private:
  tl::unexpected<Error> truncated(std::string_view what) const {
    return fail(Errc::malformed, "event log: " + std::string(what) + " at offset " +
                                     std::to_string(base_ + offset_) +
                                     " runs past the end of its record or the log");
  }

  ByteView data_;
  std::size_t base_ = 0;
  std::size_t offset_ = 0;
};

// Canonical digest sizes of the algorithms we know; a Spec ID event that declares another
// size for them is lying about the layout of every record.
std::optional<std::uint16_t> known_digest_size(std::uint16_t algorithm_id) {
  switch (algorithm_id) {
    case tpm_alg_sha1: return std::uint16_t{20};
    case tpm_alg_sha256: return std::uint16_t{32};
    case tpm_alg_sha384: return std::uint16_t{48};
    case tpm_alg_sha512: return std::uint16_t{64};
    case tpm_alg_sm3_256: return std::uint16_t{32};
    default: return std::nullopt;
  }
}

std::string hex16(std::uint16_t v) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string out = "0x";
  for (int shift = 12; shift >= 0; shift -= 4) out.push_back(digits[(v >> shift) & 0xF]);
  return out;
}

// Section d.2: the first record is a TCG_PCClientPCREvent (SHA-1 layout) of type
// EV_NO_ACTION whose data is a TCG_EfiSpecIDEvent listing the digest algorithms and sizes.
Result<std::vector<AlgorithmSize>> parse_spec_id_record(Reader& r) {
  // The MR index of this record is not checked: the spec says 0, but TDX firmware writes 1
  // (CCEL_data_grub), and the record is never extended anyway.
  auto mr_index = r.u32("Spec ID record MR index");
  if (!mr_index) return tl::unexpected(mr_index.error());
  auto type = r.u32("Spec ID record event type");
  if (!type) return tl::unexpected(type.error());
  if (*type != ev_no_action)
    return fail(Errc::malformed, "event log: first record is not EV_NO_ACTION (Spec ID event)");
  if (auto sha1 = r.bytes(sha1_digest_size, "Spec ID record digest"); !sha1)
    return tl::unexpected(sha1.error());
  auto size = r.u32("Spec ID record event size");
  if (!size) return tl::unexpected(size.error());
  auto body = r.bytes(*size, "Spec ID event");
  if (!body) return tl::unexpected(body.error());

  Reader s(*body, r.offset() - body->size());
  auto signature = s.bytes(spec_id_signature.size(), "Spec ID signature");
  if (!signature) return tl::unexpected(signature.error());
  if (as_text(*signature) != spec_id_signature)
    return fail(Errc::malformed, "event log: first record is not a \"Spec ID Event03\" event");
  // platformClass u32, specVersionMinor, specVersionMajor, specErrata, uintnSize (u8 each).
  if (auto fixed = s.bytes(8, "Spec ID header"); !fixed) return tl::unexpected(fixed.error());
  auto count = s.u32("Spec ID algorithm count");
  if (!count) return tl::unexpected(count.error());
  if (*count == 0 || *count > max_spec_id_algorithms)
    return fail(Errc::malformed, "event log: Spec ID event lists " + std::to_string(*count) +
                                     " algorithms (1.." +
                                     std::to_string(max_spec_id_algorithms) + " allowed)");
  std::vector<AlgorithmSize> algorithms;
  for (std::uint32_t i = 0; i < *count; ++i) {
    auto id = s.u16("Spec ID algorithm id");
    if (!id) return tl::unexpected(id.error());
    auto digest_size = s.u16("Spec ID digest size");
    if (!digest_size) return tl::unexpected(digest_size.error());
    if (*digest_size == 0 || *digest_size > max_digest_size)
      return fail(Errc::malformed, "event log: Spec ID digest size " +
                                       std::to_string(*digest_size) + " for algorithm " +
                                       hex16(*id) + " is out of range");
    if (auto known = known_digest_size(*id); known && *known != *digest_size)
      return fail(Errc::malformed, "event log: Spec ID declares " + std::to_string(*digest_size) +
                                       "-byte digests for algorithm " + hex16(*id) +
                                       ", which has " + std::to_string(*known));
    for (const auto& a : algorithms)
      if (a.algorithm_id == *id)
        return fail(Errc::malformed,
                    "event log: Spec ID lists algorithm " + hex16(*id) + " twice");
    algorithms.push_back({*id, *digest_size});
  }
  auto vendor_size = s.u8("Spec ID vendor info size");
  if (!vendor_size) return tl::unexpected(vendor_size.error());
  if (auto vendor = s.bytes(*vendor_size, "Spec ID vendor info"); !vendor)
    return tl::unexpected(vendor.error());
  if (s.remaining() != 0)
    return fail(Errc::malformed, "event log: Spec ID event has " + std::to_string(s.remaining()) +
                                     " trailing bytes");
  return algorithms;
}

bool all_zero(ByteView bytes) {
  return std::all_of(bytes.begin(), bytes.end(), [](std::uint8_t b) { return b == 0; });
}
bool all_ff(ByteView bytes) {
  return std::all_of(bytes.begin(), bytes.end(), [](std::uint8_t b) { return b == 0xFF; });
}

// Section d.2: TCG_PCR_EVENT2.
Result<Event> parse_event2(Reader& r, const std::vector<AlgorithmSize>& algorithms) {
  Event event;
  auto mr_index = r.u32("record MR index");
  if (!mr_index) return tl::unexpected(mr_index.error());
  auto type = r.u32("record event type");
  if (!type) return tl::unexpected(type.error());
  event.mr_index = *mr_index;
  event.event_type = *type;
  const std::size_t record_offset = r.offset() - 8;
  auto where = [&] { return " in the record at offset " + std::to_string(record_offset); };

  auto count = r.u32("record digest count");
  if (!count) return tl::unexpected(count.error());
  // Every record carries one digest per Spec ID algorithm (TCG PC Client spec, crypto-agile
  // log); a different count means we cannot trust our idea of the record layout.
  if (*count != algorithms.size())
    return fail(Errc::malformed, "event log: digest count " + std::to_string(*count) +
                                     " differs from the Spec ID event's " +
                                     std::to_string(algorithms.size()) + where());
  event.digests.reserve(algorithms.size());
  for (std::uint32_t i = 0; i < *count; ++i) {
    auto id = r.u16("record digest algorithm");
    if (!id) return tl::unexpected(id.error());
    auto it = std::find_if(algorithms.begin(), algorithms.end(),
                           [&](const AlgorithmSize& a) { return a.algorithm_id == *id; });
    if (it == algorithms.end())
      return fail(Errc::malformed, "event log: algorithm " + hex16(*id) +
                                       " is not in the Spec ID event" + where());
    if (event.digest_for(*id) != nullptr)
      return fail(Errc::malformed, "event log: algorithm " + hex16(*id) + " appears twice" + where());
    auto digest = r.bytes(it->digest_size, "record digest");
    if (!digest) return tl::unexpected(digest.error());
    event.digests.emplace_back(*id, to_bytes(*digest));
  }
  auto size = r.u32("record event size");
  if (!size) return tl::unexpected(size.error());
  // r.bytes() refuses any size past the end of the buffer, which is itself capped at
  // max_event_log_size, so a huge EventSize can never make us allocate or read beyond it.
  auto data = r.bytes(*size, "record event data");
  if (!data) return tl::unexpected(data.error());
  event.data = to_bytes(*data);
  return event;
}

}  // namespace

const Bytes* Event::digest_for(std::uint16_t algorithm_id) const {
  for (const auto& [id, digest] : digests)
    if (id == algorithm_id) return &digest;
  return nullptr;
}

bool EventLog::has_algorithm(std::uint16_t algorithm_id) const {
  return std::any_of(algorithms.begin(), algorithms.end(),
                     [&](const AlgorithmSize& a) { return a.algorithm_id == algorithm_id; });
}

Result<EventLog> parse_event_log(ByteView log) {
  if (log.size() > max_event_log_size)
    return fail(Errc::too_large, "event log: " + std::to_string(log.size()) + " bytes, more than " +
                                     std::to_string(max_event_log_size));
  if (log.empty()) return fail(Errc::malformed, "event log: empty");
  Reader r(log);
  EventLog out;
  auto algorithms = parse_spec_id_record(r);
  if (!algorithms) return tl::unexpected(algorithms.error());
  out.algorithms = std::move(*algorithms);

  while (r.remaining() > 0) {
    ByteView rest = r.rest();
    // Section d.1/d.2: unused log area is 0xFF; a record header of all-ones ends the log.
    // A tail shorter than a header is only acceptable if it is fill as well.
    if (rest.size() < 8) {
      if (all_ff(rest) || all_zero(rest)) break;
      return fail(Errc::malformed, "event log: " + std::to_string(rest.size()) +
                                       " stray bytes at offset " + std::to_string(r.offset()));
    }
    if (load_le32(rest.data()) == fill_word && load_le32(rest.data() + 4) == fill_word) break;
    // td-shim (CCEL_data) leaves the unused area zeroed instead. Only a tail that is zero to
    // the very end counts as fill; a zero header before real bytes is parsed (and refused).
    if (load_le32(rest.data()) == 0 && load_le32(rest.data() + 4) == 0 && all_zero(rest)) break;
    if (out.events.size() >= max_event_count)
      return fail(Errc::too_large,
                  "event log: more than " + std::to_string(max_event_count) + " records");
    auto event = parse_event2(r, out.algorithms);
    if (!event) return tl::unexpected(event.error());
    out.events.push_back(std::move(*event));
  }
  return out;
}

std::uint16_t tpm_alg_id(crypto::HashAlg alg) {
  switch (alg) {
    case crypto::HashAlg::sha256: return tpm_alg_sha256;
    case crypto::HashAlg::sha384: return tpm_alg_sha384;
    case crypto::HashAlg::sha512: return tpm_alg_sha512;
  }
  return 0;
}

bool is_extended(const Event& event) {
  return event.event_type != ev_no_action && event.mr_index >= 1 && event.mr_index <= rem_count;
}

Result<std::array<Bytes, 4>> replay(const EventLog& log, crypto::HashAlg alg) {
  const std::uint16_t id = tpm_alg_id(alg);
  if (!log.has_algorithm(id))
    return fail(Errc::unsupported, "event log: no " + std::string(crypto::hash_alg_name(alg)) +
                                       " digests (Spec ID algorithm " + hex16(id) + " absent)");
  const std::size_t size = crypto::digest_size(alg);
  std::array<Bytes, 4> rems;
  for (auto& rem : rems) rem.assign(size, 0);
  for (std::size_t i = 0; i < log.events.size(); ++i) {
    const Event& event = log.events[i];
    // Section d.3: EV_NO_ACTION is informational and MR 0 is the RIM, which the log never
    // changes (the reference sample's folding of MR 0 into REM[0] is a bug, e.9).
    if (!is_extended(event)) continue;
    const Bytes* digest = event.digest_for(id);
    if (digest == nullptr || digest->size() != size)
      return fail(Errc::malformed, "event log: record " + std::to_string(i) + " has no " +
                                       std::string(crypto::hash_alg_name(alg)) + " digest");
    Bytes& rem = rems[event.mr_index - 1];
    rem = crypto::digest_parts(alg, {rem, *digest});
  }
  return rems;
}

}  // namespace fde::eventlog
