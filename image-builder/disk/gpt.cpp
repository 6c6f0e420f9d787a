// GPT reader and writer (UEFI 2.10 section 5.3), every field bounds-checked.
#include "image-builder/disk/gpt.hpp"

#include <algorithm>
#include <cstring>

namespace fde::image {
namespace {

constexpr std::array<std::uint8_t, 8> gpt_signature = {'E', 'F', 'I', ' ', 'P', 'A', 'R', 'T'};
constexpr std::uint32_t gpt_revision = 0x00010000;
constexpr std::uint32_t gpt_header_size = 92;
// Refuse absurd tables before allocating: 128 x 128 bytes is the norm, 4096 slots or
// 1 MiB of entries is far beyond any real image.
constexpr std::uint32_t max_entry_count = 4096;
constexpr std::uint32_t max_entry_size = 4096;
constexpr std::uint64_t max_entry_array = 1024 * 1024;

std::uint32_t load32(const std::uint8_t* p) {
  return static_cast<std::uint32_t>(p[0]) | static_cast<std::uint32_t>(p[1]) << 8 |
         static_cast<std::uint32_t>(p[2]) << 16 | static_cast<std::uint32_t>(p[3]) << 24;
}
std::uint64_t load64(const std::uint8_t* p) {
  return static_cast<std::uint64_t>(load32(p)) | static_cast<std::uint64_t>(load32(p + 4)) << 32;
}
void store32(std::uint8_t* p, std::uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<std::uint8_t>(v >> (8 * i));
}
void store64(std::uint8_t* p, std::uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<std::uint8_t>(v >> (8 * i));
}

struct Header {
  std::uint64_t current_lba, backup_lba, first_usable, last_usable, entries_lba;
  std::uint32_t entry_count, entry_size, entries_crc;
  Guid disk_guid;
};

Result<Header> parse_header(const std::array<std::uint8_t, 512>& sector, std::uint64_t expected_lba,
                            std::uint64_t disk_sectors) {
  if (!std::equal(gpt_signature.begin(), gpt_signature.end(), sector.begin()))
    return fail(Errc::malformed, "no GPT signature (\"EFI PART\") at LBA " + std::to_string(expected_lba));
  const std::uint32_t header_size = load32(&sector[12]);
  if (header_size < gpt_header_size || header_size > 512)
    return fail(Errc::malformed, "GPT header size " + std::to_string(header_size) + " out of range");
  std::array<std::uint8_t, 512> copy = sector;
  store32(&copy[16], 0);
  if (crc32(ByteView(copy.data(), header_size)) != load32(&sector[16]))
    return fail(Errc::malformed, "GPT header CRC mismatch at LBA " + std::to_string(expected_lba));
  Header h{};
  h.current_lba = load64(&sector[24]);
  h.backup_lba = load64(&sector[32]);
  h.first_usable = load64(&sector[40]);
  h.last_usable = load64(&sector[48]);
  std::memcpy(h.disk_guid.data(), &sector[56], 16);
  h.entries_lba = load64(&sector[72]);
  h.entry_count = load32(&sector[80]);
  h.entry_size = load32(&sector[84]);
  h.entries_crc = load32(&sector[88]);
  if (h.current_lba != expected_lba)
    return fail(Errc::malformed, "GPT header at LBA " + std::to_string(expected_lba) +
                                     " claims to be at LBA " + std::to_string(h.current_lba));
  if (h.entry_count == 0 || h.entry_count > max_entry_count || h.entry_size < 128 ||
      h.entry_size > max_entry_size || h.entry_size % 8 != 0 ||
      static_cast<std::uint64_t>(h.entry_count) * h.entry_size > max_entry_array)
    return fail(Errc::malformed, "GPT entry array of " + std::to_string(h.entry_count) + " x " +
                                     std::to_string(h.entry_size) + " bytes is not plausible");
  const std::uint64_t array_sectors =
      (static_cast<std::uint64_t>(h.entry_count) * h.entry_size + gpt_sector_size - 1) / gpt_sector_size;
  if (h.entries_lba < 2 || h.entries_lba + array_sectors > disk_sectors)
    return fail(Errc::malformed, "GPT entry array lies outside the disk");
  if (h.first_usable > h.last_usable || h.last_usable >= disk_sectors)
    return fail(Errc::malformed, "GPT usable range lies outside the disk");
  return h;
}

Result<GptTable> read_table_at(const DiskReader& disk, std::uint64_t lba, std::uint64_t disk_sectors) {
  std::array<std::uint8_t, 512> sector{};
  if (auto ok = disk.read_at(lba * gpt_sector_size, sector); !ok) return tl::unexpected(ok.error());
  auto header = parse_header(sector, lba, disk_sectors);
  if (!header) return tl::unexpected(header.error());
  Bytes entries(static_cast<std::size_t>(header->entry_count) * header->entry_size);
  if (auto ok = disk.read_at(header->entries_lba * gpt_sector_size, entries); !ok)
    return tl::unexpected(ok.error());
  if (crc32(entries) != header->entries_crc) return fail(Errc::malformed, "GPT entry array CRC mismatch");

  GptTable table;
  table.disk_guid = header->disk_guid;
  table.entry_count = header->entry_count;
  table.entry_size = header->entry_size;
  table.first_usable_lba = header->first_usable;
  table.last_usable_lba = header->last_usable;
  for (std::uint32_t i = 0; i < header->entry_count; ++i) {
    const std::uint8_t* e = entries.data() + static_cast<std::size_t>(i) * header->entry_size;
    GptPartition p;
    std::memcpy(p.type.data(), e, 16);
    if (p.type == Guid{}) continue;
    p.index = i + 1;
    std::memcpy(p.unique.data(), e + 16, 16);
    p.first_lba = load64(e + 32);
    p.last_lba = load64(e + 40);
    p.attributes = load64(e + 48);
    std::memcpy(p.raw_name.data(), e + 56, 72);
    for (std::size_t c = 0; c + 1 < p.raw_name.size(); c += 2) {
      const unsigned code = p.raw_name[c] | static_cast<unsigned>(p.raw_name[c + 1]) << 8;
      if (code == 0) break;
      p.name.push_back(code < 0x80 && code >= 0x20 ? static_cast<char>(code) : '?');
    }
    if (p.first_lba > p.last_lba || p.first_lba < header->first_usable || p.last_lba > header->last_usable)
      return fail(Errc::malformed, "GPT partition " + std::to_string(p.index) +
                                       " lies outside the usable range of the disk");
    table.partitions.push_back(p);
  }
  // Overlapping partitions would let one partition's rewrite corrupt another.
  std::vector<const GptPartition*> sorted;
  for (const auto& p : table.partitions) sorted.push_back(&p);
  std::sort(sorted.begin(), sorted.end(), [](auto* a, auto* b) { return a->first_lba < b->first_lba; });
  for (std::size_t i = 1; i < sorted.size(); ++i)
    if (sorted[i]->first_lba <= sorted[i - 1]->last_lba)
      return fail(Errc::malformed, "GPT partitions " + std::to_string(sorted[i - 1]->index) + " and " +
                                       std::to_string(sorted[i]->index) + " overlap");
  return table;
}

void put_guid(std::uint8_t* p, const Guid& g) { std::memcpy(p, g.data(), 16); }

Guid parse_constant(std::string_view text) { return *guid_from_string(text); }

}  // namespace

namespace gpt_type {
const Guid linux_filesystem = parse_constant("0FC63DAF-8483-4772-8E79-3D69D8477DE4");
const Guid root_x86_64 = parse_constant("4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709");
const Guid root_aarch64 = parse_constant("B921B045-1DF0-41C3-AF44-4C6F280D3FAE");
const Guid efi_system = parse_constant("C12A7328-F81F-11D2-BA4B-00A0C93EC93B");
const Guid linux_luks = parse_constant("CA7D7CCB-63ED-4C53-861C-1742536059CC");
}  // namespace gpt_type

std::uint32_t crc32(ByteView data) {
  static const auto table = [] {
    std::array<std::uint32_t, 256> t{};
    for (std::uint32_t i = 0; i < 256; ++i) {
      std::uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  std::uint32_t crc = 0xFFFFFFFFu;
  for (std::uint8_t b : data) crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8);
  return crc ^ 0xFFFFFFFFu;
}

std::string guid_to_string(const Guid& g) {
  // The first three fields are little-endian on disk (UEFI appendix A).
  static const int order[16] = {3, 2, 1, 0, 5, 4, 7, 6, 8, 9, 10, 11, 12, 13, 14, 15};
  static const char* digits = "0123456789ABCDEF";
  std::string out;
  for (int i = 0; i < 16; ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10) out.push_back('-');
    out.push_back(digits[g[static_cast<std::size_t>(order[i])] >> 4]);
    out.push_back(digits[g[static_cast<std::size_t>(order[i])] & 15]);
  }
  return out;
}

Result<Guid> guid_from_string(std::string_view text) {
  static const int order[16] = {3, 2, 1, 0, 5, 4, 7, 6, 8, 9, 10, 11, 12, 13, 14, 15};
  if (text.size() != 36) return fail(Errc::malformed, "GUID must have 36 characters");
  std::string hex;
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (i == 8 || i == 13 || i == 18 || i == 23) {
      if (text[i] != '-') return fail(Errc::malformed, "GUID: misplaced '-'");
      continue;
    }
    hex.push_back(text[i]);
  }
  auto bytes = hex_decode(hex);
  if (!bytes || bytes->size() != 16) return fail(Errc::malformed, "GUID: not hexadecimal");
  Guid g{};
  for (std::size_t i = 0; i < 16; ++i) g[static_cast<std::size_t>(order[i])] = (*bytes)[i];
  return g;
}

