// The virtCCA platform as the agent sees it: a token for a challenge, the device certificate
// and the boot event log. TsiPlatform talks to /dev/tsi; SimPlatform (FDE_WITH_SIM builds
// only) issues simulated tokens. Everything above this interface is the same for both.
#pragma once

#include <optional>
#include <string_view>

#include "common/util/bytes.hpp"
#include "common/util/error.hpp"

namespace fde::agent {

// The CCEL table and log area (docs/virtcca-platform.md d.1), sent to the verifier when the
// firmware provides them (grub/UEFI boot); absent on direct boot.
struct BootEventLog {
  Bytes ccel_table;
  Bytes event_log;
};

class Platform {
 public:
  virtual ~Platform() = default;
  // "tsi" or "sim", for status lines.
  virtual std::string_view name() const = 0;
  // A complete attestation token for exactly 64 bytes of challenge; a partial token from the
  // device is an error here, never passed on (docs/virtcca-platform.md a.1 item 5).
  virtual Result<Bytes> attestation_token(ByteView challenge) = 0;
  // The device certificate as DER (the protocol's device_cert), converted from PEM if the
  // firmware serves PEM.
  virtual Result<Bytes> device_certificate() = 0;
  // The event log, if this boot has one. An error means it exists but could not be read.
  virtual Result<std::optional<BootEventLog>> boot_event_log() = 0;
};

}  // namespace fde::agent
