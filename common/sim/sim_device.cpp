// The simulated virtCCA device: test CA, device certificate and key, saving and loading them.
#include "common/sim/sim_device.hpp"

#include <sys/stat.h>

#include <cctype>
#include <cerrno>
#include <cstring>
#include <filesystem>

#include "common/crypto/hash.hpp"
#include "common/crypto/random.hpp"
#include "common/util/file.hpp"
#include "common/util/secret_bytes.hpp"

namespace fde::sim {

namespace {

constexpr std::size_t max_pem_file_size = 64 * 1024;
// The real AIK certificate runs 2024 -> 2039; a long validity keeps cached devices usable.
constexpr long device_valid_days = 15 * 365;
constexpr long ca_valid_days = 30 * 365;

// A positive serial that fits the `long` of CertificateRequest; unique enough that two
// simulated certificates never share issuer + serial.
long random_serial() {
  Bytes random = crypto::random_bytes(8);
  std::uint64_t value = 0;
  for (auto byte : random) value = (value << 8) | byte;
  return static_cast<long>(value >> 2) | 1;
}

std::string random_board_serial() {
  std::string hex = hex_encode(crypto::random_bytes(5));
  for (auto& c : hex) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return "SIM" + hex;
}

crypto::KeyType key_type_of(DeviceType type) {
  return type == DeviceType::rsa ? crypto::KeyType::rsa : crypto::KeyType::ec_p521;
}

// The CN from a one-line RFC 2253 subject ("CN=SIM0123456789,O=...,C=CN").
std::string common_name_of(const std::string& subject) {
  std::size_t start = 0;
  while (start < subject.size()) {
    std::size_t end = subject.find(',', start);
    if (end == std::string::npos) end = subject.size();
    std::string_view part(subject.data() + start, end - start);
    if (part.substr(0, 3) == "CN=") return std::string(part.substr(3));
    start = end + 1;
  }
  return {};
}

std::string join(const std::string& directory, std::string_view name) {
  return (std::filesystem::path(directory) / std::string(name)).string();
}

Result<void> write_private_key(const std::string& path, const crypto::PrivateKey& key) {
  SecretBytes pem = key.to_pem();
  if (pem.empty()) return fail(Errc::internal, path + ": the private key could not be encoded as PEM");
  return write_file_atomic(path, pem.view(), 0600);
}

}  // namespace

std::string_view device_type_name(DeviceType type) { return type == DeviceType::rsa ? "rsa" : "p521"; }

std::optional<DeviceType> device_type_from_name(std::string_view name) {
  if (name == "rsa") return DeviceType::rsa;
  if (name == "p521") return DeviceType::p521;
  return std::nullopt;
}

Result<SimCa> SimCa::create(crypto::KeyType key_type, std::string common_name) {
  // RSA-4096 keys take seconds; the CA only signs, so 2048 bits (Huawei's sub CA size) is enough.
  auto key = crypto::PrivateKey::generate(key_type, 2048);
  if (!key) return fail_with_context("simulator CA key", key.error());
  crypto::CertificateRequest request;
  request.common_name = std::move(common_name);
  request.is_ca = true;
  request.valid_days = ca_valid_days;
  request.serial = random_serial();
  auto certificate = crypto::issue_certificate(request, key->public_key(), *key, nullptr);
  if (!certificate) return fail_with_context("simulator CA certificate", certificate.error());
  return SimCa(std::move(*key), std::move(*certificate));
}

Result<crypto::Certificate> SimCa::issue_device_certificate(const crypto::PublicKey& device_key,
                                                            const std::string& board_serial) const {
  crypto::CertificateRequest request;
  request.common_name = board_serial;
  request.is_ca = false;
  request.valid_days = device_valid_days;
  request.serial = random_serial();
  return crypto::issue_certificate(request, device_key, key_, &certificate_);
}

Result<SimDevice> SimDevice::create(const DeviceOptions& options) {
  auto ca = SimCa::create(key_type_of(options.type));
  if (!ca) return tl::unexpected(ca.error());
  return create(options, *ca);
}

Result<SimDevice> SimDevice::create(const DeviceOptions& options, const SimCa& ca) {
  auto device_key = crypto::PrivateKey::generate(key_type_of(options.type), 4096);
  if (!device_key) return fail_with_context("device key", device_key.error());
  std::string serial = options.board_serial.empty() ? random_board_serial() : options.board_serial;
  auto certificate = ca.issue_device_certificate(device_key->public_key(), serial);
  if (!certificate) return fail_with_context("device certificate", certificate.error());
  std::optional<crypto::PrivateKey> rak;
  if (options.persistent_rak && options.type == DeviceType::p521) {
    auto key = crypto::PrivateKey::generate(crypto::KeyType::ec_p521);
    if (!key) return fail_with_context("RAK", key.error());
    rak = std::move(*key);
  }
  return SimDevice(options.type, std::move(serial), ca.certificate(), std::move(*certificate),
                   std::move(*device_key), std::move(rak));
}

Result<SimDevice> SimDevice::load(const std::string& directory) {
  return load_from(directory, [&directory](std::string_view name) -> Result<Bytes> {
    std::string path = join(directory, name);
    std::error_code error;
    if (!std::filesystem::exists(path, error)) return fail(Errc::not_found, path + ": no such file");
    auto data = read_file(path, max_pem_file_size);
    if (!data) return tl::unexpected(data.error());
    return data;
  });
}

Result<SimDevice> SimDevice::load_from(const std::string& source, const DeviceFileReader& read) {
  // A required file that is absent is an I/O error of the store, as reading it would be.
  auto read_required = [&](std::string_view name) -> Result<Bytes> {
    auto data = read(name);
    if (!data && data.error().code == Errc::not_found) return fail(Errc::io, data.error().message);
    return data;
  };
  auto read_certificate_file = [&](std::string_view name) -> Result<crypto::Certificate> {
    auto data = read_required(name);
    if (!data) return tl::unexpected(data.error());
    auto certificate = crypto::Certificate::from_pem_or_der(*data);
    if (!certificate) return fail_with_context(source + ": " + std::string(name), certificate.error());
    return certificate;
  };
  // Reads a PEM private key and wipes the buffer that held it.
  auto read_key_file = [&](std::string_view name, bool required) -> Result<crypto::PrivateKey> {
    auto data = required ? read_required(name) : read(name);
    if (!data) return tl::unexpected(data.error());
    auto key = crypto::PrivateKey::from_pem(as_text(*data));
    wipe_bytes(*data);
    if (!key) return fail_with_context(source + ": " + std::string(name), key.error());
    return key;
  };
  auto ca = read_certificate_file(ca_file_name);
  if (!ca) return tl::unexpected(ca.error());
  auto certificate = read_certificate_file(device_certificate_file_name);
  if (!certificate) return tl::unexpected(certificate.error());
  auto key = read_key_file(device_key_file_name, true);
  if (!key) return tl::unexpected(key.error());

  DeviceType type;
  if (key->type() == crypto::KeyType::rsa)
    type = DeviceType::rsa;
  else if (key->type() == crypto::KeyType::ec_p521)
    type = DeviceType::p521;
  else
    return fail(Errc::unsupported, source + ": device key is " +
                                       std::string(crypto::key_type_name(key->type())) + ", not RSA or P-521");
  if (!certificate->public_key().equals(key->public_key()))
    return fail(Errc::invalid_argument, source + ": device key does not match device-cert.pem");
  // A directory whose certificate is not from its CA would make every token fail later with
  // a confusing chain error; refuse it here instead.
  std::vector<crypto::Certificate> roots{*ca};
  if (auto chain = crypto::verify_chain(*certificate, {}, roots); !chain)
    return fail_with_context(source + ": device-cert.pem does not chain to ca.pem", chain.error());

  std::optional<crypto::PrivateKey> rak;
  auto loaded = read_key_file(rak_key_file_name, false);
  if (loaded)
    rak = std::move(*loaded);
  else if (loaded.error().code != Errc::not_found)
    return tl::unexpected(loaded.error());
  std::string serial = common_name_of(certificate->subject());
  return SimDevice(type, std::move(serial), std::move(*ca), std::move(*certificate), std::move(*key),
                   std::move(rak));
}

Result<void> SimDevice::save(const std::string& directory) const {
  std::error_code error;
  if (!std::filesystem::exists(directory, error)) {
    if (::mkdir(directory.c_str(), 0700) != 0 && errno != EEXIST)
      return fail(Errc::io, directory + ": " + std::strerror(errno));
  }
  if (auto ok = write_file_atomic(join(directory, ca_file_name), as_bytes(ca_certificate_.pem()), 0644); !ok)
    return ok;
  if (auto ok = write_file_atomic(join(directory, device_certificate_file_name),
                                  as_bytes(device_certificate_.pem()), 0644);
      !ok)
    return ok;
  if (auto ok = write_private_key(join(directory, device_key_file_name), device_key_); !ok) return ok;
  std::string rak_path = join(directory, rak_key_file_name);
  if (persistent_rak_) return write_private_key(rak_path, *persistent_rak_);
  // A stale RAK from an earlier device in the same directory would be picked up on load.
  std::filesystem::remove(rak_path, error);
  return {};
}

Bytes SimDevice::device_certificate_blob() const {
  if (type_ == DeviceType::rsa) return device_certificate_.der();
  std::string pem = device_certificate_.pem();
  return Bytes(pem.begin(), pem.end());
}

token::PlatformClaims SimDevice::platform_claims() const {
  using crypto::sha256;
  token::PlatformClaims claims;
  claims.profile = std::string(simulated_platform_profile);
  claims.implementation_id = sha256(as_bytes("virtCCA FDE simulator: implementation"));
  claims.instance_id.push_back(0x01);  // UEID type RAND
  Bytes device_key_hash = sha256(device_key_.public_key().spki_der());
  claims.instance_id.insert(claims.instance_id.end(), device_key_hash.begin(), device_key_hash.end());
  claims.config = Bytes{0xcf, 0xe5, 0x00, 0x00};
  claims.lifecycle = simulated_lifecycle;
  for (auto type : simulated_sw_component_types) {
    token::SwComponent component;
    component.type = std::string(type);
    component.measurement = sha256(as_bytes("virtCCA FDE simulator: measurement of " + std::string(type)));
    component.version = "1.0.0";
    component.signer_id = sha256(as_bytes("virtCCA FDE simulator: firmware signer"));
    component.hash_algo_id = "sha-256";
    claims.sw_components.push_back(std::move(component));
  }
  claims.hash_algo_id = "sha-256";
  return claims;
}

}  // namespace fde::sim
