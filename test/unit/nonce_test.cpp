// Stateless nonce tests: layout, expiry, forgery, image binding, rotation, RFC 3339 times.
#include <catch2/catch.hpp>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "common/protocol/messages.hpp"
#include "verifier-daemon/nonce/nonce_service.hpp"

using namespace fde;
using namespace fde::verifier;
using namespace std::chrono_literals;

namespace {

SecretBytes secret_of(std::uint8_t fill, std::size_t size = 32) { return SecretBytes::copy_of(Bytes(size, fill)); }

NonceService service_with(std::vector<std::uint8_t> fills, std::chrono::seconds lifetime = 60s) {
  std::vector<SecretBytes> secrets;
  for (auto fill : fills) secrets.push_back(secret_of(fill));
  auto service = NonceService::create(std::move(secrets), lifetime);
  REQUIRE(service.has_value());
  return std::move(*service);
}

// 2026-11-29T01:02:03Z
const Clock::time_point t0{std::chrono::seconds(1795914123)};

// The header's MAC, computed here straight from OpenSSL.
Bytes expected_mac(std::uint8_t secret_fill, ByteView head, std::string_view image_id) {
  Bytes key(32, secret_fill);
  std::string input = "virtcca-fde/v1 nonce";
  input.append(head.begin(), head.end());
  input.append(image_id);
  Bytes mac(32);
  unsigned int length = 0;
  REQUIRE(HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()), reinterpret_cast<const unsigned char*>(input.data()),
               input.size(), mac.data(), &length) != nullptr);
  REQUIRE(length == 32);
  return mac;
}

}  // namespace

TEST_CASE("a nonce has the documented layout and MAC") {
  auto service = service_with({0x11});
  auto issued = service.issue("img-a", t0);
  const Bytes& n = issued.nonce;
  REQUIRE(n.size() == protocol::nonce_size);
  CHECK(n[0] == 0x01);
  std::uint64_t expires = 0;
  for (int i = 1; i <= 8; ++i) expires = (expires << 8) | n[static_cast<std::size_t>(i)];
  CHECK(expires == 1795914123 + 60);
  CHECK(issued.expires_at == t0 + 60s);
  CHECK(format_rfc3339(issued.expires_at) == "2026-11-29T01:03:03Z");
  CHECK(Bytes(n.begin() + 32, n.end()) == expected_mac(0x11, ByteView(n).first(32), "img-a"));
  // The 23 random bytes differ between nonces.
  auto other = service.issue("img-a", t0);
  CHECK(Bytes(other.nonce.begin() + 9, other.nonce.begin() + 32) != Bytes(n.begin() + 9, n.begin() + 32));
}

TEST_CASE("a nonce is valid for its image until it expires") {
  auto service = service_with({0x11});
  auto issued = service.issue("img-a", t0);
  CHECK(service.check(issued.nonce, "img-a", t0) == NonceStatus::valid);
  CHECK(service.check(issued.nonce, "img-a", t0 + 59s) == NonceStatus::valid);
  CHECK(service.check(issued.nonce, "img-a", t0 + 59s + 999ms) == NonceStatus::valid);
  // A replica whose clock is a little behind the issuer's still accepts it.
  CHECK(service.check(issued.nonce, "img-a", t0 - 5s) == NonceStatus::valid);
}

TEST_CASE("a nonce is expired from its expiry second on") {
  auto service = service_with({0x11}, 30s);
  auto issued = service.issue("img-a", t0 + 700ms);  // expiry is in whole seconds
  CHECK(issued.expires_at == t0 + 30s);
  CHECK(service.check(issued.nonce, "img-a", t0 + 29s) == NonceStatus::valid);
  CHECK(service.check(issued.nonce, "img-a", t0 + 30s) == NonceStatus::expired);
  CHECK(service.check(issued.nonce, "img-a", t0 + 24h) == NonceStatus::expired);
}

TEST_CASE("a nonce with any byte changed is refused") {
  auto service = service_with({0x11});
  auto issued = service.issue("img-a", t0);
  for (std::size_t i = 0; i < issued.nonce.size(); ++i) {
    for (std::uint8_t flip : {std::uint8_t{0x01}, std::uint8_t{0x80}, std::uint8_t{0xff}}) {
      Bytes forged = issued.nonce;
      forged[i] ^= flip;
      INFO("byte " << i << " ^ " << int(flip));
      // Byte 0 is the version; everything else is covered by the MAC.
      CHECK(service.check(forged, "img-a", t0) == (i == 0 ? NonceStatus::malformed : NonceStatus::forged));
    }
  }
}

TEST_CASE("a nonce whose expiry was pushed forward is forged, not valid") {
  auto service = service_with({0x11});
  auto issued = service.issue("img-a", t0);
  Bytes forged = issued.nonce;
  forged[1] = 0x7f;  // far future
  CHECK(service.check(forged, "img-a", t0 + 1h) == NonceStatus::forged);
  // An expired nonce whose expiry was edited is still reported as forged.
  CHECK(service.check(forged, "img-a", t0 + 120s) == NonceStatus::forged);
}

