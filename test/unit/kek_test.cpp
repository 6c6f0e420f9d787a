// Key-encryption key tests: file and credential loading rules, AES-256-GCM wrapping bound to the image id.
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <string>

#include "verifier-daemon/store/key_encryption_key.hpp"

using namespace fde;
using namespace fde::verifier;

namespace {

struct TempDir {
  std::string path;
  TempDir() {
    std::string pattern = (std::filesystem::temp_directory_path() / "fde-kek-test-XXXXXX").string();
    REQUIRE(::mkdtemp(pattern.data()) != nullptr);
    path = pattern;
  }
  ~TempDir() { std::filesystem::remove_all(path); }
  std::string file(const std::string& name) const { return path + "/" + name; }
};

void write_with_mode(const std::string& path, std::string_view content, mode_t mode) {
  ::unlink(path.c_str());
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  REQUIRE(fd >= 0);
  REQUIRE(::write(fd, content.data(), content.size()) == static_cast<ssize_t>(content.size()));
  REQUIRE(::fchmod(fd, mode) == 0);
  ::close(fd);
}

Bytes key_bytes() {
  Bytes key(32);
  for (std::size_t i = 0; i < key.size(); ++i) key[i] = static_cast<std::uint8_t>(0xc0 + i);
  return key;
}

KeyEncryptionKey test_kek(std::uint8_t fill = 0x33) {
  auto kek = KeyEncryptionKey::from_bytes(Bytes(32, fill));
  REQUIRE(kek.has_value());
  return std::move(*kek);
}

SecretBytes disk_key() {
  Bytes key(64);
  for (std::size_t i = 0; i < key.size(); ++i) key[i] = static_cast<std::uint8_t>(i * 3 + 1);
  return SecretBytes::copy_of(key);
}

// Two KEKs are the same key if what one wraps the other unwraps.
bool same_key(const KeyEncryptionKey& a, const KeyEncryptionKey& b) {
  auto unwrapped = b.unwrap("img", a.wrap("img", disk_key()));
  return unwrapped.has_value() && equal_constant_time(unwrapped->view(), disk_key().view());
}

}  // namespace

TEST_CASE("a KEK is exactly 32 bytes") {
  CHECK(KeyEncryptionKey::from_bytes(Bytes(32, 1)).has_value());
  for (std::size_t size : {0, 16, 31, 33, 64}) {
    INFO(size);
    CHECK(KeyEncryptionKey::from_bytes(Bytes(size, 1)).error().code == Errc::invalid_argument);
  }
  KeyEncryptionKey empty;
  CHECK_FALSE(empty.loaded());
  CHECK(test_kek().loaded());
  CHECK(empty.unwrap("img", Bytes(40)).error().code == Errc::invalid_argument);
}

TEST_CASE("a wrapped disk key is nonce, ciphertext and tag and unwraps to the same bytes") {
  auto kek = test_kek();
  auto key = disk_key();
  Bytes wrapped = kek.wrap("img-a", key);
  REQUIRE(wrapped.size() == 12 + 64 + 16);
  // The plaintext appears nowhere in the output.
  CHECK(std::search(wrapped.begin(), wrapped.end(), key.data(), key.data() + 8) == wrapped.end());
  auto unwrapped = kek.unwrap("img-a", wrapped);
  REQUIRE(unwrapped.has_value());
  CHECK(equal_constant_time(unwrapped->view(), key.view()));
  // A fresh random nonce each time: wrapping twice gives different bytes.
  Bytes again = kek.wrap("img-a", key);
  CHECK(again != wrapped);
  CHECK(Bytes(again.begin(), again.begin() + 12) != Bytes(wrapped.begin(), wrapped.begin() + 12));
  // Shorter keys (a 256-bit volume key) work too.
  auto short_key = SecretBytes::copy_of(Bytes(32, 7));
  auto short_unwrapped = kek.unwrap("img-a", kek.wrap("img-a", short_key));
  REQUIRE(short_unwrapped.has_value());
  CHECK(short_unwrapped->size() == 32);
}

TEST_CASE("a wrapped key does not unwrap for another image, under another KEK, or altered") {
  auto kek = test_kek();
  Bytes wrapped = kek.wrap("img-a", disk_key());
  CHECK(kek.unwrap("img-b", wrapped).error().code == Errc::verification_failed);
  CHECK(kek.unwrap("img-a ", wrapped).error().code == Errc::verification_failed);
  CHECK(test_kek(0x34).unwrap("img-a", wrapped).error().code == Errc::verification_failed);
  for (std::size_t i = 0; i < wrapped.size(); ++i) {
    Bytes altered = wrapped;
    altered[i] ^= 0x01;
    INFO("byte " << i);
    CHECK(kek.unwrap("img-a", altered).error().code == Errc::verification_failed);
  }
  CHECK(kek.unwrap("img-a", ByteView(wrapped).first(wrapped.size() - 1)).error().code == Errc::verification_failed);
  CHECK(kek.unwrap("img-a", ByteView(wrapped).first(27)).error().code == Errc::malformed);
  CHECK(kek.unwrap("img-a", Bytes{}).error().code == Errc::malformed);
}

