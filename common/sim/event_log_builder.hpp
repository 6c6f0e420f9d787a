// Builds CCEL event logs as virtCCA's UEFI firmware and grub write them (TCG2 crypto-agile,
// docs/virtcca-platform.md d.1-d.3), and computes the REMs the log replays to, so a simulated
// token can carry them.
#pragma once

#include <array>
#include <optional>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/crypto/hash.hpp"
#include "common/eventlog/event_log.hpp"
#include "common/util/bytes.hpp"

namespace fde::sim {

// The digests of one measured object, one per hash bank (an Authenticode hash or the hash of
// a decompressed kernel cannot be recomputed from the bytes at hand, so they are given).
struct Measurement {
  std::vector<std::pair<crypto::HashAlg, Bytes>> digests;

  static Measurement of_digest(crypto::HashAlg alg, Bytes digest);
  static Measurement of_content(ByteView content, std::span<const crypto::HashAlg> algs);
  Measurement& and_digest(crypto::HashAlg alg, Bytes digest);
  const Bytes* digest_for(crypto::HashAlg alg) const;
};

// Defaults: the log area a TDX-style firmware reserves; CCEL table values for the simulator.
inline constexpr std::size_t default_log_area_size = 64 * 1024;
inline constexpr std::uint64_t default_log_area_address = 0x0000'0000'7fe0'0000;
// The CC type virtCCA puts in CCEL has not been seen (section d.1); 3 is assumed for Arm CCA
// and verifiers do not enforce it.
inline constexpr std::uint8_t simulated_cc_type = 3;

// The strings grub prefixes to measured text (grub-core/commands/tpm.c): the digest covers
// the text after the prefix, without the NUL; the event data is prefix + text + NUL.
inline constexpr std::string_view grub_command_prefix = "grub_cmd: ";
inline constexpr std::string_view grub_kernel_cmdline_prefix = "kernel_cmdline: ";

class EventLogBuilder {
 public:
  // The banks listed in the Spec ID event, each record carries a digest for every bank.
  // virtCCA uses SHA-256 (0x000B); a SHA-512 CVM would add or use 0x000D.
  explicit EventLogBuilder(std::vector<crypto::HashAlg> banks = {crypto::HashAlg::sha256});

  const std::vector<crypto::HashAlg>& banks() const { return banks_; }
  // The digests of `content` in every bank of this log.
  Measurement measure(ByteView content) const;

  // One TCG_PCR_EVENT2 record. MR 0..4; MR m (1..4) extends REM[m-1] unless the type is
  // EV_NO_ACTION. Fails if a bank's digest is missing or has the wrong size.
  Result<void> add_event(std::uint32_t mr_index, std::uint32_t event_type, ByteView data,
                         const Measurement& measurement);

  // UEFI: an EV_SEPARATOR (data 00000000, digest of it) into MR1 (PCR 1/7 -> MR1).
  void add_efi_separator();
  // UEFI: an EV_EFI_ACTION string into MR2 (PCR 4/5 -> MR2); data and digest are the string
  // without NUL ("Calling EFI Application from Boot Option").
  void add_efi_action(std::string_view action);
  // UEFI loading grub: EV_EFI_BOOT_SERVICES_APPLICATION into MR2 (PCR 4 -> MR2); the data is
  // a UEFI_IMAGE_LOAD_EVENT with a file-path device path, the digest grub's Authenticode hash.
  Result<void> add_efi_boot_application(const Measurement& authenticode,
                                        std::string_view efi_path = "\\EFI\\BOOT\\BOOTAA64.EFI");
  // grub loading a file (grub.cfg, kernel, initramfs): EV_IPL into MR3 (PCR 9 -> MR3),
  // data = path + NUL, digest = the file's contents (a kernel: its decompressed contents).
  Result<void> add_grub_file(std::string_view path, const Measurement& contents);
  // grub running a command: EV_IPL into MR3 (PCR 8 -> MR3), data "grub_cmd: <command>\0".
  void add_grub_command(std::string_view command);
  // grub's kernel command line: EV_IPL into MR3, data "kernel_cmdline: <cmdline>\0". grub
  // measures the kernel path followed by the arguments ("/vmlinuz-6.6.0 root=... ro").
  void add_kernel_cmdline(std::string_view cmdline);
  // The firmware's LoadImage of a kernel grub loaded into memory (arm64):
  // EV_EFI_BOOT_SERVICES_APPLICATION into MR2 with a MemoryMapped device path.
  Result<void> add_loaded_kernel(const Measurement& authenticode, std::uint64_t size);
  // The Linux EFI stub's load options: EV_EVENT_TAG (LOADED_IMAGE::LoadOptions) into MR3,
  // digest of `options` in UTF-16LE without NUL ("BOOT_IMAGE=/vmlinuz-6.6.0 root=...").
  void add_stub_load_options(std::string_view options);

