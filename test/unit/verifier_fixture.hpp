// Shared set-up for the verifier tests: a simulated virtCCA device and grub boot, the
// reference values an image builder would publish for it, and a guest that runs the real
// protocol steps (challenge, ephemeral key, token over the binding, event log).
#pragma once

#include <catch2/catch.hpp>

#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/crypto/hpke.hpp"
#include "common/protocol/messages.hpp"
#include "common/reference/reference_values.hpp"
#include "common/sim/event_log_builder.hpp"
#include "common/sim/sim_device.hpp"
#include "common/sim/token_issuer.hpp"
#include "verifier-daemon/nonce/nonce_service.hpp"
#include "verifier-daemon/policy/decision.hpp"
#include "verifier-daemon/store/store.hpp"

namespace fde::test {

template <class T>
T expect_ok(Result<T> result) {
  if (!result) FAIL(result.error().describe());
  return std::move(*result);
}
inline void expect_ok(Result<void> result) {
  if (!result) FAIL(result.error().describe());
}

// A directory under /tmp, removed with its contents when the test ends.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string path(const std::string& name) const { return (path_ / name).string(); }
  const std::filesystem::path& root() const { return path_; }
  // Writes a file with the given mode and returns its path.
  std::string write(const std::string& name, std::string_view text, unsigned mode = 0644) const;

 private:
  std::filesystem::path path_;
};

// Made once per test binary (key generation is slow, RSA-4096 very slow).
const sim::SimDevice& p521_device();
const sim::SimDevice& rsa_device();
const sim::SimDevice& foreign_device();  // a P-521 device under a different simulated CA

constexpr std::string_view test_image_id = "sim-openeuler-fde";
constexpr std::string_view test_luks_uuid = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0";

sim::GrubBoot sample_grub_boot();
Bytes firmware_rim();
// The grub-boot reference document for sample_grub_boot() on firmware_rim(), plus a
// direct-boot set accepting direct_boot_rim().
reference::ReferenceValues sample_reference();
Bytes direct_boot_rim();
verifier::ImageRecord sample_image(verifier::ImageStatus status = verifier::ImageStatus::active);

// A verifier policy trusting `roots` (the simulator CA by default).
struct PolicyOptions {
  std::vector<crypto::Certificate> roots;  // empty: p521_device()'s CA
  bool allow_legacy = false;
  std::chrono::seconds nonce_lifetime{60};
  token::PlatformPolicy platform = {};
};
std::shared_ptr<const verifier::VerificationPolicy> make_policy(const PolicyOptions& options = {});

// How the guest deviates from an honest boot.
struct GuestOptions {
  const sim::SimDevice* device = nullptr;          // p521_device() by default
  sim::TokenFormat format = sim::TokenFormat::full;
  std::string image_id = std::string(test_image_id);  // the image the request names
  std::optional<std::string> nonce_image_id;       // ask the challenge for another image
  std::optional<Bytes> rim;                        // a different RIM in the token
  std::optional<sim::GrubBoot> booted;             // what really booted (token REMs and log)
  std::optional<sim::GrubBoot> logged;             // the log sent (default: of `booted`)
  bool direct_boot = false;                        // no event log; the token carries direct_boot_rim()
  bool wrong_binding = false;                      // token challenge over another ephemeral key
  std::optional<Bytes> nonce;                      // a nonce from /v1/challenge (else one is issued)
  std::function<void(Bytes& nonce)> tamper_nonce;
};

struct Guest {
  protocol::AttestRequest request;
  crypto::hpke::X25519KeyPair ephemeral;
};

// Runs the guest side: challenge from `nonces` at `now`, ephemeral key, token, log.
Guest make_guest(const verifier::NonceService& nonces, verifier::Clock::time_point now, const GuestOptions& options = {});

// The checks a verdict failed, by name.
std::vector<std::string> failed_checks(const Verdict& verdict);
bool has_check(const Verdict& verdict, std::string_view name, bool passed);

}  // namespace fde::test
