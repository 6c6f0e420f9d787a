// The read-only FAT reader against filesystems made by mkfs.vfat and mtools (FAT12, 16, 32,
// long and short names), the EFI binary scan of an ESP, and damaged filesystems.
#include <catch2/catch.hpp>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "image-builder/assembly/efi_binaries.hpp"
#include "image-builder/fs/fat_filesystem.hpp"
#include "image-builder/pe/authenticode.hpp"

using namespace fde;
using namespace fde::image;
namespace fsys = std::filesystem;

namespace {

int sh(const std::string& command) { return std::system(("bash -c '" + command + "' >/dev/null 2>&1").c_str()); }

bool have_tools() {
  if (sh("command -v mkfs.vfat && command -v mcopy && command -v mmd") == 0) return true;
  if (std::getenv("CI")) FAIL("mkfs.vfat or mtools missing (packages dosfstools, mtools; scripts/install-deps.sh)");
  WARN("mkfs.vfat or mtools missing: FAT test skipped");
  return false;
}

Bytes read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return Bytes(std::istreambuf_iterator<char>(in), {});
}

struct FatImage {
  std::string dir;
  std::string image;
  FatImage(int bits, const std::string& size_kib) {
    char pattern[] = "/tmp/fde-fat-test-XXXXXX";
    dir = ::mkdtemp(pattern);
    image = dir + "/esp.img";
    const std::string script = "set -e; cd " + dir + "; truncate -s " + size_kib + "K esp.img; mkfs.vfat -F " +
                               std::to_string(bits) +
                               " esp.img; export MTOOLS_SKIP_CHECK=1; mmd -i esp.img ::/EFI ::/EFI/BOOT ::/EFI/debian "
                               "::/EFI/LongVendorName; head -c 70000 /dev/urandom > big.bin; echo small > small.txt; "
                               "mcopy -i esp.img big.bin ::/EFI/BOOT/BOOTX64.EFI; mcopy -i esp.img small.txt "
                               "::/EFI/debian/grub.cfg; mcopy -i esp.img big.bin ::/EFI/LongVendorName/a-long-file-name.bin";
    std::ofstream(dir + "/make.sh") << script;
    REQUIRE(std::system(("bash " + dir + "/make.sh >/dev/null 2>&1").c_str()) == 0);
  }
  ~FatImage() { fsys::remove_all(dir); }
  std::uint64_t size() const { return fsys::file_size(image); }
};

void patch(const std::string& path, std::uint64_t offset, const Bytes& bytes) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  f.seekp(static_cast<std::streamoff>(offset));
  f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

}  // namespace

TEST_CASE("files written by mtools read back byte for byte on FAT12, FAT16 and FAT32", "[fat]") {
  if (!have_tools()) return;
  for (const auto& [bits, size] : std::vector<std::pair<int, std::string>>{{12, "2048"}, {16, "20480"}, {32, "40960"}}) {
    CAPTURE(bits);
    FatImage fat(bits, size);
    auto fs = FatFilesystem::open(fat.image, 0, fat.size());
    REQUIRE(fs);
    CHECK(fs->fat_bits() == bits);
    const Bytes big = read_all(fat.dir + "/big.bin");
    auto content = fs->read_file("/efi/boot/bootx64.efi", 1 << 20);  // any case
    REQUIRE(content);
    CHECK(*content == big);
    auto long_named = fs->read_file("/EFI/LongVendorName/a-long-file-name.bin", 1 << 20);
    REQUIRE(long_named);
    CHECK(*long_named == big);
    auto cfg = fs->read_file("/EFI/debian/grub.cfg", 1 << 20);
    REQUIRE(cfg);
    CHECK(std::string(cfg->begin(), cfg->end()) == "small\n");
    auto listed = fs->list_directory("/EFI");
    REQUIRE(listed);
    std::vector<std::string> names;
    for (const auto& e : *listed) names.push_back(e.name);
    CHECK(names == std::vector<std::string>{"BOOT", "debian", "LongVendorName"});
    CHECK(fs->read_file("/EFI/BOOT/BOOTX64.EFI", 1000).error().code == Errc::too_large);
    CHECK(fs->read_file("/EFI/BOOT/missing.efi", 1000).error().code == Errc::not_found);
    CHECK_FALSE(fs->read_file("/EFI/BOOT", 1000));
  }
}

