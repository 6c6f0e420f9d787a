// Disk image formats: qcow2 is read and written through `qemu-img convert` (user space, no
// root, no nbd). A native qcow2 reader/writer is future work (docs/fde-image.md).
#pragma once

#include <string>

#include "common/util/error.hpp"

namespace fde::image {

enum class ImageFormat { raw, qcow2 };

std::string_view image_format_name(ImageFormat format);
Result<ImageFormat> image_format_from_name(std::string_view name);

// Looks at the file's magic: "QFI\xfb" is qcow2; anything else is reported as raw.
Result<ImageFormat> detect_image_format(const std::string& path);

// qemu-img convert -f FROM -O TO -S 4k: zero runs of 4 KiB stay holes / unallocated clusters.
Result<void> convert_image(const std::string& input, ImageFormat input_format,
                           const std::string& output, ImageFormat output_format);

}  // namespace fde::image
