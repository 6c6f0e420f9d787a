// HPKE checked against the RFC 9180 A.1.1 test vector, plus round trips and tampering.
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

#include <rapidjson/document.h>

#include "common/crypto/hpke.hpp"
#include "common/crypto/keys.hpp"
#include "common/crypto/random.hpp"
#include "common/util/file.hpp"

using namespace fde;
using namespace fde::crypto::hpke;

namespace {
Bytes field(const rapidjson::Value& v, const char* name) { return *hex_decode(v[name].GetString()); }
}  // namespace

TEST_CASE("HPKE base mode reproduces RFC 9180 A.1.1 (X25519, HKDF-SHA256, AES-128-GCM)") {
  auto text = read_file(std::string(FDE_EXTERNAL_TESTDATA) + "/hpke-rfc9180/a1-base.json", 65536);
  REQUIRE(text.has_value());
  rapidjson::Document doc;
  doc.Parse(reinterpret_cast<const char*>(text->data()), text->size());
  REQUIRE_FALSE(doc.HasParseError());
  auto ephemeral = X25519KeyPair::from_private(field(doc, "skEm"));
  auto recipient = X25519KeyPair::from_private(field(doc, "skRm"));
  REQUIRE(ephemeral.has_value());
  REQUIRE(recipient.has_value());
  CHECK(ephemeral->public_key() == field(doc, "pkEm"));
  CHECK(recipient->public_key() == field(doc, "pkRm"));

  auto shared = encap_shared_secret(*ephemeral, recipient->public_key());
  REQUIRE(shared.has_value());
  CHECK(hex_encode(shared->view()) == doc["shared_secret"].GetString());
  auto schedule = key_schedule(*shared, field(doc, "info"), Aead::aes128_gcm);
  REQUIRE(schedule.has_value());
  CHECK(hex_encode(schedule->key.view()) == doc["key"].GetString());
  CHECK(hex_encode(schedule->base_nonce) == doc["base_nonce"].GetString());

  const auto& first = doc["encryptions"][0];
  auto sealed = seal_with_ephemeral(*ephemeral, recipient->public_key(), field(doc, "info"), field(first, "aad"),
                                    field(first, "pt"), Aead::aes128_gcm);
  REQUIRE(sealed.has_value());
  CHECK(sealed->enc == field(doc, "enc"));
  CHECK(sealed->ciphertext == field(first, "ct"));
  auto opened = open(*recipient, sealed->enc, field(doc, "info"), field(first, "aad"), sealed->ciphertext,
                     Aead::aes128_gcm);
  REQUIRE(opened.has_value());
  CHECK(to_bytes(opened->view()) == field(first, "pt"));
}

TEST_CASE("a key sealed with AES-256-GCM opens only with the right key, info and ciphertext") {
  auto recipient = X25519KeyPair::generate();
  Bytes disk_key(64, 0x5a);
  Bytes info = to_bytes(as_bytes("virtcca-fde/v1 key"));
  auto sealed = seal(recipient.public_key(), info, {}, disk_key);
  REQUIRE(sealed.has_value());
  CHECK(sealed->ciphertext.size() == disk_key.size() + tag_size);
  auto opened = open(recipient, sealed->enc, info, {}, sealed->ciphertext);
  REQUIRE(opened.has_value());
  CHECK(to_bytes(opened->view()) == disk_key);

  SECTION("another recipient cannot open it") {
    auto other = X25519KeyPair::generate();
    CHECK(open(other, sealed->enc, info, {}, sealed->ciphertext).error().code == Errc::verification_failed);
  }
  SECTION("a different info (image id or nonce) does not open it") {
    Bytes other_info = info;
    other_info.push_back('x');
    CHECK_FALSE(open(recipient, sealed->enc, other_info, {}, sealed->ciphertext).has_value());
  }
  SECTION("a flipped ciphertext or tag bit does not open it") {
    for (std::size_t i : {std::size_t{0}, sealed->ciphertext.size() - 1}) {
      Bytes bad = sealed->ciphertext;
      bad[i] ^= 1;
      CHECK_FALSE(open(recipient, sealed->enc, info, {}, bad).has_value());
    }
  }
  SECTION("a truncated ciphertext or a wrong-size enc is refused") {
    CHECK_FALSE(open(recipient, sealed->enc, info, {}, ByteView(sealed->ciphertext).first(10)).has_value());
    CHECK_FALSE(open(recipient, ByteView(sealed->enc).first(31), info, {}, sealed->ciphertext).has_value());
  }
  SECTION("a small-order peer key is refused") {
    CHECK_FALSE(open(recipient, Bytes(32, 0), info, {}, sealed->ciphertext).has_value());
    CHECK_FALSE(seal(Bytes(32, 0), info, {}, disk_key).has_value());
  }
}