TEST_CASE("a KEK file of 32 raw bytes or 64 hex digits with mode 0600 or 0400 loads") {
  TempDir dir;
  auto expected = KeyEncryptionKey::from_bytes(key_bytes());
  REQUIRE(expected.has_value());
  std::string hex = hex_encode(key_bytes());
  std::string upper = hex;
  for (auto& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  struct Case {
    std::string content;
    mode_t mode;
  };
  for (const Case& c : {Case{std::string(as_text(key_bytes())), 0600}, Case{hex, 0600}, Case{hex + "\n", 0600},
                        Case{upper + "\n", 0400}, Case{hex, 0400}}) {
    INFO(c.content << " mode " << c.mode);
    write_with_mode(dir.file("kek"), c.content, c.mode);
    auto loaded = KeyEncryptionKey::load_file(dir.file("kek"));
    REQUIRE(loaded.has_value());
    CHECK(same_key(*loaded, *expected));
  }
}

TEST_CASE("a KEK file readable or writable by group or others is refused") {
  TempDir dir;
  std::string hex = hex_encode(key_bytes());
  for (mode_t mode : {0640, 0604, 0620, 0602, 0644, 0666, 0610, 0601, 0700 | 0004}) {
    INFO("mode " << std::oct << mode);
    write_with_mode(dir.file("kek"), hex, mode);
    auto loaded = KeyEncryptionKey::load_file(dir.file("kek"));
    REQUIRE_FALSE(loaded.has_value());
    CHECK(loaded.error().code == Errc::invalid_argument);
    CHECK(loaded.error().message.find("group or others") != std::string::npos);
  }
}

TEST_CASE("a KEK file of the wrong size or content is refused") {
  TempDir dir;
  std::string hex = hex_encode(key_bytes());
  for (std::string content : {std::string(), std::string(31, 'k'), std::string(33, 'k'), hex.substr(0, 63),
                              hex.substr(0, 62) + "\n", hex + "0", hex + "\n\n", hex + "\r\n", " " + hex, hex + " ",
                              hex.substr(0, 63) + "g", "0x" + hex.substr(0, 62), hex + hex,
                              std::string(as_text(key_bytes())) + "\n", std::string(4096, 'a')}) {
    INFO("content of " << content.size() << " bytes");
    write_with_mode(dir.file("kek"), content, 0600);
    auto loaded = KeyEncryptionKey::load_file(dir.file("kek"));
    REQUIRE_FALSE(loaded.has_value());
    CHECK(loaded.error().code == Errc::invalid_argument);
  }
}

TEST_CASE("a missing KEK file or a directory is refused") {
  TempDir dir;
  CHECK(KeyEncryptionKey::load_file(dir.file("absent")).error().code == Errc::io);
  REQUIRE(::chmod(dir.path.c_str(), 0700) == 0);
  CHECK_FALSE(KeyEncryptionKey::load_file(dir.path).has_value());
}

TEST_CASE("a KEK loads from the systemd credentials directory") {
  TempDir dir;
  write_with_mode(dir.file("fde-kek"), hex_encode(key_bytes()) + "\n", 0400);
  const char* saved = std::getenv("CREDENTIALS_DIRECTORY");
  std::string saved_value = saved != nullptr ? saved : "";

  ::unsetenv("CREDENTIALS_DIRECTORY");
  CHECK(KeyEncryptionKey::load_credential("fde-kek").error().code == Errc::not_found);

  REQUIRE(::setenv("CREDENTIALS_DIRECTORY", dir.path.c_str(), 1) == 0);
  auto loaded = KeyEncryptionKey::load_credential("fde-kek");
  REQUIRE(loaded.has_value());
  CHECK(same_key(*loaded, *KeyEncryptionKey::from_bytes(key_bytes())));
  // A credential name is a single path component.
  for (std::string bad : {"", ".", "..", "../fde-kek", "sub/fde-kek", "/etc/passwd"}) {
    INFO(bad);
    CHECK(KeyEncryptionKey::load_credential(bad).error().code == Errc::invalid_argument);
  }
  CHECK(KeyEncryptionKey::load_credential("other").error().code == Errc::io);

  if (saved != nullptr)
    ::setenv("CREDENTIALS_DIRECTORY", saved_value.c_str(), 1);
  else
    ::unsetenv("CREDENTIALS_DIRECTORY");
}

TEST_CASE("keys derived from the KEK differ per label and from the KEK itself, and need a loaded KEK") {
  auto kek = KeyEncryptionKey::from_bytes(Bytes(32, 0x42));
  REQUIRE(kek.has_value());
  auto audit = kek->derive_key("virtcca-fde/v1 audit chain MAC key");
  auto other = kek->derive_key("virtcca-fde/v1 something else");
  REQUIRE(audit.has_value());
  REQUIRE(other.has_value());
  CHECK(audit->size() == 32);
  CHECK_FALSE(equal_constant_time(audit->view(), other->view()));
  CHECK_FALSE(equal_constant_time(audit->view(), Bytes(32, 0x42)));
  // Deterministic: the same KEK gives the same key after a restart.
  CHECK(equal_constant_time(audit->view(), kek->derive_key("virtcca-fde/v1 audit chain MAC key")->view()));
  CHECK_FALSE(kek->derive_key("").has_value());
  CHECK_FALSE(KeyEncryptionKey().derive_key("label").has_value());
}
