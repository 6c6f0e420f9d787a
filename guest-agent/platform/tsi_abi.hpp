// The TSI device ABI of the openEuler virtCCA guest kernels (docs/virtcca-platform.md a.1):
// /dev/tsi and its three ioctls. The layouts and request numbers are checked at compile time
// against the values the specification lists, so a layout slip cannot reach a real device.
#pragma once

#include <linux/ioctl.h>

#include <cstddef>
#include <cstdint>

namespace fde::agent::tsi {

inline constexpr const char* device_path = "/dev/tsi";

// Section a.1 constants.
inline constexpr std::size_t challenge_size = 64;             // CHALLENGE_SIZE
inline constexpr std::size_t max_token_size = 2 * 4096;       // MAX_TOKEN_GRANULE_COUNT * GRANULE_SIZE
inline constexpr std::size_t max_device_cert_size = 4096;     // MAX_DEV_CERT_SIZE
inline constexpr unsigned char ioctl_magic = 'T';

struct Version {
  int major;
  int minor;
};

struct AttestationRequest {
  std::uint8_t challenge[challenge_size];  // all 64 bytes are copied in; zero-padded by us
  std::uint8_t token[max_token_size];
  std::uint64_t token_size;
};

struct DeviceCertificate {
  std::uint64_t size;
  std::uint8_t value[max_device_cert_size];
};

static_assert(sizeof(Version) == 8);
static_assert(sizeof(AttestationRequest) == 8264);
static_assert(offsetof(AttestationRequest, token_size) == 8256);
static_assert(sizeof(DeviceCertificate) == 4104);

// The kernel's _IOR/_IOWR macros expand to old-style casts; -Wold-style-cast is silenced for
// exactly these three definitions.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wold-style-cast"
inline constexpr unsigned long get_version_request = _IOR(ioctl_magic, 0, Version);
inline constexpr unsigned long get_attestation_token_request = _IOWR(ioctl_magic, 1, AttestationRequest);
inline constexpr unsigned long get_device_cert_request = _IOR(ioctl_magic, 2, DeviceCertificate);
#pragma GCC diagnostic pop

// The request values of the table in section a.1 (computed there with gcc; the same on arm64).
static_assert(get_version_request == 0x80085400UL);
static_assert(get_attestation_token_request == 0xE0485401UL);
static_assert(get_device_cert_request == 0x90085402UL);

// Section a.2: the pre-release ABI's token request (120-byte cvm_attestation_cmd). Only named
// so that the error for such a kernel can say what it is; never issued.
inline constexpr unsigned long legacy_attestation_token_request = 0xC0785401UL;

}  // namespace fde::agent::tsi
