// Image format names and detection.
#include "image-builder/disk/qemu_img.hpp"

#include <array>
#include <cstdint>
#include <cstring>

namespace fde::image {

std::string_view image_format_name(ImageFormat format) {
  return format == ImageFormat::qcow2 ? "qcow2" : "raw";
}

Result<ImageFormat> image_format_from_name(std::string_view name) {
  if (name == "qcow2") return ImageFormat::qcow2;
  if (name == "raw") return ImageFormat::raw;
  return fail(Errc::invalid_argument, "unknown image format \"" + std::string(name) + "\" (qcow2 or raw)");
}

Result<ImageFormat> detect_image_format(const RawFile& file) {
  auto size = file.size();
  if (!size) return tl::unexpected(size.error());
  if (*size < 4) return ImageFormat::raw;
  std::array<std::uint8_t, 4> magic{};
  if (auto ok = file.read_at(0, magic); !ok) return tl::unexpected(ok.error());
  if (std::memcmp(magic.data(), "QFI\xfb", 4) == 0) return ImageFormat::qcow2;
  return ImageFormat::raw;
}

}  // namespace fde::image
