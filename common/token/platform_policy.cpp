// Parsing and naming for the platform policy (platform_policy.hpp). The lifecycle ranges are
// the PSA security lifecycle encoding that the Arm CCA platform token reuses for claim 2395.
#include "common/token/platform_policy.hpp"

#include <array>
#include <cstdio>

#include "common/util/error.hpp"

namespace fde::token {

namespace {

struct LifecycleRange {
  LifecycleState state;
  std::string_view name;
  std::int64_t major;  // the upper byte; the lower byte is free
};

constexpr std::array<LifecycleRange, 7> lifecycle_ranges{{
    {LifecycleState::unknown, "unknown", 0x00},
    {LifecycleState::assembly_and_test, "assembly_and_test", 0x10},
    {LifecycleState::rot_provisioning, "rot_provisioning", 0x20},
    {LifecycleState::secured, "secured", 0x30},
    {LifecycleState::non_rot_debug, "non_rot_debug", 0x40},
    {LifecycleState::recoverable_rot_debug, "recoverable_rot_debug", 0x50},
    {LifecycleState::decommissioned, "decommissioned", 0x60},
}};

std::string known_lifecycle_names() {
  std::string out;
  for (const auto& range : lifecycle_ranges) out += (out.empty() ? "" : ", ") + std::string(range.name);
  return out;
}

}  // namespace

std::optional<LifecycleState> lifecycle_state_of(std::int64_t claim) {
  if (claim < 0 || claim > 0xffff) return std::nullopt;
  for (const auto& range : lifecycle_ranges)
    if ((claim >> 8) == range.major) return range.state;
  return std::nullopt;
}

std::string_view lifecycle_state_name(LifecycleState state) {
  for (const auto& range : lifecycle_ranges)
    if (range.state == state) return range.name;
  return "unknown";
}

Result<LifecycleState> lifecycle_state_from_name(std::string_view name) {
  for (const auto& range : lifecycle_ranges)
    if (range.name == name) return range.state;
  return fail(Errc::invalid_argument,
              "unknown lifecycle state \"" + std::string(name) + "\" (known: " + known_lifecycle_names() + ")");
}

std::string lifecycle_value_text(std::int64_t claim) {
  if (claim < 0) return std::to_string(claim);
  char buffer[32];
  std::snprintf(buffer, sizeof buffer, "0x%04llx", static_cast<unsigned long long>(claim));
  return buffer;
}

Result<RequiredSwComponent> parse_required_sw_component(std::string_view text) {
  const std::string expected = "expected [TYPE:]HEX (a sw component type and its measurement), found \"" +
                               std::string(text) + "\"";
  RequiredSwComponent required;
  std::string_view hex = text;
  // Hex has no ':', so the last one separates the type (which could itself hold one).
  if (const auto colon = text.rfind(':'); colon != std::string_view::npos) {
    if (colon == 0) return fail(Errc::invalid_argument, expected + ": the type before ':' is empty");
    required.type = std::string(text.substr(0, colon));
    hex = text.substr(colon + 1);
  }
  auto measurement = hex_decode(hex);
  if (!measurement) return fail(Errc::invalid_argument, expected + ": " + measurement.error().message);
  // The platform's measurements are sha-256, sha-384 or sha-512 digests.
  const std::size_t size = measurement->size();
  if (size != 32 && size != 48 && size != 64)
    return fail(Errc::invalid_argument,
                expected + ": a measurement of 32, 48 or 64 bytes, found " + std::to_string(size) + " bytes");
  required.measurement = std::move(*measurement);
  return required;
}

std::string describe_required_sw_component(const RequiredSwComponent& required) {
  return (required.type ? "\"" + *required.type + "\" " : std::string("any type ")) + hex_encode(required.measurement);
}

Result<Bytes> parse_sha256_fingerprint(std::string_view text) {
  std::string digits;
  for (char c : text)
    if (c != ':') digits += c;
  auto bytes = hex_decode(digits);
  if (!bytes || bytes->size() != 32)
    return fail(Errc::invalid_argument,
                "expected a SHA-256 fingerprint (64 hex digits, ':' separators allowed), found \"" + std::string(text) +
                    "\"");
  return *bytes;
}

}  // namespace fde::token
