// FAT boot sector, allocation table, directories and long names (Microsoft "FAT: General
// Overview of On-Disk Format" 1.03, sections 3, 4, 6 and 7), read-only.
#include "image-builder/fs/fat_filesystem.hpp"

#include <algorithm>
#include <array>
#include <cstdio>
#include <optional>

namespace fde::image {
namespace {

constexpr std::size_t boot_sector_size = 512;
constexpr std::size_t dir_entry_size = 32;
constexpr std::uint8_t attr_directory = 0x10;
constexpr std::uint8_t attr_volume_id = 0x08;
constexpr std::uint8_t attr_long_name = 0x0f;  // read-only | hidden | system | volume id
constexpr std::uint8_t lfn_last = 0x40;
constexpr std::uint8_t lfn_sequence_mask = 0x1f;
constexpr std::size_t lfn_chars_per_entry = 13;
// NT's case flags in byte 12 of a short entry: base / extension stored in lower case.
constexpr std::uint8_t nt_lower_base = 0x08;
constexpr std::uint8_t nt_lower_extension = 0x10;
// A directory holds at most 65536 entries (spec section 6); its chain is read no further.
constexpr std::uint64_t max_directory_bytes = 65536 * dir_entry_size;
// The first FAT is read into memory once: 32 MiB covers FAT32 volumes of several hundred GiB.
constexpr std::uint64_t max_fat_bytes = 32ull << 20;
constexpr std::size_t max_path_depth = 16;

tl::unexpected<Error> malformed(const std::string& what) { return fail(Errc::malformed, "FAT filesystem: " + what); }

bool is_power_of_two(std::uint32_t v) { return v != 0 && (v & (v - 1)) == 0; }

char ascii_lower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }

bool equal_ignoring_case(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (ascii_lower(a[i]) != ascii_lower(b[i])) return false;
  return true;
}

// "/EFI//BOOT/" -> {"EFI", "BOOT"}
std::vector<std::string_view> split_path(std::string_view path) {
  std::vector<std::string_view> parts;
  std::size_t at = 0;
  while (at < path.size()) {
    const std::size_t slash = path.find('/', at);
    const std::size_t end = slash == std::string_view::npos ? path.size() : slash;
    if (end > at) parts.push_back(path.substr(at, end - at));
    at = end + 1;
  }
  return parts;
}

std::uint8_t short_name_checksum(const std::uint8_t* name) {
  std::uint8_t sum = 0;
  for (int i = 0; i < 11; ++i) sum = static_cast<std::uint8_t>(((sum & 1) << 7) + (sum >> 1) + name[i]);
  return sum;
}

void append_utf8(std::string& out, std::uint16_t unit) {
  // Long names are UCS-2; surrogates and controls become '?' (names are only shown and
  // compared with ASCII names here, so nothing is lost that matters).
  if (unit < 0x20 || (unit >= 0xd800 && unit <= 0xdfff)) {
    out.push_back('?');
  } else if (unit < 0x80) {
    out.push_back(static_cast<char>(unit));
  } else if (unit < 0x800) {
    out.push_back(static_cast<char>(0xc0 | (unit >> 6)));
    out.push_back(static_cast<char>(0x80 | (unit & 0x3f)));
  } else {
    out.push_back(static_cast<char>(0xe0 | (unit >> 12)));
    out.push_back(static_cast<char>(0x80 | ((unit >> 6) & 0x3f)));
    out.push_back(static_cast<char>(0x80 | (unit & 0x3f)));
  }
}

std::string short_name_text(const std::uint8_t* entry, bool apply_case) {
  auto part = [&](std::size_t from, std::size_t length, bool lower) {
    std::string text;
    for (std::size_t i = from; i < from + length; ++i) {
      char c = static_cast<char>(entry[i]);
      if (i == 0 && entry[0] == 0x05) c = static_cast<char>(0xe5);  // 0x05 stands for a leading 0xE5
      text.push_back(lower ? ascii_lower(c) : c);
    }
    while (!text.empty() && text.back() == ' ') text.pop_back();
    return text;
  };
  const std::string base = part(0, 8, apply_case && (entry[12] & nt_lower_base));
  const std::string extension = part(8, 3, apply_case && (entry[12] & nt_lower_extension));
  return extension.empty() ? base : base + "." + extension;
}

// Long-name entries seen so far, in the reverse order in which they precede their short
// entry (spec section 7): the first one carries the "last" flag and the highest number.
struct LongNameCollector {
  std::array<std::uint16_t, 20 * lfn_chars_per_entry> units{};
  int expected = 0;  // next sequence number wanted; 0: no name in progress
  int count = 0;
  std::uint8_t checksum = 0;

  void reset() { expected = 0; }

