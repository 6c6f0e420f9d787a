// /dev/tsi: ioctls, ABI detection and response validation (docs/virtcca-platform.md a.1, a.2).
#include "guest-agent/platform/tsi_platform.hpp"

#include <fcntl.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string_view>

#include "common/crypto/certificate.hpp"
#include "common/token/token_framing.hpp"

namespace fde::agent {

namespace {

class TsiCharDevice final : public TsiDevice {
 public:
  explicit TsiCharDevice(int fd) : fd_(fd) {}
  ~TsiCharDevice() override { ::close(fd_); }
  TsiCharDevice(const TsiCharDevice&) = delete;
  TsiCharDevice& operator=(const TsiCharDevice&) = delete;

  int get_version(tsi::Version& version) override { return call(tsi::get_version_request, &version); }
  int get_attestation_token(tsi::AttestationRequest& request) override {
    return call(tsi::get_attestation_token_request, &request);
  }
  int get_device_cert(tsi::DeviceCertificate& certificate) override {
    return call(tsi::get_device_cert_request, &certificate);
  }

 private:
  int call(unsigned long request, void* argument) {
    for (;;) {
      if (::ioctl(fd_, request, argument) == 0) return 0;
      if (errno != EINTR) return errno;
    }
  }
  int fd_;
};

constexpr std::string_view old_abi_message =
    "unsupported kernel TSI ABI (pre-release kernel?): /dev/tsi does not know the current ioctls "
    "(docs/virtcca-platform.md a.2); boot an openEuler virtCCA kernel with the released TSI driver";

tl::unexpected<Error> ioctl_failure(std::string_view what, int error) {
  if (error == ENOTTY) return fail(Errc::unsupported, std::string(old_abi_message));
  return fail(Errc::io, "TSI " + std::string(what) + " failed: " + std::strerror(error));
}

bool looks_like_pem(ByteView data) {
  constexpr std::string_view marker = "-----BEGIN";
  std::string_view text = as_text(data);
  std::size_t start = text.find_first_not_of(" \t\r\n");
  return start != std::string_view::npos && text.substr(start, marker.size()) == marker;
}

}  // namespace

Result<std::unique_ptr<TsiDevice>> open_tsi_device(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) {
    int error = errno;
    if (error == ENOENT)
      return fail(Errc::not_found, path + " does not exist: not a virtCCA CVM, or the TSI driver is not loaded");
    return fail(Errc::io, path + ": " + std::strerror(error));
  }
  return std::unique_ptr<TsiDevice>(new TsiCharDevice(fd));
}

Result<std::unique_ptr<TsiPlatform>> TsiPlatform::create(std::unique_ptr<TsiDevice> device, CcelSource ccel) {
  tsi::Version version{};
  if (int error = device->get_version(version); error != 0) return ioctl_failure("version query", error);
  return std::unique_ptr<TsiPlatform>(new TsiPlatform(std::move(device), std::move(ccel), version));
}

Result<Bytes> token_from_response(const tsi::AttestationRequest& response) {
  if (response.token_size == 0) return fail(Errc::malformed, "TSI returned an empty token");
  if (response.token_size > tsi::max_token_size)
    return fail(Errc::malformed, "TSI reported a token of " + std::to_string(response.token_size) +
                                     " bytes, more than the 8192 the ABI allows");
  Bytes token(response.token, response.token + response.token_size);
  // Section a.1 item 5: the driver returns success with whatever it had when a TSI call
  // failed midway, so success of the ioctl proves nothing about the token.
  if (auto framing = token::check_token_framing(token); !framing)
    return fail(Errc::malformed, "TSI returned an incomplete or malformed token: " + framing.error().message);
  return token;
}

Result<Bytes> certificate_from_response(const tsi::DeviceCertificate& response) {
  if (response.size == 0) return fail(Errc::malformed, "TSI returned an empty device certificate");
  if (response.size > tsi::max_device_cert_size)
    return fail(Errc::malformed, "TSI reported a device certificate of " + std::to_string(response.size) +
                                     " bytes, more than the 4096 the ABI allows");
  return device_certificate_to_der(ByteView(response.value, static_cast<std::size_t>(response.size)));
}

Result<Bytes> device_certificate_to_der(ByteView blob) {
  // DER on legacy (RSA) firmware, PEM on newer firmware (a.1); the protocol carries DER.
  auto certificate = looks_like_pem(blob) ? crypto::Certificate::from_pem_or_der(blob)
                                          : crypto::Certificate::from_der(blob);
  if (!certificate) return fail_with_context("device certificate", certificate.error());
  return certificate->der();
}

Result<Bytes> TsiPlatform::attestation_token(ByteView challenge) {
  if (challenge.size() != tsi::challenge_size)
    return fail(Errc::invalid_argument, "the TSI challenge must be exactly 64 bytes");
  // 8 KiB: on the heap, zeroed (the driver copies all 64 challenge bytes in).
  auto request = std::make_unique<tsi::AttestationRequest>();
  std::memcpy(request->challenge, challenge.data(), challenge.size());
  if (int error = device_->get_attestation_token(*request); error != 0) return ioctl_failure("token request", error);
  return token_from_response(*request);
}

Result<Bytes> TsiPlatform::device_certificate() {
  auto response = std::make_unique<tsi::DeviceCertificate>();
  if (int error = device_->get_device_cert(*response); error != 0)
    return ioctl_failure("device certificate request", error);
  return certificate_from_response(*response);
}

Result<std::optional<BootEventLog>> TsiPlatform::boot_event_log() { return ccel_.read(); }

}  // namespace fde::agent
