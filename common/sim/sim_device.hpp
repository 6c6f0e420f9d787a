// A simulated virtCCA device: a generated test CA, the device (AIK/CPAK) certificate and key,
// and the platform claims the device reports (docs/virtcca-platform.md b.3, b.7; docs/firmware-boot-test.md, "The simulated TMM").
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "common/crypto/certificate.hpp"
#include "common/crypto/keys.hpp"
#include "common/token/token.hpp"
#include "common/util/bytes.hpp"

namespace fde::sim {

// rsa: legacy firmware (RSA-4096 device key, certificate served as DER, the RAK is the device
// key). p521: newer firmware (EC P-521 device key, certificate served as PEM, platform tokens).
enum class DeviceType { rsa, p521 };
std::string_view device_type_name(DeviceType type);  // "rsa" / "p521"
std::optional<DeviceType> device_type_from_name(std::string_view name);

// A self-signed test root that stands in for Huawei's PKI. Several devices may share one CA,
// as real boards share Huawei's, so a verifier trusting it accepts all of them.
class SimCa {
 public:
  // RSA CAs use 2048-bit keys (like "Huawei IT Product CA"; fast to generate), EC CAs use
  // the device's curve.
  static Result<SimCa> create(crypto::KeyType key_type,
                              std::string common_name = "virtCCA FDE Simulator Root CA");

  const crypto::Certificate& certificate() const { return certificate_; }
  // A leaf shaped like the real AIK certificate: CN=<board serial>, not a CA, keyUsage
  // digitalSignature (the extensions themselves come from crypto::issue_certificate).
  Result<crypto::Certificate> issue_device_certificate(const crypto::PublicKey& device_key,
                                                       const std::string& board_serial) const;

 private:
  SimCa(crypto::PrivateKey key, crypto::Certificate certificate)
      : key_(std::move(key)), certificate_(std::move(certificate)) {}
  crypto::PrivateKey key_;
  crypto::Certificate certificate_;
};

struct DeviceOptions {
  DeviceType type = DeviceType::p521;
  // The device certificate's CN; empty picks "SIM" followed by 10 random hex digits (the
  // real one is a 13-character board serial such as "1023A7989138T").
  std::string board_serial;
  // P-521 devices: keep one RAK for every token instead of a fresh one per CVM. Ignored for
  // RSA devices, whose RAK is always the device key.
  bool persistent_rak = false;
};

// Files of a saved device directory.
inline constexpr std::string_view ca_file_name = "ca.pem";
inline constexpr std::string_view device_certificate_file_name = "device-cert.pem";
inline constexpr std::string_view device_key_file_name = "device-key.pem";  // 0600
inline constexpr std::string_view rak_key_file_name = "rak-key.pem";        // 0600, if persistent

class SimDevice {
 public:
  // Creates a device with its own new CA. RSA-4096 generation takes seconds: cache the
  // result with save()/load() or keep it in a static.
  static Result<SimDevice> create(const DeviceOptions& options);
  // Creates a device whose certificate is issued by an existing CA.
  static Result<SimDevice> create(const DeviceOptions& options, const SimCa& ca);
  // Loads a directory written by save(); checks that the key matches the certificate and
  // that the certificate chains to ca.pem.
  static Result<SimDevice> load(const std::string& directory);
  // The same from any store of named files (the agent reads QEMU fw_cfg entries this way).
  // `read` returns the file's bytes, or Errc::not_found for an absent file (only rak-key.pem
  // may be absent); `source` names the store in messages.
  using DeviceFileReader = std::function<Result<Bytes>(std::string_view name)>;
  static Result<SimDevice> load_from(const std::string& source, const DeviceFileReader& read);
  // Writes ca.pem, device-cert.pem, device-key.pem (0600) and rak-key.pem (0600, if the
  // device has a persistent RAK). Creates the directory (0700) if needed; overwrites files.
  Result<void> save(const std::string& directory) const;

  DeviceType type() const { return type_; }
  const std::string& board_serial() const { return board_serial_; }
  const crypto::Certificate& ca_certificate() const { return ca_certificate_; }
  const crypto::Certificate& device_certificate() const { return device_certificate_; }
  const crypto::PrivateKey& device_key() const { return device_key_; }
  const std::optional<crypto::PrivateKey>& persistent_rak() const { return persistent_rak_; }

  // The certificate as TMM_GET_DEVICE_CERT returns it (section a.1): DER on legacy (RSA)
  // firmware, PEM on the newer firmware that emits platform tokens.
  Bytes device_certificate_blob() const;

  // The platform claims this device reports (section b.3), with an empty challenge: the
  // issuer fills in the RAK binding. Deterministic per device key, so a platform reference
  // made once keeps matching: instance id = 0x01 || SHA-256(device SPKI), as Arm CCA derives
  // it from the CPAK; six sw components with fixed simulated measurements.
  token::PlatformClaims platform_claims() const;

 private:
  SimDevice(DeviceType type, std::string board_serial, crypto::Certificate ca_certificate,
            crypto::Certificate device_certificate, crypto::PrivateKey device_key,
            std::optional<crypto::PrivateKey> persistent_rak)
      : type_(type),
        board_serial_(std::move(board_serial)),
        ca_certificate_(std::move(ca_certificate)),
        device_certificate_(std::move(device_certificate)),
        device_key_(std::move(device_key)),
        persistent_rak_(std::move(persistent_rak)) {}

  DeviceType type_;
  std::string board_serial_;
  crypto::Certificate ca_certificate_;
  crypto::Certificate device_certificate_;
  crypto::PrivateKey device_key_;
  std::optional<crypto::PrivateKey> persistent_rak_;
};

// The simulated sw components (section b.3: secGear requires exactly six), in token order.
inline constexpr std::string_view simulated_sw_component_types[] = {"BL1",  "BL2",       "BL31",
                                                                     "TMM", "HW_CONFIG", "TB_FW_CONFIG"};
inline constexpr std::string_view simulated_platform_profile = "http://arm.com/CCA-SSD/1.0.0";
// PSA lifecycle "secured" (0x3000), as in the Arm CCA example tokens.
inline constexpr std::int64_t simulated_lifecycle = 0x3000;

}  // namespace fde::sim