  void add(const std::uint8_t* entry) {
    const int sequence = entry[0] & lfn_sequence_mask;
    if (entry[0] & lfn_last) {
      if (sequence < 1 || sequence > 20) return reset();
      count = sequence;
      expected = sequence;
      checksum = entry[13];
    } else if (expected == 0 || sequence != expected || entry[13] != checksum) {
      return reset();
    }
    static constexpr std::array<std::size_t, lfn_chars_per_entry> positions = {1, 3, 5, 7, 9, 14, 16, 18, 20, 22,
                                                                              24, 28, 30};
    const std::size_t base = static_cast<std::size_t>(sequence - 1) * lfn_chars_per_entry;
    for (std::size_t i = 0; i < positions.size(); ++i) units[base + i] = load_le16(entry + positions[i]);
    --expected;
  }

  // The long name, if a complete one with the matching checksum precedes this short entry.
  std::optional<std::string> take(const std::uint8_t* short_entry) {
    const bool complete = expected == 0 && count > 0 && checksum == short_name_checksum(short_entry);
    const int total = count;
    count = 0;
    expected = 0;
    if (!complete) return std::nullopt;
    std::string name;
    for (std::size_t i = 0; i < static_cast<std::size_t>(total) * lfn_chars_per_entry; ++i) {
      if (units[i] == 0x0000) break;
      append_utf8(name, units[i]);
    }
    if (name.empty()) return std::nullopt;
    return name;
  }
};

}  // namespace

Result<FatFilesystem> FatFilesystem::open(const std::string& image_path, std::uint64_t offset, std::uint64_t size) {
  auto file = RawFile::open(image_path, RawFile::Mode::read_only);
  if (!file) return tl::unexpected(file.error());
  return open(std::make_shared<RawFile>(std::move(*file)), offset, size);
}

Result<FatFilesystem> FatFilesystem::open(std::shared_ptr<const DiskReader> disk, std::uint64_t offset,
                                          std::uint64_t size) {
  FatFilesystem fat;
  fat.disk_ = std::move(disk);
  fat.offset_ = offset;
  if (size < boot_sector_size) return malformed("partition too small for a boot sector");
  std::array<std::uint8_t, boot_sector_size> sector{};
  if (auto ok = fat.disk_->read_at(offset, sector); !ok) return tl::unexpected(ok.error());

  // Boot sector and BPB (spec section 3).
  if (sector[510] != 0x55 || sector[511] != 0xaa) return malformed("no boot sector signature 55 AA");
  if (sector[0] != 0xeb && sector[0] != 0xe9) return malformed("no jump instruction at the start of the boot sector");
  const std::uint32_t bytes_per_sector = load_le16(&sector[11]);
  const std::uint32_t sectors_per_cluster = sector[13];
  const std::uint64_t reserved_sectors = load_le16(&sector[14]);
  const std::uint64_t fat_count = sector[16];
  const std::uint64_t root_entries = load_le16(&sector[17]);
  const std::uint64_t total_sectors = load_le16(&sector[19]) != 0 ? load_le16(&sector[19]) : load_le32(&sector[32]);
  const std::uint64_t fat_sectors = load_le16(&sector[22]) != 0 ? load_le16(&sector[22]) : load_le32(&sector[36]);
  if (bytes_per_sector < 512 || bytes_per_sector > 4096 || !is_power_of_two(bytes_per_sector))
    return malformed("bytes per sector " + std::to_string(bytes_per_sector) + " (512 to 4096)");
  if (!is_power_of_two(sectors_per_cluster) || sectors_per_cluster > 128)
    return malformed("sectors per cluster " + std::to_string(sectors_per_cluster) + " (a power of two up to 128)");
  if (reserved_sectors == 0) return malformed("no reserved sectors");
  if (fat_count == 0) return malformed("no FAT");
  if (fat_sectors == 0) return malformed("FAT size 0");
  if (total_sectors * bytes_per_sector > size)
    return malformed("the filesystem (" + std::to_string(total_sectors * bytes_per_sector) +
                     " bytes) is larger than its partition (" + std::to_string(size) + " bytes)");
  const std::uint64_t root_dir_sectors = (root_entries * dir_entry_size + bytes_per_sector - 1) / bytes_per_sector;
  const std::uint64_t data_start = reserved_sectors + fat_count * fat_sectors + root_dir_sectors;
  if (data_start >= total_sectors) return malformed("no data region (FATs and root directory fill the volume)");
  const std::uint64_t clusters = (total_sectors - data_start) / sectors_per_cluster;
  // The FAT type follows from the cluster count alone (spec section 3.5).
  fat.fat_bits_ = clusters < 4085 ? 12 : clusters < 65525 ? 16 : 32;
  if (clusters > 0x0ffffff5) return malformed("too many clusters");
  fat.bytes_per_sector_ = bytes_per_sector;
  fat.cluster_bytes_ = bytes_per_sector * sectors_per_cluster;
  fat.cluster_count_ = static_cast<std::uint32_t>(clusters);
  fat.data_offset_ = data_start * bytes_per_sector;
  if (fat.fat_bits_ == 32) {
    if (root_entries != 0) return malformed("FAT32 with a fixed root directory");
    fat.root_cluster_ = load_le32(&sector[44]);
    if (fat.root_cluster_ < 2 || fat.root_cluster_ > fat.cluster_count_ + 1)
      return malformed("FAT32 root cluster " + std::to_string(fat.root_cluster_) + " out of range");
  } else {
    if (root_entries == 0) return malformed("FAT12/16 without a root directory");
    fat.root_dir_offset_ = (reserved_sectors + fat_count * fat_sectors) * bytes_per_sector;
    fat.root_dir_entries_ = static_cast<std::uint32_t>(root_entries);
  }

  // The extended BPB (its signature 0x29) holds the volume serial number.
  const std::size_t extended = fat.fat_bits_ == 32 ? 64 : 36;
  if (sector[extended + 2] == 0x29) {
    fat.has_serial_ = true;
    fat.serial_ = load_le32(&sector[extended + 3]);
  }

  // The first FAT must hold an entry for every cluster (plus the two reserved ones).
  const std::uint64_t fat_bytes_needed = ((clusters + 2) * static_cast<std::uint64_t>(fat.fat_bits_) + 7) / 8;
  const std::uint64_t fat_bytes = fat_sectors * bytes_per_sector;
  if (fat_bytes < fat_bytes_needed) return malformed("the FAT is too small for the volume's clusters");
  if (fat_bytes_needed > max_fat_bytes) return fail(Errc::too_large, "FAT filesystem: FAT larger than 32 MiB");
  fat.fat_.resize(static_cast<std::size_t>(fat_bytes_needed));
  if (auto ok = fat.disk_->read_at(offset + reserved_sectors * bytes_per_sector, fat.fat_); !ok)
    return tl::unexpected(ok.error());
  return fat;
}