TEST_CASE("the ESP scan finds the boot applications and digests them", "[fat]") {
  if (!have_tools()) return;
  const std::string grub = "/usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed";
  const std::string shim = "/usr/lib/shim/shimx64.efi.signed";
  if (!fsys::exists(grub) || !fsys::exists(shim)) {
    if (std::getenv("CI")) FAIL("grub-efi-amd64-signed or shim-signed missing");
    WARN("grub-efi-amd64-signed or shim-signed missing: skipped");
    return;
  }
  FatImage fat(32, "40960");
  REQUIRE(sh("export MTOOLS_SKIP_CHECK=1; mcopy -o -i " + fat.image + " " + shim + " ::/EFI/BOOT/BOOTX64.EFI && mcopy -i " +
             fat.image + " " + grub + " ::/EFI/BOOT/grubx64.efi && mcopy -i " + fat.image + " " + grub +
             " ::/EFI/debian/GRUBX64.EFI && mcopy -i " + fat.image + " " + grub + " ::/EFI/debian/notes.efi") == 0);
  auto fs = FatFilesystem::open(fat.image, 0, fat.size());
  REQUIRE(fs);
  auto binaries = find_efi_binaries(*fs);
  REQUIRE(binaries);
  REQUIRE(binaries->size() == 3);
  const Bytes grub_digest = *authenticode_sha256(read_all(grub));
  const Bytes shim_digest = *authenticode_sha256(read_all(shim));
  CHECK((*binaries)[0].path == "/EFI/BOOT/BOOTX64.EFI");
  CHECK((*binaries)[0].digest == shim_digest);
  CHECK((*binaries)[0].has_signature);
  CHECK((*binaries)[0].machine == pe_machine::x86_64);
  CHECK((*binaries)[1].path == "/EFI/BOOT/grubx64.efi");
  CHECK((*binaries)[1].digest == grub_digest);
  CHECK((*binaries)[2].path == "/EFI/debian/GRUBX64.EFI");
  CHECK((*binaries)[2].digest == grub_digest);

  SECTION("a boot application that is not a PE image is an error naming it") {
    REQUIRE(sh("export MTOOLS_SKIP_CHECK=1; mcopy -o -i " + fat.image + " " + fat.dir + "/small.txt ::/EFI/debian/shimx64.efi") == 0);
    auto again = FatFilesystem::open(fat.image, 0, fat.size());
    REQUIRE(again);
    auto result = find_efi_binaries(*again);
    REQUIRE_FALSE(result);
    CHECK_THAT(result.error().message, Catch::Contains("/EFI/debian/shimx64.efi: PE image"));
  }
}

TEST_CASE("a damaged FAT filesystem is refused, not followed", "[fat]") {
  if (!have_tools()) return;
  FatImage fat(16, "20480");
  auto fs = FatFilesystem::open(fat.image, 0, fat.size());
  REQUIRE(fs);
  // FAT16 made by mkfs.vfat: 512-byte sectors; find the first FAT and BOOTX64.EFI's first cluster.
  const Bytes boot = read_all(fat.image);
  const std::uint64_t fat_offset = static_cast<std::uint64_t>(boot[14] | (boot[15] << 8)) * 512;
  auto entries = fs->list_directory("/EFI/BOOT");
  REQUIRE(entries);
  REQUIRE(entries->size() == 1);
  const std::uint32_t first = (*entries)[0].first_cluster;
  REQUIRE(first >= 2);
  const std::uint64_t entry_at = fat_offset + first * 2;

  SECTION("a cluster chain that loops") {
    patch(fat.image, entry_at, {static_cast<std::uint8_t>(first), static_cast<std::uint8_t>(first >> 8)});
    auto reopened = FatFilesystem::open(fat.image, 0, fat.size());
    REQUIRE(reopened);
    auto read = reopened->read_file("/EFI/BOOT/BOOTX64.EFI", 1 << 20);
    REQUIRE_FALSE(read);
    CHECK_THAT(read.error().message, Catch::Contains("loops"));
  }
  SECTION("a chain that ends before the file's size") {
    patch(fat.image, entry_at, {0xff, 0xff});
    auto reopened = FatFilesystem::open(fat.image, 0, fat.size());
    REQUIRE(reopened);
    auto read = reopened->read_file("/EFI/BOOT/BOOTX64.EFI", 1 << 20);
    REQUIRE_FALSE(read);
    CHECK_THAT(read.error().message, Catch::Contains("shorter than its size"));
  }
  SECTION("a link to a cluster past the volume") {
    patch(fat.image, entry_at, {0xf0, 0xff});
    auto reopened = FatFilesystem::open(fat.image, 0, fat.size());
    REQUIRE(reopened);
    auto read = reopened->read_file("/EFI/BOOT/BOOTX64.EFI", 1 << 20);
    REQUIRE_FALSE(read);
    CHECK_THAT(read.error().message, Catch::Contains("invalid cluster"));
  }
  SECTION("boot sector fields") {
    patch(fat.image, 11, {0, 0});
    CHECK_THAT(FatFilesystem::open(fat.image, 0, fat.size()).error().message, Catch::Contains("bytes per sector"));
    patch(fat.image, 11, {0, 2});
    patch(fat.image, 13, {3});
    CHECK_THAT(FatFilesystem::open(fat.image, 0, fat.size()).error().message, Catch::Contains("sectors per cluster"));
    patch(fat.image, 13, {boot[13]});
    CHECK(FatFilesystem::open(fat.image, 0, fat.size()));
    CHECK_THAT(FatFilesystem::open(fat.image, 0, fat.size() / 2).error().message,
               Catch::Contains("larger than its partition"));
    patch(fat.image, 510, {0, 0});
    CHECK_THAT(FatFilesystem::open(fat.image, 0, fat.size()).error().message, Catch::Contains("55 AA"));
  }
}
