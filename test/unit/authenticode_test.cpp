// The Authenticode digest against independent tools (pesign -h, osslsigncode verify) on the
// signed EFI binaries Debian ships, and on hostile PE files that must be refused.
#include <catch2/catch.hpp>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <regex>
#include <string>

#include "image-builder/pe/authenticode.hpp"

using namespace fde;
using namespace fde::image;
namespace fsys = std::filesystem;

namespace {

Bytes read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return Bytes(std::istreambuf_iterator<char>(in), {});
}

void write_all(const std::string& path, const Bytes& data) {
  std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(data.data()),
                                              static_cast<std::streamsize>(data.size()));
}

std::string output_of(const std::string& command) {
  std::string text;
  FILE* pipe = ::popen((command + " 2>&1").c_str(), "r");
  if (!pipe) return text;
  char buffer[4096];
  for (std::size_t n; (n = std::fread(buffer, 1, sizeof buffer, pipe)) > 0;) text.append(buffer, n);
  ::pclose(pipe);
  return text;
}

bool have_tool(const std::string& name) { return std::system(("command -v " + name + " >/dev/null 2>&1").c_str()) == 0; }

// Outside CI a missing tool or package skips the comparison; CI installs them
// (scripts/install-deps.sh), so there a missing one fails.
bool available(bool present, const std::string& what) {
  if (present) return true;
  if (std::getenv("CI")) FAIL(what << " is missing (scripts/install-deps.sh installs it)");
  WARN(what << " is missing: comparison skipped");
  return false;
}

std::string lower(std::string text) {
  for (auto& c : text) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return text;
}

// pesign -i FILE -h: "hash: <hex>"
std::string pesign_digest(const std::string& path) {
  std::smatch match;
  const std::string out = output_of("pesign -i '" + path + "' -h");
  static const std::regex line("hash: ([0-9a-fA-F]{64})");
  return std::regex_search(out, match, line) ? lower(match[1]) : "pesign failed: " + out;
}

// osslsigncode verify -in FILE: "Calculated message digest : <HEX>" (signed files only)
std::string osslsigncode_digest(const std::string& path) {
  std::smatch match;
  const std::string out = output_of("osslsigncode verify -in '" + path + "'");
  static const std::regex line("Calculated message digest *: *([0-9a-fA-F]{64})");
  return std::regex_search(out, match, line) ? lower(match[1]) : "osslsigncode failed: " + out;
}

std::string our_digest(const std::string& path) {
  auto digest = authenticode_sha256(read_all(path));
  return digest ? hex_encode(*digest) : "refused: " + digest.error().describe();
}

