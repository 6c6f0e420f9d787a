// newc cpio writer and a small reader for the archive fde-image appends.
#include "image-builder/initramfs/cpio_writer.hpp"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <set>

namespace fde::image {
namespace {

constexpr char newc_magic[] = "070701";
constexpr std::size_t header_size = 110;

void pad4(Bytes& out) {
  while (out.size() % 4 != 0) out.push_back(0);
}

std::string hex8(std::uint64_t value) {
  char text[9];
  std::snprintf(text, sizeof text, "%08llX", static_cast<unsigned long long>(value & 0xFFFFFFFFu));
  return text;
}

std::string strip_slash(std::string path) {
  while (!path.empty() && path.front() == '/') path.erase(path.begin());
  return path;
}

}  // namespace

void CpioWriter::add_entry(const std::string& path, std::uint32_t mode, ByteView content) {
  const std::string name = strip_slash(path);
  std::string header = newc_magic;
  // ino, mode, uid, gid, nlink, mtime, filesize, devmajor, devminor, rdevmajor, rdevminor,
  // namesize, check. mtime 0 keeps the archive (and so the initramfs digest) reproducible.
  for (std::uint64_t field : {std::uint64_t{next_inode_++}, std::uint64_t{mode}, std::uint64_t{0}, std::uint64_t{0},
                              std::uint64_t{(mode & 0170000) == 0040000 ? 2u : 1u}, std::uint64_t{0},
                              std::uint64_t{content.size()}, std::uint64_t{0}, std::uint64_t{0}, std::uint64_t{0},
                              std::uint64_t{0}, std::uint64_t{name.size() + 1}, std::uint64_t{0}})
    header += hex8(field);
  archive_.insert(archive_.end(), header.begin(), header.end());
  archive_.insert(archive_.end(), name.begin(), name.end());
  archive_.push_back(0);
  pad4(archive_);
  archive_.insert(archive_.end(), content.begin(), content.end());
  pad4(archive_);
  if (name != "TRAILER!!!") paths_.push_back("/" + name);
}

void CpioWriter::add_parents(const std::string& path) {
  const std::string name = strip_slash(path);
  for (std::size_t slash = name.find('/'); slash != std::string::npos; slash = name.find('/', slash + 1)) {
    const std::string parent = "/" + name.substr(0, slash);
    if (std::find(paths_.begin(), paths_.end(), parent) == paths_.end()) add_entry(parent, 0040755, {});
  }
}

void CpioWriter::add_directory(const std::string& path, std::uint32_t mode) {
  add_parents(path);
  if (std::find(paths_.begin(), paths_.end(), "/" + strip_slash(path)) == paths_.end())
    add_entry(path, 0040000 | (mode & 07777), {});
}

void CpioWriter::add_file(const std::string& path, ByteView content, std::uint32_t mode) {
  add_parents(path);
  add_entry(path, 0100000 | (mode & 07777), content);
}

void CpioWriter::add_symlink(const std::string& path, const std::string& target) {
  add_parents(path);
  add_entry(path, 0120777, ByteView(reinterpret_cast<const std::uint8_t*>(target.data()), target.size()));
}

Bytes CpioWriter::finish() {
  add_entry("TRAILER!!!", 0, {});
  while (archive_.size() % 512 != 0) archive_.push_back(0);
  return std::move(archive_);
}

std::vector<CpioEntry> list_appended_cpio(ByteView data) {
  // Our archive is the last uncompressed newc archive in the file: search backwards for a
  // 4-byte aligned newc header whose name is one of ours and parse forward from there.
  std::vector<CpioEntry> entries;
  const std::string marker = std::string(newc_magic);
  std::size_t start = std::string::npos;
  const std::size_t search_from = data.size() > (64u << 20) ? data.size() - (64u << 20) : 0;
  for (std::size_t at = search_from; at + header_size <= data.size(); at += 4) {
    if (std::memcmp(data.data() + at, marker.data(), 6) != 0) continue;
    // The first entry of an archive fde-image appended is the "etc" or "usr" directory
    // marker file "etc/fde" ... accept any archive whose entries parse to a trailer.
    start = at;
    std::vector<CpioEntry> parsed;
    std::size_t pos = at;
    bool ok = false;
    while (pos + header_size <= data.size() && std::memcmp(data.data() + pos, marker.data(), 6) == 0) {
      auto field = [&](int index) {
        const char* p = reinterpret_cast<const char*>(data.data() + pos + 6 + 8 * index);
        return std::strtoull(std::string(p, 8).c_str(), nullptr, 16);
      };
      const std::uint64_t mode = field(1), size = field(6), name_size = field(11);
      if (name_size == 0 || name_size > 4096 || pos + header_size + name_size > data.size()) break;
      std::string name(reinterpret_cast<const char*>(data.data() + pos + header_size), name_size - 1);
      std::size_t next = (pos + header_size + name_size + 3) / 4 * 4;
      if (size > data.size() - next) break;
      next = (next + size + 3) / 4 * 4;
      if (name == "TRAILER!!!") {
        ok = true;
        break;
      }
      parsed.push_back({"/" + name, static_cast<std::uint32_t>(mode), size});
      pos = next;
    }
    if (ok) {
      entries = std::move(parsed);
      at = pos;  // continue after this archive: the last complete one wins
    }
  }
  (void)start;
  return entries;
}

}  // namespace fde::image
