// Shared set-up for the verifier tests (verifier_fixture.hpp).
#include "test/unit/verifier_fixture.hpp"

#include <sys/stat.h>

#include "common/crypto/hash.hpp"
#include "common/crypto/random.hpp"
#include "common/util/file.hpp"

namespace fde::test {

TempDir::TempDir()
    : path_(std::filesystem::temp_directory_path() / ("fde-verifier-test-" + hex_encode(crypto::random_bytes(6)))) {
  std::filesystem::create_directory(path_);
  std::filesystem::permissions(path_, std::filesystem::perms::owner_all);
}

TempDir::~TempDir() {
  std::error_code error;
  std::filesystem::remove_all(path_, error);
}

std::string TempDir::write(const std::string& name, std::string_view text, unsigned mode) const {
  const std::string file = path(name);
  expect_ok(write_file_atomic(file, as_bytes(text), static_cast<mode_t>(mode)));
  return file;
}

const sim::SimDevice& p521_device() {
  static const sim::SimDevice device = expect_ok(sim::SimDevice::create({sim::DeviceType::p521, "SIMVERIFIERA", false}));
  return device;
}

const sim::SimDevice& rsa_device() {
  static const sim::SimDevice device = expect_ok(sim::SimDevice::create({sim::DeviceType::rsa, "SIMVERIFIERR", false}));
  return device;
}

const sim::SimDevice& foreign_device() {
  static const sim::SimDevice device = expect_ok(sim::SimDevice::create({sim::DeviceType::p521, "SIMFOREIGN01", false}));
  return device;
}

sim::GrubBoot sample_grub_boot() {
  const crypto::HashAlg banks[] = {crypto::HashAlg::sha256};
  sim::GrubBoot boot;
  boot.grub_authenticode = sim::Measurement::of_content(as_bytes("BOOTAA64.EFI authenticode image"), banks);
  boot.grub_cfg = sim::Measurement::of_content(as_bytes("menuentry 'openEuler' { linux /vmlinuz-6.6.0 }\n"), banks);
  boot.grub_commands = {"set root=hd0,gpt2", "insmod gzio"};
  boot.kernel_path = "/vmlinuz-6.6.0-28.0.0.34.oe2403.aarch64";
  boot.kernel = sim::Measurement::of_content(as_bytes("decompressed arm64 Image"), banks);
  boot.kernel_arguments = "root=/dev/mapper/encroot ro console=ttyAMA0";
  boot.initramfs_path = "/initramfs-6.6.0-28.0.0.34.oe2403.aarch64.img";
  boot.initramfs = sim::Measurement::of_content(as_bytes("initramfs cpio with the FDE agent"), banks);
  return boot;
}

Bytes firmware_rim() { return crypto::sha256(as_bytes("simulated UEFI firmware, DTB and vCPUs")); }
Bytes direct_boot_rim() { return crypto::sha256(as_bytes("simulated direct boot: kernel, initramfs, DTB")); }

reference::ReferenceValues sample_reference() {
  const auto alg = crypto::HashAlg::sha256;
  const sim::GrubBoot boot = sample_grub_boot();
  reference::ReferenceSet grub;
  grub.name = "kernel-6.6.0-28";
  grub.boot = reference::BootMode::grub;
  grub.grub.efi_applications = {*boot.grub_authenticode.digest_for(alg)};
  grub.grub.grub_cfgs = {*boot.grub_cfg.digest_for(alg)};
  grub.grub.kernel = *boot.kernel.digest_for(alg);
  grub.grub.initramfs = *boot.initramfs.digest_for(alg);
  grub.grub.kernel_cmdline = sim::grub_kernel_cmdline(boot);
  grub.grub.grub_commands = sim::grub_boot_commands(boot);
  reference::ReferenceSet direct;
  direct.name = "direct-6.6.0-28";
  direct.boot = reference::BootMode::direct;
  direct.rims = {direct_boot_rim()};
  reference::ReferenceValues values;
  values.image_id = std::string(test_image_id);
  values.hash_alg = alg;
  values.firmware_rims = {firmware_rim()};
  values.sets = {std::move(grub), std::move(direct)};
  return values;
}

verifier::ImageRecord sample_image(verifier::ImageStatus status) {
  verifier::ImageRecord image;
  image.image_id = std::string(test_image_id);
  image.luks_uuid = std::string(test_luks_uuid);
  image.status = status;
  image.reference = sample_reference();
  return image;
}

std::shared_ptr<const verifier::VerificationPolicy> make_policy(const PolicyOptions& options) {
  verifier::DeciderConfig config;
  config.trusted_roots = options.roots;
  if (config.trusted_roots.empty()) config.trusted_roots = {p521_device().ca_certificate()};
  config.allow_legacy = options.allow_legacy;
  config.platform = options.platform;
  std::vector<SecretBytes> secrets;
  secrets.push_back(crypto::random_secret(32));
  auto nonces = expect_ok(verifier::NonceService::create(std::move(secrets), options.nonce_lifetime));
  return std::make_shared<const verifier::VerificationPolicy>(std::move(nonces), std::move(config));
}

Guest make_guest(const verifier::NonceService& nonces, verifier::Clock::time_point now, const GuestOptions& options) {
  const sim::SimDevice& device = options.device != nullptr ? *options.device : p521_device();
  auto issued = nonces.issue(options.nonce_image_id.value_or(options.image_id), now);
  if (options.nonce) issued.nonce = *options.nonce;
  if (options.tamper_nonce) options.tamper_nonce(issued.nonce);

  Guest guest{protocol::AttestRequest{}, crypto::hpke::X25519KeyPair::generate()};
  const Bytes bound_key =
      options.wrong_binding ? crypto::hpke::X25519KeyPair::generate().public_key() : guest.ephemeral.public_key();

  sim::TokenRequest token;
  token.challenge = protocol::challenge_binding(issued.nonce, bound_key);
  token.format = options.format;
  if (options.direct_boot) {
    token.rim = options.rim.value_or(direct_boot_rim());
  } else {
    const sim::GrubBoot booted = options.booted.value_or(sample_grub_boot());
    auto boot_log = expect_ok(sim::build_grub_boot_log(booted));
    auto rems = expect_ok(boot_log.rems(crypto::HashAlg::sha256));
    for (std::size_t i = 0; i < token.rems.size(); ++i) token.rems[i] = rems[i];
    token.rim = options.rim.value_or(firmware_rim());
    const auto sent_log = options.logged ? expect_ok(sim::build_grub_boot_log(*options.logged)) : boot_log;
    guest.request.event_log = sent_log.log();
  }
  auto token_bytes = expect_ok(sim::issue_token(device, token));

  guest.request.image_id = options.image_id;
  guest.request.nonce = issued.nonce;
  guest.request.ephemeral_public = guest.ephemeral.public_key();
  guest.request.token = token_bytes.token;
  guest.request.device_cert = device.device_certificate_blob();
  return guest;
}

std::vector<std::string> failed_checks(const Verdict& verdict) {
  std::vector<std::string> names;
  for (const Check& check : verdict.checks())
    if (!check.passed) names.push_back(check.name);
  return names;
}

bool has_check(const Verdict& verdict, std::string_view name, bool passed) {
  for (const Check& check : verdict.checks())
    if (check.name == name && check.passed == passed) return true;
  return false;
}

}  // namespace fde::test
