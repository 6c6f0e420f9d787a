// Structural parser for virtCCA / Arm CCA attestation tokens (docs/virtcca-platform.md b.1-b.3).
#include "common/token/token.hpp"

#include <algorithm>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "common/cbor/cbor.hpp"

namespace fde::token {
namespace {

// Newer Arm drafts wrap the entries in CMW arrays under this tag; we do not accept it.
constexpr std::uint64_t tag_cca_token_collection = 907;

cbor::DecodeLimits token_limits() {
  cbor::DecodeLimits limits;
  limits.max_input_size = max_token_size;
  return limits;
}

std::string_view cvm_claim_label(std::int64_t key) {
  switch (key) {
    case cvm_claim::challenge: return "challenge";
    case cvm_claim::personalization_value: return "RPV";
    case cvm_claim::hash_algo_id: return "hash algo id";
    case cvm_claim::public_key: return "RAK";
    case cvm_claim::initial_measurement: return "RIM";
    case cvm_claim::extensible_measurements: return "REMs";
    case cvm_claim::public_key_hash_algo_id: return "RAK hash algo id";
    case cvm_claim::profile: return "profile";
    default: return "unknown";
  }
}

std::string_view platform_claim_label(std::int64_t key) {
  switch (key) {
    case platform_claim::profile: return "profile";
    case platform_claim::challenge: return "challenge";
    case platform_claim::implementation_id: return "implementation id";
    case platform_claim::instance_id: return "instance id";
    case platform_claim::config: return "platform config";
    case platform_claim::lifecycle: return "security lifecycle";
    case platform_claim::sw_components: return "sw components";
    case platform_claim::verification_service: return "verification service";
    case platform_claim::hash_algo_id: return "platform hash algo id";
    default: return "unknown";
  }
}

std::string_view sw_component_label(std::int64_t key) {
  switch (key) {
    case sw_component_key::type: return "type";
    case sw_component_key::measurement: return "measurement";
    case sw_component_key::version: return "version";
    case sw_component_key::signer_id: return "signer id";
    case sw_component_key::hash_algo_id: return "hash algo id";
    default: return "unknown";
  }
}

std::string cvm_what(std::int64_t key) {
  return "CVM claim " + std::to_string(key) + " (" + std::string(cvm_claim_label(key)) + ")";
}
std::string platform_what(std::int64_t key) {
  return "platform claim " + std::to_string(key) + " (" + std::string(platform_claim_label(key)) + ")";
}

bool is_platform_only_key(std::int64_t key) {
  return key == platform_claim::implementation_id || key == platform_claim::instance_id ||
         key == platform_claim::config || key == platform_claim::lifecycle || key == platform_claim::sw_components ||
         key == platform_claim::verification_service || key == platform_claim::hash_algo_id;
}
bool is_cvm_only_key(std::int64_t key) {
  return key >= cvm_claim::personalization_value && key <= cvm_claim::public_key_hash_algo_id;
}

Result<Bytes> read_bytes(const cbor_item_t* item, const std::string& what) {
  auto view = cbor::get_bytes(item, what);
  if (!view) return tl::unexpected(view.error());
  if (view->size() > max_claim_bytes)
    return fail(Errc::too_large, what + ": " + std::to_string(view->size()) + " bytes exceeds the limit of " +
                                     std::to_string(max_claim_bytes));
  return to_bytes(*view);
}

// secGear trims trailing NULs from text claims (b.2): some firmware copies fixed-size C
// buffers ("sha-256\0") into the tstr.
Result<std::string> read_text(const cbor_item_t* item, const std::string& what) {
  auto view = cbor::get_text(item, what);
  if (!view) return tl::unexpected(view.error());
  if (view->size() > max_text_claim_size)
    return fail(Errc::too_large, what + ": " + std::to_string(view->size()) + " bytes of text exceeds the limit of " +
                                     std::to_string(max_text_claim_size));
  std::string text(*view);
  while (!text.empty() && text.back() == '\0') text.pop_back();
  return text;
}

// Stores a successfully read value; the error otherwise. Keeps each claim to one line below.
template <class Target, class Value>
Result<void> assign(Target& target, Result<Value> value) {
  if (!value) return tl::unexpected(value.error());
  target = std::move(*value);
  return {};
}

// Every key in `mandatory` must be in `seen`; the error names the first one missing.
Result<void> require_all(const std::vector<std::int64_t>& seen, std::initializer_list<std::int64_t> mandatory,
                         const std::function<std::string(std::int64_t)>& what) {
  for (std::int64_t key : mandatory)
    if (std::find(seen.begin(), seen.end(), key) == seen.end()) return fail(Errc::malformed, what(key) + ": missing");
  return {};
}

Result<std::array<Bytes, rem_count>> read_rems(const cbor_item_t* item, const std::string& what) {
  auto rems = cbor::get_array(item, what);
  if (!rems) return tl::unexpected(rems.error());
  // b.2: MEASUREMENT_SLOT_NR is 5 and slots 1..4 are REM[0..3]: exactly 4, never fewer.
  if (rems->size() != rem_count)
    return fail(Errc::malformed, what + ": expected exactly 4 entries, found " + std::to_string(rems->size()));
  std::array<Bytes, rem_count> out;
  for (std::size_t i = 0; i < rem_count; ++i)
    if (auto ok = assign(out[i], read_bytes((*rems)[i], what + " REM[" + std::to_string(i) + "]")); !ok)
      return tl::unexpected(ok.error());
  return out;
}

Result<CvmClaims> parse_cvm_claims(const cbor_item_t* item) {
  auto map = cbor::get_int_map(item, "CVM claims");
  if (!map) return tl::unexpected(map.error());

  CvmClaims claims;
  std::vector<std::int64_t> seen;
  for (const auto& [key, value] : *map) {
    const std::string what = cvm_what(key);
    Result<void> ok;
    std::string ignored_profile;
    switch (key) {
      case cvm_claim::challenge: ok = assign(claims.challenge, read_bytes(value, what)); break;
      case cvm_claim::personalization_value: ok = assign(claims.personalization_value, read_bytes(value, what)); break;
      case cvm_claim::hash_algo_id: ok = assign(claims.hash_algo_id, read_text(value, what)); break;
      case cvm_claim::public_key: ok = assign(claims.public_key, read_bytes(value, what)); break;
      case cvm_claim::initial_measurement: ok = assign(claims.initial_measurement, read_bytes(value, what)); break;
      case cvm_claim::extensible_measurements:
        ok = assign(claims.extensible_measurements, read_rems(value, what));
        break;
      case cvm_claim::public_key_hash_algo_id:
        ok = assign(claims.public_key_hash_algo_id, read_text(value, what));
        break;
      // Arm draft-ffm realm profile (b.2): accepted and ignored, but it must still be text.
      case cvm_claim::profile: ok = assign(ignored_profile, read_text(value, what)); break;
      default: {
        // secGear rejects unknown claims (b.2): a claim the policy never judged must not
        // ride along silently.
        std::string message = "CVM claims: unknown claim key " + std::to_string(key);
        if (is_platform_only_key(key))
          message += " (a platform claim: are the platform (44234) and CVM (44241) entries swapped?)";
        return fail(Errc::malformed, message);
      }
    }
    if (!ok) return tl::unexpected(ok.error());
    seen.push_back(key);
  }
  // b.2: all 7 claims are mandatory (the sample requires exactly 7).
  if (auto ok = require_all(
          seen,
          {cvm_claim::challenge, cvm_claim::personalization_value, cvm_claim::hash_algo_id, cvm_claim::public_key,
           cvm_claim::initial_measurement, cvm_claim::extensible_measurements, cvm_claim::public_key_hash_algo_id},
          cvm_what);
      !ok)
    return tl::unexpected(ok.error());
  return claims;
}

Result<SwComponent> parse_sw_component(const cbor_item_t* item, std::size_t index) {
  const std::string prefix = "platform claim 2399 (sw components) entry " + std::to_string(index);
  auto map = cbor::get_int_map(item, prefix);
  if (!map) return tl::unexpected(map.error());

  SwComponent component;
  std::vector<std::int64_t> seen;
  for (const auto& [key, value] : *map) {
    const std::string what = prefix + " key " + std::to_string(key) + " (" + std::string(sw_component_label(key)) + ")";
    Result<void> ok;
    switch (key) {
      case sw_component_key::type: ok = assign(component.type, read_text(value, what)); break;
      case sw_component_key::measurement: ok = assign(component.measurement, read_bytes(value, what)); break;
      case sw_component_key::version: ok = assign(component.version, read_text(value, what)); break;
      case sw_component_key::signer_id: ok = assign(component.signer_id, read_bytes(value, what)); break;
      case sw_component_key::hash_algo_id: ok = assign(component.hash_algo_id, read_text(value, what)); break;
      default: return fail(Errc::malformed, prefix + ": unknown key " + std::to_string(key));
    }
    if (!ok) return tl::unexpected(ok.error());
    seen.push_back(key);
  }
  // b.3: measurement and signer id are mandatory (the sample dropped these errors; we don't).
  if (auto ok = require_all(seen, {sw_component_key::measurement, sw_component_key::signer_id},
                            [&](std::int64_t key) {
                              return prefix + " " + std::string(sw_component_label(key)) + " (key " +
                                     std::to_string(key) + ")";
                            });
      !ok)
    return tl::unexpected(ok.error());
  return component;
}

Result<std::vector<SwComponent>> read_sw_components(const cbor_item_t* item, const std::string& what) {
  auto entries = cbor::get_array(item, what);
  if (!entries) return tl::unexpected(entries.error());
  if (entries->size() > max_sw_components)
    return fail(Errc::too_large, what + ": " + std::to_string(entries->size()) + " entries exceeds the limit of " +
                                     std::to_string(max_sw_components));
  std::vector<SwComponent> out;
  out.reserve(entries->size());
  for (std::size_t i = 0; i < entries->size(); ++i) {
    auto component = parse_sw_component((*entries)[i], i);
    if (!component) return tl::unexpected(component.error());
    out.push_back(std::move(*component));
  }
  return out;
}

Result<PlatformClaims> parse_platform_claims(const cbor_item_t* item) {
  auto map = cbor::get_int_map(item, "platform claims");
  if (!map) return tl::unexpected(map.error());

  PlatformClaims claims;
  std::vector<std::int64_t> seen;
  for (const auto& [key, value] : *map) {
    const std::string what = platform_what(key);
    Result<void> ok;
    switch (key) {
      case platform_claim::profile: ok = assign(claims.profile, read_text(value, what)); break;
      case platform_claim::challenge: ok = assign(claims.challenge, read_bytes(value, what)); break;
      case platform_claim::implementation_id: ok = assign(claims.implementation_id, read_bytes(value, what)); break;
      case platform_claim::instance_id: ok = assign(claims.instance_id, read_bytes(value, what)); break;
      case platform_claim::config: ok = assign(claims.config, read_bytes(value, what)); break;
      case platform_claim::lifecycle: ok = assign(claims.lifecycle, cbor::get_int(value, what)); break;
      case platform_claim::sw_components: ok = assign(claims.sw_components, read_sw_components(value, what)); break;
      case platform_claim::verification_service:
        ok = assign(claims.verification_service, read_text(value, what));
        break;
      case platform_claim::hash_algo_id: ok = assign(claims.hash_algo_id, read_text(value, what)); break;
      default: {
        std::string message = "platform claims: unknown claim key " + std::to_string(key);
        if (is_cvm_only_key(key))
          message += " (a CVM claim: are the platform (44234) and CVM (44241) entries swapped?)";
        return fail(Errc::malformed, message);
      }
    }
    if (!ok) return tl::unexpected(ok.error());
    seen.push_back(key);
  }
  // b.3: the sample requires every claim except verification service; profile is optional
  // too, since no virtCCA value for it has been seen.
  if (auto ok = require_all(seen,
                            {platform_claim::challenge, platform_claim::implementation_id, platform_claim::instance_id,
                             platform_claim::config, platform_claim::lifecycle, platform_claim::sw_components,
                             platform_claim::hash_algo_id},
                            platform_what);
      !ok)
    return tl::unexpected(ok.error());
  return claims;
}

// b.1: the virtCCA CVM payload is a bstr holding a bstr holding the map; Arm CCA puts the
// map directly in the payload. Unwrap exactly once.
Result<std::pair<CvmClaims, CvmPayloadWrapping>> parse_cvm_payload(ByteView payload) {
  auto outer = cbor::decode(payload, token_limits());
  if (!outer) return fail_with_context("CVM token payload", outer.error());
  if (cbor_isa_map(outer->get())) {
    auto claims = parse_cvm_claims(outer->get());
    if (!claims) return tl::unexpected(claims.error());
    return std::pair{std::move(*claims), CvmPayloadWrapping::single};
  }
  if (!cbor_isa_bytestring(outer->get()))
    return fail(Errc::malformed, "CVM token payload: expected a claims map or a byte string wrapping one, found " +
                                     std::string(cbor::type_name(outer->get())));
  auto inner_bytes = cbor::get_bytes(outer->get(), "CVM token payload");
  if (!inner_bytes) return tl::unexpected(inner_bytes.error());
  auto inner = cbor::decode(*inner_bytes, token_limits());
  if (!inner) return fail_with_context("CVM token inner payload", inner.error());
  if (!cbor_isa_map(inner->get()))
    return fail(Errc::malformed,
                "CVM token inner payload: expected a claims map, found " + std::string(cbor::type_name(inner->get())));
  auto claims = parse_cvm_claims(inner->get());
  if (!claims) return tl::unexpected(claims.error());
  return std::pair{std::move(*claims), CvmPayloadWrapping::double_wrapped};
}

Result<PlatformClaims> parse_platform_payload(ByteView payload) {
  auto item = cbor::decode(payload, token_limits());
  if (!item) return fail_with_context("platform token payload", item.error());
  // b.1: the platform payload is single-wrapped in both virtCCA and Arm CCA.
  if (!cbor_isa_map(item->get())) {
    std::string message =
        "platform token payload: expected a claims map, found " + std::string(cbor::type_name(item->get()));
    if (cbor_isa_bytestring(item->get()))
      message += " (a double-wrapped CVM payload: are the platform (44234) and CVM (44241) entries swapped?)";
    return fail(Errc::malformed, message);
  }
  return parse_platform_claims(item->get());
}

}  // namespace

Result<Token> parse_token(ByteView encoded) {
  // a.1: the TSI ABI cannot return more than 2 granules; refuse before any decoding work.
  if (encoded.size() > max_token_size)
    return fail(Errc::too_large, "token: " + std::to_string(encoded.size()) + " bytes exceeds the limit of " +
                                     std::to_string(max_token_size));
  if (encoded.empty()) return fail(Errc::malformed, "token: empty");

  // The outer item must be a tag. Only its head is peeled here (decode_tagged), because
  // libcbor 0.8 cannot load the one-byte head of tag 18 and a bare COSE_Sign1 deserves a
  // clear error rather than "invalid encoding".
  if ((encoded[0] >> 5) != 6) {
    auto item = cbor::decode(encoded, token_limits());
    if (!item) return fail_with_context("token", item.error());
    return fail(Errc::malformed,
                "token: expected tag 399 (CCA token), found " + std::string(cbor::type_name(item->get())));
  }
  auto root = cbor::decode_tagged(encoded, token_limits());
  if (!root) return fail_with_context("token", root.error());
  switch (root->tag) {
    case tag_cca_token: break;
    case tag_cca_token_collection:
      return fail(Errc::unsupported,
                  "token: tag 907 (CCA token collection with CMW entries, newer Arm draft) is not "
                  "supported; expected tag 399");
    case cose::tag_cose_sign1:
      return fail(Errc::unsupported,
                  "token: a bare COSE_Sign1 (tag 18) is not a CCA token; expected tag 399 wrapping "
                  "the platform and CVM tokens");
    default:
      return fail(Errc::malformed, "token: expected tag 399 (CCA token), found tag " + std::to_string(root->tag));
  }
  const cbor_item_t* collection = root->item.get();

  if (!cbor_isa_map(collection))
    return fail(Errc::malformed,
                "token: expected a map under tag 399, found " + std::string(cbor::type_name(collection)));
  // Duplicate keys never get this far: decode() and get_int_map() both refuse them, so
  // two readers of one token cannot disagree on which entry counts.
  auto map = cbor::get_int_map(collection, "token collection");
  if (!map) return tl::unexpected(map.error());
  // b.1: 1 entry (legacy CVM-only) or 2 (platform + CVM).
  if (map->empty() || map->size() > 2)
    return fail(Errc::malformed, "token: collection map has " + std::to_string(map->size()) +
                                     " entries, expected 1 (CVM) or 2 (platform and CVM)");

  const cbor_item_t* platform_item = nullptr;
  const cbor_item_t* cvm_item = nullptr;
  for (const auto& [key, value] : *map) {
    if (key == key_platform_token)
      platform_item = value;
    else if (key == key_cvm_token)
      cvm_item = value;
    else
      return fail(Errc::malformed, "token: unknown collection key " + std::to_string(key) +
                                       " (expected 44234 platform token or 44241 CVM token)");
  }
  if (cvm_item == nullptr)
    return fail(Errc::malformed, "token: CVM token (key 44241) missing; a platform token alone is not accepted");

  Token token;
  token.raw = to_bytes(encoded);

  auto cvm_bytes = cbor::get_bytes(cvm_item, "token entry 44241 (CVM token)");
  if (!cvm_bytes) return tl::unexpected(cvm_bytes.error());
  auto cvm_envelope = cose::parse_sign1(*cvm_bytes);
  if (!cvm_envelope) return fail_with_context("CVM token (key 44241)", cvm_envelope.error());
  auto cvm = parse_cvm_payload(cvm_envelope->payload);
  if (!cvm) return fail_with_context("CVM token (key 44241)", cvm.error());
  token.cvm_envelope = std::move(*cvm_envelope);
  token.cvm = std::move(cvm->first);
  token.cvm_wrapping = cvm->second;

  if (platform_item != nullptr) {
    auto platform_bytes = cbor::get_bytes(platform_item, "token entry 44234 (platform token)");
    if (!platform_bytes) return tl::unexpected(platform_bytes.error());
    auto platform_envelope = cose::parse_sign1(*platform_bytes);
    if (!platform_envelope) return fail_with_context("platform token (key 44234)", platform_envelope.error());
    auto platform = parse_platform_payload(platform_envelope->payload);
    if (!platform) return fail_with_context("platform token (key 44234)", platform.error());
    token.platform_envelope = std::move(*platform_envelope);
    token.platform = std::move(*platform);
  }
  return token;
}

}  // namespace fde::token
