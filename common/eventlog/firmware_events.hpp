// Extraction of the boot-chain measurements that reference values pin (section d.4).
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/eventlog/event_log.hpp"

namespace fde::eventlog {

// Section d.4 / openEuler grub (upstream tpm module): strings are measured as EV_IPL with
// event data "<prefix><text>\0"; the digest is of the text. Loaded files are EV_IPL whose
// data is the file path and whose digest is of the file contents.
constexpr std::string_view grub_command_prefix = "grub_cmd: ";
constexpr std::string_view kernel_cmdline_prefix = "kernel_cmdline: ";
constexpr std::string_view module_cmdline_prefix = "module_cmdline: ";

struct MeasuredString {
  // The event data as text, trailing NUL removed; for grub_cmd / kernel_cmdline events the
  // prefix is removed as well, so `text` is the command or command line itself.
  std::string text;
  Bytes digest;
};

struct FirmwareEvents {
  std::vector<Bytes> boot_applications;       // EV_EFI_BOOT_SERVICES_APPLICATION digests (grub)
  std::optional<MeasuredString> grub_cfg;     // first EV_IPL naming grub.cfg that is not a grub_cmd
  std::optional<MeasuredString> kernel;       // first EV_IPL with "/vmlinuz-", not a grub_cmd
  std::optional<MeasuredString> initramfs;    // first EV_IPL with "/initramfs-" or "/initrd", not a grub_cmd
  std::optional<MeasuredString> kernel_cmdline;  // EV_IPL "kernel_cmdline: ..."
  std::vector<MeasuredString> grub_commands;  // EV_IPL "grub_cmd: ..."

  // Every event of each kind in log order (the optionals above hold the first one), so a
  // second kernel, initramfs or command line loaded after the expected one cannot hide
  // behind it (the reference sample looks at the first only, e.9).
  std::vector<MeasuredString> grub_cfgs;
  std::vector<MeasuredString> kernels;
  std::vector<MeasuredString> initramfses;
  std::vector<MeasuredString> kernel_cmdlines;
};

// Whether `digest` is the measurement of a grub string event with text `text`. grub
// measures the text without its prefix; a log whose digest covers "<prefix><text>" is
// accepted too, as both forms bind the same text (the digest is what replay authenticates,
// the event data is not).
bool string_digest_matches(crypto::HashAlg alg, std::string_view prefix, std::string_view text,
                           ByteView digest);

// Uses the digests of `alg` only, and only records that replay extends (MR 1..4, not
// EV_NO_ACTION): anything else is not bound to the token's REMs and could be forged.
// Fails with `unsupported` if the log has no digests for `alg`.
Result<FirmwareEvents> extract_firmware_events(const EventLog& log, crypto::HashAlg alg);

}  // namespace fde::eventlog