const GptPartition* GptTable::find(std::uint32_t index) const {
  for (const auto& p : partitions)
    if (p.index == index) return &p;
  return nullptr;
}

std::uint64_t gpt_entry_array_sectors(const GptTable& table) {
  return (static_cast<std::uint64_t>(table.entry_count) * table.entry_size + gpt_sector_size - 1) /
         gpt_sector_size;
}

Result<GptTable> read_gpt(const DiskReader& disk) {
  auto size = disk.size();
  if (!size) return tl::unexpected(size.error());
  const std::uint64_t sectors = *size / gpt_sector_size;
  if (sectors < 68) return fail(Errc::malformed, "disk image of " + std::to_string(*size) + " bytes is too small for a GPT");
  std::array<std::uint8_t, 512> mbr{};
  if (auto ok = disk.read_at(0, mbr); !ok) return tl::unexpected(ok.error());
  if (mbr[510] != 0x55 || mbr[511] != 0xAA || mbr[450] != 0xEE)
    return fail(Errc::malformed, "no protective MBR: the disk has no GUID partition table");
  auto primary = read_table_at(disk, 1, sectors);
  if (primary) return primary;
  auto backup = read_table_at(disk, sectors - 1, sectors);
  if (backup) return backup;
  return fail_with_context("GPT", primary.error());
}