void put16(Bytes& b, std::size_t at, std::uint16_t v) {
  b[at] = static_cast<std::uint8_t>(v);
  b[at + 1] = static_cast<std::uint8_t>(v >> 8);
}
void put32(Bytes& b, std::size_t at, std::uint32_t v) {
  for (int i = 0; i < 4; ++i) b[at + static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(v >> (8 * i));
}

// A small EFI application image made here: two sections listed out of file order, data
// after the last section, and (optionally) an attribute certificate table at the end.
struct SyntheticPe {
  static constexpr std::size_t pe_offset = 0x80;
  static constexpr std::size_t coff = pe_offset + 4;
  static constexpr std::size_t optional = coff + 20;
  bool plus = true;
  std::size_t directories() const { return optional + (plus ? 112 : 96); }
  std::size_t section_table() const { return optional + (plus ? 240 : 224); }
  std::size_t certificate_entry() const { return directories() + 4 * 8; }

  Bytes make(bool with_certificate) const {
    Bytes b(0x610, 0);
    for (std::size_t i = 0x200; i < 0x610; ++i) b[i] = static_cast<std::uint8_t>(i * 7 + 3);
    b[0] = 'M';
    b[1] = 'Z';
    put32(b, 0x3c, pe_offset);
    b[pe_offset] = 'P';
    b[pe_offset + 1] = 'E';
    put16(b, coff, pe_machine::x86_64);
    put16(b, coff + 2, 2);
    put16(b, coff + 16, plus ? 240 : 224);
    put16(b, coff + 18, 0x0022);
    put16(b, optional, plus ? 0x20b : 0x10b);
    put32(b, optional + 16, 0x1000);  // AddressOfEntryPoint
    put32(b, optional + 32, 0x1000);  // SectionAlignment
    put32(b, optional + 36, 0x200);   // FileAlignment
    put32(b, optional + 56, 0x3000);  // SizeOfImage
    put32(b, optional + 60, 0x200);   // SizeOfHeaders
    put32(b, optional + 64, 0x12345678);  // CheckSum: not hashed
    put16(b, optional + 68, 10);          // EFI application
    put32(b, optional + (plus ? 108 : 92), 16);
    auto section = [&](std::size_t index, const char* name, std::uint32_t rva, std::uint32_t raw) {
      const std::size_t at = section_table() + index * 40;
      for (std::size_t i = 0; name[i]; ++i) b[at + i] = static_cast<std::uint8_t>(name[i]);
      put32(b, at + 8, 0x200);
      put32(b, at + 12, rva);
      put32(b, at + 16, 0x200);
      put32(b, at + 20, raw);
      put32(b, at + 36, 0x60000020);
    };
    section(0, ".data", 0x2000, 0x400);  // listed first, stored second
    section(1, ".text", 0x1000, 0x200);
    if (with_certificate) {
      Bytes certificate(0x18, 0xab);
      put32(certificate, 0, 0x18);
      put16(certificate, 4, 0x0200);
      put16(certificate, 6, 0x0002);
      put32(b, certificate_entry(), static_cast<std::uint32_t>(b.size()));
      put32(b, certificate_entry() + 4, static_cast<std::uint32_t>(certificate.size()));
      b.insert(b.end(), certificate.begin(), certificate.end());
    }
    return b;
  }
};

std::string temp_dir() {
  char pattern[] = "/tmp/fde-authenticode-XXXXXX";
  return ::mkdtemp(pattern);
}

}  // namespace

TEST_CASE("the digest of Debian's signed EFI binaries equals pesign's and osslsigncode's", "[authenticode]") {
  std::vector<std::string> files = {"/usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed",
                                    "/usr/lib/shim/shimx64.efi.signed", "/usr/lib/shim/mmx64.efi.signed",
                                    "/usr/lib/shim/fbx64.efi.signed", "/usr/lib/shim/fbx64.efi"};
  for (const auto& entry : fsys::directory_iterator("/boot"))
    if (entry.path().filename().string().rfind("vmlinuz-", 0) == 0) files.push_back(entry.path().string());
  std::size_t compared = 0;
  const bool pesign = available(have_tool("pesign"), "pesign (package pesign)");
  const bool osslsigncode = available(have_tool("osslsigncode"), "osslsigncode (package osslsigncode)");
  for (const auto& path : files) {
    CAPTURE(path);
    if (!available(fsys::exists(path), path + " (packages grub-efi-amd64-signed, shim-signed, linux-image-amd64)"))
      continue;
    const std::string ours = our_digest(path);
    REQUIRE(ours.size() == 64);
    if (pesign) {
      CHECK(ours == pesign_digest(path));
      ++compared;
    }
    // osslsigncode reads only signed files, and refuses shim's two-entry certificate table.
    const bool signed_file = path.find(".signed") != std::string::npos || path.find("vmlinuz") != std::string::npos;
    if (osslsigncode && signed_file && path.find("shimx64") == std::string::npos) {
      CHECK(ours == osslsigncode_digest(path));
      ++compared;
    }
  }
  if (pesign && osslsigncode) CHECK(compared >= 8);
}

