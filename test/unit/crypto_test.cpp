// Unit tests for hashing, keys, COSE signature algorithms and certificate chains.
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

#include <catch2/catch.hpp>

#include "common/crypto/certificate.hpp"
#include "common/crypto/hash.hpp"
#include "common/crypto/mac.hpp"
#include "common/crypto/key_check.hpp"
#include "common/crypto/signature.hpp"
#include "common/util/file.hpp"

using namespace fde;
using namespace fde::crypto;

namespace {
const std::string data_dir = FDE_EXTERNAL_TESTDATA;

Certificate load_cert(const std::string& relative) {
  auto bytes = read_file(data_dir + "/" + relative, 65536);
  REQUIRE(bytes.has_value());
  auto cert = Certificate::from_pem_or_der(*bytes);
  REQUIRE(cert.has_value());
  return *cert;
}

const PrivateKey& p521_key() {
  static PrivateKey key = *PrivateKey::generate(KeyType::ec_p521);
  return key;
}
const PrivateKey& rsa_key() {
  static PrivateKey key = *PrivateKey::generate(KeyType::rsa, 2048);
  return key;
}
}  // namespace

TEST_CASE("SHA-256 and SHA-512 match the FIPS 180 'abc' vectors") {
  CHECK(hex_encode(sha256(as_bytes("abc"))) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  CHECK(hex_encode(sha512(as_bytes("abc"))).substr(0, 32) == "ddaf35a193617abacc417349ae204131");
  CHECK(digest_parts(HashAlg::sha256, {as_bytes("a"), as_bytes("bc")}) == sha256(as_bytes("abc")));
}

TEST_CASE("key check values are SHA-256 of a label and the key, as docs/fde-image.md writes them") {
  // Expected values from Python's hashlib.sha256(label + key), with the key bytes 0, 1, 2, ...
  Bytes machine_key(32), volume_key(64);
  for (std::size_t i = 0; i < volume_key.size(); ++i) volume_key[i] = static_cast<std::uint8_t>(i);
  for (std::size_t i = 0; i < machine_key.size(); ++i) machine_key[i] = static_cast<std::uint8_t>(i);
  CHECK(hex_encode(crypto::key_check_value(crypto::KeyCheckKind::released_key, machine_key)) ==
        "307b48afff2c389d47cf4f7f62b6be38ccbc1327389dca805741f27d3ebcc68c");
  CHECK(hex_encode(crypto::key_check_value(crypto::KeyCheckKind::volume_key, volume_key)) ==
        "b5450757154f17899517cfc07828f3e2eec652535323381a1bd16b34f8ab0581");
  CHECK(crypto::key_check_value(crypto::KeyCheckKind::released_key, machine_key) ==
        [&] {
          Bytes joined = to_bytes(as_bytes("virtcca-fde released-key check v1"));
          joined.insert(joined.end(), machine_key.begin(), machine_key.end());
          return sha256(joined);
        }());
  // The labels keep the two kinds apart: the same bytes give different values.
  CHECK(crypto::key_check_value(crypto::KeyCheckKind::released_key, volume_key) !=
        crypto::key_check_value(crypto::KeyCheckKind::volume_key, volume_key));
  const Bytes check = crypto::key_check_value(crypto::KeyCheckKind::volume_key, volume_key);
  CHECK(crypto::key_matches_check(crypto::KeyCheckKind::volume_key, volume_key, check));
  Bytes other = volume_key;
  other[63] ^= 1;
  CHECK_FALSE(crypto::key_matches_check(crypto::KeyCheckKind::volume_key, other, check));
  CHECK_FALSE(crypto::key_matches_check(crypto::KeyCheckKind::released_key, volume_key, check));
  CHECK_FALSE(crypto::key_matches_check(crypto::KeyCheckKind::volume_key, volume_key, Bytes{}));
  CHECK_FALSE(crypto::key_matches_check(crypto::KeyCheckKind::volume_key, volume_key, ByteView(check).first(31)));
  CHECK(*crypto::parse_key_check(hex_encode(check)) == check);
  CHECK_FALSE(crypto::parse_key_check(hex_encode(check) + "00"));
  CHECK_FALSE(crypto::parse_key_check(" " + hex_encode(check).substr(1)));
}

TEST_CASE("hash algorithm names follow the IANA named-information registry") {
  CHECK(hash_alg_from_name("sha-256") == HashAlg::sha256);
  CHECK(hash_alg_from_name("sha-512") == HashAlg::sha512);
  CHECK_FALSE(hash_alg_from_name("sha256").has_value());
  CHECK_FALSE(hash_alg_from_name("sm3").has_value());
  CHECK(digest_size(HashAlg::sha384) == 48);
}

TEST_CASE("the lenient hash names accept upstream's platform spellings and nothing looser") {
  for (const char* name : {"sha-256", "sha256", "SHA256", "SHA-256"}) CHECK(hash_alg_from_lenient_name(name) == HashAlg::sha256);
  for (const char* name : {"sha-384", "sha384", "SHA384", "SHA-384"}) CHECK(hash_alg_from_lenient_name(name) == HashAlg::sha384);
  for (const char* name : {"sha-512", "sha512", "SHA512", "SHA-512"}) CHECK(hash_alg_from_lenient_name(name) == HashAlg::sha512);
  for (const char* name : {"sha--256", "sha-2-56", "sha3-256", "sha-1", "sm3", "", "sha", "256", "sha-256 "})
    CHECK_FALSE(hash_alg_from_lenient_name(name).has_value());
}

TEST_CASE("ES512 signatures verify in raw and DER form, and tampering is caught") {
  Bytes message = sha256(as_bytes("to be signed"));
  auto raw = sign(p521_key(), SigAlg::es512, message);
  auto der = sign(p521_key(), SigAlg::es512, message, EcdsaEncoding::der);
  REQUIRE(raw.has_value());
  REQUIRE(der.has_value());
  CHECK(raw->size() == 132);
  CHECK(der->front() == 0x30);
  auto pub = p521_key().public_key();
  CHECK(verify_signature(pub, SigAlg::es512, message, *raw).has_value());
  CHECK(verify_signature(pub, SigAlg::es512, message, *der).has_value());
  Bytes bad = *raw;
  bad[70] ^= 1;
  CHECK(verify_signature(pub, SigAlg::es512, message, bad).error().code == Errc::verification_failed);
  Bytes other = message;
  other[0] ^= 1;
  CHECK_FALSE(verify_signature(pub, SigAlg::es512, other, *raw).has_value());
}

TEST_CASE("ECDSA signatures of the wrong size or with non-canonical DER are refused") {
  Bytes message = to_bytes(as_bytes("m"));
  auto pub = p521_key().public_key();
  CHECK(verify_signature(pub, SigAlg::es512, message, Bytes(131, 1)).error().code == Errc::malformed);
  auto der = *sign(p521_key(), SigAlg::es512, message, EcdsaEncoding::der);
  Bytes trailing = der;
  trailing.push_back(0);
  CHECK_FALSE(verify_signature(pub, SigAlg::es512, message, trailing).has_value());
  CHECK_FALSE(verify_signature(pub, SigAlg::es512, message, Bytes{0x30, 0x00}).has_value());
}

TEST_CASE("PS256 uses a salt of the digest length and rejects a flipped bit") {
  Bytes message = to_bytes(as_bytes("payload"));
  auto sig = sign(rsa_key(), SigAlg::ps256, message);
  REQUIRE(sig.has_value());
  CHECK(sig->size() == 256);
  CHECK(verify_signature(rsa_key().public_key(), SigAlg::ps256, message, *sig).has_value());
  (*sig)[5] ^= 0x80;
  CHECK_FALSE(verify_signature(rsa_key().public_key(), SigAlg::ps256, message, *sig).has_value());
}

TEST_CASE("an algorithm is refused with a key of the wrong type or curve") {
  Bytes message{1, 2, 3};
  auto es = *sign(p521_key(), SigAlg::es512, message);
  CHECK(verify_signature(rsa_key().public_key(), SigAlg::es512, message, es).error().code == Errc::verification_failed);
  CHECK_FALSE(check_key_matches_alg(p521_key().public_key(), SigAlg::es384).has_value());
  CHECK_FALSE(check_key_matches_alg(p521_key().public_key(), SigAlg::ps256).has_value());
  CHECK_FALSE(sig_alg_from_cose(-8).has_value());  // EdDSA is not on the allow list
  CHECK_FALSE(sig_alg_from_cose(0).has_value());
}

TEST_CASE("EC points must be uncompressed, of the curve's size and on the curve") {
  auto point = p521_key().public_key().ec_point();
  REQUIRE(point.size() == 133);
  auto key = PublicKey::from_ec_point(KeyType::ec_p521, point);
  REQUIRE(key.has_value());
  CHECK(key->equals(p521_key().public_key()));
  Bytes off_curve = point;
  off_curve[100] ^= 1;
  CHECK_FALSE(PublicKey::from_ec_point(KeyType::ec_p521, off_curve).has_value());
  Bytes compressed = point;
  compressed[0] = 0x02;
  CHECK_FALSE(PublicKey::from_ec_point(KeyType::ec_p521, compressed).has_value());
  CHECK_FALSE(PublicKey::from_ec_point(KeyType::ec_p521, ByteView(point).first(97)).has_value());
}

TEST_CASE("SPKI round-trips and trailing bytes are refused") {
  auto spki = rsa_key().public_key().spki_der();
  CHECK(PublicKey::from_spki_der(spki)->equals(rsa_key().public_key()));
  spki.push_back(0);
  CHECK_FALSE(PublicKey::from_spki_der(spki).has_value());
}

TEST_CASE("the SPKI of NIST curve keys, encoded without OpenSSL's encoder, is byte-identical to i2d_PUBKEY") {
  for (KeyType type : {KeyType::ec_p256, KeyType::ec_p384, KeyType::ec_p521}) {
    auto key = PrivateKey::generate(type);
    REQUIRE(key.has_value());
    const PublicKey pub = key->public_key();
    unsigned char* der = nullptr;
    const int len = i2d_PUBKEY(pub.native(), &der);
    REQUIRE(len > 0);
    const Bytes expected(der, der + len);
    OPENSSL_free(der);
    INFO(key_type_name(type));
    CHECK(pub.spki_der() == expected);
    auto back = PublicKey::from_spki_der(pub.spki_der());
    REQUIRE(back.has_value());
    CHECK(back->equals(pub));
  }
  // A key made from a 133-byte point, as the verifier makes a token's RAK.
  auto parsed = PublicKey::from_ec_point(KeyType::ec_p521, p521_key().public_key().ec_point());
  REQUIRE(parsed.has_value());
  unsigned char* der = nullptr;
  const int len = i2d_PUBKEY(parsed->native(), &der);
  REQUIRE(len > 0);
  CHECK(parsed->spki_der() == Bytes(der, der + len));
  OPENSSL_free(der);
}

TEST_CASE("the SPKI of an EC key read from a compressed point or explicit curve parameters is i2d_PUBKEY's") {
  auto i2d = [](EVP_PKEY* key) {
    unsigned char* der = nullptr;
    const int len = i2d_PUBKEY(key, &der);
    Bytes out;
    if (len > 0) out.assign(der, der + len);
    OPENSSL_free(der);
    return out;
  };
  for (KeyType type : {KeyType::ec_p256, KeyType::ec_p384, KeyType::ec_p521}) {
    for (auto [param, value] : {std::pair{OSSL_PKEY_PARAM_EC_POINT_CONVERSION_FORMAT, "compressed"},
                                std::pair{OSSL_PKEY_PARAM_EC_ENCODING, "explicit"}}) {
      INFO(key_type_name(type) << ", " << value);
      auto key = PrivateKey::generate(type);
      REQUIRE(key.has_value());
      // A public-only copy whose encoding is then changed, as a certificate might carry it.
      auto copy = PublicKey::from_spki_der(key->public_key().spki_der());
      REQUIRE(copy.has_value());
      REQUIRE(EVP_PKEY_set_utf8_string_param(copy->native(), param, value) == 1);
      const Bytes encoded = i2d(copy->native());
      REQUIRE_FALSE(encoded.empty());
      auto parsed = PublicKey::from_spki_der(encoded);
      REQUIRE(parsed.has_value());
      CHECK(parsed->type() == type);
      CHECK(parsed->spki_der() == i2d(parsed->native()));
      CHECK(parsed->spki_der() == encoded);
    }
  }
}

TEST_CASE("the real secGear AIK certificate chains to the public Huawei roots") {
  auto leaf = load_cert("virtcca-secgear/virtcca_aik_cert.der");
  auto sub = load_cert("huawei-pki/Huawei_IT_Product_CA.pem");
  auto root = load_cert("huawei-pki/Huawei_Equipment_CA_root.pem");
  CHECK(leaf.subject().find("CN=1023A7989138T") != std::string::npos);
  CHECK(leaf.public_key().description() == "RSA-4096");
  CHECK(hex_encode(root.sha256_fingerprint()) ==
        "da2abe9225d795a380e2899d530ef0318a5b32bc81aafd4488ba961ddf7502d4");
  std::vector<Certificate> intermediates{sub}, roots{root};
  auto path = verify_chain(leaf, intermediates, roots);
  REQUIRE(path.has_value());
  // The validated path, leaf first: the device certificate's issuer is the product CA.
  REQUIRE(path->size() == 3);
  CHECK((*path)[0].der() == leaf.der());
  CHECK((*path)[1].der() == sub.der());
  CHECK((*path)[2].der() == root.der());
  SECTION("without the intermediate the chain cannot be built") {
    CHECK(verify_chain(leaf, {}, roots).error().code == Errc::verification_failed);
  }
  SECTION("the intermediate alone is not a trust anchor") {
    std::vector<Certificate> sub_only{sub};
    CHECK_FALSE(verify_chain(leaf, {}, sub_only).has_value());
  }
  SECTION("no roots means no trust") { CHECK_FALSE(verify_chain(leaf, intermediates, {}).has_value()); }
  SECTION("validity is checked at the given time") {
    ChainOptions before_issue{.at_time = std::time_t{1577836800}};  // 2020-01-01, before the leaf
    CHECK_FALSE(verify_chain(leaf, intermediates, roots, before_issue).has_value());
  }
}

TEST_CASE("a PEM bundle loads every certificate in it") {
  auto sub = read_file(data_dir + "/huawei-pki/Huawei_IT_Product_CA.pem", 65536);
  auto root = read_file(data_dir + "/huawei-pki/Huawei_Equipment_CA_root.pem", 65536);
  Bytes bundle = *sub;
  bundle.insert(bundle.end(), root->begin(), root->end());
  auto all = Certificate::load_all(bundle);
  REQUIRE(all.has_value());
  CHECK(all->size() == 2);
  CHECK_FALSE(Certificate::from_pem_or_der(bundle).has_value());  // one expected, two given
  CHECK_FALSE(Certificate::load_all(as_bytes("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")).has_value());
  CHECK_FALSE(Certificate::load_all(Bytes{0x30, 0x03, 0x02, 0x01}).has_value());
}

TEST_CASE("issued certificates chain, and a certificate from another CA does not") {
  auto ca_key = *PrivateKey::generate(KeyType::ec_p384);
  auto ca = *issue_certificate({.common_name = "test root", .is_ca = true}, ca_key.public_key(), ca_key, nullptr);
  auto leaf = *issue_certificate({.common_name = "device", .serial = 2}, p521_key().public_key(), ca_key, &ca);
  std::vector<Certificate> roots{ca};
  CHECK(verify_chain(leaf, {}, roots).has_value());
  CHECK(ca.is_self_signed());
  auto other_key = *PrivateKey::generate(KeyType::ec_p384);
  auto other = *issue_certificate({.common_name = "test root", .is_ca = true}, other_key.public_key(), other_key, nullptr);
  std::vector<Certificate> wrong_roots{other};
  CHECK_FALSE(verify_chain(leaf, {}, wrong_roots).has_value());
}

TEST_CASE("HMAC-SHA-256 and HKDF-SHA-256 match the RFC 4231 and RFC 5869 vectors") {
  auto mac = crypto::hmac_sha256(as_bytes("Jefe"), as_bytes("what do ya want for nothing?"));
  REQUIRE(mac.has_value());
  CHECK(hex_encode(*mac) == "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");

  const Bytes ikm(22, 0x0b);
  auto okm = crypto::hkdf_sha256(ikm, *hex_decode("000102030405060708090a0b0c"), *hex_decode("f0f1f2f3f4f5f6f7f8f9"), 42);
  REQUIRE(okm.has_value());
  CHECK(hex_encode(okm->view()) ==
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865");
  // Test case 3: no salt, no info.
  auto unsalted = crypto::hkdf_sha256(ikm, {}, {}, 42);
  REQUIRE(unsalted.has_value());
  CHECK(hex_encode(unsalted->view()) ==
        "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8");
  CHECK_FALSE(crypto::hkdf_sha256(ikm, {}, {}, 0).has_value());
  CHECK_FALSE(crypto::hkdf_sha256(ikm, {}, {}, 255 * 32 + 1).has_value());
}