std::string FatFilesystem::uuid() const {
  if (!has_serial_) return {};
  char text[10];
  std::snprintf(text, sizeof text, "%04x-%04x", static_cast<unsigned>(serial_ >> 16),
                static_cast<unsigned>(serial_ & 0xffff));
  return text;
}

Result<std::uint32_t> FatFilesystem::next_cluster(std::uint32_t cluster) const {
  // Callers pass only clusters in 2 .. cluster_count_+1, whose entries open() checked exist.
  std::uint32_t value = 0;
  std::uint32_t end_of_chain = 0;
  if (fat_bits_ == 12) {
    const std::size_t at = cluster + cluster / 2;
    const std::uint32_t pair = load_le16(&fat_[at]);
    value = (cluster & 1) ? pair >> 4 : pair & 0x0fff;
    end_of_chain = 0x0ff8;
  } else if (fat_bits_ == 16) {
    value = load_le16(&fat_[static_cast<std::size_t>(cluster) * 2]);
    end_of_chain = 0xfff8;
  } else {
    value = load_le32(&fat_[static_cast<std::size_t>(cluster) * 4]) & 0x0fffffff;
    end_of_chain = 0x0ffffff8;
  }
  if (value >= end_of_chain) return 0;
  if (value < 2 || value > cluster_count_ + 1)
    return malformed("cluster " + std::to_string(cluster) + " links to invalid cluster " + std::to_string(value));
  return value;
}

Result<Bytes> FatFilesystem::read_chain(std::uint32_t first, std::uint64_t length, bool exact) const {
  Bytes out;
  if (length == 0) return out;
  // Grown cluster by cluster: `length` is a bound (a directory's is max_directory_bytes),
  // not what the chain holds, and zeroing it all up front made every listing cost that much.
  std::uint32_t cluster = first;
  std::uint64_t done = 0;
  // The chain is followed only as far as `length` needs, and a cluster seen twice is a loop
  // (or two files sharing data): refused rather than read as the same bytes again.
  std::vector<bool> seen(static_cast<std::size_t>(cluster_count_) + 2, false);
  while (done < length) {
    if (cluster < 2 || cluster > cluster_count_ + 1)
      return malformed("cluster " + std::to_string(cluster) + " out of range");
    if (seen[cluster]) return malformed("cluster chain loops at cluster " + std::to_string(cluster));
    seen[cluster] = true;
    const std::uint64_t n = std::min<std::uint64_t>(cluster_bytes_, length - done);
    out.resize(static_cast<std::size_t>(done + n));
    const std::uint64_t at = data_offset_ + static_cast<std::uint64_t>(cluster - 2) * cluster_bytes_;
    if (auto ok = disk_->read_at(offset_ + at, std::span<std::uint8_t>(out.data() + done, static_cast<std::size_t>(n)));
        !ok)
      return tl::unexpected(ok.error());
    done += n;
    auto next = next_cluster(cluster);
    if (!next) return tl::unexpected(next.error());
    if (*next == 0) {
      if (done < length && exact) return malformed("a file's cluster chain is shorter than its size");
      break;
    }
    cluster = *next;
  }
  return out;
}