Result<GptTable> read_partition_table(const DiskReader& disk) {
  auto size = disk.size();
  if (!size) return tl::unexpected(size.error());
  std::array<std::uint8_t, 512> mbr{};
  if (*size < mbr.size()) return fail(Errc::malformed, "disk image of " + std::to_string(*size) + " bytes has no MBR");
  if (auto ok = disk.read_at(0, mbr); !ok) return tl::unexpected(ok.error());
  if (mbr[510] != 0x55 || mbr[511] != 0xAA) return fail(Errc::malformed, "no MBR signature: the disk has no partition table");
  bool protective = false;
  for (int slot = 0; slot < 4; ++slot) protective = protective || mbr[446 + slot * 16 + 4] == 0xEE;
  if (protective) return read_gpt(disk);

  const std::uint64_t disk_sectors = *size / gpt_sector_size;
  GptTable table;
  table.mbr = true;
  table.entry_count = 4;
  for (std::uint32_t slot = 0; slot < 4; ++slot) {
    const std::uint8_t* e = mbr.data() + 446 + slot * 16;
    const std::uint8_t type = e[4];
    if (type == 0) continue;
    if (type == 0x05 || type == 0x0F || type == 0x85)
      return fail(Errc::unsupported, "MBR partition " + std::to_string(slot + 1) +
                                         " is an extended partition: logical partitions are not supported");
    const std::uint64_t start = load_le32(e + 8);
    const std::uint64_t count = load_le32(e + 12);
    if (start == 0 || count == 0 || start + count > disk_sectors)
      return fail(Errc::malformed, "MBR partition " + std::to_string(slot + 1) + " lies outside the disk");
    GptPartition p;
    p.index = slot + 1;
    p.mbr_type = type;
    p.type = type == 0xEF ? gpt_type::efi_system : gpt_type::linux_filesystem;
    p.first_lba = start;
    p.last_lba = start + count - 1;
    table.partitions.push_back(p);
  }
  if (table.partitions.empty()) return fail(Errc::malformed, "the MBR lists no partition");
  for (const auto& a : table.partitions)
    for (const auto& b : table.partitions)
      if (a.index < b.index && a.first_lba <= b.last_lba && b.first_lba <= a.last_lba)
        return fail(Errc::malformed,
                    "MBR partitions " + std::to_string(a.index) + " and " + std::to_string(b.index) + " overlap");
  return table;
}

