// Work directory, hardened image opening and FAT writes (image_files.hpp).
#include "image-builder/assembly/image_files.hpp"

#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>

#include "common/util/file.hpp"
#include "image-builder/disk/qcow2_image.hpp"
#include "image-builder/disk/subprocess.hpp"
#include "image-builder/fs/fat_filesystem.hpp"

namespace fde::image {
namespace {

namespace fs = std::filesystem;

constexpr std::uint64_t io_chunk = 1u << 20;

}  // namespace

Result<WorkDir> WorkDir::create(const std::string& parent) {
  std::string pattern = parent + "/.fde-image-XXXXXX";
  if (!::mkdtemp(pattern.data()))
    return fail(Errc::io, "cannot create a work directory in " + parent + ": " + std::strerror(errno));
  WorkDir dir;
  dir.path_ = pattern;
  return dir;
}

WorkDir::~WorkDir() {
  if (path_.empty()) return;
  std::error_code ignored;
  fs::remove_all(path_, ignored);
}

std::string directory_of(const std::string& path) {
  const fs::path parent = fs::path(path).parent_path();
  return parent.empty() ? "." : parent.string();
}

bool path_exists(const std::string& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0;
}

Result<Disk> open_disk(RawFile file, const std::string& name, std::optional<ImageFormat> format, bool require_qcow2) {
  auto detected = detect_image_format(file);
  if (!detected) return tl::unexpected(detected.error());
  if (require_qcow2 && !format && *detected != ImageFormat::qcow2)
    return fail(Errc::invalid_argument,
                name + " is not a qcow2 image (no qcow2 magic); pass --input-format raw for a raw disk image");
  if (format && *format == ImageFormat::qcow2 && *detected != ImageFormat::qcow2)
    return fail(Errc::invalid_argument, name + " is not a qcow2 image");
  if (format.value_or(*detected) == ImageFormat::qcow2) {
    auto reader = Qcow2Reader::open(std::move(file), name);
    if (!reader) return tl::unexpected(reader.error());
    return Disk(std::move(*reader));
  }
  return Disk(std::make_shared<RawFile>(std::move(file)));
}

Result<Disk> open_disk(const std::string& image, std::optional<ImageFormat> format, bool require_qcow2) {
  auto file = RawFile::open(image, RawFile::Mode::read_only);
  if (!file) return tl::unexpected(file.error());
  return open_disk(std::move(*file), image, format, require_qcow2);
}

ImageFormat disk_format(const DiskReader& disk) {
  return dynamic_cast<const Qcow2Reader*>(&disk) ? ImageFormat::qcow2 : ImageFormat::raw;
}

Result<void> check_mtools_path(const std::string& path) {
  for (char c : path)
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '/' || c == '.' ||
          c == '-' || c == '_' || c == '+'))
      return fail(Errc::unsupported, "the FAT path " + path + " has characters other than letters, digits and ./-_+");
  return {};
}

Result<void> write_fat_files(RawFile& disk, const GptPartition& partition, const WorkDir& work,
                             const std::vector<std::pair<std::string, ByteView>>& files) {
  const std::string copy = work.file("fat-" + std::to_string(partition.index) + ".img");
  const std::string staged = work.file("fat-file");
  {
    auto out = RawFile::open(copy, RawFile::Mode::create_new);
    if (!out) return tl::unexpected(out.error());
    if (auto ok = out->resize(partition.size()); !ok) return tl::unexpected(ok.error());
    Bytes buffer(static_cast<std::size_t>(io_chunk));
    for (std::uint64_t at = 0; at < partition.size(); at += io_chunk) {
      std::span<std::uint8_t> part(buffer.data(), static_cast<std::size_t>(std::min(io_chunk, partition.size() - at)));
      if (auto ok = disk.read_at(partition.offset() + at, part); !ok) return ok;
      if (auto ok = out->write_sparse_at(at, part); !ok) return ok;
    }
    out->close();
  }
  // Our reader refuses a filesystem larger than the partition before mtools sees it.
  if (auto fat = FatFilesystem::open(copy, 0, partition.size()); !fat)
    return fail_with_context("partition " + std::to_string(partition.index), fat.error());
  for (const auto& [path, content] : files) {
    if (auto ok = check_mtools_path(path); !ok) return ok;
    if (auto ok = write_file_atomic(staged, content, 0600); !ok) return ok;
    auto run = run_process({"env", "MTOOLS_SKIP_CHECK=1", "MTOOLSRC=/dev/null", "mcopy", "-o", "-i", copy, staged,
                            "::" + path});
    ::unlink(staged.c_str());
    if (!run) return fail_with_context("mcopy (mtools)", run.error());
    if (run->exit_code != 0)
      return fail(Errc::io, "mcopy could not write " + path + " on partition " + std::to_string(partition.index) +
                                ": " + run->output);
  }
  auto in = RawFile::open(copy, RawFile::Mode::read_only);
  if (!in) return tl::unexpected(in.error());
  auto size = in->size();
  if (!size) return tl::unexpected(size.error());
  if (*size != partition.size())
    return fail(Errc::malformed, "mtools changed the size of partition " + std::to_string(partition.index) + "'s copy");
  // Back into the output, block by block, writing only what changed.
  Bytes changed(static_cast<std::size_t>(io_chunk)), current(static_cast<std::size_t>(io_chunk));
  for (std::uint64_t at = 0; at < partition.size(); at += io_chunk) {
    const std::size_t n = static_cast<std::size_t>(std::min(io_chunk, partition.size() - at));
    std::span<std::uint8_t> next(changed.data(), n), now(current.data(), n);
    if (auto ok = in->read_at(at, next); !ok) return ok;
    if (auto ok = disk.read_at(partition.offset() + at, now); !ok) return ok;
    if (!std::equal(next.begin(), next.end(), now.begin()))
      if (auto ok = disk.write_at(partition.offset() + at, next); !ok) return ok;
  }
  in->close();
  ::unlink(copy.c_str());
  return {};
}

}  // namespace fde::image
