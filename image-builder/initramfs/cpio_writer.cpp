// newc cpio writer and a small reader for the archive fde-image appends.
#include "image-builder/initramfs/cpio_writer.hpp"

#include <algorithm>
#include <array>
#include <cstdio>
#include <cstring>

namespace fde::image {
namespace {

constexpr char newc_magic[] = "070701";
constexpr std::size_t header_size = 110;
constexpr std::size_t max_name_size = 4095;  // the kernel's unpacker skips names over PATH_MAX
constexpr std::uint32_t type_mask = 0170000;
constexpr std::uint32_t type_directory = 0040000;
constexpr std::uint32_t type_regular = 0100000;
constexpr std::uint32_t type_symlink = 0120000;

// The kernel's unpacker (init/initramfs.c, clean_path) removes an existing path whose file
// type differs from the entry's before creating the entry. In usr-merged initramfs images
// (dracut mirrors the host: Debian 12, Fedora, ...) these are symlinks into /usr, and on
// Fedora 42 and later /usr/sbin is one to bin: a directory entry for one of them would
// replace the symlink with an empty directory and take every library and tool behind it
// out of the boot.
constexpr std::array<const char*, 7> usr_merge_symlinks = {"lib", "lib32", "lib64", "libx32", "bin", "sbin", "usr/sbin"};

bool is_all_zero_tail(ByteView data) {
  return std::all_of(data.begin(), data.end(), [](std::uint8_t b) { return b == 0; });
}

void pad4(Bytes& out) {
  while (out.size() % 4 != 0) out.push_back(0);
}

std::string hex8(std::uint64_t value) {
  char text[9];
  std::snprintf(text, sizeof text, "%08llX", static_cast<unsigned long long>(value & 0xFFFFFFFFu));
  return text;
}

// "/usr/sbin/x" and "usr/sbin/x/" -> "usr/sbin/x"; empty, ".", ".." and "a//b" are refused,
// as the kernel would create such entries somewhere else or not at all.
Result<std::string> normalize(const std::string& path) {
  std::size_t begin = 0, end = path.size();
  while (begin < end && path[begin] == '/') ++begin;
  while (end > begin && path[end - 1] == '/') --end;
  std::string name = path.substr(begin, end - begin);
  if (name.empty() || name.size() > max_name_size || name == "TRAILER!!!")
    return fail(Errc::invalid_argument, "'" + path + "' is not a usable path in an initramfs archive");
  for (std::size_t start = 0; start <= name.size();) {
    std::size_t slash = name.find('/', start);
    if (slash == std::string::npos) slash = name.size();
    const std::string component = name.substr(start, slash - start);
    if (component.empty() || component == "." || component == "..")
      return fail(Errc::invalid_argument, "'" + path + "': empty, '.' or '..' path component");
    start = slash + 1;
  }
  return name;
}

Error usr_merge_refusal(const std::string& name) {
  return Error{Errc::unsupported,
               "refusing a directory entry for /" + name + ": usr-merged initramfs images have a symlink there, "
               "which the kernel's initramfs unpacker would replace with an empty directory (unbootable); "
               "put the files under /usr instead"};
}

}  // namespace

bool is_usr_merge_symlink(const std::string& path) {
  auto name = normalize(path);
  if (!name) return false;
  for (const char* symlink : usr_merge_symlinks)
    if (*name == symlink) return true;
  return false;
}

Result<CpioWriter::Placement> CpioWriter::place(const std::string& path, Parents parents) const {
  auto name = normalize(path);
  if (!name) return tl::unexpected(name.error());
  if (modes_.count(*name)) return fail(Errc::invalid_argument, "/" + *name + " is already in the archive");
  Placement placement{*name, {}};
  for (std::size_t slash = name->find('/'); slash != std::string::npos; slash = name->find('/', slash + 1)) {
    const std::string parent = name->substr(0, slash);
    const auto known = modes_.find(parent);
    if (known != modes_.end()) {
      if ((known->second & type_mask) != type_directory)
        return fail(Errc::invalid_argument, "/" + *name + ": its parent /" + parent + " is not a directory");
      continue;
    }
    if (parents == Parents::assume_present) continue;
    if (is_usr_merge_symlink(parent)) return fail_with_context("/" + *name, usr_merge_refusal(parent));
    placement.parents.push_back(parent);
  }
  return placement;
}

void CpioWriter::add_entry(const std::string& name, std::uint32_t mode, ByteView content) {
  std::string header = newc_magic;
  // ino, mode, uid, gid, nlink, mtime, filesize, devmajor, devminor, rdevmajor, rdevminor,
  // namesize, check. mtime 0 keeps the archive (and so the initramfs digest) reproducible.
  for (std::uint64_t field : {std::uint64_t{next_inode_++}, std::uint64_t{mode}, std::uint64_t{0}, std::uint64_t{0},
                              std::uint64_t{(mode & type_mask) == type_directory ? 2u : 1u}, std::uint64_t{0},
                              std::uint64_t{content.size()}, std::uint64_t{0}, std::uint64_t{0}, std::uint64_t{0},
                              std::uint64_t{0}, std::uint64_t{name.size() + 1}, std::uint64_t{0}})
    header += hex8(field);
  archive_.insert(archive_.end(), header.begin(), header.end());
  archive_.insert(archive_.end(), name.begin(), name.end());
  archive_.push_back(0);
  pad4(archive_);
  archive_.insert(archive_.end(), content.begin(), content.end());
  pad4(archive_);
  if (name == "TRAILER!!!") return;
  paths_.push_back("/" + name);
  modes_[name] = mode;
}

Result<void> CpioWriter::add_directory(const std::string& path, std::uint32_t mode) {
  auto name = normalize(path);
  if (!name) return tl::unexpected(name.error());
  if (const auto known = modes_.find(*name); known != modes_.end()) {
    if ((known->second & type_mask) == type_directory) return {};
    return fail(Errc::invalid_argument, "/" + *name + " is already in the archive, not as a directory");
  }
  if (is_usr_merge_symlink(*name)) return tl::unexpected(usr_merge_refusal(*name));
  // A directory's placement differs from a file's only in that it may exist already.
  auto placement = place(*name, Parents::add);
  if (!placement) return tl::unexpected(placement.error());
  for (const auto& parent : placement->parents) add_entry(parent, type_directory | 0755, {});
  add_entry(placement->name, type_directory | (mode & 07777), {});
  return {};
}

Result<void> CpioWriter::add_file(const std::string& path, ByteView content, std::uint32_t mode, Parents parents) {
  auto placement = place(path, parents);
  if (!placement) return tl::unexpected(placement.error());
  for (const auto& parent : placement->parents) add_entry(parent, type_directory | 0755, {});
  add_entry(placement->name, type_regular | (mode & 07777), content);
  return {};
}

Result<void> CpioWriter::add_symlink(const std::string& path, const std::string& target, Parents parents) {
  if (target.empty() || target.size() > max_name_size || target.find('\0') != std::string::npos)
    return fail(Errc::invalid_argument, "'" + path + "': not a usable symlink target");
  auto placement = place(path, parents);
  if (!placement) return tl::unexpected(placement.error());
  for (const auto& parent : placement->parents) add_entry(parent, type_directory | 0755, {});
  add_entry(placement->name, type_symlink | 0777, as_bytes(target));
  return {};
}

Bytes CpioWriter::finish() {
  add_entry("TRAILER!!!", 0, {});
  while (archive_.size() % 512 != 0) archive_.push_back(0);
  return std::move(archive_);
}

std::vector<CpioEntry> list_appended_cpio(ByteView data) {
  auto found = find_appended_cpio(data);
  return found ? std::move(found->entries) : std::vector<CpioEntry>{};
}

std::optional<AppendedCpio> find_appended_cpio(ByteView data) {
  // Our archive is the last uncompressed newc archive in the file: look for newc headers at
  // 4-byte boundaries (the kernel reads each archive from one, and fde-image pads to one)
  // and keep the last run of entries that parses to a trailer.
  std::optional<AppendedCpio> last;
  const std::size_t window = 64u << 20;
  const std::size_t search_from = data.size() > window ? (data.size() - window) / 4 * 4 : 0;
  auto hex_field = [&](std::size_t header, int index, std::uint64_t& value) {
    value = 0;
    for (std::size_t i = 0; i < 8; ++i) {
      const char c = static_cast<char>(data[header + 6 + 8 * static_cast<std::size_t>(index) + i]);
      const char* digits = "0123456789ABCDEFabcdef";
      const char* found = std::strchr(digits, c);
      if (c == '\0' || !found) return false;
      const auto digit = static_cast<std::uint64_t>(found - digits);
      value = value * 16 + (digit < 16 ? digit : digit - 6);
    }
    return true;
  };
  for (std::size_t at = search_from; at + header_size <= data.size(); at += 4) {
    if (std::memcmp(data.data() + at, newc_magic, 6) != 0) continue;
    std::vector<CpioEntry> parsed;
    std::size_t pos = at;
    bool complete = false;
    while (pos + header_size <= data.size() && std::memcmp(data.data() + pos, newc_magic, 6) == 0) {
      std::uint64_t mode = 0, size = 0, name_size = 0;
      if (!hex_field(pos, 1, mode) || !hex_field(pos, 6, size) || !hex_field(pos, 11, name_size)) break;
      if (name_size == 0 || name_size > max_name_size + 1 || name_size > data.size() - pos - header_size) break;
      std::string name(reinterpret_cast<const char*>(data.data() + pos + header_size), name_size - 1);
      const std::size_t content = (pos + header_size + name_size + 3) / 4 * 4;
      if (content > data.size() || size > data.size() - content) break;
      if (name == "TRAILER!!!") {
        complete = true;
        break;
      }
      parsed.push_back({"/" + name, static_cast<std::uint32_t>(mode), size, content});
      pos = (content + size + 3) / 4 * 4;
    }
    if (complete) {
      const std::size_t archive_start = at;
      // Past the trailer's header and name: where the archive's own bytes end.
      at = pos;  // continue after this archive's trailer: the last complete one wins
      const std::size_t trailer_end = (pos + header_size + sizeof "TRAILER!!!" + 3) / 4 * 4;
      last = AppendedCpio{archive_start, std::min(trailer_end, data.size()), std::move(parsed)};
    }
  }
  return last;
}

Result<Bytes> rewrite_appended_cpio(ByteView data, const AppendedCpio& archive,
                                    const std::map<std::string, Bytes>& replacements) {
  if (archive.offset > archive.end || archive.end > data.size())
    return fail(Errc::invalid_argument, "the archive does not lie inside the data");
  if (!is_all_zero_tail(data.subspan(static_cast<std::size_t>(archive.end))))
    return fail(Errc::unsupported, "data follows the appended archive (something was added after fde-image's "
                                   "archive); it would be lost");
  std::size_t replaced = 0;
  CpioWriter cpio;
  for (const auto& entry : archive.entries) {
    const std::uint32_t type = entry.mode & type_mask;
    const std::uint32_t mode = entry.mode & 07777;
    const auto replacement = replacements.find(entry.path);
    if (replacement != replacements.end() && type != type_regular)
      return fail(Errc::unsupported, entry.path + " is not a regular file in the appended archive");
    Result<void> added;
    // Every parent CpioWriter added came before its child, so none is added twice here.
    if (type == type_directory)
      added = cpio.add_directory(entry.path, mode);
    else if (type == type_symlink)
      added = cpio.add_symlink(entry.path, std::string(as_text(cpio_entry_content(data, entry))),
                               Parents::assume_present);
    else if (type == type_regular)
      added = cpio.add_file(entry.path,
                            replacement != replacements.end() ? ByteView(replacement->second)
                                                              : cpio_entry_content(data, entry),
                            mode, Parents::assume_present);
    else
      added = fail(Errc::unsupported, entry.path + ": an entry type fde-image does not write");
    if (!added) return fail_with_context("appended archive", added.error());
    if (replacement != replacements.end()) ++replaced;
  }
  if (replaced != replacements.size()) return fail(Errc::not_found, "a file to replace is not in the appended archive");
  Bytes out(data.begin(), data.begin() + static_cast<std::ptrdiff_t>(archive.offset));
  const Bytes rewritten = cpio.finish();
  out.insert(out.end(), rewritten.begin(), rewritten.end());
  return out;
}

}  // namespace fde::image
