// TCG PC Client event types (TCG PC Client Platform Firmware Profile, section 10.4.1) that
// UEFI firmware, shim, grub and the Linux EFI stub write, and their names for verdicts.
#pragma once

#include <cstdint>
#include <string>

namespace fde::eventlog {

constexpr std::uint32_t ev_post_code = 0x00000001;
constexpr std::uint32_t ev_event_tag = 0x00000006;
constexpr std::uint32_t ev_s_crtm_contents = 0x00000007;
constexpr std::uint32_t ev_s_crtm_version = 0x00000008;
constexpr std::uint32_t ev_platform_config_flags = 0x0000000A;
constexpr std::uint32_t ev_table_of_devices = 0x0000000B;
constexpr std::uint32_t ev_compact_hash = 0x0000000C;
constexpr std::uint32_t ev_nonhost_config = 0x00000010;
constexpr std::uint32_t ev_efi_variable_driver_config = 0x80000001;
constexpr std::uint32_t ev_efi_variable_boot = 0x80000002;
constexpr std::uint32_t ev_efi_boot_services_driver = 0x80000004;
constexpr std::uint32_t ev_efi_runtime_services_driver = 0x80000005;
constexpr std::uint32_t ev_efi_gpt_event = 0x80000006;
constexpr std::uint32_t ev_efi_action = 0x80000007;
constexpr std::uint32_t ev_efi_platform_firmware_blob = 0x80000008;
constexpr std::uint32_t ev_efi_handoff_tables = 0x80000009;
constexpr std::uint32_t ev_efi_platform_firmware_blob2 = 0x8000000A;
constexpr std::uint32_t ev_efi_handoff_tables2 = 0x8000000B;
constexpr std::uint32_t ev_efi_variable_boot2 = 0x8000000C;
constexpr std::uint32_t ev_efi_variable_authority = 0x800000E0;

// Linux EFI stub tagged events (EV_EVENT_TAG, drivers/firmware/efi/libstub): the command line
// the stub hands the kernel, and an initrd loaded through the LoadFile2 protocol.
constexpr std::uint32_t linux_tag_load_options = 0x8F3B22ED;
constexpr std::uint32_t linux_tag_initrd = 0x8F3B22EC;

// "EV_EFI_ACTION" for a known type, "event type 0x1234abcd" otherwise.
std::string event_type_name(std::uint32_t type);

}  // namespace fde::eventlog