  // REM[0..3] after the records so far, for one of the banks.
  Result<std::array<Bytes, 4>> rems(crypto::HashAlg alg) const;
  // The Spec ID event followed by every record.
  Bytes log() const;
  // The log area as /sys/firmware/acpi/tables/data/CCEL shows it: the log, then 0xFF fill.
  Result<Bytes> log_area(std::size_t area_size = default_log_area_size) const;

 private:
  Bytes spec_id_event() const;
  std::vector<crypto::HashAlg> banks_;
  Bytes records_;
  std::vector<std::array<Bytes, 4>> rems_;  // per bank
};

// The 56-byte ACPI CCEL table pointing at the log area.
Bytes build_ccel(std::uint64_t log_area_size = default_log_area_size,
                 std::uint64_t log_area_address = default_log_area_address);

// Who logs the kernel as an EFI application (GrubBoot::kernel_efi).
enum class KernelEfiMeasurer {
  // x86_64 under Secure Boot: shim verifying it for grub's `linux`, right after the kernel
  // file event, with an empty device path.
  shim,
  // arm64 grub 2.06: the firmware's LoadImage when grub runs `boot`, after every grub event,
  // with a memory-mapped device path; the kernel's EFI stub then measures the load options
  // it was given (EV_EVENT_TAG into PCR 9 -> MR3, digest over UTF-16LE "BOOT_IMAGE=" + the
  // measured kernel command line). Seen with AAVMF + an arm64-efi grub with the tpm module.
  load_image,
};

// One grub boot as virtCCA's UEFI + grub measure it (the order grub-core does it in).
struct GrubBoot {
  Measurement grub_authenticode;  // BOOTAA64.EFI's Authenticode hash (MR2)
  std::string grub_cfg_path = "(hd0,msdos1)/efi/EFI/openEuler/grub.cfg";
  Measurement grub_cfg;
  std::vector<std::string> grub_commands;  // commands run before "linux" (set, insmod, ...)
  std::string kernel_path = "/vmlinuz-6.6.0";
  Measurement kernel;  // of the decompressed kernel image
  std::string kernel_arguments = "root=/dev/mapper/encroot ro";
  std::string initramfs_path = "/initramfs-6.6.0.img";
  Measurement initramfs;  // empty digests: no initrd command and no initramfs event
  // The whole grub.cfg as straight-line commands ("linux <path> <args>" and "initrd <path>"
  // included), as fde-image writes it. When set, grub_commands, kernel_arguments and the two
  // paths are not used: the commands are measured in order, and the `linux` and `initrd`
  // commands are followed by their file events (paths from the commands).
  std::optional<std::vector<std::string>> script;
  // The kernel's Authenticode digest: when set, the kernel is also logged as an EFI
  // application, where `kernel_efi_by` says.
  std::optional<Measurement> kernel_efi;
  KernelEfiMeasurer kernel_efi_by = KernelEfiMeasurer::shim;
};

// The measured kernel command line of a GrubBoot: "<kernel_path> <kernel_arguments>".
std::string grub_kernel_cmdline(const GrubBoot& boot);

// The grub commands build_grub_boot_log() measures after grub.cfg, in order: what a grub set's
// `grub_commands` pins for this boot.
std::vector<std::string> grub_boot_commands(const GrubBoot& boot);

// Records, in order: MR1 separator, MR2 "Calling EFI Application from Boot Option" and grub's
// boot application, MR1 separator (ReadyToBoot), then in MR3 grub.cfg, each grub command,
// "grub_cmd: linux <path> <args>", the kernel file, (the kernel as an EFI application in MR2
// when shim measures it,) the kernel_cmdline, "grub_cmd: initrd <path>" and the initramfs
// file. With a script, its commands in order, each `linux` and `initrd` followed by the same
// file events. With kernel_efi_by = load_image the kernel's EFI application (MR2) and the
// stub's load options (MR3) come last.
Result<EventLogBuilder> build_grub_boot_log(const GrubBoot& boot,
                                            std::vector<crypto::HashAlg> banks = {crypto::HashAlg::sha256});

}  // namespace fde::sim