TEST_CASE("a nonce issued for one image is forged for another") {
  auto service = service_with({0x11});
  auto issued = service.issue("img-a", t0);
  CHECK(service.check(issued.nonce, "img-b", t0) == NonceStatus::forged);
  CHECK(service.check(issued.nonce, "img-a.", t0) == NonceStatus::forged);
  CHECK(service.check(issued.nonce, "img-", t0) == NonceStatus::forged);
  CHECK(service.check(issued.nonce, "", t0) == NonceStatus::forged);
}

TEST_CASE("a nonce of the wrong length or version is malformed") {
  auto service = service_with({0x11});
  auto issued = service.issue("img-a", t0);
  CHECK(service.check(Bytes{}, "img-a", t0) == NonceStatus::malformed);
  CHECK(service.check(ByteView(issued.nonce).first(63), "img-a", t0) == NonceStatus::malformed);
  Bytes longer = issued.nonce;
  longer.push_back(0);
  CHECK(service.check(longer, "img-a", t0) == NonceStatus::malformed);
  // A version-2 nonce is refused even with a correct MAC over its contents.
  for (std::uint8_t version : {std::uint8_t{0x00}, std::uint8_t{0x02}, std::uint8_t{0xff}}) {
    Bytes other = issued.nonce;
    other[0] = version;
    Bytes mac = expected_mac(0x11, ByteView(other).first(32), "img-a");
    std::copy(mac.begin(), mac.end(), other.begin() + 32);
    CHECK(service.check(other, "img-a", t0) == NonceStatus::malformed);
  }
}

TEST_CASE("random bytes are not a valid nonce") {
  auto service = service_with({0x11});
  Bytes guess(64, 0x5a);
  guess[0] = 0x01;
  CHECK(service.check(guess, "img-a", t0) == NonceStatus::forged);
}

TEST_CASE("after rotation the new secret issues and both secrets verify") {
  auto before = service_with({0xaa});
  auto old_nonce = before.issue("img-a", t0).nonce;

  auto during = service_with({0xbb, 0xaa});
  CHECK(during.check(old_nonce, "img-a", t0) == NonceStatus::valid);
  auto new_nonce = during.issue("img-a", t0).nonce;
  CHECK(Bytes(new_nonce.begin() + 32, new_nonce.end()) == expected_mac(0xbb, ByteView(new_nonce).first(32), "img-a"));
  CHECK(during.check(new_nonce, "img-a", t0) == NonceStatus::valid);
  // A replica not yet rotated does not know the new secret.
  CHECK(before.check(new_nonce, "img-a", t0) == NonceStatus::forged);

  auto after = service_with({0xbb});
  CHECK(after.check(new_nonce, "img-a", t0) == NonceStatus::valid);
  CHECK(after.check(old_nonce, "img-a", t0) == NonceStatus::forged);
}

TEST_CASE("secrets shorter than 32 bytes, no secret or no lifetime are refused") {
  auto create = [](std::vector<std::size_t> sizes, std::chrono::seconds lifetime = 60s) {
    std::vector<SecretBytes> secrets;
    for (auto size : sizes) secrets.push_back(secret_of(0x42, size));
    return NonceService::create(std::move(secrets), lifetime);
  };
  CHECK(create({31}).error().code == Errc::invalid_argument);
  CHECK(create({0}).error().code == Errc::invalid_argument);
  CHECK(create({32, 31}).error().code == Errc::invalid_argument);
  CHECK(create({}).error().code == Errc::invalid_argument);
  CHECK(create({32}, 0s).error().code == Errc::invalid_argument);
  CHECK(create({32}, -5s).error().code == Errc::invalid_argument);
  CHECK(create({32}).has_value());
  auto long_secret = create({64, 32});
  REQUIRE(long_secret.has_value());
  auto issued = long_secret->issue("img-a", t0);
  CHECK(long_secret->check(issued.nonce, "img-a", t0) == NonceStatus::valid);
  CHECK(long_secret->lifetime() == 60s);
}

TEST_CASE("times are formatted as RFC 3339 UTC seconds that the protocol accepts") {
  CHECK(format_rfc3339(Clock::time_point{}) == "1970-01-01T00:00:00Z");
  CHECK(format_rfc3339(t0) == "2026-11-29T01:02:03Z");
  CHECK(format_rfc3339(t0 + 999ms) == "2026-11-29T01:02:03Z");
  CHECK(format_rfc3339(Clock::time_point{std::chrono::seconds(951782400)}) == "2000-02-29T00:00:00Z");
  protocol::ChallengeResponse response{Bytes(protocol::nonce_size, 1), format_rfc3339(t0)};
  CHECK(protocol::parse_challenge_response(protocol::serialize(response)).has_value());
}

TEST_CASE("nonce statuses have stable names") {
  CHECK(nonce_status_name(NonceStatus::valid) == "valid");
  CHECK(nonce_status_name(NonceStatus::malformed) == "malformed");
  CHECK(nonce_status_name(NonceStatus::forged) == "forged");
  CHECK(nonce_status_name(NonceStatus::expired) == "expired");
}
