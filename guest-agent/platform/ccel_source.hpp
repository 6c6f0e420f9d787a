// Reads the CCEL ACPI table and the event log area from sysfs (docs/virtcca-platform.md d.1).
// Both exist only on a UEFI/grub boot; direct boot has neither, which is not an error.
#pragma once

#include <optional>
#include <string>

#include "guest-agent/platform/platform.hpp"

namespace fde::agent {

struct CcelSource {
  std::string table_path = "/sys/firmware/acpi/tables/CCEL";
  std::string log_path = "/sys/firmware/acpi/tables/data/CCEL";

  // nullopt when the table is absent; an error when it is present but unusable (the table
  // fails its checks, or the log is missing or too large).
  Result<std::optional<BootEventLog>> read() const;
};

}  // namespace fde::agent
