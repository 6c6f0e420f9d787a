// `fde-admin verify-token`: decode a captured token, run the verifier's checks offline and
// print every check with what was expected and what was found.
#include "verifier-daemon/admin/verify_token_command.hpp"

#include <rapidjson/prettywriter.h>
#include <rapidjson/stringbuffer.h>

#include <cstdint>
#include <optional>
#include <string_view>

#include "common/crypto/certificate.hpp"
#include "common/eventlog/event_log.hpp"
#include "common/reference/reference_matcher.hpp"
#include "common/reference/reference_values.hpp"
#include "common/token/token.hpp"
#include "common/token/token_verifier.hpp"
#include "common/util/command_line.hpp"
#include "common/util/file.hpp"

namespace fde::verifier {

namespace {

constexpr std::size_t max_certificate_file = 256 * 1024;
constexpr std::size_t max_reference_file = 1024 * 1024;

const std::vector<OptionSpec>& option_specs() {
  static const std::vector<OptionSpec> specs{
      {"token", true, false, "FILE", "the token, raw CBOR or hex text (required)"},
      {"roots", true, true, "PEM", "trusted roots; non-self-signed certificates in the file serve as intermediates"},
      {"device-cert", true, false, "FILE", "device (AIK) certificate, PEM or DER; further PEM certificates are intermediates"},
      {"challenge", true, false, "HEX", "the 64-byte challenge the CVM token must carry"},
      {"reference", true, false, "FILE", "reference-values document (docs/reference-values.md)"},
      {"event-log", true, false, "FILE", "CCEL event log (raw log area), replayed against the token's REMs and matched with --reference"},
      {"allow-legacy", false, false, "", "accept CVM-only (legacy) tokens whose RAK is the device key"},
      {"lifecycle", true, true, "STATE",
       "an allowed platform lifecycle state (as attestation.allowed_lifecycle_states; default: secured)"},
      {"require-sw-component", true, true, "[TYPE:]HEX",
       "a sw component measurement the platform token must carry (as attestation.required_sw_components)"},
      {"device-issuer-sha256", true, true, "HEX",
       "SHA-256 of the CA certificate that must have issued the device certificate (as "
       "attestation.device_issuer_sha256)"},
      {"json", false, false, "", "print the result as JSON"},
      {"help", false, false, "", "show this help"},
  };
  return specs;
}

std::string usage() {
  return "usage: fde-admin verify-token --token FILE [--roots PEM]... [--device-cert FILE]\n"
         "                              [--challenge HEX] [--reference FILE] [--event-log FILE]\n"
         "                              [--allow-legacy] [--lifecycle STATE]...\n"
         "                              [--require-sw-component [TYPE:]HEX]... [--device-issuer-sha256 HEX]...\n"
         "                              [--json]\n\n"
         "Decodes a captured virtCCA attestation token and runs the verifier's checks offline.\n"
         "Exit status: 0 every requested check passed; 1 a check failed; 2 unusable input.\n\n" +
         options_help(option_specs());
}

// Everything the command loaded, before any check runs.
struct Inputs {
  token::Token token;
  token::TokenPolicy policy;
  token::DeviceEvidence device;
  std::optional<reference::ReferenceValues> reference;
  std::optional<eventlog::EventLog> event_log;
};

Result<void> add_certificates(const std::string& path, std::vector<crypto::Certificate>& roots,
                              std::vector<crypto::Certificate>& intermediates) {
  auto bytes = read_file(path, max_certificate_file);
  if (!bytes) return tl::unexpected(bytes.error());
  auto certs = crypto::Certificate::load_all(*bytes);
  if (!certs) return fail_with_context(path, certs.error());
  for (auto& cert : *certs) (cert.is_self_signed() ? roots : intermediates).push_back(cert);
  return {};
}

// The daemon's [attestation] platform policy, from the matching options.
Result<void> load_platform_policy(const ParsedOptions& options, token::PlatformPolicy& policy) {
  if (options.has("lifecycle")) {
    policy.allowed_lifecycle_states.clear();
    for (const auto& name : options.get_all("lifecycle")) {
      auto state = token::lifecycle_state_from_name(name);
      if (!state) return fail_with_context("--lifecycle", state.error());
      policy.allowed_lifecycle_states.push_back(*state);
    }
  }
  for (const auto& text : options.get_all("require-sw-component")) {
    auto required = token::parse_required_sw_component(text);
    if (!required) return fail_with_context("--require-sw-component", required.error());
    policy.required_sw_components.push_back(std::move(*required));
  }
  for (const auto& text : options.get_all("device-issuer-sha256")) {
    auto pin = token::parse_sha256_fingerprint(text);
    if (!pin) return fail_with_context("--device-issuer-sha256", pin.error());
    policy.device_issuer_sha256.push_back(std::move(*pin));
  }
  return {};
}

Result<Inputs> load_inputs(const ParsedOptions& options) {
  Inputs in;
  auto token_path = options.get("token");
  if (!token_path) return fail(Errc::invalid_argument, "--token FILE is required");
  auto raw = read_binary_or_hex_file(*token_path, token::max_token_size);
  if (!raw) return tl::unexpected(raw.error());
  auto parsed = token::parse_token(*raw);
  if (!parsed) return fail_with_context("token " + *token_path, parsed.error());
  in.token = std::move(*parsed);

  for (const auto& path : options.get_all("roots"))
    if (auto ok = add_certificates(path, in.policy.trusted_roots, in.policy.intermediates); !ok)
      return tl::unexpected(ok.error());

  if (auto path = options.get("device-cert")) {
    auto bytes = read_file(*path, max_certificate_file);
    if (!bytes) return tl::unexpected(bytes.error());
    auto certs = crypto::Certificate::load_all(*bytes);
    if (!certs) return fail_with_context(*path, certs.error());
    in.device.device_certificate = certs->front();
    in.policy.intermediates.insert(in.policy.intermediates.end(), certs->begin() + 1, certs->end());
  }

  if (auto hex = options.get("challenge")) {
    auto challenge = hex_decode(*hex);
    if (!challenge) return fail_with_context("--challenge", challenge.error());
    if (challenge->size() != token::challenge_size)
      return fail(Errc::invalid_argument, "--challenge must be " + std::to_string(token::challenge_size) +
                                              " bytes (128 hex digits), got " + std::to_string(challenge->size()));
    in.policy.expected_challenge = std::move(*challenge);
  }
  in.policy.allow_legacy = options.has("allow-legacy");
  if (auto ok = load_platform_policy(options, in.policy.platform); !ok) return tl::unexpected(ok.error());

  if (auto path = options.get("reference")) {
    auto bytes = read_file(*path, max_reference_file);
    if (!bytes) return tl::unexpected(bytes.error());
    auto document = reference::parse_reference_values(as_text(*bytes));
    if (!document) return fail_with_context(*path, document.error());
    in.reference = std::move(*document);
  }
  if (options.has("event-log") && !options.has("reference"))
    return fail(Errc::invalid_argument, "--event-log needs --reference (the events are matched against it)");
  if (auto path = options.get("event-log")) {
    auto bytes = read_file(*path, eventlog::max_event_log_size);
    if (!bytes) return tl::unexpected(bytes.error());
    auto log = eventlog::parse_event_log(*bytes);
    if (!log) return fail_with_context(*path, log.error());
    in.event_log = std::move(*log);
  }
  return in;
}

Verdict run_checks(const Inputs& in) {
  Verdict verdict = token::verify_token(in.token, in.device, in.policy);
  if (!in.reference) return verdict;
  if (const Check* failed = verdict.first_failure()) {
    // Measurements from a token that did not verify are not evidence of anything; comparing
    // them would print PASS lines about claims nobody vouches for.
    verdict.add_fail("reference.values", "measurements from a verified token",
                     "not checked: the token failed " + failed->name);
    return verdict;
  }
  const auto& cvm = in.token.cvm;
  auto alg = crypto::hash_alg_from_name(cvm.hash_algo_id);
  if (!alg) {
    // cvm.hash_algo has already failed; measurements in an unknown algorithm cannot match.
    verdict.add_fail("reference.hash_alg", "a known CVM hash algorithm", "'" + cvm.hash_algo_id + "'");
    return verdict;
  }
  reference::TokenMeasurements measured{*alg, cvm.initial_measurement, cvm.extensible_measurements,
                                        cvm.personalization_value};
  reference::match_reference_values(measured, in.event_log ? &*in.event_log : nullptr, *in.reference, verdict);
  return verdict;
}

// Claim text is written by whoever made the token. Before it reaches a terminal, escape
// what a terminal acts on (C0 and C1 controls, DEL) and bytes that are not UTF-8 as \xNN,
// so a crafted token cannot retitle or clear the screen or print a fake "PASS" line.
std::string printable(std::string_view text) {
  static constexpr char digits[] = "0123456789abcdef";
  static constexpr std::uint32_t smallest[] = {0, 0, 0x80, 0x800, 0x10000};  // no overlong forms
  std::string out;
  out.reserve(text.size());
  for (std::size_t i = 0; i < text.size();) {
    auto lead = static_cast<unsigned char>(text[i]);
    if (lead >= 0x20 && lead < 0x7f) {
      out += text[i++];
      continue;
    }
    std::size_t length = 0;  // of the UTF-8 sequence `lead` starts; 0: not a lead byte
    if (lead >= 0xc2 && lead <= 0xdf)
      length = 2;
    else if (lead >= 0xe0 && lead <= 0xef)
      length = 3;
    else if (lead >= 0xf0 && lead <= 0xf4)
      length = 4;
    bool keep = length != 0 && i + length <= text.size();
    std::uint32_t code_point = keep ? lead & (0x7fu >> length) : 0;
    for (std::size_t k = 1; keep && k < length; ++k) {
      auto next = static_cast<unsigned char>(text[i + k]);
      keep = (next & 0xc0) == 0x80;
      code_point = (code_point << 6) | (next & 0x3fu);
    }
    keep = keep && code_point >= smallest[length] && code_point >= 0xa0 && code_point <= 0x10ffff &&
           !(code_point >= 0xd800 && code_point <= 0xdfff);
    if (keep) {
      out.append(text.substr(i, length));
      i += length;
    } else {
      out += "\\x";
      out += digits[lead >> 4];
      out += digits[lead & 0xf];
      ++i;
    }
  }
  return out;
}

std::string describe_rak(const token::CvmClaims& cvm) {
  auto key = token::rak_public_key(cvm);
  std::string size = std::to_string(cvm.public_key.size()) + " bytes";
  return key ? key->description() + " (" + size + ")" : "unrecognised (" + size + ")";
}

void print_text(std::ostream& out, const Inputs& in, const Verdict& verdict) {
  const auto& t = in.token;
  const auto& cvm = t.cvm;
  auto row = [&](const std::string& label, const std::string& value) {
    std::string padded = "  " + printable(label);
    padded.resize(std::max<std::size_t>(padded.size() + 1, 24), ' ');
    out << padded << printable(value) << "\n";
  };
  out << "Token: " << (t.is_full() ? "full (platform + CVM)" : "legacy (CVM only)") << ", " << t.raw.size()
      << " bytes, CVM payload "
      << (t.cvm_wrapping == token::CvmPayloadWrapping::double_wrapped ? "double-wrapped (virtCCA)" : "single-wrapped")
      << "\n";
  out << "CVM token (" << crypto::sig_alg_name(t.cvm_envelope.alg) << "):\n";
  row("challenge", hex_encode(cvm.challenge));
  row("personalization", hex_encode(cvm.personalization_value));
  row("hash algorithm", cvm.hash_algo_id);
  row("RAK", describe_rak(cvm));
  row("RAK hash algorithm", cvm.public_key_hash_algo_id);
  row("RIM", hex_encode(cvm.initial_measurement));
  for (std::size_t i = 0; i < cvm.extensible_measurements.size(); ++i)
    row("REM[" + std::to_string(i) + "]", hex_encode(cvm.extensible_measurements[i]));
  if (t.platform && t.platform_envelope) {
    const auto& p = *t.platform;
    out << "Platform token (" << crypto::sig_alg_name(t.platform_envelope->alg) << "):\n";
    row("profile", p.profile.value_or("(absent)"));
    row("challenge", hex_encode(p.challenge));
    row("implementation id", hex_encode(p.implementation_id));
    row("instance id", hex_encode(p.instance_id));
    row("lifecycle", std::to_string(p.lifecycle));
    row("hash algorithm", p.hash_algo_id);
    for (const auto& c : p.sw_components)
      row("sw " + c.type.value_or("?"), hex_encode(c.measurement) + (c.version ? " v" + *c.version : ""));
  }
  if (in.device.device_certificate) {
    const auto& cert = *in.device.device_certificate;
    out << "Device certificate:\n";
    row("subject", cert.subject());
    row("issuer", cert.issuer());
    row("validity", cert.not_before() + " .. " + cert.not_after());
    row("key", cert.public_key().description());
  }
  out << "Checks:\n";
  for (const auto& c : verdict.checks()) {
    out << "  " << (c.passed ? "PASS " : "FAIL ") << printable(c.name) << "\n";
    out << "       expected: " << printable(c.expected) << "\n";
    out << "       found:    " << printable(c.found) << "\n";
  }
  out << "Verdict: " << (verdict.passed() ? "VERIFIED" : "REJECTED") << " (" << printable(verdict.summary()) << ")\n";
}

void print_json(std::ostream& out, const Inputs& in, const Verdict& verdict) {
  rapidjson::StringBuffer buffer;
  rapidjson::PrettyWriter<rapidjson::StringBuffer> w(buffer);
  auto str = [&](const char* key, const std::string& value) {
    w.Key(key);
    w.String(value.c_str(), static_cast<rapidjson::SizeType>(value.size()));
  };
  const auto& t = in.token;
  const auto& cvm = t.cvm;
  w.StartObject();
  str("kind", t.is_full() ? "full" : "legacy");
  w.Key("size");
  w.Uint64(t.raw.size());
  w.Key("cvm");
  w.StartObject();
  str("alg", std::string(crypto::sig_alg_name(t.cvm_envelope.alg)));
  str("challenge", hex_encode(cvm.challenge));
  str("personalization_value", hex_encode(cvm.personalization_value));
  str("hash_algo_id", cvm.hash_algo_id);
  str("public_key", hex_encode(cvm.public_key));
  str("public_key_hash_algo_id", cvm.public_key_hash_algo_id);
  str("initial_measurement", hex_encode(cvm.initial_measurement));
  w.Key("extensible_measurements");
  w.StartArray();
  for (const auto& rem : cvm.extensible_measurements) {
    auto hex = hex_encode(rem);
    w.String(hex.c_str(), static_cast<rapidjson::SizeType>(hex.size()));
  }
  w.EndArray();
  w.EndObject();
  if (t.platform && t.platform_envelope) {
    const auto& p = *t.platform;
    w.Key("platform");
    w.StartObject();
    str("alg", std::string(crypto::sig_alg_name(t.platform_envelope->alg)));
    if (p.profile) str("profile", *p.profile);
    str("challenge", hex_encode(p.challenge));
    str("implementation_id", hex_encode(p.implementation_id));
    str("instance_id", hex_encode(p.instance_id));
    w.Key("lifecycle");
    w.Int64(p.lifecycle);
    str("hash_algo_id", p.hash_algo_id);
    w.Key("sw_components");
    w.StartArray();
    for (const auto& c : p.sw_components) {
      w.StartObject();
      if (c.type) str("type", *c.type);
      str("measurement", hex_encode(c.measurement));
      if (c.version) str("version", *c.version);
      str("signer_id", hex_encode(c.signer_id));
      w.EndObject();
    }
    w.EndArray();
    w.EndObject();
  }
  w.Key("checks");
  w.StartArray();
  for (const auto& c : verdict.checks()) {
    w.StartObject();
    str("name", c.name);
    str("expected", c.expected);
    str("found", c.found);
    w.Key("passed");
    w.Bool(c.passed);
    w.EndObject();
  }
  w.EndArray();
  str("verdict", verdict.passed() ? "verified" : "rejected");
  str("reason", verdict.summary());
  w.EndObject();
  out << buffer.GetString() << "\n";
}

}  // namespace

int run_verify_token(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  auto options = parse_options(args, option_specs());
  if (!options) {
    err << "fde-admin verify-token: " << printable(options.error().message) << "\n";
    return exit_unusable;
  }
  if (options->has("help")) {
    out << usage();
    return exit_verified;
  }
  if (!options->positional().empty()) {
    err << "fde-admin verify-token: unexpected argument '" << printable(options->positional().front()) << "'\n";
    return exit_unusable;
  }
  auto inputs = load_inputs(*options);
  if (!inputs) {
    err << "fde-admin verify-token: " << printable(inputs.error().message) << "\n";
    return exit_unusable;
  }
  Verdict verdict = run_checks(*inputs);
  if (options->has("json"))
    print_json(out, *inputs, verdict);
  else
    print_text(out, *inputs, verdict);
  return verdict.passed() ? exit_verified : exit_check_failed;
}

}  // namespace fde::verifier
