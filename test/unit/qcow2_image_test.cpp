// Qcow2Reader and Qcow2Writer against qemu-img: what qemu-img wrote (plain, compressed, other
// cluster sizes) reads back byte for byte, with only the allocated ranges reported; what the
// writer wrote passes `qemu-img check` and compares equal to the raw source; hostile tables
// are refused.
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>

#include "image-builder/disk/background_writer.hpp"
#include "image-builder/disk/qcow2_image.hpp"

using namespace fde;
using namespace fde::image;

namespace {

int sh(const std::string& command) { return std::system(("bash -c '" + command + "' >/dev/null 2>&1").c_str()); }

struct Dir {
  std::string path;
  Dir() {
    char pattern[] = "/tmp/fde-qcow2-test-XXXXXX";
    path = ::mkdtemp(pattern);
  }
  ~Dir() { std::filesystem::remove_all(path); }
  std::string file(const std::string& name) const { return path + "/" + name; }
};

// 8 MiB with data in a few places (one unaligned, one crossing a cluster boundary, some
// compressible), the rest holes.
Bytes sample_disk() {
  Bytes disk(8u << 20, 0);
  std::mt19937 random(7);
  auto fill = [&](std::size_t at, std::size_t n) {
    for (std::size_t i = 0; i < n; ++i) disk[at + i] = static_cast<std::uint8_t>(random());
  };
  fill(0, 4096);
  fill(65536 * 3 - 1000, 3000);
  fill(5u << 20, 1u << 20);
  for (std::size_t i = 7u << 20; i < (7u << 20) + 200000; ++i) disk[i] = static_cast<std::uint8_t>(i % 7);
  return disk;
}

void write_raw(const std::string& path, const Bytes& disk) {
  auto file = RawFile::create(path, 0600);
  REQUIRE(file);
  REQUIRE(file->resize(disk.size()));
  for (std::size_t at = 0; at < disk.size(); at += 4096)
    if (!is_all_zero(ByteView(disk).subspan(at, 4096)))
      REQUIRE(file->write_at(at, ByteView(disk).subspan(at, 4096)));
}

Bytes read_all(const DiskReader& reader) {
  auto size = reader.size();
  REQUIRE(size);
  Bytes out(static_cast<std::size_t>(*size));
  REQUIRE(reader.read_at(0, out));
  return out;
}

std::unique_ptr<Qcow2Reader> open_reader(const std::string& path) {
  auto file = RawFile::open(path, RawFile::Mode::read_only);
  REQUIRE(file);
  auto reader = Qcow2Reader::open(std::move(*file), path);
  if (!reader) FAIL(reader.error().describe());
  return std::move(*reader);
}

void put_be64(const std::string& path, std::uint64_t at, std::uint64_t value) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  char bytes[8];
  for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>(value >> (56 - 8 * i));
  f.seekp(static_cast<std::streamoff>(at));
  f.write(bytes, 8);
}

std::uint64_t get_be64(const std::string& path, std::uint64_t at) {
  std::ifstream f(path, std::ios::binary);
  f.seekg(static_cast<std::streamoff>(at));
  unsigned char bytes[8];
  f.read(reinterpret_cast<char*>(bytes), 8);
  std::uint64_t v = 0;
  for (unsigned char b : bytes) v = (v << 8) | b;
  return v;
}

}  // namespace

TEST_CASE("Qcow2Reader reads what qemu-img wrote, and only the allocated clusters are data", "[qcow2]") {
  Dir dir;
  const Bytes disk = sample_disk();
  write_raw(dir.file("disk.raw"), disk);
  for (const std::string options : {"", "-o cluster_size=4096", "-o cluster_size=2M", "-c"}) {
    INFO(options);
    REQUIRE(sh("qemu-img convert -f raw -O qcow2 " + options + " " + dir.file("disk.raw") + " " + dir.file("a.qcow2")) == 0);
    auto reader = open_reader(dir.file("a.qcow2"));
    CHECK(read_all(*reader) == disk);
    // An unaligned read across clusters.
    Bytes part(100000);
    REQUIRE(reader->read_at(65536 * 3 - 5000, part));
    CHECK(std::equal(part.begin(), part.end(), disk.begin() + 65536 * 3 - 5000));
    auto ranges = reader->data_ranges(0, disk.size());
    REQUIRE(ranges);
    std::uint64_t covered = 0;
    for (const auto& r : *ranges) covered += r.length;
    CHECK(covered <= (options.find("2M") != std::string::npos ? 6u << 20 : 3u << 20));  // the holes are not data
    for (std::size_t at = 0; at < disk.size(); at += 4096) {
      if (is_all_zero(ByteView(disk).subspan(at, 4096))) continue;
      const bool inside = std::any_of(ranges->begin(), ranges->end(),
                                      [&](const DiskRange& r) { return r.offset <= at && at + 4096 <= r.offset + r.length; });
      CHECK(inside);
    }
    CHECK_FALSE(reader->read_at(disk.size() - 10, part));  // past the virtual size
    ::unlink(dir.file("a.qcow2").c_str());
  }
}

