// fde-image rebind: points an image fde-image built at other verifiers (URLs, CA) by
// rewriting the agent configuration in the archive build appended to the initramfs. The
// LUKS2 header, the encrypted root and the keys stay as they are, so the enrollment (image
// id, disk key) stays valid; the initramfs digest changes, so new reference values come out.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "common/reference/reference_values.hpp"
#include "image-builder/assembly/progress.hpp"
#include "image-builder/disk/qemu_img.hpp"

namespace fde::image {

struct RebindOptions {
  std::string input;
  std::optional<ImageFormat> input_format;  // nullopt: qcow2, checked by its magic
  std::string output;                       // empty with in_place
  bool in_place = false;                    // replace `input` (atomically, once all succeeded)
  std::vector<std::string> verifiers;       // empty: keep the image's
  std::optional<std::string> verifier_ca;   // nullopt: keep the image's
  std::vector<Bytes> firmware_rims;
  std::vector<Bytes> grub_efi_digests;
  std::optional<std::string> reference_in;
  std::string reference_path;               // default: OUTPUT.reference.json
  std::optional<std::string> work_dir;
};

struct RebindReport {
  std::string image_id;   // from the image's agent.conf; the enrollment's
  std::string luks_uuid;  // likewise
  std::string initramfs;  // "/initrd.img-6.1.0 (partition 1)"
  std::vector<std::string> old_verifiers, new_verifiers;
  bool ca_replaced = false;
  std::string old_set;  // the reference set name the image measured as before
  std::string new_set;  // ... and now
  reference::ReferenceValues values;  // what reference_path holds
  std::vector<std::string> warnings;
};

// On failure nothing is left at options.output or reference_path, and an in-place input is
// untouched.
Result<RebindReport> rebind_image(const RebindOptions& options, Progress& progress);

}  // namespace fde::image
