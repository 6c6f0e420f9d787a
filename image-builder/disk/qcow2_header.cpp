// qcow2 header fields (version 2 and 3 of the format): fixed header, backing file name and
// the header extensions up to the end marker.
#include "image-builder/disk/qcow2_header.hpp"

#include <algorithm>
#include <cstdio>
#include <cstring>

namespace fde::image {
namespace {

constexpr std::size_t v2_header_size = 72;
constexpr std::size_t v3_header_size = 104;
constexpr std::uint32_t min_cluster_bits = 9;   // 512 bytes
constexpr std::uint32_t max_cluster_bits = 21;  // 2 MiB
constexpr std::uint32_t max_backing_name = 1023;  // what qemu accepts
constexpr std::uint32_t extension_end = 0;
constexpr std::uint32_t extension_data_file = 0x44415441;  // "DATA"

// Incompatible feature bits.
constexpr std::uint64_t feature_dirty = 1u << 0;
constexpr std::uint64_t feature_corrupt = 1u << 1;
constexpr std::uint64_t feature_data_file = 1u << 2;
constexpr std::uint64_t feature_compression_type = 1u << 3;
constexpr std::uint64_t feature_extended_l2 = 1u << 4;
constexpr std::uint64_t known_features =
    feature_dirty | feature_corrupt | feature_data_file | feature_compression_type | feature_extended_l2;

tl::unexpected<Error> malformed(const std::string& what) {
  return fail(Errc::malformed, "qcow2 header: " + what);
}

// A name from the header as it may be shown: printable ASCII, the rest as \xNN, at most 200.
std::string printable(std::string_view name) {
  std::string out;
  for (char c : name.substr(0, 200)) {
    const auto byte = static_cast<unsigned char>(c);
    if (byte >= 0x20 && byte < 0x7f && c != '\\') {
      out += c;
    } else {
      static constexpr char digits[] = "0123456789abcdef";
      out += "\\x";
      out += digits[byte >> 4];
      out += digits[byte & 15];
    }
  }
  if (name.size() > 200) out += "...";
  return out;
}

}  // namespace

Result<Qcow2Header> parse_qcow2_header(ByteView head) {
  if (head.size() < v2_header_size) return malformed("shorter than 72 bytes");
  if (std::memcmp(head.data(), "QFI\xfb", 4) != 0) return malformed("no qcow2 magic");
  Qcow2Header header;
  header.version = load_be32(&head[4]);
  if (header.version != 2 && header.version != 3)
    return malformed("version " + std::to_string(header.version) + " (2 or 3 expected)");
  const std::uint64_t backing_offset = load_be64(&head[8]);
  const std::uint32_t backing_size = load_be32(&head[16]);
  header.cluster_bits = load_be32(&head[20]);
  if (header.cluster_bits < min_cluster_bits || header.cluster_bits > max_cluster_bits)
    return malformed("cluster size 2^" + std::to_string(header.cluster_bits) + " (2^9 to 2^21 expected)");
  const std::uint64_t cluster_size = 1ull << header.cluster_bits;
  header.virtual_size = load_be64(&head[24]);
  header.crypt_method = load_be32(&head[32]);
  header.l1_size = load_be32(&head[36]);
  header.l1_table_offset = load_be64(&head[40]);

  std::size_t header_length = v2_header_size;
  if (header.version == 3) {
    if (head.size() < v3_header_size) return malformed("version 3 header shorter than 104 bytes");
    header.incompatible_features = load_be64(&head[72]);
    header_length = load_be32(&head[100]);
    if (header_length < v3_header_size || header_length % 8 != 0 || header_length > cluster_size)
      return malformed("header length " + std::to_string(header_length));
    if (header_length > v3_header_size && head.size() > v3_header_size) header.compression_type = head[v3_header_size];
  }
  // Everything that follows lies in the first cluster; `limit` is what of it we have.
  const std::size_t limit = static_cast<std::size_t>(std::min<std::uint64_t>(cluster_size, head.size()));
  if (header_length > limit) return malformed("the header runs past the end of the file");

  header.has_backing_file = backing_offset != 0 || backing_size != 0;
  if (backing_offset != 0 && backing_size <= max_backing_name && backing_offset < limit &&
      backing_size <= limit - backing_offset)
    header.backing_file.assign(reinterpret_cast<const char*>(&head[backing_offset]), backing_size);

  // Header extensions: type, length, data padded to 8 bytes, up to the end marker (or the
  // backing file name, which qemu places after them).
  std::size_t end = limit;
  if (backing_offset != 0 && backing_offset < end) end = static_cast<std::size_t>(backing_offset);
  // A name that starts inside the header would leave the extensions an area that ends
  // before it begins (qemu writes the name after the header and its extensions).
  if (end < header_length)
    return malformed("the backing file name at byte " + std::to_string(backing_offset) + " lies inside the " +
                     std::to_string(header_length) + "-byte header");
  std::size_t at = header_length;
  for (;;) {
    if (at == end) break;  // no end marker before the name or the cluster's end
    if (end - at < 8) return malformed("a header extension runs past its area");
    const std::uint32_t type = load_be32(&head[at]);
    const std::uint32_t length = load_be32(&head[at + 4]);
    at += 8;
    if (type == extension_end) break;
    const std::uint64_t padded = (static_cast<std::uint64_t>(length) + 7) / 8 * 8;
    if (padded > end - at) return malformed("a header extension runs past its area");
    if (type == extension_data_file) {
      header.has_data_file = true;
      header.data_file.assign(reinterpret_cast<const char*>(&head[at]), length);
    }
    at += static_cast<std::size_t>(padded);
  }
  if (header.incompatible_features & feature_data_file) header.has_data_file = true;
  return header;
}

Result<Qcow2Header> read_qcow2_header(const RawFile& file) {
  auto size = file.size();
  if (!size) return tl::unexpected(size.error());
  Bytes fixed(static_cast<std::size_t>(std::min<std::uint64_t>(*size, v3_header_size)));
  if (auto ok = file.read_at(0, fixed); !ok) return tl::unexpected(ok.error());
  if (fixed.size() < v2_header_size) return fail_with_context(file.path(), malformed("shorter than 72 bytes").value());
  const std::uint32_t cluster_bits = load_be32(&fixed[20]);
  if (cluster_bits < min_cluster_bits || cluster_bits > max_cluster_bits)
    return fail_with_context(file.path(), malformed("cluster size 2^" + std::to_string(cluster_bits)).value());
  Bytes head(static_cast<std::size_t>(std::min<std::uint64_t>(*size, 1ull << cluster_bits)));
  if (auto ok = file.read_at(0, head); !ok) return tl::unexpected(ok.error());
  auto header = parse_qcow2_header(head);
  if (!header) return fail_with_context(file.path(), header.error());
  return header;
}

Result<void> check_self_contained(const Qcow2Header& header, const std::string& image) {
  const std::string why =
      ": fde-image reads only self-contained images: the image's data would come from that file on this machine, and "
      "whatever lies outside the root partition is copied into the output unchanged";
  if (header.has_backing_file)
    return fail(Errc::unsupported,
                image + " has a backing file (" +
                    (header.backing_file.empty() ? std::string("name unreadable") : "\"" + printable(header.backing_file) + "\"") +
                    ")" + why);
  if (header.has_data_file)
    return fail(Errc::unsupported,
                image + " has an external data file (" +
                    (header.data_file.empty() ? std::string("no name in the header") : "\"" + printable(header.data_file) + "\"") +
                    ")" + why);
  if (header.crypt_method != 0)
    return fail(Errc::unsupported, image + " is an encrypted qcow2 image (method " +
                                       std::to_string(header.crypt_method) + "); give fde-image the plain image");
  if (const std::uint64_t unknown = header.incompatible_features & ~known_features; unknown != 0)
  {
    char bits[24];
    std::snprintf(bits, sizeof bits, "0x%llx", static_cast<unsigned long long>(unknown));
    return fail(Errc::unsupported,
                image + " uses qcow2 features fde-image does not know (incompatible feature bits " + bits + ")");
  }
  return {};
}

}  // namespace fde::image
