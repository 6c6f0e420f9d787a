// The fde-image pipeline: build (encrypt a CVM image and own its boot configuration),
// inspect and measure.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/reference/reference_values.hpp"
#include "common/util/secret_bytes.hpp"
#include "image-builder/assembly/progress.hpp"
#include "image-builder/disk/qemu_img.hpp"

namespace fde::image {

// The `platform` the generated agent.conf names (docs/fde-agent.md).
enum class AgentPlatform {
  tsi,  // the virtCCA device (the agent's default: no line written)
  sim,  // the simulated platform, for tests and demos under QEMU (agents built with FDE_WITH_SIM)
};

struct BuildOptions {
  std::string input;
  std::optional<ImageFormat> input_format;  // nullopt: qcow2, checked by its magic
  std::string output;
  ImageFormat output_format = ImageFormat::qcow2;
  std::string image_id;
  std::vector<std::string> verifiers;  // https URLs
  std::string verifier_ca;             // PEM file
  std::optional<std::string> agent;    // agent binary to put into the initramfs
  bool without_agent = false;          // --no-agent: the base initramfs already has the agent
  std::optional<std::string> agent_config;       // ready-made agent.conf instead of ours
  std::optional<AgentPlatform> agent_platform;   // for the generated agent.conf; nullopt: tsi
  std::optional<std::string> initramfs_overlay;  // directory tree copied into the initramfs
  std::optional<std::string> recovery_passphrase_file;
  std::vector<Bytes> firmware_rims;
  std::vector<Bytes> grub_efi_digests;
  std::optional<std::string> reference_in;  // image_reference_measurement.json
  std::optional<std::string> kernel_cmdline;    // kernel arguments, instead of grub.cfg's
  std::optional<std::string> kernel_version;    // the kernel grub.cfg boots; default: the newest
  std::optional<std::uint32_t> root_partition;  // partition number (GPT entry or MBR slot)
  std::uint32_t sector_size = 4096;
  std::string bundle_path;     // default: OUTPUT.enrollment.json
  std::string reference_path;  // default: OUTPUT.reference.json
  std::optional<std::string> work_dir;  // default: the output's directory
};

struct BuildReport {
  std::string luks_uuid;
  std::string filesystem_uuid;
  std::uint32_t root_partition = 0;
  std::uint64_t encrypted_bytes = 0;
  std::uint64_t filesystem_bytes = 0;
  std::vector<std::string> initramfs_changed;
  std::string kernel_version;                 // the kernel the written grub.cfg boots
  std::vector<std::string> grub_cfgs_written; // "partition N: /grub/grub.cfg"
  std::vector<std::string> warnings;
};

// On failure nothing is left at options.output, bundle_path or reference_path.
Result<BuildReport> build_image(const BuildOptions& options, Progress& progress);

// Human-readable summary: partition table, LUKS2 header, what our initramfs archive holds.
Result<std::string> inspect_image(const std::string& path, std::optional<ImageFormat> format,
                                  const std::optional<std::string>& work_dir);

struct MeasureRequest {
  std::string image;
  std::optional<ImageFormat> format;
  std::optional<std::string> work_dir;
  std::string image_id;
  std::vector<Bytes> firmware_rims;
  std::vector<Bytes> grub_efi_digests;
  std::optional<std::string> reference_in;
};
// The reference values of an image fde-image build wrote (its straight-line grub.cfg).
Result<reference::ReferenceValues> measure_image(const MeasureRequest& request);

}  // namespace fde::image
