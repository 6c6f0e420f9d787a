// The qcow2 header fields fde-image checks before it reads a host-made image any further:
// backing file, external data file, encryption, unknown features, and malformed headers.
#include <catch2/catch.hpp>
#include <cstring>
#include <string>

#include "image-builder/disk/qcow2_header.hpp"

using namespace fde;
using namespace fde::image;

namespace {

void put_be32(Bytes& b, std::size_t at, std::uint32_t v) {
  for (int i = 0; i < 4; ++i) b[at + i] = static_cast<std::uint8_t>(v >> (24 - 8 * i));
}
void put_be64(Bytes& b, std::size_t at, std::uint64_t v) {
  put_be32(b, at, static_cast<std::uint32_t>(v >> 32));
  put_be32(b, at + 4, static_cast<std::uint32_t>(v));
}

// The first cluster (512 bytes) of a version 3 image without backing file or extensions.
Bytes v3_head() {
  Bytes b(512, 0);
  std::memcpy(b.data(), "QFI\xfb", 4);
  put_be32(b, 4, 3);
  put_be32(b, 20, 9);
  put_be64(b, 24, 1ull << 30);
  put_be32(b, 96, 4);    // refcount order
  put_be32(b, 100, 112); // header length
  return b;              // the end-of-extensions marker (zeros) follows at 112
}

void add_extension(Bytes& b, std::size_t at, std::uint32_t type, const std::string& data) {
  put_be32(b, at, type);
  put_be32(b, at + 4, static_cast<std::uint32_t>(data.size()));
  std::memcpy(b.data() + at + 8, data.data(), data.size());
}

void set_backing(Bytes& b, std::size_t at, const std::string& name) {
  put_be64(b, 8, at);
  put_be32(b, 16, static_cast<std::uint32_t>(name.size()));
  std::memcpy(b.data() + at, name.data(), name.size());
}

std::string refusal(const Bytes& head) {
  auto header = parse_qcow2_header(head);
  REQUIRE(header);
  auto checked = check_self_contained(*header, "in.qcow2");
  REQUIRE_FALSE(checked);
  CHECK(checked.error().code == Errc::unsupported);
  return checked.error().message;
}

std::string malformed(const Bytes& head) {
  auto header = parse_qcow2_header(head);
  REQUIRE_FALSE(header);
  CHECK(header.error().code == Errc::malformed);
  return header.error().message;
}

}  // namespace

TEST_CASE("a self-contained qcow2 header passes", "[qcow2]") {
  Bytes head = v3_head();
  auto header = parse_qcow2_header(head);
  REQUIRE(header);
  CHECK(header->version == 3);
  CHECK(header->cluster_bits == 9);
  CHECK(header->virtual_size == 1ull << 30);
  CHECK_FALSE(header->has_backing_file);
  CHECK_FALSE(header->has_data_file);
  CHECK(check_self_contained(*header, "in.qcow2"));

  SECTION("version 2, whose header is 72 bytes") {
    Bytes v2 = v3_head();
    put_be32(v2, 4, 2);
    std::fill(v2.begin() + 72, v2.end(), 0);
    auto parsed = parse_qcow2_header(v2);
    REQUIRE(parsed);
    CHECK(check_self_contained(*parsed, "in.qcow2"));
  }
  SECTION("known feature bits and extensions that read no other file") {
    put_be64(head, 72, 1 | 8 | 16);                    // dirty, compression type, extended L2
    add_extension(head, 112, 0x6803f857, "features");  // feature name table
    auto parsed = parse_qcow2_header(head);
    REQUIRE(parsed);
    CHECK(check_self_contained(*parsed, "in.qcow2"));
  }
  SECTION("a file shorter than a cluster") {
    head.resize(120);
    CHECK(parse_qcow2_header(head));
  }
}

