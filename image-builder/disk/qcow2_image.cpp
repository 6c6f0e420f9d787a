// Qcow2Reader and Qcow2Writer; the format is qemu's docs/interop/qcow2.txt.
#include "image-builder/disk/qcow2_image.hpp"

#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace fde::image {
namespace {

constexpr std::uint64_t offset_mask = 0x00fffffffffffe00ull;  // bits 9-55 of L1 and L2 entries
constexpr std::uint64_t flag_copied = 1ull << 63;
constexpr std::uint64_t flag_compressed = 1ull << 62;
constexpr std::uint64_t flag_zero = 1ull << 0;
constexpr std::uint64_t l1_reserved = 0x7f000000000001ffull;
constexpr std::uint64_t l2_reserved = 0x3f000000000001feull;
constexpr std::uint64_t feature_corrupt = 1u << 1;
constexpr std::uint64_t feature_compression_type = 1u << 3;
constexpr std::uint64_t feature_extended_l2 = 1u << 4;
constexpr std::uint64_t max_l1_bytes = 32ull << 20;  // qemu's own limit
constexpr std::uint64_t max_virtual_size = 1ull << 50;

void store_be32(std::uint8_t* p, std::uint32_t v) {
  for (int i = 3; i >= 0; --i, v >>= 8) p[i] = static_cast<std::uint8_t>(v);
}
void store_be64(std::uint8_t* p, std::uint64_t v) {
  for (int i = 7; i >= 0; --i, v >>= 8) p[i] = static_cast<std::uint8_t>(v);
}
void store_be16(std::uint8_t* p, std::uint16_t v) {
  p[0] = static_cast<std::uint8_t>(v >> 8);
  p[1] = static_cast<std::uint8_t>(v);
}

std::uint64_t div_up(std::uint64_t a, std::uint64_t b) { return (a + b - 1) / b; }

}  // namespace

tl::unexpected<Error> Qcow2Reader::bad(const std::string& what) const {
  return fail(Errc::malformed, name_ + ": qcow2: " + what);
}

Result<std::unique_ptr<Qcow2Reader>> Qcow2Reader::open(RawFile file, const std::string& name) {
  auto header = read_qcow2_header(file);
  if (!header) return tl::unexpected(header.error());
  if (auto ok = check_self_contained(*header, name); !ok) return tl::unexpected(ok.error());
  std::unique_ptr<Qcow2Reader> reader(new Qcow2Reader);
  reader->name_ = name;
  if (header->incompatible_features & feature_corrupt)
    return fail(Errc::unsupported, name + " is marked corrupt by qemu; repair it (qemu-img check -r all) first");
  if (header->incompatible_features & feature_extended_l2)
    return fail(Errc::unsupported, name + " uses extended L2 entries (subclusters), which fde-image does not read; "
                                          "convert it with qemu-img convert -O qcow2 first");
  if ((header->incompatible_features & feature_compression_type) && header->compression_type != 0)
    return fail(Errc::unsupported, name + " uses zstd compression, which fde-image does not read; convert it with "
                                          "qemu-img convert -O qcow2 first");
  auto file_size = file.size();
  if (!file_size) return tl::unexpected(file_size.error());
  reader->file_size_ = *file_size;
  reader->cluster_bits_ = header->cluster_bits;
  reader->cluster_size_ = 1ull << header->cluster_bits;
  reader->l2_entries_ = reader->cluster_size_ / 8;
  reader->virtual_size_ = header->virtual_size;
  if (header->virtual_size > max_virtual_size) return reader->bad("virtual size beyond 1 PiB");
  const std::uint64_t needed = div_up(header->virtual_size, reader->cluster_size_ * reader->l2_entries_);
  if (header->l1_size < needed) return reader->bad("the L1 table is too small for the virtual size");
  if (needed * 8 > max_l1_bytes) return reader->bad("the L1 table is larger than 32 MiB");
  if (needed > 0) {
    if (header->l1_table_offset % reader->cluster_size_ != 0 || header->l1_table_offset == 0 ||
        header->l1_table_offset > reader->file_size_ || needed * 8 > reader->file_size_ - header->l1_table_offset)
      return reader->bad("the L1 table lies outside the file");
    Bytes raw(static_cast<std::size_t>(needed * 8));
    if (auto ok = file.read_at(header->l1_table_offset, raw); !ok) return tl::unexpected(ok.error());
    reader->l1_.reserve(static_cast<std::size_t>(needed));
    reader->l1_.resize(static_cast<std::size_t>(needed));
    for (std::size_t i = 0; i < reader->l1_.size(); ++i) {
      const std::uint64_t entry = load_be64(&raw[i * 8]);
      if (entry & l1_reserved) return reader->bad("reserved bits set in L1 entry " + std::to_string(i));
      const std::uint64_t l2 = entry & offset_mask;
      if (l2 % reader->cluster_size_ != 0 || l2 > reader->file_size_ || reader->cluster_size_ > reader->file_size_ - l2)
        return reader->bad("L1 entry " + std::to_string(i) + " points outside the file");
      reader->l1_[i] = l2;
    }
  }
  reader->file_ = std::move(file);
  return reader;
}

