// Names of the TCG event types a firmware + grub log carries.
#include "common/eventlog/event_types.hpp"

#include <cstdio>

#include "common/eventlog/event_log.hpp"

namespace fde::eventlog {

std::string event_type_name(std::uint32_t type) {
  switch (type) {
    case ev_post_code: return "EV_POST_CODE";
    case ev_no_action: return "EV_NO_ACTION";
    case ev_separator: return "EV_SEPARATOR";
    case ev_event_tag: return "EV_EVENT_TAG";
    case ev_s_crtm_contents: return "EV_S_CRTM_CONTENTS";
    case ev_s_crtm_version: return "EV_S_CRTM_VERSION";
    case ev_platform_config_flags: return "EV_PLATFORM_CONFIG_FLAGS";
    case ev_table_of_devices: return "EV_TABLE_OF_DEVICES";
    case ev_compact_hash: return "EV_COMPACT_HASH";
    case ev_ipl: return "EV_IPL";
    case ev_nonhost_config: return "EV_NONHOST_CONFIG";
    case ev_efi_variable_driver_config: return "EV_EFI_VARIABLE_DRIVER_CONFIG";
    case ev_efi_variable_boot: return "EV_EFI_VARIABLE_BOOT";
    case ev_efi_boot_services_application: return "EV_EFI_BOOT_SERVICES_APPLICATION";
    case ev_efi_boot_services_driver: return "EV_EFI_BOOT_SERVICES_DRIVER";
    case ev_efi_runtime_services_driver: return "EV_EFI_RUNTIME_SERVICES_DRIVER";
    case ev_efi_gpt_event: return "EV_EFI_GPT_EVENT";
    case ev_efi_action: return "EV_EFI_ACTION";
    case ev_efi_platform_firmware_blob: return "EV_EFI_PLATFORM_FIRMWARE_BLOB";
    case ev_efi_handoff_tables: return "EV_EFI_HANDOFF_TABLES";
    case ev_efi_platform_firmware_blob2: return "EV_EFI_PLATFORM_FIRMWARE_BLOB2";
    case ev_efi_handoff_tables2: return "EV_EFI_HANDOFF_TABLES2";
    case ev_efi_variable_boot2: return "EV_EFI_VARIABLE_BOOT2";
    case ev_efi_variable_authority: return "EV_EFI_VARIABLE_AUTHORITY";
    default: break;
  }
  char text[32];
  std::snprintf(text, sizeof text, "event type 0x%08x", type);
  return text;
}

}  // namespace fde::eventlog
