// Disk image formats. qcow2 is read and written by fde-image itself (qcow2_image.hpp); the
// file keeps its name from the days qemu-img did that.
#pragma once

#include <string>

#include "common/util/error.hpp"
#include "image-builder/disk/raw_file.hpp"

namespace fde::image {

enum class ImageFormat { raw, qcow2 };

std::string_view image_format_name(ImageFormat format);
Result<ImageFormat> image_format_from_name(std::string_view name);

// Looks at the file's magic: "QFI\xfb" is qcow2; anything else is reported as raw.
Result<ImageFormat> detect_image_format(const RawFile& file);

}  // namespace fde::image
