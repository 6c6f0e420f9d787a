// The file handling build, rebind, measure and inspect share: a private work directory, the
// hardened opening of an input image (a qcow2 one checked for backing and data files, then
// read through Qcow2Reader), and writing whole files into a FAT partition with mtools.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "common/util/bytes.hpp"
#include "image-builder/disk/disk_io.hpp"
#include "image-builder/disk/gpt.hpp"
#include "image-builder/disk/qemu_img.hpp"
#include "image-builder/disk/raw_file.hpp"

namespace fde::image {

// A private directory for intermediate files, removed with everything in it on every path.
class WorkDir {
 public:
  static Result<WorkDir> create(const std::string& parent);
  WorkDir() = default;
  WorkDir(WorkDir&& other) noexcept : path_(std::move(other.path_)) { other.path_.clear(); }
  WorkDir(const WorkDir&) = delete;
  WorkDir& operator=(const WorkDir&) = delete;
  ~WorkDir();
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// "dir/x.qcow2" -> "dir"; "x.qcow2" -> ".".
std::string directory_of(const std::string& path);
// Whether anything (a dangling symlink included) has this name.
bool path_exists(const std::string& path);

// The image as given, opened once and read as the guest sees it: a qcow2 one through
// Qcow2Reader (self-contained images only: check_self_contained), a raw one as it is.
// `require_qcow2`: without an explicit `format`, an image without the qcow2 magic is refused.
using Disk = std::shared_ptr<const DiskReader>;
Result<Disk> open_disk(const std::string& image, std::optional<ImageFormat> format, bool require_qcow2);
// The same for a file already open (`name` is for messages).
Result<Disk> open_disk(RawFile file, const std::string& name, std::optional<ImageFormat> format, bool require_qcow2);
// The format open_disk read `disk` in.
ImageFormat disk_format(const DiskReader& disk);

// A file name fde-image hands to mtools: plain characters only, so that nothing in a
// hostile image's directory names is read as an mtools wildcard or option.
Result<void> check_mtools_path(const std::string& path);

// Writes files (whole, replacing them) into the FAT filesystem of one partition of `disk`
// with mtools. mtools works on a copy of just that partition, which is then copied back:
// whatever the filesystem's own fields say, nothing outside the partition changes.
Result<void> write_fat_files(RawFile& disk, const GptPartition& partition, const WorkDir& work,
                             const std::vector<std::pair<std::string, ByteView>>& files);

}  // namespace fde::image