Result<std::vector<FatDirEntry>> FatFilesystem::read_directory(const FatDirEntry& dir) const {
  Bytes raw;
  if (dir.first_cluster == 0) {  // the root directory
    if (fat_bits_ == 32) {
      auto chain = read_chain(root_cluster_, max_directory_bytes, false);
      if (!chain) return tl::unexpected(chain.error());
      raw = std::move(*chain);
    } else {
      raw.resize(static_cast<std::size_t>(root_dir_entries_) * dir_entry_size);
      if (auto ok = disk_->read_at(offset_ + root_dir_offset_, raw); !ok) return tl::unexpected(ok.error());
    }
  } else {
    auto chain = read_chain(dir.first_cluster, max_directory_bytes, false);
    if (!chain) return tl::unexpected(chain.error());
    raw = std::move(*chain);
  }
  std::vector<FatDirEntry> entries;
  LongNameCollector long_name;
  for (std::size_t at = 0; at + dir_entry_size <= raw.size(); at += dir_entry_size) {
    const std::uint8_t* e = &raw[at];
    if (e[0] == 0x00) break;  // no entries after this one
    if (e[0] == 0xe5) {       // deleted
      long_name.reset();
      continue;
    }
    const std::uint8_t attributes = e[11];
    if ((attributes & 0x3f) == attr_long_name) {
      long_name.add(e);
      continue;
    }
    if (attributes & attr_volume_id) {
      long_name.reset();
      continue;
    }
    FatDirEntry entry;
    entry.short_name = short_name_text(e, false);
    auto long_text = long_name.take(e);
    entry.name = long_text ? *long_text : short_name_text(e, true);
    if (entry.short_name == "." || entry.short_name == "..") continue;
    entry.is_directory = (attributes & attr_directory) != 0;
    entry.first_cluster = load_le16(e + 26);
    if (fat_bits_ == 32) entry.first_cluster |= static_cast<std::uint32_t>(load_le16(e + 20)) << 16;
    entry.size = entry.is_directory ? 0 : load_le32(e + 28);
    if (entry.first_cluster != 0 && (entry.first_cluster < 2 || entry.first_cluster > cluster_count_ + 1))
      return malformed("\"" + entry.name + "\" starts at invalid cluster " + std::to_string(entry.first_cluster));
    if (entry.is_directory && entry.first_cluster == 0) return malformed("directory \"" + entry.name + "\" has no cluster");
    entries.push_back(std::move(entry));
  }
  return entries;
}

Result<FatDirEntry> FatFilesystem::lookup(std::string_view path) const {
  const auto parts = split_path(path);
  if (parts.size() > max_path_depth) return fail(Errc::invalid_argument, "FAT path too deep");
  FatDirEntry current;  // the root: cluster 0
  current.name = "/";
  current.is_directory = true;
  for (const auto part : parts) {
    if (!current.is_directory) return fail(Errc::not_found, std::string(path) + ": not a directory on the way");
    auto entries = read_directory(current);
    if (!entries) return tl::unexpected(entries.error());
    bool found = false;
    for (auto& entry : *entries)
      if (equal_ignoring_case(entry.name, part) || equal_ignoring_case(entry.short_name, part)) {
        current = std::move(entry);
        found = true;
        break;
      }
    if (!found) return fail(Errc::not_found, std::string(path) + ": not found on the FAT filesystem");
  }
  return current;
}

Result<std::vector<FatDirEntry>> FatFilesystem::list_directory(std::string_view path) const {
  auto dir = lookup(path);
  if (!dir) return tl::unexpected(dir.error());
  if (!dir->is_directory) return fail(Errc::invalid_argument, std::string(path) + ": not a directory");
  return read_directory(*dir);
}

Result<Bytes> FatFilesystem::read_file(std::string_view path, std::uint64_t max_size) const {
  auto file = lookup(path);
  if (!file) return tl::unexpected(file.error());
  if (file->is_directory) return fail(Errc::invalid_argument, std::string(path) + ": is a directory");
  if (file->size > max_size)
    return fail(Errc::too_large, std::string(path) + ": " + std::to_string(file->size) + " bytes, more than " +
                                     std::to_string(max_size));
  if (file->size != 0 && file->first_cluster == 0) return malformed(std::string(path) + ": data without a cluster");
  return read_chain(file->first_cluster, file->size, true);
}

}  // namespace fde::image