TEST_CASE("signing does not change the digest: fbx64.efi and fbx64.efi.signed agree", "[authenticode]") {
  const std::string unsigned_path = "/usr/lib/shim/fbx64.efi";
  if (!available(fsys::exists(unsigned_path), "shim-helpers-amd64-signed")) return;
  const Bytes unsigned_file = read_all(unsigned_path);
  const Bytes signed_file = read_all(unsigned_path + ".signed");
  REQUIRE(unsigned_file != signed_file);
  auto layout = parse_pe_image(signed_file);
  REQUIRE(layout);
  CHECK(layout->certificate_size > 0);
  CHECK(layout->machine == pe_machine::x86_64);
  CHECK(layout->pe32_plus);
  CHECK(*authenticode_sha256(unsigned_file) == *authenticode_sha256(signed_file));
}

TEST_CASE("a synthetic PE32+ and PE32 image hash as pesign and osslsigncode compute it", "[authenticode]") {
  const std::string dir = temp_dir();
  for (const bool plus : {true, false}) {
    CAPTURE(plus);
    SyntheticPe pe;
    pe.plus = plus;
    const Bytes file = pe.make(false);
    auto layout = parse_pe_image(file);
    REQUIRE(layout);
    CHECK(layout->pe32_plus == plus);
    // headers without CheckSum and the certificate entry, .text, .data, the tail
    REQUIRE(layout->hashed.size() == 6);
    CHECK(layout->hashed[3].offset == 0x200);
    CHECK(layout->hashed[4].offset == 0x400);
    CHECK(layout->hashed[5].offset == 0x600);
    CHECK(layout->hashed[5].length == 0x10);
    const std::string path = dir + "/synthetic.efi";
    write_all(path, file);
    if (available(have_tool("pesign"), "pesign")) CHECK(our_digest(path) == pesign_digest(path));

    // The CheckSum, the certificate entry and the table itself are not covered.
    Bytes changed = pe.make(true);
    put32(changed, SyntheticPe::optional + 64, 0);
    CHECK(*authenticode_sha256(changed) == *authenticode_sha256(file));
    changed[0x300] ^= 1;
    CHECK(*authenticode_sha256(changed) != *authenticode_sha256(file));
    Bytes header_changed = file;
    header_changed[SyntheticPe::coff + 18] ^= 1;  // Characteristics are covered
    CHECK(*authenticode_sha256(header_changed) != *authenticode_sha256(file));
  }
  fsys::remove_all(dir);
}

TEST_CASE("an image with fewer than five data directories has no certificate entry to skip", "[authenticode]") {
  SyntheticPe pe;
  Bytes file = pe.make(false);
  put32(file, SyntheticPe::optional + 108, 4);
  auto layout = parse_pe_image(file);
  REQUIRE(layout);
  REQUIRE(layout->hashed.size() == 5);
  CHECK(layout->hashed[1].offset == SyntheticPe::optional + 68);
  CHECK(layout->hashed[1].offset + layout->hashed[1].length == 0x200);
}

