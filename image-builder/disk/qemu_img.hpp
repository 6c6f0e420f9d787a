// Disk image formats: qcow2 is read and written through `qemu-img convert` (user space, no
// root, no nbd). A native qcow2 reader/writer is future work (docs/fde-image.md).
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

// qemu-img convert -S 4k (zero runs of 4 KiB stay holes / unallocated clusters) from one open
// file to another that fde-image created. qemu-img never sees a file name: it gets the two
// descriptors as /proc/self/fd/N, the input through a json: description that fixes the
// format and the "file" protocol, and a qcow2 input with "backing": null. A qcow2 input must
// have passed check_self_contained (qcow2_header.hpp): nothing here stops an external data
// file. The output is fsynced.
Result<void> convert_image(const RawFile& input, ImageFormat input_format, RawFile& output,
                           ImageFormat output_format);

}  // namespace fde::image