Result<Qcow2Reader::Mapping> Qcow2Reader::map_cluster(std::uint64_t cluster) const {
  const std::uint64_t l1_index = cluster / l2_entries_;
  if (l1_index >= l1_.size() || l1_[l1_index] == 0) return Mapping{};
  const std::uint64_t l2_offset = l1_[l1_index];
  if (cached_l2_offset_ != l2_offset || cached_l2_.empty()) {
    cached_l2_.resize(static_cast<std::size_t>(cluster_size_));
    cached_l2_offset_ = 0;
    if (auto ok = file_.read_at(l2_offset, cached_l2_); !ok) return tl::unexpected(ok.error());
    cached_l2_offset_ = l2_offset;
  }
  const std::uint64_t entry = load_be64(&cached_l2_[static_cast<std::size_t>((cluster % l2_entries_) * 8)]);
  Mapping mapping;
  if (entry & flag_compressed) {
    // Bits 0 .. x-1: byte offset; x .. 61: 512-byte sectors beyond the first.
    const std::uint32_t x = 62 - (cluster_bits_ - 8);
    const std::uint64_t offset = entry & ((1ull << x) - 1);
    const std::uint64_t sectors = (entry & ~flag_copied & ~flag_compressed) >> x;
    mapping.kind = Kind::compressed;
    mapping.host = offset;
    mapping.host_size = (sectors + 1) * 512 - (offset & 511);
    if (offset >= file_size_) return bad("a compressed cluster lies outside the file");
    mapping.host_size = std::min(mapping.host_size, file_size_ - offset);
    return mapping;
  }
  if (entry & l2_reserved) return bad("reserved bits set in the L2 entry of cluster " + std::to_string(cluster));
  if (entry & flag_zero) {
    mapping.kind = Kind::zero;
    return mapping;
  }
  const std::uint64_t host = entry & offset_mask;
  if (host == 0) return mapping;
  if (host % cluster_size_ != 0 || host >= file_size_)
    return bad("the L2 entry of cluster " + std::to_string(cluster) + " points outside the file");
  mapping.kind = Kind::data;
  mapping.host = host;
  return mapping;
}

// A data cluster may end past the end of the file (qemu leaves the tail of the last cluster
// unwritten): those bytes read as zeros.
Result<void> Qcow2Reader::read_host(std::uint64_t offset, std::span<std::uint8_t> out) const {
  const std::uint64_t available = offset < file_size_ ? std::min<std::uint64_t>(out.size(), file_size_ - offset) : 0;
  if (available > 0)
    if (auto ok = file_.read_at(offset, out.first(static_cast<std::size_t>(available))); !ok) return ok;
  std::fill(out.begin() + static_cast<std::ptrdiff_t>(available), out.end(), 0);
  return {};
}

Result<void> Qcow2Reader::read_compressed(const Mapping& mapping, std::span<std::uint8_t> cluster) const {
  Bytes compressed(static_cast<std::size_t>(mapping.host_size));
  if (auto ok = file_.read_at(mapping.host, compressed); !ok) return ok;
  z_stream stream{};
  // Raw deflate; qemu writes with a 4 KiB window, and the largest window reads any.
  if (inflateInit2(&stream, -15) != Z_OK) return fail(Errc::internal, "zlib: inflateInit2 failed");
  stream.next_in = compressed.data();
  stream.avail_in = static_cast<uInt>(compressed.size());
  stream.next_out = cluster.data();
  stream.avail_out = static_cast<uInt>(cluster.size());
  const int rc = inflate(&stream, Z_FINISH);
  const bool full = stream.avail_out == 0;
  inflateEnd(&stream);
  if ((rc != Z_STREAM_END && rc != Z_BUF_ERROR) || !full) return bad("a compressed cluster does not inflate to a cluster");
  return {};
}