TEST_CASE("hostile PE files are refused with a reason and never read out of bounds", "[authenticode]") {
  SyntheticPe pe;
  const Bytes good = pe.make(true);
  REQUIRE(parse_pe_image(good));
  auto refused = [](const Bytes& file, const std::string& reason) {
    auto result = parse_pe_image(file);
    REQUIRE_FALSE(result);
    CHECK(result.error().code == Errc::malformed);
    CHECK_THAT(result.error().message, Catch::Contains(reason));
    CHECK_FALSE(authenticode_sha256(file));
  };
  SECTION("every truncation") {
    for (std::size_t size = 0; size < good.size(); ++size) {
      CAPTURE(size);
      CHECK_FALSE(parse_pe_image(ByteView(good.data(), size)));
    }
  }
  SECTION("e_lfanew out of range") {
    Bytes file = good;
    put32(file, 0x3c, 0xfffffff0);
    refused(file, "e_lfanew 0xfffffff0 points past the end");
    put32(file, 0x3c, static_cast<std::uint32_t>(file.size() - 2));
    refused(file, "points past the end");
    put32(file, 0x3c, 0x40);
    refused(file, "no PE signature");
  }
  SECTION("a section pointing past the end of the file") {
    Bytes file = good;
    put32(file, pe.section_table() + 20, static_cast<std::uint32_t>(file.size() - 0x100));
    refused(file, "section 1's raw data");
    put32(file, pe.section_table() + 20, 0xffffffff);
    put32(file, pe.section_table() + 16, 0xffffffff);  // would wrap in 32-bit arithmetic
    refused(file, "runs past the end of the file");
  }
  SECTION("overlapping sections or a section inside the headers") {
    Bytes file = good;
    put32(file, pe.section_table() + 20, 0x300);
    refused(file, "overlap");
    put32(file, pe.section_table() + 20, 0x100);
    refused(file, "overlaps the headers");
  }
  SECTION("a certificate table that overlaps a section or is not the end of the file") {
    Bytes file = good;
    put32(file, pe.certificate_entry(), 0x500);
    put32(file, pe.certificate_entry() + 4, static_cast<std::uint32_t>(file.size() - 0x500));
    refused(file, "overlaps the headers or a section");
    put32(file, pe.certificate_entry(), 0x600);
    put32(file, pe.certificate_entry() + 4, 0x8);
    refused(file, "is not the end of the file");
    put32(file, pe.certificate_entry(), 0x610);
    put32(file, pe.certificate_entry() + 4, 0xfffffff0);
    refused(file, "is not the end of the file");
  }
  SECTION("huge counts and sizes") {
    Bytes file = good;
    put16(file, SyntheticPe::coff + 2, 0xffff);
    refused(file, "65535 sections");
    file = good;
    put16(file, SyntheticPe::coff + 2, 40);  // a table that runs past SizeOfHeaders
    refused(file, "past SizeOfHeaders");
    file = good;
    put32(file, SyntheticPe::optional + 108, 0xffffffff);
    refused(file, "data directories");
    file = good;
    put16(file, SyntheticPe::coff + 16, 0xffff);
    refused(file, "optional header runs past the end");
    file = good;
    put16(file, SyntheticPe::coff + 16, 100);
    refused(file, "too short");
    file = good;
    put32(file, SyntheticPe::optional + 60, 0xffffffff);
    refused(file, "SizeOfHeaders 0xffffffff is past the end");
    file = good;
    put16(file, SyntheticPe::optional, 0x107);
    refused(file, "magic");
  }
  SECTION("a file larger than 64 MiB") {
    Bytes file = good;
    file.resize(max_pe_file_size + 1);
    auto result = parse_pe_image(file);
    REQUIRE_FALSE(result);
    CHECK(result.error().code == Errc::too_large);
  }
}

TEST_CASE("randomly corrupted headers of a real EFI binary never crash the parser", "[authenticode]") {
  // Under the sanitizer build any out-of-bounds read fails this test.
  const std::string small = "/usr/lib/shim/fbx64.efi.signed";  // 118 KB: 3000 rounds stay quick
  const Bytes base = fsys::exists(small) ? read_all(small) : SyntheticPe{}.make(true);
  REQUIRE(authenticode_sha256(base));
  std::mt19937 random(1234);
  std::size_t accepted = 0;
  for (int round = 0; round < 3000; ++round) {
    Bytes file = base;
    for (int flips = 0; flips < 4; ++flips) {
      const std::size_t at = random() % std::min<std::size_t>(file.size(), 0x400);
      file[at] = static_cast<std::uint8_t>(random());
    }
    if (round % 7 == 0) file.resize(random() % file.size());
    if (auto digest = authenticode_sha256(file)) {
      CHECK(digest->size() == 32);
      ++accepted;
    }
  }
  CHECK(accepted < 3000);
}
