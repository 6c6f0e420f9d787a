// COSE_Sign1 (RFC 9052 section 4.2) parsing and verification for the attestation tokens.
#include "common/cose/cose_sign1.hpp"

#include <string>

#include "common/cbor/cbor.hpp"

namespace fde::cose {
namespace {

// RFC 9052 section 4.2: COSE_Sign1 = [protected, unprotected, payload, signature].
constexpr std::size_t sign1_element_count = 4;

// Checks a header bucket for the parameters we refuse there (RFC 9052 section 3.1):
// crit is refused everywhere because we implement no extension a sender could mark as
// critical, so honouring it is impossible; refusing is what section 3.1 requires.
Result<void> check_crit_absent(const cbor::IntMap& header, std::string_view bucket) {
  if (cbor::find(header, header_crit) != nullptr)
    return fail(Errc::unsupported,
                std::string(bucket) + ": critical header parameters (crit, label 2) are not supported");
  return {};
}

Result<crypto::SigAlg> read_alg(const cbor::IntMap& protected_map) {
  const cbor_item_t* alg_item = cbor::find(protected_map, header_alg);
  // RFC 9052 leaves alg optional, but a verifier that guesses the algorithm from the key is
  // open to algorithm substitution; docs/virtcca-platform.md b.4 requires it (as secGear does).
  if (alg_item == nullptr) return fail(Errc::malformed, "COSE_Sign1 protected header: alg (label 1) is absent");
  // Text-valued algs ("ES256") exist only in private registries; the allow list is integers.
  auto alg_value = cbor::get_int(alg_item, "COSE_Sign1 protected header alg (label 1)");
  if (!alg_value) return tl::unexpected(alg_value.error());
  auto alg = crypto::sig_alg_from_cose(*alg_value);
  if (!alg)
    return fail(Errc::unsupported, "COSE_Sign1 protected header: alg " + std::to_string(*alg_value) +
                                       " is not allowed (allowed: PS256 -37, PS384 -38, PS512 -39, "
                                       "ES256 -7, ES384 -35, ES512 -36)");
  return *alg;
}

// The untagged COSE_Sign1 array (RFC 9052 section 4.2).
Result<Sign1> parse_sign1_array(const cbor_item_t* array) {
  auto elements = cbor::get_array(array, "COSE_Sign1");
  if (!elements) return tl::unexpected(elements.error());
  if (elements->size() != sign1_element_count)
    return fail(Errc::malformed,
                "COSE_Sign1: expected an array of 4 elements, found " + std::to_string(elements->size()));
  const auto& parts = *elements;

  // Protected header: a bstr whose content is a serialized map (RFC 9052 section 3). The
  // empty bstr form is legal COSE but cannot carry the alg we require, so it is refused.
  auto protected_bytes = cbor::get_bytes(parts[0], "COSE_Sign1 protected header");
  if (!protected_bytes) return tl::unexpected(protected_bytes.error());
  if (protected_bytes->empty())
    return fail(Errc::malformed, "COSE_Sign1 protected header: empty, but alg (label 1) is required");
  auto protected_item = cbor::decode(*protected_bytes, cbor::DecodeLimits{});
  if (!protected_item) return fail_with_context("COSE_Sign1 protected header", protected_item.error());
  auto protected_map = cbor::get_int_map(protected_item->get(), "COSE_Sign1 protected header");
  if (!protected_map) return tl::unexpected(protected_map.error());
  if (auto crit = check_crit_absent(*protected_map, "COSE_Sign1 protected header"); !crit)
    return tl::unexpected(crit.error());
  auto alg = read_alg(*protected_map);
  if (!alg) return tl::unexpected(alg.error());

  auto unprotected_map = cbor::get_int_map(parts[1], "COSE_Sign1 unprotected header");
  if (!unprotected_map) return tl::unexpected(unprotected_map.error());
  if (auto crit = check_crit_absent(*unprotected_map, "COSE_Sign1 unprotected header"); !crit)
    return tl::unexpected(crit.error());
  // An unprotected alg could be altered in transit; only the signed one may be used.
  if (cbor::find(*unprotected_map, header_alg) != nullptr)
    return fail(Errc::malformed, "COSE_Sign1 unprotected header: alg (label 1) must be in the protected header");
  // RFC 9052 section 3: a label must not occur in both buckets.
  for (const auto& entry : *unprotected_map)
    if (cbor::find(*protected_map, entry.first) != nullptr)
      return fail(Errc::malformed, "COSE_Sign1: header label " + std::to_string(entry.first) +
                                       " appears in both the protected and unprotected header");

  // A detached payload (nil) would let the sender choose what we verify against; the token
  // always carries its claims inline.
  if (cbor_is_null(parts[2]))
    return fail(Errc::unsupported, "COSE_Sign1 payload: detached payload (nil) is not supported");
  auto payload = cbor::get_bytes(parts[2], "COSE_Sign1 payload");
  if (!payload) return tl::unexpected(payload.error());

  auto signature = cbor::get_bytes(parts[3], "COSE_Sign1 signature");
  if (!signature) return tl::unexpected(signature.error());
  if (signature->empty()) return fail(Errc::malformed, "COSE_Sign1 signature: empty");

  Sign1 message;
  message.protected_header = to_bytes(*protected_bytes);
  message.alg = *alg;
  message.payload = to_bytes(*payload);
  message.signature = to_bytes(*signature);
  return message;
}

// The token profile (docs/virtcca-platform.md b.1) always carries tag 18; an untagged array
// would be ambiguous with other COSE structures, so it is refused.
Result<void> check_sign1_tag(std::uint64_t tag) {
  if (tag != tag_cose_sign1)
    return fail(Errc::unsupported, "COSE_Sign1: expected tag 18, found tag " + std::to_string(tag));
  return {};
}

}  // namespace

Result<Sign1> parse_sign1(const cbor_item_t* item) {
  if (item == nullptr) return fail(Errc::invalid_argument, "COSE_Sign1: no item");
  if (!cbor_isa_tag(item))
    return fail(Errc::malformed, "COSE_Sign1: expected tag 18, found " + std::string(cbor::type_name(item)));
  auto tagged = cbor::get_tag(item, "COSE_Sign1");
  if (!tagged) return tl::unexpected(tagged.error());
  if (auto tag_ok = check_sign1_tag(tagged->first); !tag_ok) return tl::unexpected(tag_ok.error());
  return parse_sign1_array(tagged->second);
}

Result<Sign1> parse_sign1(ByteView encoded) {
  const cbor::DecodeLimits limits;
  // libcbor 0.8 cannot load the one-byte head of tag 18 (0xd2), so the tag is peeled with
  // decode_tagged and the array decoded strictly on its own.
  if (!encoded.empty() && (encoded[0] >> 5) == 6) {
    auto tagged = cbor::decode_tagged(encoded, limits);
    if (!tagged) return fail_with_context("COSE_Sign1", tagged.error());
    if (auto tag_ok = check_sign1_tag(tagged->tag); !tag_ok) return tl::unexpected(tag_ok.error());
    return parse_sign1_array(tagged->item.get());
  }
  auto item = cbor::decode(encoded, limits);
  if (!item) return fail_with_context("COSE_Sign1", item.error());
  return fail(Errc::malformed, "COSE_Sign1: expected tag 18, found " + std::string(cbor::type_name(item->get())));
}

Result<void> verify_sign1(const Sign1& message, const crypto::PublicKey& key) {
  // t_cose refuses a key that does not fit the alg; so do we (b.4), so a header cannot
  // steer an RSA key into a weaker or different scheme.
  if (auto fits = crypto::check_key_matches_alg(key, message.alg); !fits)
    return fail_with_context("COSE_Sign1", fits.error());
  const Bytes to_be_signed = sig_structure(message.protected_header, message.payload);
  if (auto verified = crypto::verify_signature(key, message.alg, to_be_signed, message.signature); !verified)
    return fail_with_context("COSE_Sign1", verified.error());
  return {};
}

}  // namespace fde::cose
