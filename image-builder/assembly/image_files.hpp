// The file handling build, rebind, measure and inspect share: a private work directory, the
// hardened opening of an input image (a qcow2 one checked for backing and data files, then
// converted to raw by descriptor), and writing whole files into a FAT partition with mtools.
#pragma once

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "common/util/bytes.hpp"
#include "image-builder/assembly/progress.hpp"
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

// The image as given, opened once; a qcow2 one has passed check_self_contained.
struct OpenedImage {
  RawFile file;
  ImageFormat format = ImageFormat::raw;
};
// `require_qcow2`: without an explicit `format`, an image without the qcow2 magic is refused.
Result<OpenedImage> open_image(const std::string& image, std::optional<ImageFormat> format, bool require_qcow2);

// The raw disk everything reads: the image itself, or its conversion in the work directory
// (then a new file, open read-write). `path` names the open file by descriptor
// (RawFile::fd_path), so the libraries that open by name read the very file checked here.
struct RawInput {
  RawFile file;
  std::string path;
};
Result<RawInput> to_raw(OpenedImage image, const std::string& name, const WorkDir& work, Progress& progress);
Result<RawInput> open_raw(const std::string& image, std::optional<ImageFormat> format, const WorkDir& work,
                          Progress& progress);

// A file name fde-image hands to mtools: plain characters only, so that nothing in a
// hostile image's directory names is read as an mtools wildcard or option.
Result<void> check_mtools_path(const std::string& path);

// Writes files (whole, replacing them) into the FAT filesystem of one partition of `disk`
// with mtools. mtools works on a copy of just that partition, which is then copied back:
// whatever the filesystem's own fields say, nothing outside the partition changes.
Result<void> write_fat_files(RawFile& disk, const GptPartition& partition, const WorkDir& work,
                             const std::vector<std::pair<std::string, ByteView>>& files);

}  // namespace fde::image