Result<void> Qcow2Reader::read_at(std::uint64_t offset, std::span<std::uint8_t> out) const {
  if (offset > virtual_size_ || out.size() > virtual_size_ - offset)
    return fail(Errc::invalid_argument, name_ + ": read past the virtual size");
  // Runs of clusters that follow each other in the file are read with one call.
  std::uint64_t run_host = 0;
  std::size_t run_at = 0, run_length = 0;
  auto flush = [&]() -> Result<void> {
    if (run_length == 0) return {};
    auto ok = read_host(run_host, out.subspan(run_at, run_length));
    run_length = 0;
    return ok;
  };
  Bytes scratch;
  std::size_t done = 0;
  while (done < out.size()) {
    const std::uint64_t position = offset + done;
    const std::uint64_t within = position & (cluster_size_ - 1);
    const std::size_t take = static_cast<std::size_t>(std::min<std::uint64_t>(cluster_size_ - within, out.size() - done));
    auto mapping = map_cluster(position >> cluster_bits_);
    if (!mapping) return tl::unexpected(mapping.error());
    if (mapping->kind == Kind::data && run_length > 0 && run_host + run_length == mapping->host + within) {
      run_length += take;
    } else {
      if (auto ok = flush(); !ok) return ok;
      auto part = out.subspan(done, take);
      switch (mapping->kind) {
        case Kind::data:
          run_host = mapping->host + within;
          run_at = done;
          run_length = take;
          break;
        case Kind::compressed:
          scratch.resize(static_cast<std::size_t>(cluster_size_));
          if (auto ok = read_compressed(*mapping, scratch); !ok) return ok;
          std::memcpy(part.data(), scratch.data() + within, take);
          break;
        default:
          std::fill(part.begin(), part.end(), 0);
      }
    }
    done += take;
  }
  return flush();
}

Result<std::vector<DiskRange>> Qcow2Reader::data_ranges(std::uint64_t offset, std::uint64_t length) const {
  std::vector<DiskRange> ranges;
  const std::uint64_t end = std::min(offset + length, virtual_size_);
  std::uint64_t cluster = offset >> cluster_bits_;
  while ((cluster << cluster_bits_) < end) {
    const std::uint64_t l1_index = cluster / l2_entries_;
    if (l1_index >= l1_.size() || l1_[l1_index] == 0) {  // a whole L2 table's span without data
      cluster = (l1_index + 1) * l2_entries_;
      continue;
    }
    auto mapping = map_cluster(cluster);
    if (!mapping) return tl::unexpected(mapping.error());
    if (mapping->kind == Kind::data || mapping->kind == Kind::compressed) {
      const std::uint64_t begin = std::max(offset, cluster << cluster_bits_);
      const std::uint64_t stop = std::min(end, (cluster + 1) << cluster_bits_);
      if (!ranges.empty() && ranges.back().offset + ranges.back().length == begin)
        ranges.back().length += stop - begin;
      else
        ranges.push_back({begin, stop - begin});
    }
    ++cluster;
  }
  return ranges;
}

Result<std::unique_ptr<Qcow2Writer>> Qcow2Writer::create(RawFile& file, std::uint64_t virtual_size) {
  if (virtual_size > max_virtual_size) return fail(Errc::invalid_argument, "qcow2 output larger than 1 PiB");
  auto size = file.size();
  if (!size) return tl::unexpected(size.error());
  if (*size != 0) return fail(Errc::invalid_argument, file.path() + ": a qcow2 output must start empty");
  std::unique_ptr<Qcow2Writer> writer(new Qcow2Writer(file));
  writer->virtual_size_ = virtual_size;
  writer->cluster_size_ = 1ull << writer->cluster_bits_;
  writer->l2_entries_ = writer->cluster_size_ / 8;
  writer->l2_.resize(static_cast<std::size_t>(div_up(virtual_size, writer->cluster_size_ * writer->l2_entries_)));
  writer->next_host_ = writer->cluster_size_;  // cluster 0: the header
  return writer;
}

Result<void> Qcow2Writer::write_at(std::uint64_t offset, ByteView data) {
  if (finished_) return fail(Errc::internal, "qcow2 output written after finish");
  if (offset > virtual_size_ || data.size() > virtual_size_ - offset)
    return fail(Errc::invalid_argument, file_.path() + ": write past the virtual size");
  std::uint64_t run_host = 0;
  std::size_t run_at = 0, run_length = 0;
  auto flush = [&]() -> Result<void> {
    if (run_length == 0) return {};
    auto ok = file_.write_at(run_host, data.subspan(run_at, run_length));
    run_length = 0;
    return ok;
  };
  std::size_t done = 0;
  while (done < data.size()) {
    const std::uint64_t position = offset + done;
    const std::uint64_t cluster = position >> cluster_bits_;
    const std::uint64_t within = position & (cluster_size_ - 1);
    const std::size_t take = static_cast<std::size_t>(std::min<std::uint64_t>(cluster_size_ - within, data.size() - done));
    auto& table = l2_[static_cast<std::size_t>(cluster / l2_entries_)];
    std::uint64_t host = table.empty() ? 0 : table[static_cast<std::size_t>(cluster % l2_entries_)];
    if (host == 0) {
      if (is_all_zero(data.subspan(done, take))) {  // stays unallocated: reads as zeros
        if (auto ok = flush(); !ok) return ok;
        done += take;
        continue;
      }
      if (table.empty()) table.assign(static_cast<std::size_t>(l2_entries_), 0);
      host = next_host_;
      next_host_ += cluster_size_;
      ++data_clusters_;
      table[static_cast<std::size_t>(cluster % l2_entries_)] = host;
    }
    if (run_length > 0 && run_host + run_length == host + within) {
      run_length += take;
    } else {
      if (auto ok = flush(); !ok) return ok;
      run_host = host + within;
      run_at = done;
      run_length = take;
    }
    done += take;
  }
  return flush();
}

