// qcow2 <-> raw through qemu-img (package qemu-utils), by descriptor.
#include "image-builder/disk/qemu_img.hpp"

#include <array>
#include <cstdint>
#include <cstring>

#include "image-builder/disk/subprocess.hpp"

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

Result<void> convert_image(const RawFile& input, ImageFormat input_format, RawFile& output,
                           ImageFormat output_format) {
  // The descriptor's name has no ':' and starts with '/', so it is a plain file for qemu
  // whatever the image's own name is; "file" as the protocol driver says so once more.
  const std::string source = std::string("json:{\"driver\":\"") + std::string(image_format_name(input_format)) +
                             "\"" + (input_format == ImageFormat::qcow2 ? ",\"backing\":null" : "") +
                             ",\"file\":{\"driver\":\"file\",\"filename\":\"" + input.fd_path() + "\"}}";
  const std::array<int, 2> fds{input.fd(), output.fd()};
  auto result = run_process({"qemu-img", "convert", "-q", "-O", std::string(image_format_name(output_format)), "-S",
                             "4k", source, output.fd_path()},
                            fds);
  if (!result) return fail_with_context("qemu-img", result.error());
  if (result->exit_code != 0) {
    std::string message = result->output;
    while (!message.empty() && (message.back() == '\n' || message.back() == ' ')) message.pop_back();
    return fail(Errc::io, "qemu-img convert " + input.path() + " -> " + output.path() + " failed: " + message);
  }
  return output.sync();
}

}  // namespace fde::image