// The locked arena (init_locked_arena) is process-wide and cannot be undone, and a failure
// here may end the process (random_secret aborts when OpenSSL cannot set up its generator):
// the case runs in a child. Returns the child's exit status, or
// 128 + the signal that ended it (134: abort).
namespace {
int in_child(int (*body)()) {
  std::fflush(nullptr);
  const pid_t pid = ::fork();
  if (pid == 0) {
    int code = 99;
    try {
      code = body();
    } catch (...) {
    }
    ::_exit(code);
  }
  int status = 0;
  if (pid < 0 || ::waitpid(pid, &status, 0) != pid) return -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}
}  // namespace

TEST_CASE("the daemon's own secrets cannot take the locked arena from OpenSSL's (HPKE still seals)") {
  // What fde-verifierd holds at once: a request-sized secret (an admin request is parsed in a
  // SecretBytes) and many small ones. OpenSSL's own secrets (TLS key shares, signing nonces,
  // random generator state) come from the same arena and fail when it is full.
  const int status = in_child([] {
    if (init_locked_arena(64 * 1024) == LockedArena::failed) return 2;
    (void)fde::crypto::random_secret(32);  // this thread's generator, reseeded after the fork
    SecretBytes request(40 * 1024);
    std::vector<SecretBytes> keys;
    for (int i = 0; i < 4096; ++i) keys.push_back(fde::crypto::random_secret(32));
    if (request.view().size() != 40 * 1024 || keys.back().view().size() != 32) return 3;
    // What a TLS handshake needs from the arena: a key share and a signature's nonce.
    if (!fde::crypto::PrivateKey::generate(fde::crypto::KeyType::ec_p256)) return 7;
    auto recipient = X25519KeyPair::from_private(Bytes(32, 0x11));
    if (!recipient) return 4;
    auto sealed = seal(recipient->public_key(), as_bytes("info"), {}, Bytes(32, 0x5a));
    if (!sealed) return 5;
    auto opened = open(*recipient, sealed->enc, as_bytes("info"), {}, sealed->ciphertext);
    return opened && to_bytes(opened->view()) == Bytes(32, 0x5a) ? 0 : 6;
  });
  CHECK(status == 0);
}

TEST_CASE("with the daemon's secrets in the locked arena, a new thread still gets random bytes") {
  // A thread's first use of OpenSSL's generator sets it up in the arena; random_secret ends
  // the process when that fails. fde-verifierd's threads first ask at their first request.
  const int status = in_child([] {
    if (init_locked_arena(64 * 1024) == LockedArena::failed) return 2;
    SecretBytes request(40 * 1024);
    std::vector<SecretBytes> keys;
    for (int i = 0; i < 4096; ++i) keys.push_back(SecretBytes::copy_of(Bytes(32, static_cast<std::uint8_t>(i))));
    int got = 0;
    std::thread([&] { got = fde::crypto::random_secret(32).view().size() == 32 ? 1 : 0; }).join();
    return got == 1 ? 0 : 3;
  });
  CHECK(status == 0);
}