TEST_CASE("a qcow2 header that names another file is refused, the name shown safely", "[qcow2]") {
  Bytes head = v3_head();
  SECTION("backing file") {
    set_backing(head, 256, "fat:/home/admin");
    auto header = parse_qcow2_header(head);
    REQUIRE(header);
    CHECK(header->has_backing_file);
    CHECK(header->backing_file == "fat:/home/admin");
    CHECK(refusal(head).find("in.qcow2 has a backing file (\"fat:/home/admin\")") != std::string::npos);
  }
  SECTION("backing file with terminal control characters in its name") {
    set_backing(head, 256, "x\x1b[2J\\y");
    CHECK(refusal(head).find("(\"x\\x1b[2J\\x5cy\")") != std::string::npos);
  }
  SECTION("backing file name outside the first cluster") {
    put_be64(head, 8, 4096);
    put_be32(head, 16, 10);
    CHECK(refusal(head).find("has a backing file (name unreadable)") != std::string::npos);
  }
  SECTION("backing file size without offset") {
    put_be32(head, 16, 10);
    CHECK(refusal(head).find("has a backing file") != std::string::npos);
  }
  SECTION("external data file: feature bit and name") {
    put_be64(head, 72, 4);
    add_extension(head, 112, 0x44415441, "/root/.ssh/id_ed25519");
    auto header = parse_qcow2_header(head);
    REQUIRE(header);
    CHECK(header->has_data_file);
    CHECK(header->data_file == "/root/.ssh/id_ed25519");
    CHECK(refusal(head).find("has an external data file (\"/root/.ssh/id_ed25519\")") != std::string::npos);
  }
  SECTION("external data file: the feature bit alone") {
    put_be64(head, 72, 4);
    CHECK(refusal(head).find("has an external data file (no name in the header)") != std::string::npos);
  }
  SECTION("external data file: the name alone, behind another extension") {
    add_extension(head, 112, 0x6803f857, "features");  // 8 bytes of data
    add_extension(head, 128, 0x44415441, "data.raw");
    CHECK(refusal(head).find("has an external data file (\"data.raw\")") != std::string::npos);
  }
  SECTION("encrypted") {
    put_be32(head, 32, 2);
    CHECK(refusal(head).find("is an encrypted qcow2 image") != std::string::npos);
  }
  SECTION("an incompatible feature this check does not know") {
    put_be64(head, 72, 1u << 7);
    CHECK(refusal(head).find("incompatible feature bits 0x80") != std::string::npos);
  }
}

TEST_CASE("malformed qcow2 headers are refused", "[qcow2]") {
  Bytes head = v3_head();
  SECTION("too short") {
    head.resize(71);
    CHECK(malformed(head).find("shorter than 72 bytes") != std::string::npos);
  }
  SECTION("version 3 without its fields") {
    head.resize(100);
    CHECK(malformed(head).find("shorter than 104") != std::string::npos);
  }
  SECTION("no magic") {
    head[0] = 'X';
    CHECK(malformed(head).find("no qcow2 magic") != std::string::npos);
  }
  SECTION("version 1 and 4") {
    put_be32(head, 4, 1);
    CHECK(malformed(head).find("version 1") != std::string::npos);
    put_be32(head, 4, 4);
    CHECK(malformed(head).find("version 4") != std::string::npos);
  }
  SECTION("cluster sizes out of range") {
    put_be32(head, 20, 8);
    CHECK(malformed(head).find("cluster size 2^8") != std::string::npos);
    put_be32(head, 20, 22);
    CHECK(malformed(head).find("cluster size 2^22") != std::string::npos);
  }
  SECTION("header lengths") {
    put_be32(head, 100, 100);
    CHECK(malformed(head).find("header length 100") != std::string::npos);
    put_be32(head, 100, 113);
    CHECK(malformed(head).find("header length 113") != std::string::npos);
    put_be32(head, 100, 1024);
    CHECK(malformed(head).find("header length 1024") != std::string::npos);
  }
  SECTION("a header longer than the file") {
    head.resize(108);
    CHECK(malformed(head).find("runs past the end of the file") != std::string::npos);
  }
  SECTION("an extension longer than the cluster") {
    add_extension(head, 112, 0x6803f857, "");
    put_be32(head, 116, 400);
    CHECK(malformed(head).find("header extension runs past") != std::string::npos);
  }
  SECTION("an extension that runs into the backing file name") {
    set_backing(head, 128, "base.qcow2");
    add_extension(head, 112, 0x44415441, "");
    put_be32(head, 116, 16);
    CHECK(malformed(head).find("header extension runs past") != std::string::npos);
  }
  SECTION("a backing file name that starts inside the header") {
    // Found by fuzz_qcow2_header: the extension area then ended before it began, the
    // unsigned distance between the two wrapped around, and the loop read past the buffer.
    head.resize(200);
    set_backing(head, 16, "");
    put_be64(head, 8, 16);
    put_be32(head, 16, 0);
    add_extension(head, 112, 0x44415441, "");
    put_be32(head, 116, 0xfffffff0);
    CHECK(malformed(head).find("backing file name at byte 16 lies inside the 112-byte header") != std::string::npos);
  }
  SECTION("the fuzzer's input: version 2, backing file name at byte 16") {
    const Bytes crash = {0x51, 0x46, 0x49, 0xfb, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10,
                         0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0x0c, 0x00, 0x00, 0x10, 0x04, 0xff, 0xff, 0xff,
                         0xff, 0xff, 0xff, 0xff, 0x15, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
                         0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0x02, 0xe8, 0x00, 0x00, 0x00,
                         0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00};
    CHECK(malformed(crash).find("lies inside the 72-byte header") != std::string::npos);
  }
  SECTION("an extension header cut by the end of the file") {
    head.resize(116);
    put_be32(head, 112, 0x44415441);
    CHECK(malformed(head).find("header extension runs past") != std::string::npos);
  }
}
