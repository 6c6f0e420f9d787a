// fde-agent's unlock side without device-mapper: LUKS header recognition, the lookup by
// UUID, and how the key reaches cryptsetup (exactly its bytes on stdin, then end of file).
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "common/util/file.hpp"
#include "guest-agent/unlock/luks_device.hpp"
#include "guest-agent/unlock/volume_unlocker.hpp"

using namespace fde;
using namespace fde::agent;
namespace fs = std::filesystem;

namespace {

struct TempDir {
  std::string path;
  TempDir() {
    char pattern[] = "/tmp/fde-agent-unlock-XXXXXX";
    path = ::mkdtemp(pattern);
  }
  ~TempDir() { fs::remove_all(path); }
};

Bytes luks_header(int version, std::string_view uuid) {
  Bytes header(4096, 0);
  const std::uint8_t magic[] = {'L', 'U', 'K', 'S', 0xba, 0xbe};
  std::copy(std::begin(magic), std::end(magic), header.begin());
  header[7] = static_cast<std::uint8_t>(version);
  std::copy(uuid.begin(), uuid.end(), header.begin() + luks_uuid_offset);
  return header;
}

constexpr std::string_view uuid = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0";

// A stand-in for cryptsetup that checks its arguments and what arrives on stdin.
std::string fake_cryptsetup(const TempDir& dir, const std::string& expected_args, const std::string& expected_sha256) {
  std::string path = dir.path + "/cryptsetup";
  std::ofstream(path) << "#!/bin/sh\n"
                      << "[ \"$*\" = \"" << expected_args << "\" ] || exit 1\n"
                      << "[ \"$(sha256sum | cut -c1-64)\" = \"" << expected_sha256 << "\" ] || exit 2\n"
                      << "exit 0\n";
  fs::permissions(path, fs::perms::owner_all);
  return path;
}

}  // namespace

TEST_CASE("LUKS1 and LUKS2 headers are recognised and their UUID read in lower case") {
  std::string upper(uuid);
  for (auto& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  auto v2 = parse_luks_header(luks_header(2, upper));
  REQUIRE(v2);
  CHECK(v2->version == 2);
  CHECK(v2->uuid == uuid);
  CHECK(parse_luks_header(luks_header(1, uuid))->version == 1);
  CHECK_FALSE(parse_luks_header(luks_header(3, uuid)));
  Bytes not_luks = luks_header(2, uuid);
  not_luks[4] = 0;
  CHECK_FALSE(parse_luks_header(not_luks));
  CHECK_FALSE(parse_luks_header(Bytes(100, 0)));
}

TEST_CASE("the volume is found through /dev/disk/by-uuid when udev made the link") {
  TempDir dir;
  fs::create_directories(dir.path + "/by-uuid");
  REQUIRE(write_file_atomic(dir.path + "/vda2", luks_header(2, uuid), 0600));
  fs::create_symlink(dir.path + "/vda2", dir.path + "/by-uuid/" + std::string(uuid));
  DeviceSearch search{dir.path + "/by-uuid", dir.path + "/sys-class-block", dir.path + "/dev"};
  auto found = find_luks_device(std::string(uuid), search);
  REQUIRE(found);
  CHECK(*found == fs::canonical(dir.path + "/vda2").string());
  auto missing = find_luks_device("11111111-2222-3333-4444-555555555555", search);
  REQUIRE_FALSE(missing);
  CHECK(missing.error().code == Errc::not_found);
}

TEST_CASE("an image file's LUKS header names its UUID") {
  TempDir dir;
  REQUIRE(write_file_atomic(dir.path + "/disk.luks", luks_header(2, uuid), 0600));
  auto header = read_luks_header(dir.path + "/disk.luks");
  REQUIRE(header);
  CHECK(header->uuid == uuid);
  REQUIRE(write_file_atomic(dir.path + "/plain", Bytes(4096, 0), 0600));
  CHECK(read_luks_header(dir.path + "/plain").error().code == Errc::not_found);
}

TEST_CASE("the key reaches cryptsetup's stdin byte for byte and is followed by end of file") {
  TempDir dir;
  Bytes key_bytes(64);
  for (std::size_t i = 0; i < key_bytes.size(); ++i) key_bytes[i] = static_cast<std::uint8_t>(255 - i);  // includes 0x0a
  SecretBytes key = SecretBytes::copy_of(key_bytes);
  // The fake compares sha256sum of its stdin with sha256sum of these test bytes.
  const std::string reference = dir.path + "/reference";
  REQUIRE(write_file_atomic(reference, key_bytes, 0600));
  std::string command = "sha256sum " + reference + " | cut -c1-64 > " + dir.path + "/expected";
  REQUIRE(std::system(command.c_str()) == 0);
  std::string expected;
  std::ifstream(dir.path + "/expected") >> expected;
  fs::remove(reference);

  SECTION("open") {
    auto program = fake_cryptsetup(dir, "open --key-file=- /dev/vda2 luks-x", expected);
    CryptsetupUnlocker unlocker({program, "/dev/vda2", "luks-x", false});
    auto result = unlocker.unlock(key);
    INFO((result ? std::string() : result.error().message));
    CHECK(result);
    CHECK(unlocker.done() == "unlocked /dev/vda2 as /dev/mapper/luks-x");
  }
  SECTION("test only") {
    auto program = fake_cryptsetup(dir, "open --test-passphrase --key-file=- /dev/vda2", expected);
    CryptsetupUnlocker unlocker({program, "/dev/vda2", "luks-x", true});
    CHECK(unlocker.unlock(key));
  }
}

TEST_CASE("cryptsetup's failures are reported by their meaning, also when it never reads the key") {
  TempDir dir;
  std::string path = dir.path + "/cryptsetup";
  std::ofstream(path) << "#!/bin/sh\nexit 2\n";
  fs::permissions(path, fs::perms::owner_all);
  CryptsetupUnlocker unlocker({path, "/dev/vda2", "luks-x", false});
  auto result = unlocker.unlock(SecretBytes::copy_of(Bytes(32, 1)));
  REQUIRE_FALSE(result);
  CHECK(result.error().message == "the released key opens no keyslot of the volume (cryptsetup exit 2)");

  CryptsetupUnlocker missing({dir.path + "/absent", "/dev/vda2", "luks-x", false});
  auto not_run = missing.unlock(SecretBytes::copy_of(Bytes(32, 1)));
  REQUIRE_FALSE(not_run);
  CHECK(not_run.error().message.find("cannot run " + dir.path + "/absent") == 0);
}
