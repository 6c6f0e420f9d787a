// fde-agent's unlock side without device-mapper: LUKS header recognition, the lookup by
// UUID, the checked copy of the LUKS2 header area (synthetic headers here; real cryptsetup
// on real images in test/integration/agent_unlock_test.cpp), the checks on cryptsetup's
// JSON and on the kernel's table, and how the key reaches cryptsetup (exactly its bytes on
// stdin, then end of file, with `--header` naming the checked copy).
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "common/crypto/key_check.hpp"
#include "common/util/file.hpp"
#include "guest-agent/flow/unlock_flow.hpp"
#include "guest-agent/unlock/dm_table.hpp"
#include "guest-agent/unlock/luks2_header.hpp"
#include "guest-agent/unlock/luks_device.hpp"
#include "guest-agent/unlock/program_runner.hpp"
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

constexpr std::uint64_t test_hdr_size = 16 * 1024;
constexpr std::uint64_t test_data_offset = 64 * 1024;

// LUKS2 metadata as `cryptsetup luksDump --dump-json-metadata` prints it (compacted).
std::string luks2_json(std::string_view keyslot_cipher = "aes-xts-plain64",
                       std::string_view segment_cipher = "aes-xts-plain64", std::uint64_t offset = test_data_offset) {
  return std::string(R"({"keyslots":{"0":{"type":"luks2","key_size":64,"af":{"type":"luks1","stripes":4000,)") +
         R"("hash":"sha256"},"area":{"type":"raw","offset":"32768","size":"16384","encryption":")" +
         std::string(keyslot_cipher) +
         R"(","key_size":64},"kdf":{"type":"pbkdf2","hash":"sha256","iterations":1000,"salt":"AA=="},)" +
         R"("digest":"0"}},"tokens":{},"segments":{"0":{"type":"crypt","offset":")" + std::to_string(offset) +
         R"(","size":"dynamic","iv_tweak":"0","encryption":")" + std::string(segment_cipher) +
         R"(","sector_size":512}},"digests":{"0":{"type":"pbkdf2","keyslots":["0"],"segments":["0"],)" +
         R"("hash":"sha256","iterations":1000,"salt":"AA==","digest":"AA=="}},)" +
         R"("config":{"json_size":"12288","keyslots_size":"32768"}})";
}

// `json` with the first `from` replaced by `to` (which must be there).
std::string edited(std::string json, std::string_view from, std::string_view to) {
  const std::size_t at = json.find(from);
  REQUIRE(at != std::string::npos);
  return json.replace(at, from.size(), to);
}

