// The real virtCCA platform: /dev/tsi (docs/virtcca-platform.md a.1), with the checks the
// driver does not do for us: the ABI generation, the token size and the token's framing
// (a failing TSI call can still return success with a partial token, a.1 item 5).
#pragma once

#include <memory>
#include <string>

#include "guest-agent/platform/ccel_source.hpp"
#include "guest-agent/platform/platform.hpp"
#include "guest-agent/platform/tsi_abi.hpp"

namespace fde::agent {

// The ioctl seam: each call returns 0 or an errno value. The real one issues the ioctls;
// tests pass canned responses to check the validation above it.
class TsiDevice {
 public:
  virtual ~TsiDevice() = default;
  virtual int get_version(tsi::Version& version) = 0;
  virtual int get_attestation_token(tsi::AttestationRequest& request) = 0;
  virtual int get_device_cert(tsi::DeviceCertificate& certificate) = 0;
};

// Opens the character device (O_RDWR | O_CLOEXEC, as the SDK does). A missing node is
// Errc::not_found: not a virtCCA CVM, or the TSI driver is not loaded.
Result<std::unique_ptr<TsiDevice>> open_tsi_device(const std::string& path = tsi::device_path);

class TsiPlatform final : public Platform {
 public:
  // Asks the device for its ABI version first: a kernel that answers ENOTTY speaks the
  // pre-release ABI of section a.2 (or none), which we detect and refuse.
  static Result<std::unique_ptr<TsiPlatform>> create(std::unique_ptr<TsiDevice> device, CcelSource ccel);

  std::string_view name() const override { return "tsi"; }
  const tsi::Version& version() const { return version_; }
  Result<Bytes> attestation_token(ByteView challenge) override;
  Result<Bytes> device_certificate() override;
  Result<std::optional<BootEventLog>> boot_event_log() override;

 private:
  TsiPlatform(std::unique_ptr<TsiDevice> device, CcelSource ccel, tsi::Version version)
      : device_(std::move(device)), ccel_(std::move(ccel)), version_(version) {}
  std::unique_ptr<TsiDevice> device_;
  CcelSource ccel_;
  tsi::Version version_;
};

// The response checks on their own (used by TsiPlatform, tested directly): a token size
// within 1..8192 and a complete token; a certificate size within 1..4096 that parses as one
// DER or PEM certificate, returned as DER.
Result<Bytes> token_from_response(const tsi::AttestationRequest& response);
Result<Bytes> certificate_from_response(const tsi::DeviceCertificate& response);
// A device certificate blob as the firmware serves it (DER or PEM) -> DER.
Result<Bytes> device_certificate_to_der(ByteView blob);

}  // namespace fde::agent