Result<void> Qcow2Writer::finish() {
  if (finished_) return fail(Errc::internal, "qcow2 output finished twice");
  finished_ = true;
  // L2 tables, then the L1 table, after the data.
  std::vector<std::uint64_t> l1(std::max<std::size_t>(l2_.size(), 1), 0);
  Bytes table(static_cast<std::size_t>(cluster_size_));
  for (std::size_t i = 0; i < l2_.size(); ++i) {
    if (l2_[i].empty()) continue;
    for (std::size_t j = 0; j < l2_[i].size(); ++j)
      store_be64(&table[j * 8], l2_[i][j] == 0 ? 0 : (l2_[i][j] | flag_copied));
    l1[i] = next_host_;
    if (auto ok = file_.write_at(next_host_, table); !ok) return ok;
    next_host_ += cluster_size_;
  }
  const std::uint64_t l1_offset = next_host_;
  const std::uint64_t l1_clusters = div_up(l1.size() * 8, cluster_size_);
  Bytes l1_raw(static_cast<std::size_t>(l1_clusters * cluster_size_), 0);
  for (std::size_t i = 0; i < l1.size(); ++i) store_be64(&l1_raw[i * 8], l1[i] == 0 ? 0 : (l1[i] | flag_copied));
  if (auto ok = file_.write_at(l1_offset, l1_raw); !ok) return ok;
  next_host_ += l1_clusters * cluster_size_;

  // Reference counts (16 bits, all 1) for every cluster, the refcount clusters included.
  const std::uint64_t per_block = cluster_size_ / 2;
  const std::uint64_t used = next_host_ / cluster_size_;
  std::uint64_t blocks = 0, table_clusters = 0;
  for (;;) {
    const std::uint64_t total = used + table_clusters + blocks;
    const std::uint64_t need_blocks = div_up(total, per_block);
    const std::uint64_t need_table = div_up(need_blocks * 8, cluster_size_);
    if (need_blocks == blocks && need_table == table_clusters) break;
    blocks = need_blocks;
    table_clusters = need_table;
  }
  const std::uint64_t total = used + table_clusters + blocks;
  const std::uint64_t table_offset = next_host_;
  const std::uint64_t blocks_offset = table_offset + table_clusters * cluster_size_;
  Bytes refcount_table(static_cast<std::size_t>(table_clusters * cluster_size_), 0);
  for (std::uint64_t b = 0; b < blocks; ++b)
    store_be64(&refcount_table[static_cast<std::size_t>(b * 8)], blocks_offset + b * cluster_size_);
  if (auto ok = file_.write_at(table_offset, refcount_table); !ok) return ok;
  Bytes block(static_cast<std::size_t>(cluster_size_));
  for (std::uint64_t b = 0; b < blocks; ++b) {
    std::fill(block.begin(), block.end(), 0);
    const std::uint64_t first = b * per_block;
    for (std::uint64_t c = first; c < std::min(total, first + per_block); ++c)
      store_be16(&block[static_cast<std::size_t>((c - first) * 2)], 1);
    if (auto ok = file_.write_at(blocks_offset + b * cluster_size_, block); !ok) return ok;
  }

  Bytes header(static_cast<std::size_t>(cluster_size_), 0);
  std::memcpy(header.data(), "QFI\xfb", 4);
  store_be32(&header[4], 3);
  store_be32(&header[20], cluster_bits_);
  store_be64(&header[24], virtual_size_);
  store_be32(&header[36], static_cast<std::uint32_t>(l1.size()));
  store_be64(&header[40], l1_offset);
  store_be64(&header[48], table_offset);
  store_be32(&header[56], static_cast<std::uint32_t>(table_clusters));
  store_be32(&header[96], 4);    // refcount_order: 16-bit counts
  store_be32(&header[100], 104); // header length; the end-of-extensions marker follows as zeros
  return file_.write_at(0, header);
}

}  // namespace fde::image