void store_be64(Bytes& out, std::size_t at, std::uint64_t value) {
  for (int i = 7; i >= 0; --i, value >>= 8) out[at + static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(value);
}

// A synthetic LUKS2 volume: the primary binary header and JSON area, then recognisable bytes
// (standing in for the secondary header, the keyslots and the data) up to `total` bytes.
Bytes luks2_image(std::string_view json, std::uint64_t hdr_size = test_hdr_size,
                  std::size_t total = test_data_offset + 8192) {
  Bytes image(total);
  for (std::size_t i = 0; i < image.size(); ++i) image[i] = static_cast<std::uint8_t>(i * 31 + 7);
  std::fill(image.begin(), image.begin() + static_cast<std::ptrdiff_t>(std::min<std::size_t>(16384, total)), 0);
  Bytes binary = luks_header(2, uuid);
  std::copy(binary.begin(), binary.end(), image.begin());
  store_be64(image, luks2_hdr_size_offset, hdr_size);
  std::copy(json.begin(), json.end(), image.begin() + luks2_binary_header_size);
  return image;
}

std::string write_image(const TempDir& dir, const Bytes& image, const std::string& name = "vda2") {
  std::string path = dir.path + "/" + name;
  REQUIRE(write_file_atomic(path, image, 0600));
  return path;
}

Result<Luks2HeaderArea> header_area_of(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  REQUIRE(fd >= 0);
  auto area = read_luks2_header_area(fd);
  ::close(fd);
  return area;
}

std::string error_of(const Result<void>& result) { return result ? std::string("(no error)") : result.error().message; }
template <class T>
std::string error_of(const Result<T>& result) {
  return result ? std::string("(no error)") : result.error().message;
}

std::string sha256_hex_of(const TempDir& dir, ByteView bytes) {
  const std::string reference = dir.path + "/reference";
  REQUIRE(write_file_atomic(reference, bytes, 0600));
  std::string command = "sha256sum " + reference + " | cut -c1-64 > " + dir.path + "/expected";
  REQUIRE(std::system(command.c_str()) == 0);
  std::string expected;
  std::ifstream(dir.path + "/expected") >> expected;
  fs::remove(reference);
  fs::remove(dir.path + "/expected");
  return expected;
}

// A stand-in for cryptsetup. Every call is appended to `calls`. luksDump must name the
// header copy, whose bytes must equal `header_reference`, and prints `dump_json`; open must
// get `open_args`, the same header copy, and the key with `key_sha256` on stdin; close
// succeeds unless fail_close() was called.
struct FakeCryptsetup {
  std::string path, calls, header_reference, dump_json, close_fails;

  FakeCryptsetup(const TempDir& dir, const std::string& copy, const std::string& open_args,
                 const std::string& key_sha256, ByteView device_header_area)
      : path(dir.path + "/cryptsetup"),
        calls(dir.path + "/calls"),
        header_reference(dir.path + "/header-reference"),
        dump_json(dir.path + "/dump.json"),
        close_fails(dir.path + "/close-fails") {
    REQUIRE(write_file_atomic(header_reference, device_header_area, 0600));
    set_dump(luks2_json());
    std::ofstream(path) << "#!/bin/sh\n"
                        << "echo \"$*\" >> " << calls << "\n"
                        << "case \"$1\" in\n"
                        << "luksDump)\n"
                        << "  [ \"$*\" = \"luksDump --type luks2 --disable-external-tokens --dump-json-metadata " << copy
                        << "\" ] || exit 1\n"
                        << "  cmp -s " << copy << " " << header_reference << " || exit 3\n"
                        << "  cat " << dump_json << " ;;\n"
                        << "open)\n"
                        << "  [ \"$*\" = \"" << open_args << "\" ] || exit 1\n"
                        << "  cmp -s " << copy << " " << header_reference << " || exit 3\n"
                        << "  [ \"$(sha256sum | cut -c1-64)\" = \"" << key_sha256 << "\" ] || exit 2 ;;\n"
                        << "close) if [ -e " << close_fails << " ]; then exit 4; fi ;;\n"
                        << "*) exit 1 ;;\n"
                        << "esac\n";
    fs::permissions(path, fs::perms::owner_all);
  }
  void fail_close() { REQUIRE(write_file_atomic(close_fails, as_bytes("busy"), 0600)); }
  void set_dump(const std::string& json) { REQUIRE(write_file_atomic(dump_json, as_bytes(json), 0600)); }
  std::string calls_made() const {
    std::ifstream in(calls);
    std::stringstream text;
    text << in.rdbuf();
    return text.str();
  }
};

// The enrolled volume key of these tests, and the kernel's view of a mapping of it.
Bytes test_volume_key() { return Bytes(64, 0x77); }
Bytes test_volume_key_check() { return crypto::key_check_value(crypto::KeyCheckKind::volume_key, test_volume_key()); }
CryptMapping mapped_table(const std::string& cipher, const Bytes& volume_key = test_volume_key()) {
  CryptMapping mapping{cipher, "CRYPT-LUKS2-0f1e2d3c4b5a69788796a5b4c3d2e1f0-luks-x"};
  mapping.key = MappedKey::in_table;
  mapping.volume_key_check = crypto::key_check_value(crypto::KeyCheckKind::volume_key, volume_key);
  return mapping;
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


TEST_CASE("the header area to copy ends where the primary header's JSON puts the data segment") {
  TempDir dir;
  auto area = header_area_of(write_image(dir, luks2_image(luks2_json())));
  REQUIRE(area);
  CHECK(area->header_size == test_hdr_size);
  CHECK(area->data_offset == test_data_offset);
}

TEST_CASE("a header that is not a sane LUKS2 header is refused before anything is copied") {
  TempDir dir;
  SECTION("garbage") {
    Bytes garbage(100000);
    for (std::size_t i = 0; i < garbage.size(); ++i) garbage[i] = static_cast<std::uint8_t>(i * 13 + 1);
    CHECK(error_of(header_area_of(write_image(dir, garbage))) == "it does not start with a LUKS header");
  }
  SECTION("LUKS1") {
    CHECK(error_of(header_area_of(write_image(dir, luks_header(1, uuid)))) ==
          "it is a LUKS1 header; the agent opens only LUKS2 volumes");
  }
  SECTION("an oversized hdr_size field") {
    auto area = header_area_of(write_image(dir, luks2_image(luks2_json(), std::uint64_t(1) << 40)));
    CHECK(error_of(area) == "the binary header's hdr_size is 1099511627776 (LUKS2 allows 16 KiB to 4 MiB, a power of two)");
  }
  SECTION("an hdr_size that is not a power of two") {
    auto area = header_area_of(write_image(dir, luks2_image(luks2_json(), 20000)));
    CHECK(error_of(area).find("hdr_size is 20000") != std::string::npos);
  }
  SECTION("a device that ends inside the JSON area") {
    auto area = header_area_of(write_image(dir, luks2_image(luks2_json(), test_hdr_size, 8192)));
    CHECK(error_of(area) == "the device ends inside the LUKS2 JSON area");
  }
  SECTION("a JSON area that is not JSON") {
    auto area = header_area_of(write_image(dir, luks2_image("{\"segments\": {\"0\": ")));
    CHECK(error_of(area).find("the LUKS2 JSON area: invalid JSON") == 0);
  }
  SECTION("a data segment beyond 64 MiB") {
    auto area = header_area_of(write_image(dir, luks2_image(luks2_json("aes-xts-plain64", "aes-xts-plain64", 1ull << 30))));
    REQUIRE_FALSE(area);
    CHECK(area.error().code == Errc::too_large);
    CHECK(error_of(area) == "the header area before the data segment is 1024 MiB, more than the 64 MiB the agent accepts");
  }
  SECTION("a data segment inside the headers") {
    auto area = header_area_of(write_image(dir, luks2_image(luks2_json("aes-xts-plain64", "aes-xts-plain64", 4096))));
    CHECK(error_of(area) == "the data segment starts at byte 4096, inside the two LUKS2 headers");
  }
}

TEST_CASE("the header area is copied byte for byte into a private file that is removed afterwards") {
  TempDir dir;
  const Bytes image = luks2_image(luks2_json());
  const std::string device = write_image(dir, image);
  const std::string directory = dir.path + "/run/luks-header";
  std::string path;
  {
    auto copy = copy_luks2_header(device, directory, "luks-x");
    INFO(error_of(copy));
    REQUIRE(copy);
    path = copy->path();
    CHECK(path == directory + "/luks-x.luks2-header");
    CHECK(copy->size() == test_data_offset);
    auto bytes = read_file(path, 1 << 20);
    REQUIRE(bytes);
    CHECK(*bytes == Bytes(image.begin(), image.begin() + test_data_offset));
    struct stat st {};
    REQUIRE(::lstat(path.c_str(), &st) == 0);
    CHECK((st.st_mode & 07777) == 0600);
    REQUIRE(::lstat(directory.c_str(), &st) == 0);
    CHECK((st.st_mode & 07777) == 0700);
  }
  CHECK_FALSE(fs::exists(path));
  CHECK_FALSE(fs::exists(directory));  // created by the copy, so removed with it
}

TEST_CASE("the header copy goes only into a private directory") {
  TempDir dir;
  const std::string device = write_image(dir, luks2_image(luks2_json()));
  SECTION("a directory others can enter") {
    fs::create_directory(dir.path + "/open");
    fs::permissions(dir.path + "/open", fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec |
                                            fs::perms::others_read | fs::perms::others_exec);
    auto copy = copy_luks2_header(device, dir.path + "/open", "luks-x");
    CHECK(error_of(copy).find("is not a private directory of this user") != std::string::npos);
    CHECK(copy.error().code == Errc::io);
  }
  SECTION("a symbolic link to a private directory") {
    fs::create_directory(dir.path + "/elsewhere");
    fs::permissions(dir.path + "/elsewhere", fs::perms::owner_all);
    fs::create_directory_symlink(dir.path + "/elsewhere", dir.path + "/link");
    CHECK(error_of(copy_luks2_header(device, dir.path + "/link", "luks-x")).find("not a symbolic link") !=
          std::string::npos);
  }
  SECTION("a stale copy of an earlier run is replaced") {
    fs::create_directory(dir.path + "/private");
    fs::permissions(dir.path + "/private", fs::perms::owner_all);
    REQUIRE(write_file_atomic(dir.path + "/private/luks-x.luks2-header", Bytes(10, 1), 0600));
    auto copy = copy_luks2_header(device, dir.path + "/private", "luks-x");
    REQUIRE(copy);
    CHECK(fs::file_size(copy->path()) == test_data_offset);
  }
  SECTION("a device that ends inside its header area") {
    const std::string short_device = write_image(dir, luks2_image(luks2_json(), test_hdr_size, 40000), "short");
    auto copy = copy_luks2_header(short_device, dir.path + "/run", "luks-x");
    CHECK(error_of(copy) == "the device ends at byte 40000, inside its LUKS2 header area of 65536 bytes");
    CHECK_FALSE(fs::exists(dir.path + "/run/luks-x.luks2-header"));
  }
}

TEST_CASE("cryptsetup's view of the header passes only with one crypt segment of the expected cipher") {
  CHECK(check_luks2_metadata(luks2_json(), "aes-xts-plain64", test_data_offset));
  SECTION("a keyslot with cipher_null opens with any passphrase") {
    CHECK(error_of(check_luks2_metadata(luks2_json("cipher_null-ecb"), "aes-xts-plain64", test_data_offset)) ==
          "keyslot 0 uses cipher_null ('cipher_null-ecb'): any passphrase would open it");
    CHECK(error_of(check_luks2_metadata(luks2_json("capi:ecb(cipher_null)"), "aes-xts-plain64", test_data_offset))
              .find("keyslot 0 uses cipher_null") == 0);
  }
  SECTION("a keyslot without area encryption") {
    CHECK(error_of(check_luks2_metadata(luks2_json(""), "aes-xts-plain64", test_data_offset)) ==
          "keyslot 0 has no area encryption");
  }
  SECTION("a cipher_null data segment") {
    CHECK(error_of(check_luks2_metadata(luks2_json("aes-xts-plain64", "cipher_null-ecb"), "aes-xts-plain64",
                                        test_data_offset)) ==
          "data segment 0 uses cipher_null ('cipher_null-ecb'): the data would not be encrypted");
  }
  SECTION("another cipher than the configured one") {
    CHECK(error_of(check_luks2_metadata(luks2_json("aes-xts-plain64", "aes-cbc-essiv:sha256"), "aes-xts-plain64",
                                        test_data_offset)) ==
          "data segment 0 uses 'aes-cbc-essiv:sha256', expected 'aes-xts-plain64' (luks_cipher)");
  }
  SECTION("a segment offset that differs from the copied area") {
    CHECK(error_of(check_luks2_metadata(luks2_json(), "aes-xts-plain64", 32768))
              .find("data segment 0 starts at byte 65536, not where") == 0);
  }
  SECTION("two segments") {
    std::string json = luks2_json();
    const std::string second = R"("1":{"type":"linear","offset":"1048576","size":"dynamic"},)";
    json.insert(json.find(R"("0":{"type":"crypt")"), second);
    CHECK(error_of(check_luks2_metadata(json, "aes-xts-plain64", test_data_offset)) ==
          "it has 2 data segments, expected exactly one (a reencryption in progress?)");
  }
  SECTION("a linear segment") {
    std::string json = luks2_json();
    json.replace(json.find(R"("type":"crypt")"), 14, R"("type":"linear")");
    CHECK(error_of(check_luks2_metadata(json, "aes-xts-plain64", test_data_offset)) ==
          "data segment 0 is of type 'linear', expected 'crypt'");
  }
  SECTION("no keyslots") {
    std::string json = R"({"keyslots":{},"tokens":{},"segments":{"0":{"type":"crypt","offset":"65536",)"
                       R"("encryption":"aes-xts-plain64"}},"digests":{},"config":{}})";
    CHECK(error_of(check_luks2_metadata(json, "aes-xts-plain64", test_data_offset)) == "it has no keyslots");
  }
  SECTION("not JSON") {
    CHECK(error_of(check_luks2_metadata("LUKS header information\n", "aes-xts-plain64", test_data_offset))
              .find("cryptsetup luksDump's JSON: invalid JSON") == 0);
  }
}

TEST_CASE("a header with tokens, persistent flags or requirements is refused: fde-image writes none of them") {
  const std::string config = R"("config":{"json_size":"12288","keyslots_size":"32768")";
  auto refusal = [](const std::string& json) {
    return error_of(check_luks2_metadata(json, "aes-xts-plain64", test_data_offset));
  };
  SECTION("allow-discards: TRIM would show the host which blocks are used") {
    CHECK(refusal(edited(luks2_json(), config, config + R"(,"flags":["allow-discards"])")) ==
          R"(its config sets persistent flags ["allow-discards"]: a volume made by fde-image has none)");
  }
  SECTION("a flag that looks harmless is still not fde-image's") {
    CHECK(refusal(edited(luks2_json(), config, config + R"(,"flags":["no-read-workqueue","same-cpu-crypt"])")) ==
          R"(its config sets persistent flags ["no-read-workqueue","same-cpu-crypt"]: a volume made by fde-image )"
          R"(has none)");
  }
  SECTION("flags that are not a list") {
    CHECK(refusal(edited(luks2_json(), config, config + R"(,"flags":"allow-discards")")).find(
              "its config sets persistent flags") == 0);
  }
  SECTION("an empty list of flags sets nothing") {
    CHECK(check_luks2_metadata(edited(luks2_json(), config, config + R"(,"flags":[])"), "aes-xts-plain64",
                               test_data_offset));
  }
  SECTION("requirements") {
    CHECK(refusal(edited(luks2_json(), config, config + R"(,"requirements":{"mandatory":["online-reencrypt-v2"]})")) ==
          R"(its config sets requirements {"mandatory":["online-reencrypt-v2"]}: a volume made by fde-image has none)");
    // cryptsetup never leaves an empty list behind.
    CHECK(refusal(edited(luks2_json(), config, config + R"(,"requirements":{"mandatory":[]})")).find(
              "its config sets requirements") == 0);
    CHECK(refusal(edited(luks2_json(), config, config + R"(,"requirements":[])")).find(
              "its config sets requirements") == 0);
    CHECK(check_luks2_metadata(edited(luks2_json(), config, config + R"(,"requirements":{})"), "aes-xts-plain64",
                               test_data_offset));
  }
  SECTION("a luks2-keyring token, which cryptsetup tries even with --disable-external-tokens") {
    CHECK(refusal(edited(luks2_json(), R"("tokens":{})",
                         R"("tokens":{"0":{"type":"luks2-keyring","keyslots":["0"],"key_description":"foo"}})")) ==
          "it has a token (token 0, type 'luks2-keyring'): a volume made by fde-image has none");
    CHECK(refusal(edited(luks2_json(), R"("tokens":{})",
                         R"("tokens":{"3":{"type":"systemd-tpm2","keyslots":[]},"4":{"type":"x","keyslots":[]}})")) ==
          "it has 2 tokens (token 3, type 'systemd-tpm2'): a volume made by fde-image has none");
  }
  SECTION("metadata without the tokens, digests or config objects") {
    CHECK(refusal(edited(luks2_json(), R"("tokens":{},)", "")) == "the LUKS2 metadata has no 'tokens' object");
    CHECK(refusal(edited(luks2_json(), config + "}", R"("config":[])")) == "the LUKS2 metadata has no 'config' object");
    CHECK(refusal(edited(luks2_json(), R"("digests":{)", R"("digests":[],"x":{)")) ==
          "the LUKS2 metadata has no 'digests' object");
  }
}

TEST_CASE("a keyslot or digest whose hash is empty, missing or null is refused") {
  auto refusal = [](const std::string& json) {
    return error_of(check_luks2_metadata(json, "aes-xts-plain64", test_data_offset));
  };
  const std::string kdf = R"("kdf":{"type":"pbkdf2","hash":"sha256")";
  const std::string af = R"("af":{"type":"luks1","stripes":4000,"hash":"sha256")";
  const std::string digest = R"("digests":{"0":{"type":"pbkdf2","keyslots":["0"],"segments":["0"],"hash":"sha256")";
  CHECK(refusal(edited(luks2_json(), kdf, R"("kdf":{"type":"pbkdf2","hash":"")")) == "keyslot 0 kdf has no hash");
  CHECK(refusal(edited(luks2_json(), kdf, R"("kdf":{"type":"pbkdf2")")) == "keyslot 0 kdf has no hash");
  CHECK(refusal(edited(luks2_json(), kdf, R"("kdf":{"type":"pbkdf2","hash":"digest_null")")) ==
        "keyslot 0 kdf uses the null hash ('digest_null')");
  CHECK(refusal(edited(luks2_json(), af, R"("af":{"type":"luks1","stripes":4000,"hash":"NULL")")) ==
        "keyslot 0 af uses the null hash ('NULL')");
  CHECK(refusal(edited(luks2_json(), af, R"("af":{"type":"luks1","stripes":4000)")) == "keyslot 0 af has no hash");
  CHECK(refusal(edited(luks2_json(), digest, R"("digests":{"0":{"type":"pbkdf2","keyslots":["0"],"hash":"")")) ==
        "digest 0 has no hash");
  CHECK(refusal(edited(luks2_json(), digest, R"("digests":{"0":{"type":"pbkdf2","keyslots":["0"],"hash":"null")")) ==
        "digest 0 uses the null hash ('null')");
  // Argon2 keyslots name no hash for their kdf.
  CHECK(check_luks2_metadata(edited(luks2_json(), kdf, R"("kdf":{"type":"argon2id","time":4,"memory":1024,"cpus":1)"),
                             "aes-xts-plain64", test_data_offset));
}

TEST_CASE("an already open mapping passes only as a LUKS2 mapping of the configured volume and cipher") {
  const std::string luks_uuid = "0F1E2D3C-4b5a-6978-8796-a5b4c3d2e1f0";
  CryptMapping mapping = mapped_table("aes-xts-plain64");
  CHECK(check_luks2_mapping(mapping, luks_uuid, "aes-xts-plain64", test_volume_key_check()));
  SECTION("another cipher") {
    mapping.cipher = "cipher_null-ecb";
    CHECK(error_of(check_luks2_mapping(mapping, luks_uuid, "aes-xts-plain64", test_volume_key_check())) ==
          "it uses 'cipher_null-ecb', expected 'aes-xts-plain64' (luks_cipher)");
  }
  SECTION("another volume key: a volume made with the genuine UUID and cipher by someone else") {
    mapping.volume_key_check = crypto::key_check_value(crypto::KeyCheckKind::volume_key, Bytes(64, 0x66));
    CHECK(error_of(check_luks2_mapping(mapping, luks_uuid, "aes-xts-plain64", test_volume_key_check())).find(
              "its volume key does not match volume_key_check") == 0);
  }
  SECTION("a key in the kernel keyring") {
    mapping.key = MappedKey::in_keyring;
    mapping.keyring_key = ":64:logon:cryptsetup:x-d0";
    CHECK(error_of(check_luks2_mapping(mapping, luks_uuid, "aes-xts-plain64", test_volume_key_check())).find(
              "its volume key is in the kernel keyring") == 0);
  }
  SECTION("another volume's UUID") {
    mapping.dm_uuid = "CRYPT-LUKS2-11111111222233334444555555555555-luks-x";
    CHECK(error_of(check_luks2_mapping(mapping, luks_uuid, "aes-xts-plain64", test_volume_key_check())) ==
          "its device-mapper UUID is 'CRYPT-LUKS2-11111111222233334444555555555555-luks-x', not "
          "CRYPT-LUKS2-0f1e2d3c4b5a69788796a5b4c3d2e1f0-<name>: it is not a LUKS2 mapping of volume " + luks_uuid);
  }
  SECTION("not made by cryptsetup for LUKS2") {
    for (const char* dm_uuid : {"", "CRYPT-PLAIN-luks-x", "CRYPT-LUKS1-0f1e2d3c4b5a69788796a5b4c3d2e1f0-luks-x",
                                "CRYPT-LUKS2-0f1e2d3c4b5a69788796a5b4c3d2e1f0", "CRYPT-LUKS2-0f1e2d3c4b5a69788796a5b4c3d2e1f00-x",
                                "crypt-luks2-0f1e2d3c4b5a69788796a5b4c3d2e1f0-luks-x"}) {
      mapping.dm_uuid = dm_uuid;
      INFO(dm_uuid);
      CHECK(error_of(check_luks2_mapping(mapping, luks_uuid, "aes-xts-plain64", test_volume_key_check())).find("its device-mapper UUID is") == 0);
    }
  }
}

TEST_CASE("the kernel's table of the mapping must be a single crypt target") {
  auto keyring = crypt_mapping_from_table(1, "crypt", "aes-xts-plain64 :64:logon:cryptsetup:x-d0 0 7:0 32768 1 sector_size:4096");
  REQUIRE(keyring);
  CHECK(keyring->cipher == "aes-xts-plain64");
  CHECK(error_of(crypt_mapping_from_table(2, "crypt", "aes-xts-plain64 0 0 7:0 0")) ==
        "it has 2 targets, expected one crypt target");
  CHECK(error_of(crypt_mapping_from_table(1, "linear", "7:0 0")) == "its target is of type 'linear', expected 'crypt'");
  CHECK(error_of(crypt_mapping_from_table(0, "", "")) == "it has 0 targets, expected one crypt target");
}

TEST_CASE("the key field of a crypt table: a key in hex yields its check value, a keyring reference its name") {
  Bytes key(64);
  for (std::size_t i = 0; i < key.size(); ++i) key[i] = static_cast<std::uint8_t>(i * 7 + 3);
  SECTION("hex, either case") {
    for (const std::string& hex : {hex_encode(key), [&] {
           std::string upper = hex_encode(key);
           for (char& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
           return upper;
         }()}) {
      auto mapping = crypt_mapping_from_table(1, "crypt", "aes-xts-plain64 " + hex + " 0 252:2 32768 1 sector_size:4096");
      REQUIRE(mapping);
      CHECK(mapping->key == MappedKey::in_table);
      CHECK(mapping->volume_key_check == crypto::key_check_value(crypto::KeyCheckKind::volume_key, key));
      CHECK(mapping->keyring_key.empty());
      CHECK(check_mapped_key(*mapping, crypto::key_check_value(crypto::KeyCheckKind::volume_key, key)));
    }
  }
  SECTION("a keyring reference: the key cannot be compared") {
    auto mapping = crypt_mapping_from_table(1, "crypt", "aes-xts-plain64 :64:logon:cryptsetup:0f1e-d0 0 252:2 32768");
    REQUIRE(mapping);
    CHECK(mapping->key == MappedKey::in_keyring);
    CHECK(mapping->keyring_key == ":64:logon:cryptsetup:0f1e-d0");
    CHECK(mapping->volume_key_check.empty());
    CHECK(error_of(check_mapped_key(*mapping, test_volume_key_check())).find(
              "its volume key is in the kernel keyring (:64:logon:cryptsetup:0f1e-d0), not in its table") == 0);
  }
  SECTION("no key") {
    for (const char* params : {"cipher_null-ecb - 0 252:2 0", "aes-xts-plain64"}) {
      auto mapping = crypt_mapping_from_table(1, "crypt", params);
      REQUIRE(mapping);
      CHECK(mapping->key == MappedKey::none);
      CHECK(error_of(check_mapped_key(*mapping, test_volume_key_check())) == "its table holds no volume key");
    }
  }
  SECTION("not a key in hex") {
    for (const std::string& field : {std::string("abc"), std::string("zz") + hex_encode(key).substr(2),
                                     std::string(4096, 'a')}) {
      CHECK(error_of(crypt_mapping_from_table(1, "crypt", "aes-xts-plain64 " + field + " 0 252:2 0")) ==
            "its crypt table's key field is not a key in hex");
    }
  }
  SECTION("another key does not match, nor does an empty check value") {
    auto mapping = crypt_mapping_from_table(1, "crypt", "aes-xts-plain64 " + hex_encode(key) + " 0 252:2 0");
    REQUIRE(mapping);
    CHECK(error_of(check_mapped_key(*mapping, test_volume_key_check())).find(
              "its volume key does not match volume_key_check: it is not the enrolled volume") == 0);
    CHECK_FALSE(check_mapped_key(*mapping, Bytes{}));
  }
}

TEST_CASE("a helper program's output is captured up to a limit and a secret reaches its stdin") {
  auto echoed = run_program({"/bin/sh", "-c", "printf hello"}, {nullptr, 100});
  REQUIRE(echoed);
  CHECK(echoed->succeeded());
  CHECK(echoed->output == "hello");
  auto flood = run_program({"/bin/sh", "-c", "head -c 1000000 /dev/zero"}, {nullptr, 1000});
  REQUIRE_FALSE(flood);
  CHECK(flood.error().code == Errc::too_large);
  SecretBytes secret = SecretBytes::copy_of(as_bytes("s3cret"));
  auto cat = run_program({"/bin/sh", "-c", "cat; exit 7"}, {&secret, 100});
  REQUIRE(cat);
  CHECK(cat->output == "s3cret");
  CHECK(describe_wait_status(cat->wait_status) == "exit 7");
  auto no_stdin = run_program({"/bin/sh", "-c", "cat"}, {nullptr, 100});
  REQUIRE(no_stdin);
  CHECK(no_stdin->output.empty());
}

TEST_CASE("a helper program whose end cannot be learned has not succeeded") {
  // With SIGCHLD ignored the kernel reaps the child itself and waitpid fails with ECHILD:
  // there is no exit status, and a zero status must not be read as "exit 0".
  struct sigaction ignore {}, previous {};
  ignore.sa_handler = SIG_IGN;
  sigemptyset(&ignore.sa_mask);
  REQUIRE(::sigaction(SIGCHLD, &ignore, &previous) == 0);
  auto run = run_program({"/bin/sh", "-c", "exit 0"});
  auto captured = run_program({"/bin/sh", "-c", "printf ok"}, {nullptr, 100});
  ::sigaction(SIGCHLD, &previous, nullptr);
  REQUIRE_FALSE(run);
  CHECK(run.error().code == Errc::io);
  CHECK(run.error().message == "cannot learn how /bin/sh ended: waitpid: No child processes");
  CHECK_FALSE(captured);
  // Once SIGCHLD is back to its default, the same program succeeds.
  auto again = run_program({"/bin/sh", "-c", "exit 0"});
  REQUIRE(again);
  CHECK(again->succeeded());
}

TEST_CASE("the key reaches cryptsetup's stdin byte for byte, with --header naming the checked copy") {
  TempDir dir;
  Bytes key_bytes(64);
  for (std::size_t i = 0; i < key_bytes.size(); ++i) key_bytes[i] = static_cast<std::uint8_t>(255 - i);  // includes 0x0a
  SecretBytes key = SecretBytes::copy_of(key_bytes);
  const std::string expected = sha256_hex_of(dir, key_bytes);
  const Bytes image = luks2_image(luks2_json());
  const std::string device = write_image(dir, image);
  const std::string directory = dir.path + "/run/luks-header";
  const std::string copy = directory + "/luks-x.luks2-header";
  const ByteView header_area(image.data(), test_data_offset);

  CryptsetupOptions options;
  options.device = device;
  options.mapper_name = "luks-x";
  options.header_directory = directory;
  options.volume_key_check = test_volume_key_check();
  std::vector<std::string> mapped;
  options.read_mapping = [&mapped](const std::string& name) -> Result<CryptMapping> {
    mapped.push_back(name);
    return mapped_table("aes-xts-plain64");
  };

  SECTION("open") {
    FakeCryptsetup fake(dir, copy,
                        "open --type luks2 --header " + copy + " --disable-external-tokens --disable-keyring --key-file=- " + device +
                            " luks-x",
                        expected, header_area);
    options.cryptsetup = fake.path;
    CryptsetupUnlocker unlocker(options);
    auto result = unlocker.unlock(key);
    INFO(error_of(result) << "\ncalls:\n" << fake.calls_made());
    CHECK(result);
    CHECK(unlocker.done() == "unlocked " + device + " as /dev/mapper/luks-x");
    CHECK(mapped == std::vector<std::string>{"luks-x"});
    CHECK(fake.calls_made().find("close") == std::string::npos);
    CHECK_FALSE(fs::exists(copy));
    CHECK_FALSE(fs::exists(directory));
  }
  SECTION("test only") {
    FakeCryptsetup fake(dir, copy,
                        "open --test-passphrase --type luks2 --header " + copy +
                            " --disable-external-tokens --disable-keyring --key-file=- " + device,
                        expected, header_area);
    options.cryptsetup = fake.path;
    options.test_only = true;
    CryptsetupUnlocker unlocker(options);
    auto result = unlocker.unlock(key);
    INFO(error_of(result));
    CHECK(result);
    CHECK(mapped.empty());  // nothing was mapped
  }
}

TEST_CASE("a refused header never reaches cryptsetup open") {
  TempDir dir;
  SecretBytes key = SecretBytes::copy_of(Bytes(32, 1));
  const Bytes image = luks2_image(luks2_json());
  const std::string device = write_image(dir, image);
  const std::string copy = dir.path + "/run/luks-x.luks2-header";
  FakeCryptsetup fake(dir, copy, "open (never)", "-", ByteView(image.data(), test_data_offset));
  CryptsetupOptions options;
  options.cryptsetup = fake.path;
  options.device = device;
  options.mapper_name = "luks-x";
  options.header_directory = dir.path + "/run";
  options.volume_key_check = test_volume_key_check();

  SECTION("cryptsetup sees a cipher_null keyslot") {
    fake.set_dump(luks2_json("cipher_null-ecb"));
    auto result = CryptsetupUnlocker(options).unlock(key);
    CHECK(error_of(result) == "LUKS header of " + device +
                                  " refused: keyslot 0 uses cipher_null ('cipher_null-ecb'): any passphrase would open it");
    CHECK(result.error().code == Errc::verification_failed);
  }
  SECTION("cryptsetup does not read the copy as LUKS2") {
    options.cryptsetup = dir.path + "/failing";
    std::ofstream(options.cryptsetup) << "#!/bin/sh\necho \"$*\" >> " << fake.calls << "\nexit 1\n";
    fs::permissions(options.cryptsetup, fs::perms::owner_all);
    CHECK(error_of(CryptsetupUnlocker(options).unlock(key)) ==
          "LUKS header of " + device + " refused: cryptsetup luksDump does not read it as a LUKS2 header (exit 1)");
  }
  SECTION("another segment cipher than luks_cipher") {
    options.expected_cipher = "serpent-xts-plain64";
    CHECK(error_of(CryptsetupUnlocker(options).unlock(key)) ==
          "LUKS header of " + device +
              " refused: data segment 0 uses 'aes-xts-plain64', expected 'serpent-xts-plain64' (luks_cipher)");
  }
  SECTION("the device is not LUKS2 at all") {
    options.device = write_image(dir, Bytes(100000, 0), "zeros");
    CHECK(error_of(CryptsetupUnlocker(options).unlock(key)) ==
          "LUKS header of " + options.device + " refused: it does not start with a LUKS header");
  }
  CHECK(fake.calls_made().find("open") == std::string::npos);
  CHECK_FALSE(fs::exists(copy));
}

TEST_CASE("a mapping whose kernel table shows another cipher is closed again and the unlock fails") {
  TempDir dir;
  SecretBytes key = SecretBytes::copy_of(Bytes(32, 1));
  const Bytes image = luks2_image(luks2_json());
  const std::string device = write_image(dir, image);
  const std::string copy = dir.path + "/run/luks-x.luks2-header";
  FakeCryptsetup fake(dir, copy,
                      "open --type luks2 --header " + copy + " --disable-external-tokens --disable-keyring --key-file=- " + device +
                          " luks-x",
                      sha256_hex_of(dir, Bytes(32, 1)), ByteView(image.data(), test_data_offset));
  CryptsetupOptions options;
  options.cryptsetup = fake.path;
  options.device = device;
  options.mapper_name = "luks-x";
  options.header_directory = dir.path + "/run";
  options.volume_key_check = test_volume_key_check();
  SECTION("another cipher") {
    options.read_mapping = [](const std::string&) -> Result<CryptMapping> { return mapped_table("cipher_null-ecb"); };
    CryptsetupUnlocker unlocker(options);
    CHECK(error_of(unlocker.unlock(key)) ==
          "/dev/mapper/luks-x uses 'cipher_null-ecb', expected 'aes-xts-plain64'; closed it again");
    CHECK_FALSE(unlocker.unverified_mapping_open());
  }
  SECTION("another volume key: the header's keyslot opened a volume that is not the enrolled one") {
    options.read_mapping = [](const std::string&) -> Result<CryptMapping> {
      return mapped_table("aes-xts-plain64", Bytes(64, 0x66));
    };
    CryptsetupUnlocker unlocker(options);
    const std::string error = error_of(unlocker.unlock(key));
    CHECK(error.find("/dev/mapper/luks-x: its volume key does not match volume_key_check") == 0);
    CHECK(error.find("; closed it again") != std::string::npos);
    CHECK_FALSE(unlocker.unverified_mapping_open());
  }
  SECTION("the volume key in the kernel keyring") {
    options.read_mapping = [](const std::string&) -> Result<CryptMapping> {
      CryptMapping mapping = mapped_table("aes-xts-plain64");
      mapping.key = MappedKey::in_keyring;
      mapping.keyring_key = ":64:logon:cryptsetup:x-d0";
      return mapping;
    };
    CryptsetupUnlocker unlocker(options);
    CHECK(error_of(unlocker.unlock(key)).find("/dev/mapper/luks-x: its volume key is in the kernel keyring") == 0);
  }
  SECTION("a table that cannot be read") {
    options.read_mapping = [](const std::string&) -> Result<CryptMapping> {
      return fail(Errc::io, "device-mapper table of luks-x: No such device or address");
    };
    CryptsetupUnlocker unlocker(options);
    CHECK(error_of(unlocker.unlock(key)) ==
          "cannot confirm /dev/mapper/luks-x: device-mapper table of luks-x: No such device or address; "
          "closed it again");
    CHECK_FALSE(unlocker.unverified_mapping_open());
  }
  CHECK(fake.calls_made().find("close luks-x") != std::string::npos);
}

TEST_CASE("a mapping that fails the kernel check and cannot be closed is reported as still open") {
  TempDir dir;
  SecretBytes key = SecretBytes::copy_of(Bytes(32, 1));
  const Bytes image = luks2_image(luks2_json());
  const std::string device = write_image(dir, image);
  const std::string copy = dir.path + "/run/luks-x.luks2-header";
  FakeCryptsetup fake(dir, copy,
                      "open --type luks2 --header " + copy + " --disable-external-tokens --disable-keyring --key-file=- " + device +
                          " luks-x",
                      sha256_hex_of(dir, Bytes(32, 1)), ByteView(image.data(), test_data_offset));
  fake.fail_close();
  CryptsetupOptions options;
  options.cryptsetup = fake.path;
  options.device = device;
  options.mapper_name = "luks-x";
  options.header_directory = dir.path + "/run";
  options.volume_key_check = test_volume_key_check();
  SECTION("another cipher") {
    options.read_mapping = [](const std::string&) -> Result<CryptMapping> { return mapped_table("cipher_null-ecb"); };
    CryptsetupUnlocker unlocker(options);
    CHECK_FALSE(unlocker.unverified_mapping_open());
    CHECK(error_of(unlocker.unlock(key)) ==
          "/dev/mapper/luks-x uses 'cipher_null-ecb', expected 'aes-xts-plain64'; closing it failed (exit 4), the "
          "boot must not continue");
    CHECK(unlocker.unverified_mapping_open());
    // Nothing more happens on that volume through this unlocker.
    CHECK(error_of(unlocker.unlock(key)) == "/dev/mapper/luks-x is still open, unverified");
    CHECK(unlocker.unverified_mapping_open());
    CHECK(fake.calls_made().find("open --type luks2") == fake.calls_made().rfind("open --type luks2"));
  }
  SECTION("a table that cannot be read") {
    options.read_mapping = [](const std::string&) -> Result<CryptMapping> {
      return fail(Errc::io, "device-mapper table of luks-x: No such device or address");
    };
    CryptsetupUnlocker unlocker(options);
    CHECK(error_of(unlocker.unlock(key)).find("closing it failed (exit 4)") != std::string::npos);
    CHECK(unlocker.unverified_mapping_open());
  }
  SECTION("a mapping that passes is never closed, whether close would work or not") {
    options.read_mapping = [](const std::string&) -> Result<CryptMapping> { return mapped_table("aes-xts-plain64"); };
    CryptsetupUnlocker unlocker(options);
    CHECK(unlocker.unlock(key));
    CHECK_FALSE(unlocker.unverified_mapping_open());
    CHECK(fake.calls_made().find("close") == std::string::npos);
  }
}

TEST_CASE("through the boot flow, a mapping that cannot be verified or closed powers off under every failure policy") {
  // The stand-in cryptsetup "opens" (exit 0), the kernel's table shows cipher_null and close
  // fails: what systemd-cryptsetup would find if the hook fell back to the passphrase prompt.
  struct StillClock final : Clock {
    TimePoint current = TimePoint() + std::chrono::hours(1000);
    TimePoint now() override { return current; }
    void sleep_until(TimePoint when) override { current = std::max(current, when); }
  };
  struct Routable final : NetworkProbe {
    bool has_route(const VerifierUrl&) override { return true; }
  };
  struct Present final : DeviceLocator {
    std::string device;
    Result<std::string> locate() override { return device; }
    bool already_unlocked() override { return false; }
    Result<CryptMapping> existing_mapping() override { return fail(Errc::not_found, "no mapping"); }
  };
  for (auto policy : {FailurePolicy::poweroff, FailurePolicy::passphrase, FailurePolicy::wait}) {
    INFO(failure_policy_name(policy));
    TempDir dir;
    const Bytes key_bytes(32, 7);
    const Bytes image = luks2_image(luks2_json());
    const std::string device = write_image(dir, image);
    const std::string copy = dir.path + "/run/luks-x.luks2-header";
    FakeCryptsetup fake(dir, copy,
                        "open --type luks2 --header " + copy + " --disable-external-tokens --disable-keyring --key-file=- " + device +
                            " luks-x",
                        sha256_hex_of(dir, key_bytes), ByteView(image.data(), test_data_offset));
    fake.fail_close();

    AgentConfig config;
    config.image_id = "web-01";
    config.verifiers = {*parse_verifier_url("https://127.0.0.1:8443")};
    config.luks_uuid = std::string(uuid);
    config.luks_name = "luks-x";
    config.failure_policy = policy;
    config.released_key_check = crypto::key_check_value(crypto::KeyCheckKind::released_key, key_bytes);
    config.volume_key_check = test_volume_key_check();
    StillClock clock;
    std::ostringstream console;
    StatusReporter status(console);
    Routable network;
    Present located;
    located.device = device;
    int attempts = 0;
    FlowServices services{
        clock,
        status,
        network,
        located,
        [&](const VerifierUrl&, TimePoint) {
          ++attempts;
          AttemptResult released;
          released.status = AttemptStatus::released;
          released.key = SecretBytes::copy_of(key_bytes);
          return released;
        },
        [&](const std::string& path) -> std::unique_ptr<VolumeUnlocker> {
          CryptsetupOptions options;
          options.cryptsetup = fake.path;
          options.device = path;
          options.mapper_name = config.mapper_name();
          options.header_directory = dir.path + "/run";
          options.volume_key_check = test_volume_key_check();
  options.volume_key_check = test_volume_key_check();
          options.read_mapping = [](const std::string&) -> Result<CryptMapping> {
            return mapped_table("cipher_null-ecb");
          };
          return std::make_unique<CryptsetupUnlocker>(std::move(options));
        },
        [] { return 0.0; },
    };
    CHECK(run_unlock_flow(config, services) == FlowResult::fatal_poweroff);
    INFO(console.str());
    CHECK(attempts == 1);
    CHECK(console.str().find("closing it failed (exit 4), the boot must not continue; the VM will power off whatever "
                             "the failure policy") != std::string::npos);
    CHECK(console.str().find("falling back to the LUKS passphrase prompt") == std::string::npos);
    CHECK(fake.calls_made().find("close luks-x") != std::string::npos);
  }
}

TEST_CASE("cryptsetup's failures are reported by their meaning, also when it never reads the key") {
  TempDir dir;
  const Bytes image = luks2_image(luks2_json());
  const std::string device = write_image(dir, image);
  const std::string copy = dir.path + "/run/luks-x.luks2-header";
  // The right header, a key with another hash: the fake exits 2 as cryptsetup does.
  FakeCryptsetup fake(dir, copy, "open --type luks2 --header " + copy + " --disable-external-tokens --disable-keyring --key-file=- " +
                                     device + " luks-x",
                      std::string(64, '0'), ByteView(image.data(), test_data_offset));
  CryptsetupOptions options;
  options.cryptsetup = fake.path;
  options.device = device;
  options.mapper_name = "luks-x";
  options.header_directory = dir.path + "/run";
  options.volume_key_check = test_volume_key_check();
  auto result = CryptsetupUnlocker(options).unlock(SecretBytes::copy_of(Bytes(32, 1)));
  REQUIRE_FALSE(result);
  CHECK(result.error().message == "the released key opens no keyslot of the volume (cryptsetup exit 2)");

  options.cryptsetup = dir.path + "/absent";
  auto not_run = CryptsetupUnlocker(options).unlock(SecretBytes::copy_of(Bytes(32, 1)));
  REQUIRE_FALSE(not_run);
  CHECK(not_run.error().message.find("cryptsetup luksDump: cannot run " + dir.path + "/absent") == 0);
}
