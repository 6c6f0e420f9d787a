// qcow2 <-> raw through qemu-img (package qemu-utils).
#include "image-builder/disk/qemu_img.hpp"

#include <array>
#include <cstdint>
#include <cstring>
#include <fstream>

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

Result<ImageFormat> detect_image_format(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return fail(Errc::not_found, "cannot open " + path);
  std::array<char, 4> magic{};
  in.read(magic.data(), 4);
  if (in.gcount() == 4 && std::memcmp(magic.data(), "QFI\xfb", 4) == 0) return ImageFormat::qcow2;
  return ImageFormat::raw;
}

Result<void> convert_image(const std::string& input, ImageFormat input_format, const std::string& output,
                           ImageFormat output_format) {
  auto result = run_process({"qemu-img", "convert", "-q", "-f", std::string(image_format_name(input_format)),
                             "-O", std::string(image_format_name(output_format)), "-S", "4k", input, output});
  if (!result) return fail_with_context("qemu-img", result.error());
  if (result->exit_code != 0) {
    std::string message = result->output;
    while (!message.empty() && (message.back() == '\n' || message.back() == ' ')) message.pop_back();
    return fail(Errc::io, "qemu-img convert " + input + " -> " + output + " failed: " + message);
  }
  return {};
}

}  // namespace fde::image