Result<void> write_mbr(RawFile& disk, const GptTable& table) {
  std::array<std::uint8_t, 512> mbr{};
  if (auto ok = disk.read_at(0, mbr); !ok) return tl::unexpected(ok.error());
  if (mbr[510] != 0x55 || mbr[511] != 0xAA) return fail(Errc::internal, "the output has no MBR to update");
  for (const auto& p : table.partitions) {
    if (p.index == 0 || p.index > 4) return fail(Errc::invalid_argument, "MBR partition index out of range");
    const std::uint64_t count = p.last_lba - p.first_lba + 1;
    if (p.first_lba > 0xFFFFFFFFu || count > 0xFFFFFFFFu || p.first_lba + count > 0xFFFFFFFFull)
      return fail(Errc::unsupported, "MBR partition " + std::to_string(p.index) + " would end past 2 TiB");
    std::uint8_t* e = mbr.data() + 446 + (p.index - 1) * 16;
    const std::uint32_t old_start = load_le32(e + 8), old_count = load_le32(e + 12);
    if (old_start == p.first_lba && old_count == count) continue;
    e[5] = 0xFE;  // CHS end: "beyond CHS", firmware and Linux use the LBA fields
    e[6] = 0xFF;
    e[7] = 0xFF;
    store32(e + 8, static_cast<std::uint32_t>(p.first_lba));
    store32(e + 12, static_cast<std::uint32_t>(count));
  }
  return disk.write_at(0, mbr);
}

Result<void> write_gpt(RawFile& disk, std::uint64_t disk_size, const GptTable& table) {
  const std::uint64_t sectors = disk_size / gpt_sector_size;
  const std::uint64_t array_sectors = gpt_entry_array_sectors(table);
  if (sectors < 2 * array_sectors + 4) return fail(Errc::invalid_argument, "disk too small for a GPT");
  Bytes entries(static_cast<std::size_t>(array_sectors * gpt_sector_size));
  for (const auto& p : table.partitions) {
    if (p.index == 0 || p.index > table.entry_count)
      return fail(Errc::invalid_argument, "GPT partition index out of range");
    std::uint8_t* e = entries.data() + static_cast<std::size_t>(p.index - 1) * table.entry_size;
    put_guid(e, p.type);
    put_guid(e + 16, p.unique);
    store64(e + 32, p.first_lba);
    store64(e + 40, p.last_lba);
    store64(e + 48, p.attributes);
    std::memcpy(e + 56, p.raw_name.data(), 72);
  }
  const std::uint32_t entries_crc =
      crc32(ByteView(entries.data(), static_cast<std::size_t>(table.entry_count) * table.entry_size));
  const std::uint64_t first_usable = 2 + array_sectors;
  const std::uint64_t last_usable = sectors - 2 - array_sectors;
  for (const auto& p : table.partitions)
    if (p.first_lba < first_usable || p.last_lba > last_usable)
      return fail(Errc::invalid_argument, "partition " + std::to_string(p.index) + " does not fit the disk");

  auto header = [&](std::uint64_t current, std::uint64_t backup, std::uint64_t entries_lba) {
    std::array<std::uint8_t, 512> h{};
    std::copy(gpt_signature.begin(), gpt_signature.end(), h.begin());
    store32(&h[8], gpt_revision);
    store32(&h[12], gpt_header_size);
    store64(&h[24], current);
    store64(&h[32], backup);
    store64(&h[40], first_usable);
    store64(&h[48], last_usable);
    put_guid(&h[56], table.disk_guid);
    store64(&h[72], entries_lba);
    store32(&h[80], table.entry_count);
    store32(&h[84], table.entry_size);
    store32(&h[88], entries_crc);
    store32(&h[16], crc32(ByteView(h.data(), gpt_header_size)));
    return h;
  };
  // Protective MBR: one 0xEE partition covering the disk (capped at 2^32-1 sectors).
  std::array<std::uint8_t, 512> mbr{};
  if (auto ok = disk.read_at(0, mbr); !ok) return ok;
  std::fill(mbr.begin() + 446, mbr.begin() + 510, 0);
  std::uint8_t* pe = &mbr[446];
  pe[1] = 0x00; pe[2] = 0x02; pe[3] = 0x00;  // CHS of LBA 1
  pe[4] = 0xEE;
  pe[5] = 0xFF; pe[6] = 0xFF; pe[7] = 0xFF;
  store32(pe + 8, 1);
  store32(pe + 12, static_cast<std::uint32_t>(std::min<std::uint64_t>(sectors - 1, 0xFFFFFFFFu)));
  mbr[510] = 0x55;
  mbr[511] = 0xAA;
  if (auto ok = disk.write_at(0, mbr); !ok) return ok;
  if (auto ok = disk.write_at(gpt_sector_size, header(1, sectors - 1, 2)); !ok) return ok;
  if (auto ok = disk.write_at(2 * gpt_sector_size, entries); !ok) return ok;
  const std::uint64_t backup_entries = sectors - 1 - array_sectors;
  if (auto ok = disk.write_at(backup_entries * gpt_sector_size, entries); !ok) return ok;
  return disk.write_at((sectors - 1) * gpt_sector_size, header(sectors - 1, 1, backup_entries));
}

}  // namespace fde::image