TEST_CASE("Qcow2Writer writes an image qemu-img checks clean and reads as the data written", "[qcow2]") {
  Dir dir;
  const Bytes disk = sample_disk();
  write_raw(dir.file("disk.raw"), disk);
  // With and without early writeback (what fde-image build asks of its output file).
  const std::uint64_t writeback = GENERATE(std::uint64_t{0}, std::uint64_t{65536});
  {
    auto file = RawFile::create(dir.file("out.qcow2"), 0600);
    REQUIRE(file);
    file->write_back_every(writeback);
    auto writer = Qcow2Writer::create(*file, disk.size());
    REQUIRE(writer);
    // Out of order, unaligned, a zero range (left unallocated), and a rewrite in place.
    REQUIRE((*writer)->write_at(5u << 20, ByteView(disk).subspan(5u << 20, 1u << 20)));
    REQUIRE((*writer)->write_at(65536 * 3 - 1000, ByteView(disk).subspan(65536 * 3 - 1000, 3000)));
    REQUIRE((*writer)->write_at(1u << 20, ByteView(disk).subspan(1u << 20, 1u << 20)));
    REQUIRE((*writer)->write_at(0, Bytes(4096, 0xff)));
    REQUIRE((*writer)->write_at(0, ByteView(disk).subspan(0, 4096)));
    REQUIRE((*writer)->write_at(7u << 20, ByteView(disk).subspan(7u << 20, 1u << 20)));
    CHECK((*writer)->data_bytes() == (1 + 2 + 16 + 4) * 65536ull);
    CHECK_FALSE((*writer)->write_at(disk.size() - 1, Bytes(2, 1)));
    REQUIRE((*writer)->finish());
  }
  CHECK(sh("qemu-img check -f qcow2 " + dir.file("out.qcow2")) == 0);
  CHECK(sh("qemu-img compare -f raw -F qcow2 " + dir.file("disk.raw") + " " + dir.file("out.qcow2")) == 0);
  auto reader = open_reader(dir.file("out.qcow2"));
  CHECK(read_all(*reader) == disk);
  struct stat st {};
  REQUIRE(::stat(dir.file("out.qcow2").c_str(), &st) == 0);
  CHECK(static_cast<std::uint64_t>(st.st_blocks) * 512 < (2u << 20));  // data plus a few metadata clusters
}

TEST_CASE("Qcow2Reader refuses tables that point outside the file and features it does not read", "[qcow2]") {
  Dir dir;
  write_raw(dir.file("disk.raw"), sample_disk());
  const std::string image = dir.file("a.qcow2");
  auto fresh = [&] {
    ::unlink(image.c_str());
    REQUIRE(sh("qemu-img convert -f raw -O qcow2 " + dir.file("disk.raw") + " " + image) == 0);
  };
  auto refused = [&](const std::string& expected) {
    auto file = RawFile::open(image, RawFile::Mode::read_only);
    REQUIRE(file);
    auto reader = Qcow2Reader::open(std::move(*file), image);
    if (reader) {  // the header and L1 passed: reading must fail
      Bytes all(8u << 20);
      auto read = (*reader)->read_at(0, all);
      REQUIRE_FALSE(read);
      CHECK_THAT(read.error().message, Catch::Contains(expected));
    } else {
      CHECK_THAT(reader.error().message, Catch::Contains(expected));
    }
  };
  SECTION("an L1 entry past the end of the file") {
    fresh();
    put_be64(image, get_be64(image, 40), 1ull << 40);
    refused("points outside the file");
  }
  SECTION("an L2 entry past the end of the file") {
    fresh();
    const std::uint64_t l2 = get_be64(image, get_be64(image, 40)) & 0x00fffffffffffe00ull;
    put_be64(image, l2, (1ull << 63) | (1ull << 40));
    refused("points outside the file");
  }
  SECTION("an L1 table that does not cover the virtual size") {
    fresh();
    put_be64(image, 24, 1ull << 45);
    refused("too small for the virtual size");
  }
  SECTION("marked corrupt") {
    fresh();
    put_be64(image, 72, 2);
    refused("corrupt");
  }
  SECTION("extended L2 entries") {
    REQUIRE(sh("qemu-img convert -f raw -O qcow2 -o extended_l2=on " + dir.file("disk.raw") + " " + image) == 0);
    refused("extended L2");
  }
}

TEST_CASE("RawFile writes aligned buffers directly and the rest buffered, and reads back what was written",
          "[qcow2]") {
  Dir dir;
  auto file = RawFile::create(dir.file("direct.img"), 0600);
  REQUIRE(file);
  REQUIRE(file->resize(1u << 20));
  const bool direct = file->write_aligned_directly();
  if (!direct) WARN("this filesystem refuses O_DIRECT: every write below is buffered");
  Bytes expected(1u << 20, 0);
  std::mt19937 random(11);
  AlignedBuffer aligned(256 * 1024);
  REQUIRE(reinterpret_cast<std::uintptr_t>(aligned.data()) % RawFile::direct_alignment == 0);
  auto put = [&](std::uint64_t offset, ByteView data) {
    REQUIRE(file->write_at(offset, data));
    std::copy(data.begin(), data.end(), expected.begin() + static_cast<std::ptrdiff_t>(offset));
  };
  // Aligned (direct), then buffered writes into the same pages, then aligned again over them.
  for (std::size_t i = 0; i < aligned.size(); ++i) aligned.data()[i] = static_cast<std::uint8_t>(random());
  put(65536, ByteView(aligned.data(), aligned.size()));
  put(65536 + 1000, Bytes(5000, 0xab));         // unaligned, inside the direct range
  put(3, Bytes(100, 0xcd));                      // unaligned, elsewhere
  put(512 * 1024, ByteView(aligned.data() + 4096, 8192));  // aligned, a buffer offset by 4 KiB
  for (std::size_t i = 0; i < 16384; ++i) aligned.data()[i] = static_cast<std::uint8_t>(i * 7);
  put(65536, ByteView(aligned.data(), 16384));   // direct over the buffered bytes
  put(700 * 1024 + 1, ByteView(aligned.data(), 4096));  // aligned buffer, unaligned offset
  REQUIRE(file->sync());
  Bytes read_back(expected.size());
  REQUIRE(file->read_at(0, read_back));
  CHECK(read_back == expected);
}
