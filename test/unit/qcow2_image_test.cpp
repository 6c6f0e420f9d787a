// Qcow2Reader and Qcow2Writer against qemu-img: what qemu-img wrote (plain, compressed, other
// cluster sizes) reads back byte for byte, with only the allocated ranges reported; what the
// writer wrote passes `qemu-img check` and compares equal to the raw source; hostile tables
// are refused. RawFile's direct writes (O_DIRECT for aligned writes, the page cache for the
// rest) stay coherent with its buffered ones and reach the disk, on a filesystem that really
// does direct I/O ($TMPDIR, /tmp or the build tree); AlignedBuffer's edge cases.
#include <fcntl.h>
#include <linux/magic.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <new>
#include <random>
#include <string>
#include <vector>

#include "image-builder/disk/background_writer.hpp"
#include "image-builder/disk/qcow2_image.hpp"

using namespace fde;
using namespace fde::image;

namespace {

int sh(const std::string& command) { return std::system(("bash -c '" + command + "' >/dev/null 2>&1").c_str()); }

struct Dir {
  std::string path;
  explicit Dir(const std::string& parent = "/tmp") {
    std::string pattern = parent + "/fde-qcow2-test-XXXXXX";
    if (::mkdtemp(pattern.data()) == nullptr) FAIL("cannot create a directory under " << parent);
    path = pattern;
  }
  ~Dir() { std::filesystem::remove_all(path); }
  std::string file(const std::string& name) const { return path + "/" + name; }
};

// Whether files under `dir` get real direct I/O: O_DIRECT accepted, and not tmpfs or ramfs
// (tmpfs accepts O_DIRECT since Linux 6.6 but still goes through the page cache).
bool real_direct_io(const std::string& dir) {
  struct statfs fs {};
  if (::statfs(dir.c_str(), &fs) != 0 || fs.f_type == TMPFS_MAGIC || fs.f_type == RAMFS_MAGIC) return false;
  const std::string probe = dir + "/.fde-direct-probe-" + std::to_string(::getpid());
  const int fd = ::open(probe.c_str(), O_RDWR | O_CREAT | O_EXCL | O_DIRECT | O_CLOEXEC, 0600);
  if (fd < 0) return false;
  ::close(fd);
  ::unlink(probe.c_str());
  return true;
}

// Where the direct-write tests make their files: $TMPDIR (to try another filesystem), /tmp,
// or else (CI's /tmp may be tmpfs) the working directory, which ctest sets to the build tree.
// Empty when none does direct I/O.
std::string direct_io_parent() {
  std::vector<std::string> candidates;
  if (const char* tmpdir = std::getenv("TMPDIR"); tmpdir != nullptr && *tmpdir != '\0') candidates.emplace_back(tmpdir);
  candidates.emplace_back("/tmp");
  candidates.push_back(std::filesystem::current_path().string());
  for (const auto& candidate : candidates)
    if (real_direct_io(candidate)) return candidate;
  return {};
}

// How many pages of [offset, offset + length) of the open file are in the page cache.
std::size_t cached_pages(int fd, std::uint64_t offset, std::size_t length) {
  void* map = ::mmap(nullptr, length, PROT_READ, MAP_SHARED, fd, static_cast<off_t>(offset));
  REQUIRE(map != MAP_FAILED);
  const std::size_t page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
  std::vector<unsigned char> resident((length + page - 1) / page);
  const int ok = ::mincore(map, length, resident.data());
  ::munmap(map, length);
  REQUIRE(ok == 0);
  return static_cast<std::size_t>(std::count_if(resident.begin(), resident.end(), [](unsigned char r) { return (r & 1) != 0; }));
}

// Reads the whole file once through the page cache and once from the disk (clean pages
// dropped after an fsync), so that neither a stale cached page nor one that never reached
// the disk goes unnoticed.
void check_contents(RawFile& file, const Bytes& expected) {
  auto size = file.size();
  REQUIRE(size);
  REQUIRE(*size == expected.size());
  Bytes cached(expected.size());
  REQUIRE(file.read_at(0, cached));
  CHECK(cached == expected);
  REQUIRE(file.sync());
  REQUIRE(::posix_fadvise(file.fd(), 0, 0, POSIX_FADV_DONTNEED) == 0);
  Bytes from_disk(expected.size());
  REQUIRE(file.read_at(0, from_disk));
  CHECK(from_disk == expected);
}

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
  // With and without early writeback and direct writes of the aligned parts (what fde-image
  // build asks of its output file); the data comes from an aligned buffer so that the
  // aligned writes below do go direct where the filesystem allows it.
  const std::uint64_t writeback = GENERATE(std::uint64_t{0}, std::uint64_t{65536});
  const bool direct = GENERATE(false, true);
  const std::string parent = direct ? direct_io_parent() : std::string("/tmp");
  if (parent.empty()) WARN("neither $TMPDIR, /tmp nor the working directory does direct I/O: every write below is buffered");
  Dir dir(parent.empty() ? "/tmp" : parent);
  const Bytes disk = sample_disk();
  write_raw(dir.file("disk.raw"), disk);
  AlignedBuffer aligned(disk.size());
  std::copy(disk.begin(), disk.end(), aligned.data());
  const ByteView source(aligned.data(), aligned.size());
  {
    auto file = RawFile::create(dir.file("out.qcow2"), 0600);
    REQUIRE(file);
    file->write_back_every(writeback);
    if (direct) CHECK(file->write_aligned_directly() == !parent.empty());
    auto writer = Qcow2Writer::create(*file, disk.size());
    REQUIRE(writer);
    // Out of order, unaligned, a zero range (left unallocated), and a rewrite in place.
    REQUIRE((*writer)->write_at(5u << 20, source.subspan(5u << 20, 1u << 20)));
    REQUIRE((*writer)->write_at(65536 * 3 - 1000, source.subspan(65536 * 3 - 1000, 3000)));
    REQUIRE((*writer)->write_at(1u << 20, source.subspan(1u << 20, 1u << 20)));
    REQUIRE((*writer)->write_at(0, Bytes(4096, 0xff)));
    REQUIRE((*writer)->write_at(0, source.subspan(0, 4096)));
    REQUIRE((*writer)->write_at(7u << 20, source.subspan(7u << 20, 1u << 20)));
    CHECK((*writer)->data_bytes() == (1 + 2 + 16 + 4) * 65536ull);
    CHECK_FALSE((*writer)->write_at(disk.size() - 1, Bytes(2, 1)));
    REQUIRE((*writer)->finish());
    REQUIRE(file->sync());
    // What qemu-img reads below comes from the disk, not from pages cached here.
    REQUIRE(::posix_fadvise(file->fd(), 0, 0, POSIX_FADV_DONTNEED) == 0);
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
  const std::string parent = direct_io_parent();
  if (parent.empty()) WARN("neither $TMPDIR, /tmp nor the working directory does direct I/O: every write below is buffered");
  Dir dir(parent.empty() ? "/tmp" : parent);
  auto file = RawFile::create(dir.file("direct.img"), 0600);
  REQUIRE(file);
  REQUIRE(file->resize(1u << 20));
  const bool direct = file->write_aligned_directly();
  CHECK(direct == !parent.empty());
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
  // The aligned write went around the page cache (nothing read or wrote those pages through it).
  if (direct) CHECK(cached_pages(file->fd(), 512 * 1024, 8192) == 0);
  for (std::size_t i = 0; i < 16384; ++i) aligned.data()[i] = static_cast<std::uint8_t>(i * 7);
  put(65536, ByteView(aligned.data(), 16384));   // direct over the buffered bytes
  put(700 * 1024 + 1, ByteView(aligned.data(), 4096));  // aligned buffer, unaligned offset
  check_contents(*file, expected);
}

TEST_CASE("RawFile keeps mixed direct and buffered writes coherent in a growing file (random operations)",
          "[qcow2]") {
  // Like a qcow2 output: no size set in advance, so direct writes extend the file, fill holes
  // and land next to or over pages written (and still dirty) through the page cache; reads
  // go through the page cache in between.
  const std::string parent = direct_io_parent();
  if (parent.empty()) WARN("neither $TMPDIR, /tmp nor the working directory does direct I/O: every write below is buffered");
  Dir dir(parent.empty() ? "/tmp" : parent);
  auto file = RawFile::create(dir.file("mixed.img"), 0600);
  REQUIRE(file);
  file->write_back_every(256 * 1024);
  REQUIRE(file->write_aligned_directly() == !parent.empty());
  constexpr std::size_t limit = 6u << 20;
  constexpr std::size_t block = RawFile::direct_alignment;
  Bytes expected;
  AlignedBuffer source(512 * 1024 + block);
  std::fill(source.data(), source.data() + source.size(), 0);
  std::mt19937 random(2026);
  auto below = [&](std::size_t n) { return static_cast<std::size_t>(random() % n); };
  for (int op = 0; op < 400; ++op) {
    for (std::size_t i = 0; i < 512 * 1024 + block; i += 8) source.data()[i] = static_cast<std::uint8_t>(random());
    std::uint64_t offset = 0;
    ByteView data;
    switch (below(5)) {
      case 0:  // aligned, within or past the end (direct)
      case 1:
        offset = below(limit / block - 128) * block;
        data = ByteView(source.data(), (1 + below(128)) * block);
        break;
      case 2:  // aligned, just past the end (an extending direct write, maybe leaving a hole)
        offset = (expected.size() + block - 1) / block * block + below(3) * block;
        if (offset + 64 * block > limit) offset = 0;
        data = ByteView(source.data(), (1 + below(64)) * block);
        break;
      case 3:  // unaligned offset and length (buffered)
        offset = below(limit - 70000);
        data = ByteView(source.data() + 1 + below(100), 1 + below(70000));
        break;
      default:  // aligned offset and length, unaligned buffer (buffered)
        offset = below(limit / block - 16) * block;
        data = ByteView(source.data() + 512, (1 + below(16)) * block);
        break;
    }
    INFO("operation " << op << ": " << data.size() << " bytes at " << offset);
    REQUIRE(file->write_at(offset, data));
    if (expected.size() < offset + data.size()) expected.resize(offset + data.size(), 0);
    std::copy(data.begin(), data.end(), expected.begin() + static_cast<std::ptrdiff_t>(offset));
    if (op % 16 == 15) {  // a read through the page cache, across whatever is there
      const std::size_t at = below(expected.size());
      Bytes part(std::min<std::size_t>(expected.size() - at, 300000));
      REQUIRE(file->read_at(at, part));
      REQUIRE(std::equal(part.begin(), part.end(), expected.begin() + static_cast<std::ptrdiff_t>(at)));
    }
  }
  check_contents(*file, expected);
}

TEST_CASE("AlignedBuffer: aligned, empty when zero-sized or moved from, and refuses a size it cannot round up",
          "[qcow2]") {
  AlignedBuffer empty(0);
  CHECK(empty.size() == 0);
  REQUIRE(empty.data() != nullptr);
  CHECK(reinterpret_cast<std::uintptr_t>(empty.data()) % RawFile::direct_alignment == 0);
  AlignedBuffer odd(5000);
  CHECK(odd.size() == 5000);
  CHECK(reinterpret_cast<std::uintptr_t>(odd.data()) % RawFile::direct_alignment == 0);
  std::fill(odd.data(), odd.data() + odd.size(), 0x5a);
  const std::uint8_t* where = odd.data();
  AlignedBuffer moved(std::move(odd));
  CHECK(moved.data() == where);
  CHECK(moved.size() == 5000);
  CHECK(odd.size() == 0);  // NOLINT(bugprone-use-after-move): the moved-from state is what is tested
  CHECK(odd.data() == nullptr);
  AlignedBuffer assigned(1);
  assigned = std::move(moved);
  CHECK(assigned.data() == where);
  CHECK(assigned.size() == 5000);
  CHECK(moved.size() == 0);  // NOLINT(bugprone-use-after-move)
  CHECK_THROWS_AS(AlignedBuffer(std::numeric_limits<std::size_t>::max()), std::bad_alloc);
  CHECK_THROWS_AS(AlignedBuffer(std::numeric_limits<std::size_t>::max() - 100), std::bad_alloc);
}
