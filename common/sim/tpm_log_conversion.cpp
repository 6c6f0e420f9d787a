// TPM event log + PCRs -> CCEL log + REMs, as the simulated TMM sees a TPM-measured boot.
#include "common/sim/tpm_log_conversion.hpp"

#include <algorithm>
#include <string_view>

#include "common/crypto/hash.hpp"
#include "common/sim/event_log_builder.hpp"

namespace fde::sim {

namespace {

// TCG PC Client Platform Firmware Profile: the StartupLocality EV_NO_ACTION event's data is
// this signature (with its NUL) followed by one byte, the locality of TPM2_Startup; PCR0
// then starts from 31 zero bytes and that byte.
constexpr std::string_view startup_locality_signature{"StartupLocality\0", 16};

std::string hex_prefix(const Bytes& b) { return hex_encode(ByteView(b).first(std::min<std::size_t>(b.size(), 8))); }

}  // namespace

std::optional<std::uint32_t> cc_mr_index_for_pcr(std::uint32_t pcr) {
  if (pcr == 0) return 0;
  if (pcr == 1 || pcr == 7) return 1;
  if (pcr >= 2 && pcr <= 6) return 2;
  if (pcr >= 8 && pcr <= 15) return 3;
  return std::nullopt;
}

Result<Bytes> parse_pcr_text(ByteView text) {
  std::string_view s = as_text(text);
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.remove_suffix(1);
  if (s.size() != 64) return fail(Errc::malformed, "PCR value: expected 64 hex digits, got " + std::to_string(s.size()) + " characters");
  auto value = hex_decode(s);  // either case
  if (value && value->size() != 32) return fail(Errc::malformed, "PCR value: expected 64 hex digits");
  return value;
}

Result<TmmMeasurements> convert_tpm_log(ByteView tpm_log, const PcrValues& pcrs) {
  auto parsed = eventlog::parse_event_log(tpm_log);
  if (!parsed) return fail_with_context("TPM event log", parsed.error());
  const std::uint16_t sha256_id = eventlog::tpm_alg_sha256;
  if (!parsed->has_algorithm(sha256_id))
    return fail(Errc::unsupported, "TPM event log: no SHA-256 bank (the TPM's sha256 PCR bank is not active)");

  // 1. The log must be what the TPM measured: replay it per PCR.
  std::array<Bytes, tpm_pcr_count> replayed;
  std::array<bool, tpm_pcr_count> extended{};
  for (auto& pcr : replayed) pcr.assign(32, 0);
  for (std::size_t i = 0; i < parsed->events.size(); ++i) {
    const auto& event = parsed->events[i];
    if (event.mr_index >= tpm_pcr_count)
      return fail(Errc::malformed, "TPM event log: record " + std::to_string(i) + " names PCR " +
                                       std::to_string(event.mr_index));
    if (event.event_type == eventlog::ev_no_action) {
      ByteView data(event.data);
      if (event.mr_index == 0 && data.size() == startup_locality_signature.size() + 1 &&
          as_text(data.first(startup_locality_signature.size())) == startup_locality_signature) {
        if (extended[0]) return fail(Errc::malformed, "TPM event log: StartupLocality after a PCR0 extend");
        replayed[0].back() = data.back();
      }
      continue;
    }
    const Bytes* digest = event.digest_for(sha256_id);
    if (digest == nullptr || digest->size() != 32)
      return fail(Errc::malformed, "TPM event log: record " + std::to_string(i) + " has no SHA-256 digest");
    replayed[event.mr_index] = crypto::digest_parts(crypto::HashAlg::sha256, {replayed[event.mr_index], *digest});
    extended[event.mr_index] = true;
  }
  for (std::uint32_t pcr = 0; pcr < tpm_pcr_count; ++pcr) {
    if (!extended[pcr]) continue;
    auto it = pcrs.find(pcr);
    if (it == pcrs.end())
      return fail(Errc::not_found, "TPM event log extends PCR " + std::to_string(pcr) + " but its value was not read");
    if (it->second != replayed[pcr])
      return fail(Errc::verification_failed, "TPM event log does not replay to PCR " + std::to_string(pcr) +
                                                 ": log " + hex_prefix(replayed[pcr]) + "..., TPM " +
                                                 hex_prefix(it->second) + "...");
  }

  // 2. The CCEL log virtCCA's firmware would have written for the same events.
  EventLogBuilder builder({crypto::HashAlg::sha256});
  TmmMeasurements out;
  for (const auto& event : parsed->events) {
    auto mr = cc_mr_index_for_pcr(event.mr_index);
    if (!mr || event.event_type == eventlog::ev_no_action) {
      ++out.events_dropped;
      continue;
    }
    auto added = builder.add_event(*mr, event.event_type, event.data,
                                   Measurement::of_digest(crypto::HashAlg::sha256, *event.digest_for(sha256_id)));
    if (!added) return fail_with_context("CCEL log", added.error());
    ++out.events_kept;
  }
  out.ccel_log = builder.log();
  auto rems = builder.rems(crypto::HashAlg::sha256);
  if (!rems) return tl::unexpected(rems.error());
  out.rems = std::move(*rems);
  return out;
}

}  // namespace fde::sim
