// The simulated TMM token issuer: CBOR/COSE encoding of virtCCA tokens and their signing.
#include "common/sim/token_issuer.hpp"

#include "common/cbor/cbor.hpp"
#include "common/cose/cose_sign1.hpp"

namespace fde::sim {

namespace {

using cbor::Writer;

// Sizes of keys in the real tokens (section b.2): a raw P-521 point and its SPKI.
constexpr std::size_t p521_point_size = 133;

Result<void> check_size(std::string_view what, ByteView value, std::size_t expected) {
  if (value.size() != expected)
    return fail(Errc::invalid_argument, std::string(what) + " must be " + std::to_string(expected) +
                                            " bytes, got " + std::to_string(value.size()));
  return {};
}

Result<crypto::PrivateKey> choose_rak(const SimDevice& device, const TokenRequest& request) {
  if (request.rak) return *request.rak;
  if (request.format == TokenFormat::legacy) {
    // Legacy firmware has no platform token; the RAK *is* the AIK (section b.8).
    if (device.type() != DeviceType::rsa)
      return fail(Errc::invalid_argument,
                  "legacy tokens need an RSA device (legacy firmware: RAK = device key) or an explicit RAK");
    return device.device_key();
  }
  if (device.persistent_rak()) return *device.persistent_rak();
  return crypto::PrivateKey::generate(crypto::KeyType::ec_p521);
}

}  // namespace

Bytes rak_claim(const crypto::PublicKey& rak) {
  if (rak.type() == crypto::KeyType::rsa) return rak.spki_der();
  return rak.ec_point();
}

Result<crypto::SigAlg> signing_alg_for(const crypto::PublicKey& key) {
  switch (key.type()) {
    case crypto::KeyType::rsa: return crypto::SigAlg::ps256;
    case crypto::KeyType::ec_p256: return crypto::SigAlg::es256;
    case crypto::KeyType::ec_p384: return crypto::SigAlg::es384;
    case crypto::KeyType::ec_p521: return crypto::SigAlg::es512;
    default: break;
  }
  return fail(Errc::unsupported, "no COSE signing algorithm for a " + key.description() + " key");
}

Bytes encode_cvm_claims(const token::CvmClaims& claims) {
  namespace key = token::cvm_claim;
  Writer w;
  // The order of the real secGear token, checked byte by byte in the tests; TMM does not
  // sort its keys, so a deterministic (sorted) encoding would not reproduce it.
  w.map(7);
  w.uint(key::challenge).bytes(claims.challenge);
  w.uint(key::personalization_value).bytes(claims.personalization_value);
  w.uint(key::public_key).bytes(claims.public_key);
  w.uint(key::hash_algo_id).text(claims.hash_algo_id);
  w.uint(key::public_key_hash_algo_id).text(claims.public_key_hash_algo_id);
  w.uint(key::initial_measurement).bytes(claims.initial_measurement);
  w.uint(key::extensible_measurements).array(claims.extensible_measurements.size());
  for (const auto& rem : claims.extensible_measurements) w.bytes(rem);
  return w.take();
}

Bytes encode_cvm_payload(const token::CvmClaims& claims) {
  // virtCCA wraps the claim map in one more bstr than Arm CCA does (section b.1).
  return Writer().bytes(encode_cvm_claims(claims)).take();
}

Bytes encode_platform_claims(const token::PlatformClaims& claims) {
  namespace key = token::platform_claim;
  namespace sw = token::sw_component_key;
  std::size_t count = 7 + (claims.profile ? 1 : 0) + (claims.verification_service ? 1 : 0);
  Writer w;
  w.map(count);
  if (claims.profile) w.uint(key::profile).text(*claims.profile);
  w.uint(key::challenge).bytes(claims.challenge);
  w.uint(key::implementation_id).bytes(claims.implementation_id);
  w.uint(key::instance_id).bytes(claims.instance_id);
  w.uint(key::config).bytes(claims.config);
  w.uint(key::lifecycle).integer(claims.lifecycle);
  w.uint(key::hash_algo_id).text(claims.hash_algo_id);
  w.uint(key::sw_components).array(claims.sw_components.size());
  for (const auto& component : claims.sw_components) {
    std::size_t entries = 2 + (component.type ? 1 : 0) + (component.version ? 1 : 0) +
                          (component.hash_algo_id ? 1 : 0);
    w.map(entries);
    if (component.type) w.uint(sw::type).text(*component.type);
    w.uint(sw::signer_id).bytes(component.signer_id);
    if (component.version) w.uint(sw::version).text(*component.version);
    w.uint(sw::measurement).bytes(component.measurement);
    if (component.hash_algo_id) w.uint(sw::hash_algo_id).text(*component.hash_algo_id);
  }
  if (claims.verification_service) w.uint(key::verification_service).text(*claims.verification_service);
  return w.take();
}

Bytes encode_protected_header(crypto::SigAlg alg) {
  return Writer().map(1).uint(cose::header_alg).integer(static_cast<std::int64_t>(alg)).take();
}

Bytes encode_sign1(ByteView protected_header, ByteView payload, ByteView signature) {
  Writer w;
  w.tag(cose::tag_cose_sign1).array(4);
  w.bytes(protected_header);
  w.map(0);  // unprotected header: empty in every real token
  w.bytes(payload);
  w.bytes(signature);
  return w.take();
}

Result<Bytes> sign_sign1(const crypto::PrivateKey& key, ByteView payload, crypto::EcdsaEncoding encoding) {
  auto alg = signing_alg_for(key.public_key());
  if (!alg) return tl::unexpected(alg.error());
  Bytes protected_header = encode_protected_header(*alg);
  Bytes to_be_signed = cose::sig_structure(protected_header, payload);
  auto signature = crypto::sign(key, *alg, to_be_signed, encoding);
  if (!signature) return tl::unexpected(signature.error());
  return encode_sign1(protected_header, payload, *signature);
}

Bytes encode_token(ByteView platform_sign1, ByteView cvm_sign1) {
  Writer w;
  w.tag(token::tag_cca_token);
  if (platform_sign1.empty()) {
    w.map(1);
  } else {
    // Platform first, as Arm tokens do and the SDK sample requires (section b.1).
    w.map(2);
    w.uint(token::key_platform_token).bytes(platform_sign1);
  }
  w.uint(token::key_cvm_token).bytes(cvm_sign1);
  return w.take();
}

Result<IssuedToken> issue_token(const SimDevice& device, const TokenRequest& request) {
  if (auto ok = check_size("challenge", request.challenge, token::challenge_size); !ok)
    return tl::unexpected(ok.error());
  if (auto ok = check_size("RPV", request.personalization_value, token::rpv_size); !ok)
    return tl::unexpected(ok.error());
  const std::size_t measurement_size = crypto::digest_size(request.hash_alg);
  if (auto ok = check_size("RIM", request.rim, measurement_size); !ok) return tl::unexpected(ok.error());

  auto rak = choose_rak(device, request);
  if (!rak) return tl::unexpected(rak.error());

  IssuedToken issued;
  token::CvmClaims& cvm = issued.cvm;
  cvm.challenge = request.challenge;
  cvm.personalization_value = request.personalization_value;
  cvm.hash_algo_id = std::string(crypto::hash_alg_name(request.hash_alg));
  cvm.public_key = rak_claim(rak->public_key());
  cvm.initial_measurement = request.rim;
  for (std::size_t i = 0; i < token::rem_count; ++i) {
    const Bytes& rem = request.rems[i];
    if (rem.empty()) {
      cvm.extensible_measurements[i] = Bytes(measurement_size, 0);
    } else {
      if (auto ok = check_size("REM[" + std::to_string(i) + "]", rem, measurement_size); !ok)
        return tl::unexpected(ok.error());
      cvm.extensible_measurements[i] = rem;
    }
  }
  cvm.public_key_hash_algo_id = std::string(crypto::hash_alg_name(request.rak_hash_alg));
  if (request.format == TokenFormat::full && rak->type() == crypto::KeyType::ec_p521 &&
      cvm.public_key.size() != p521_point_size)
    return fail(Errc::internal, "P-521 RAK point is " + std::to_string(cvm.public_key.size()) + " bytes");

  auto cvm_sign1 = sign_sign1(*rak, encode_cvm_payload(cvm), request.ecdsa_encoding);
  if (!cvm_sign1) return fail_with_context("CVM token", cvm_sign1.error());
  issued.cvm_sign1 = std::move(*cvm_sign1);

  if (request.format == TokenFormat::full) {
    token::PlatformClaims platform = request.platform_claims ? *request.platform_claims : device.platform_claims();
    // The binding of section b.6: the platform vouches for exactly this RAK.
    if (platform.challenge.empty()) platform.challenge = crypto::digest(request.rak_hash_alg, cvm.public_key);
    auto platform_sign1 =
        sign_sign1(device.device_key(), encode_platform_claims(platform), request.ecdsa_encoding);
    if (!platform_sign1) return fail_with_context("platform token", platform_sign1.error());
    issued.platform_sign1 = std::move(*platform_sign1);
    issued.platform = std::move(platform);
  }

  issued.token = encode_token(issued.platform_sign1 ? ByteView(*issued.platform_sign1) : ByteView(),
                              issued.cvm_sign1);
  // The TSI driver cannot return more than two granules (section a.1).
  if (issued.token.size() > token::max_token_size)
    return fail(Errc::too_large, "token of " + std::to_string(issued.token.size()) + " bytes exceeds " +
                                     std::to_string(token::max_token_size));
  return issued;
}

}  // namespace fde::sim
