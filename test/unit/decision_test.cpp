// The policy step (docs/fde-verifierd.md, "The checks") on real simulated tokens: what it releases, what it
// denies, which check says why, and what the guest is told.
#include <rapidjson/document.h>

#include <algorithm>

#include "common/crypto/hash.hpp"
#include "common/crypto/random.hpp"
#include "test/unit/verifier_fixture.hpp"
#include "verifier-daemon/policy/device_certificates.hpp"
#include "verifier-daemon/policy/verdict_json.hpp"

using namespace fde;
using namespace fde::test;
using verifier::Clock;
using verifier::Decision;
using verifier::ImageStatus;

namespace {

Decision decide(const verifier::VerificationPolicy& policy, const Guest& guest,
                const std::optional<verifier::ImageRecord>& image, Clock::time_point now) {
  return policy.decider().decide(guest.request, image, now);
}

// The verdict as a failure message shows it.
std::string transcript(const Verdict& verdict) {
  std::string out;
  for (const Check& c : verdict.checks())
    out += (c.passed ? "PASS " : "FAIL ") + c.name + ": expected " + c.expected + "; found " + c.found + "\n";
  return out;
}

// A denial whose first failed check is `first` and that tells the guest `error`.
void require_denied(const Decision& decision, std::string_view first, protocol::ErrorCode error) {
  INFO(transcript(decision.verdict));
  CHECK_FALSE(decision.verdict.passed());
  CHECK_FALSE(decision.evidence.has_value());
  REQUIRE(decision.verdict.first_failure() != nullptr);
  CHECK(decision.verdict.first_failure()->name == first);
  CHECK(decision.guest_error == error);
}

}  // namespace

TEST_CASE("a genuine simulated boot is released and every policy step is a check") {
  auto policy = make_policy();
  const auto now = Clock::now();
  const Guest guest = make_guest(policy->nonces(), now);
  const Decision decision = decide(*policy, guest, sample_image(), now);
  INFO(transcript(decision.verdict));
  REQUIRE(decision.verdict.passed());
  REQUIRE(decision.evidence.has_value());
  CHECK(decision.evidence->image_id() == test_image_id);
  CHECK(decision.evidence->nonce() == guest.request.nonce);

  const std::vector<std::string> in_order = {"request.nonce",  "request.image",   "token.parse",
                                             "device.chain",   "request.binding", "eventlog.parse",
                                             "eventlog.replay", "reference.set",  "image.status"};
  std::vector<std::string> names;
  for (const Check& c : decision.verdict.checks()) names.push_back(c.name);
  auto at = names.begin();
  for (const auto& name : in_order) {
    auto found = std::find(at, names.end(), name);
    INFO("check " << name);
    REQUIRE(found != names.end());
    at = found;
  }
  for (const auto& name : {"cvm.signature", "platform.signature", "platform.rak_binding", "reference.rim",
                           "reference.kernel", "reference.initramfs", "reference.kernel_cmdline"})
    CHECK(has_check(decision.verdict, name, true));

  rapidjson::Document measurements;
  measurements.Parse(decision.measurements_json.c_str());
  REQUIRE(measurements.IsObject());
  CHECK(std::string(measurements["matched_set"].GetString()) == "kernel-6.6.0-28");
  CHECK(std::string(measurements["rim"].GetString()) == hex_encode(firmware_rim()));
  CHECK(measurements["token_verified"].GetBool());
  CHECK(measurements["rems"].Size() == 4);
}

TEST_CASE("the released key is sealed to the agent's ephemeral key and opens only with it") {
  auto policy = make_policy();
  const auto now = Clock::now();
  const Guest guest = make_guest(policy->nonces(), now);
  const Decision decision = decide(*policy, guest, sample_image(), now);
  REQUIRE(decision.evidence.has_value());
  const SecretBytes disk_key = crypto::random_secret(64);
  auto response = expect_ok(verifier::release_key(*decision.evidence, disk_key));
  CHECK(response.enc.size() == protocol::hpke_enc_size);
  CHECK(response.sealed_key.size() == disk_key.size() + protocol::hpke_tag_size);

  const Bytes info = protocol::hpke_info(test_image_id, guest.request.nonce);
  auto opened = expect_ok(crypto::hpke::open(guest.ephemeral, response.enc, info, {}, response.sealed_key));
  CHECK(equal_constant_time(opened.view(), disk_key.view()));

  SECTION("another key pair cannot open it") {
    const auto stranger = crypto::hpke::X25519KeyPair::generate();
    CHECK_FALSE(crypto::hpke::open(stranger, response.enc, info, {}, response.sealed_key));
  }
  SECTION("the info binds the nonce: another nonce's info does not open it") {
    Bytes other_nonce = guest.request.nonce;
    other_nonce[20] ^= 1;
    CHECK_FALSE(crypto::hpke::open(guest.ephemeral, response.enc, protocol::hpke_info(test_image_id, other_nonce), {},
                                   response.sealed_key));
  }
}

TEST_CASE("a token with another RIM is denied at reference.rim") {
  auto policy = make_policy();
  const auto now = Clock::now();
  GuestOptions options;
  options.rim = crypto::sha256(as_bytes("firmware someone else built"));
  const Decision decision = decide(*policy, make_guest(policy->nonces(), now, options), sample_image(), now);
  require_denied(decision, "reference.rim", protocol::ErrorCode::attestation_failed);
}

TEST_CASE("a boot with a tampered initramfs is denied at reference.initramfs") {
  auto policy = make_policy();
  const auto now = Clock::now();
  GuestOptions options;
  options.booted = sample_grub_boot();
  const crypto::HashAlg banks[] = {crypto::HashAlg::sha256};
  options.booted->initramfs = sim::Measurement::of_content(as_bytes("initramfs with a key logger"), banks);
  const Decision decision = decide(*policy, make_guest(policy->nonces(), now, options), sample_image(), now);
  require_denied(decision, "reference.initramfs", protocol::ErrorCode::attestation_failed);
  CHECK(has_check(decision.verdict, "eventlog.replay", true));
  CHECK(has_check(decision.verdict, "reference.set", false));
}

TEST_CASE("an event log that does not replay to the token's REMs is denied at eventlog.replay") {
  // The token carries the REMs of a tampered boot, the log describes the expected one.
  auto policy = make_policy();
  const auto now = Clock::now();
  GuestOptions options;
  options.booted = sample_grub_boot();
  options.booted->kernel_arguments += " init=/bin/sh";
  options.logged = sample_grub_boot();
  const Decision decision = decide(*policy, make_guest(policy->nonces(), now, options), sample_image(), now);
  require_denied(decision, "eventlog.replay", protocol::ErrorCode::attestation_failed);
}

TEST_CASE("a garbage event log is a failed check, not an exception, and no reference set is judged") {
  auto policy = make_policy();
  const auto now = Clock::now();
  Guest guest = make_guest(policy->nonces(), now);
  guest.request.event_log = Bytes(100, 0x41);
  const Decision decision = decide(*policy, guest, sample_image(), now);
  require_denied(decision, "eventlog.parse", protocol::ErrorCode::attestation_failed);
  CHECK(has_check(decision.verdict, "reference.values", false));
}

TEST_CASE("a token bound to another ephemeral key is denied at request.binding") {
  auto policy = make_policy();
  const auto now = Clock::now();
  GuestOptions options;
  options.wrong_binding = true;
  const Decision decision = decide(*policy, make_guest(policy->nonces(), now, options), sample_image(), now);
  require_denied(decision, "request.binding", protocol::ErrorCode::attestation_failed);
  // Everything else about the boot was fine, and the operator sees that too.
  CHECK(has_check(decision.verdict, "reference.set", true));
}

TEST_CASE("an expired nonce is denied at request.nonce and the guest is told expired_nonce") {
  auto policy = make_policy({.roots = {}, .allow_legacy = false, .nonce_lifetime = std::chrono::seconds(30)});
  const auto issued_at = Clock::now();
  const Guest guest = make_guest(policy->nonces(), issued_at);
  const Decision decision = decide(*policy, guest, sample_image(), issued_at + std::chrono::seconds(31));
  require_denied(decision, "request.nonce", protocol::ErrorCode::expired_nonce);
  // The rest still ran: the boot itself was good.
  CHECK(has_check(decision.verdict, "reference.set", true));
}

TEST_CASE("a forged nonce is denied at request.nonce and the guest is told bad_request") {
  auto policy = make_policy();
  const auto now = Clock::now();
  SECTION("a flipped MAC bit") {
    GuestOptions options;
    options.tamper_nonce = [](Bytes& nonce) { nonce.back() ^= 0x01; };
    require_denied(decide(*policy, make_guest(policy->nonces(), now, options), sample_image(), now), "request.nonce",
                   protocol::ErrorCode::bad_request);
  }
  SECTION("a later expiry written into the nonce") {
    GuestOptions options;
    options.tamper_nonce = [](Bytes& nonce) { nonce[1] ^= 0x10; };
    require_denied(decide(*policy, make_guest(policy->nonces(), now, options), sample_image(), now), "request.nonce",
                   protocol::ErrorCode::bad_request);
  }
  SECTION("a nonce from a verifier with another secret") {
    auto other = make_policy();
    const Guest guest = make_guest(other->nonces(), now);
    require_denied(decide(*policy, guest, sample_image(), now), "request.nonce", protocol::ErrorCode::bad_request);
  }
  SECTION("a nonce of the wrong size") {
    GuestOptions options;
    options.tamper_nonce = [](Bytes& nonce) { nonce.resize(16); };
    require_denied(decide(*policy, make_guest(policy->nonces(), now, options), sample_image(), now), "request.nonce",
                   protocol::ErrorCode::bad_request);
  }
}

TEST_CASE("a nonce issued for another image is denied at request.nonce") {
  auto policy = make_policy();
  const auto now = Clock::now();
  GuestOptions options;
  options.nonce_image_id = "another-image";
  require_denied(decide(*policy, make_guest(policy->nonces(), now, options), sample_image(), now), "request.nonce",
                 protocol::ErrorCode::bad_request);
}

TEST_CASE("a revoked image is denied at image.status after every other check passed") {
  auto policy = make_policy();
  const auto now = Clock::now();
  const Decision decision =
      decide(*policy, make_guest(policy->nonces(), now), sample_image(ImageStatus::revoked), now);
  require_denied(decision, "image.status", protocol::ErrorCode::attestation_failed);
  CHECK(failed_checks(decision.verdict) == std::vector<std::string>{"image.status"});
}

TEST_CASE("an unknown image is denied at request.image and the guest is told attestation_failed, as for any denial") {
  auto policy = make_policy();
  const auto now = Clock::now();
  GuestOptions options;
  options.image_id = "never-enrolled";
  const Decision decision = decide(*policy, make_guest(policy->nonces(), now, options), std::nullopt, now);
  require_denied(decision, "request.image", protocol::ErrorCode::attestation_failed);
  CHECK(has_check(decision.verdict, "reference.values", false));
  CHECK(has_check(decision.verdict, "image.status", false));
  // The token itself is still judged for the operator.
  CHECK(has_check(decision.verdict, "cvm.signature", true));
}

TEST_CASE("a token from a device under an untrusted CA is denied at device.chain") {
  auto policy = make_policy();
  const auto now = Clock::now();
  GuestOptions options;
  options.device = &foreign_device();
  const Decision decision = decide(*policy, make_guest(policy->nonces(), now, options), sample_image(), now);
  require_denied(decision, "device.chain", protocol::ErrorCode::attestation_failed);
  CHECK(has_check(decision.verdict, "platform.signature", false));
  // Measurements nobody vouches for are not compared.
  CHECK(has_check(decision.verdict, "reference.values", false));
  CHECK_FALSE(has_check(decision.verdict, "reference.set", true));
}

TEST_CASE("a token whose device certificate is missing or garbage is denied, not thrown") {
  auto policy = make_policy();
  const auto now = Clock::now();
  Guest guest = make_guest(policy->nonces(), now);
  guest.request.device_cert = Bytes{0x30, 0x03, 0x02, 0x01};
  const Decision decision = decide(*policy, guest, sample_image(), now);
  require_denied(decision, "device.certificate", protocol::ErrorCode::attestation_failed);
  CHECK(has_check(decision.verdict, "device.chain", false));
}

TEST_CASE("a token that does not parse is a failed token.parse check and later checks say why they did not run") {
  auto policy = make_policy();
  const auto now = Clock::now();
  Guest guest = make_guest(policy->nonces(), now);
  guest.request.token = Bytes{0xd9, 0x01, 0x8f, 0xa0};  // tag 399, empty map
  const Decision decision = decide(*policy, guest, sample_image(), now);
  require_denied(decision, "token.parse", protocol::ErrorCode::attestation_failed);
  const auto& checks = decision.verdict.checks();
  auto binding = std::find_if(checks.begin(), checks.end(), [](const Check& c) { return c.name == "request.binding"; });
  REQUIRE(binding != checks.end());
  CHECK_FALSE(binding->passed);
  CHECK(binding->found.rfind("not checked:", 0) == 0);
}

TEST_CASE("a legacy token is denied at legacy.policy unless the policy allows legacy tokens") {
  const auto now = Clock::now();
  PolicyOptions options;
  options.roots = {rsa_device().ca_certificate()};
  GuestOptions guest_options;
  guest_options.device = &rsa_device();
  guest_options.format = sim::TokenFormat::legacy;

  SECTION("not allowed") {
    auto policy = make_policy(options);
    const Decision decision = decide(*policy, make_guest(policy->nonces(), now, guest_options), sample_image(), now);
    require_denied(decision, "legacy.policy", protocol::ErrorCode::attestation_failed);
  }
  SECTION("allowed: the RAK is the device key, so it is released") {
    options.allow_legacy = true;
    auto policy = make_policy(options);
    const Decision decision = decide(*policy, make_guest(policy->nonces(), now, guest_options), sample_image(), now);
    INFO(transcript(decision.verdict));
    CHECK(decision.verdict.passed());
    CHECK(decision.evidence.has_value());
    CHECK(has_check(decision.verdict, "legacy.rak_is_device_key", true));
  }
}

TEST_CASE("the platform policy reaches the decision: lifecycle, firmware minimum and issuer pin") {
  const auto now = Clock::now();
  PolicyOptions options;
  const Bytes bl31 = crypto::sha256(as_bytes("virtCCA FDE simulator: measurement of BL31"));

  SECTION("by default a secured simulated platform is released with the lifecycle judged") {
    auto policy = make_policy(options);
    const Decision decision = decide(*policy, make_guest(policy->nonces(), now), sample_image(), now);
    INFO(transcript(decision.verdict));
    CHECK(decision.verdict.passed());
    CHECK(has_check(decision.verdict, "platform.lifecycle", true));
  }
  SECTION("a policy that allows only a debug state denies it at platform.lifecycle") {
    options.platform.allowed_lifecycle_states = {token::LifecycleState::non_rot_debug};
    auto policy = make_policy(options);
    const Decision decision = decide(*policy, make_guest(policy->nonces(), now), sample_image(), now);
    require_denied(decision, "platform.lifecycle", protocol::ErrorCode::attestation_failed);
    CHECK(has_check(decision.verdict, "reference.values", false));
  }
  SECTION("firmware it runs is released, firmware it lacks is denied at platform.sw_components") {
    options.platform.required_sw_components = {{std::string("BL31"), bl31}};
    auto policy = make_policy(options);
    const Decision released = decide(*policy, make_guest(policy->nonces(), now), sample_image(), now);
    INFO(transcript(released.verdict));
    CHECK(released.verdict.passed());
    CHECK(has_check(released.verdict, "platform.sw_components", true));

    options.platform.required_sw_components = {{std::string("BL31"), crypto::sha256(as_bytes("newer BL31"))}};
    auto strict = make_policy(options);
    const Decision denied = decide(*strict, make_guest(strict->nonces(), now), sample_image(), now);
    require_denied(denied, "platform.sw_components", protocol::ErrorCode::attestation_failed);
  }
  SECTION("a device certificate from an unpinned issuer is denied at device.issuer") {
    options.platform.device_issuer_sha256 = {foreign_device().ca_certificate().sha256_fingerprint()};
    auto policy = make_policy(options);
    const Decision denied = decide(*policy, make_guest(policy->nonces(), now), sample_image(), now);
    require_denied(denied, "device.issuer", protocol::ErrorCode::attestation_failed);

    options.platform.device_issuer_sha256 = {p521_device().ca_certificate().sha256_fingerprint()};
    auto pinned = make_policy(options);
    const Decision released = decide(*pinned, make_guest(pinned->nonces(), now), sample_image(), now);
    INFO(transcript(released.verdict));
    CHECK(released.verdict.passed());
    CHECK(has_check(released.verdict, "device.issuer", true));
  }
}

TEST_CASE("a direct boot without an event log is released against a direct-boot set") {
  auto policy = make_policy();
  const auto now = Clock::now();
  GuestOptions options;
  options.direct_boot = true;
  const Decision decision = decide(*policy, make_guest(policy->nonces(), now, options), sample_image(), now);
  INFO(transcript(decision.verdict));
  CHECK(decision.verdict.passed());
  CHECK_FALSE(has_check(decision.verdict, "eventlog.parse", true));
  rapidjson::Document measurements;
  measurements.Parse(decision.measurements_json.c_str());
  REQUIRE(measurements.IsObject());
  CHECK(std::string(measurements["matched_set"].GetString()) == "direct-6.6.0-28");
}

TEST_CASE("a grub-boot RIM without its event log is not accepted as a direct boot") {
  auto policy = make_policy();
  const auto now = Clock::now();
  Guest guest = make_guest(policy->nonces(), now);
  guest.request.event_log.reset();
  const Decision decision = decide(*policy, guest, sample_image(), now);
  require_denied(decision, "reference.rim", protocol::ErrorCode::attestation_failed);
}

TEST_CASE("a verdict survives the JSON the audit record stores it in") {
  auto policy = make_policy();
  const auto now = Clock::now();
  GuestOptions options;
  options.rim = crypto::sha256(as_bytes("other firmware"));
  const Decision decision = decide(*policy, make_guest(policy->nonces(), now, options), sample_image(), now);
  auto restored = expect_ok(verifier::checks_from_json(verifier::checks_to_json(decision.verdict)));
  REQUIRE(restored.checks().size() == decision.verdict.checks().size());
  for (std::size_t i = 0; i < restored.checks().size(); ++i) {
    CHECK(restored.checks()[i].name == decision.verdict.checks()[i].name);
    CHECK(restored.checks()[i].expected == decision.verdict.checks()[i].expected);
    CHECK(restored.checks()[i].found == decision.verdict.checks()[i].found);
    CHECK(restored.checks()[i].passed == decision.verdict.checks()[i].passed);
  }
  CHECK(restored.summary() == decision.verdict.summary());

  SECTION("text that is not UTF-8 is escaped, not lost") {
    Verdict odd;
    odd.add_fail("cvm.hash_algo", "sha-256", std::string("\xff\xfe") + "x");
    auto back = expect_ok(verifier::checks_from_json(verifier::checks_to_json(odd)));
    CHECK(back.checks().front().found == "\\xff\\xfex");
  }
}

TEST_CASE("a device certificate's chain is validated once, and a remembered chain is not trusted past its validity") {
  auto policy = make_policy();
  const auto& known = policy->decider().device_certificates();
  const auto now = Clock::now();
  const Decision first = decide(*policy, make_guest(policy->nonces(), now), sample_image(), now);
  INFO(transcript(first.verdict));
  REQUIRE(first.verdict.passed());
  CHECK(known.size() == 1);
  CHECK(known.validations() == 1);

  // The same certificate again: parsed and validated from the cache.
  const Decision second = decide(*policy, make_guest(policy->nonces(), now), sample_image(), now);
  REQUIRE(second.verdict.passed());
  CHECK(known.hits() == 1);
  CHECK(known.validations() == 1);

  // Sixteen years on, the simulated device certificate (15 years) has expired: the
  // remembered chain must not vouch for it.
  const auto later = now + std::chrono::hours(24 * 365 * 16);
  const Decision expired = decide(*policy, make_guest(policy->nonces(), later), sample_image(), later);
  require_denied(expired, "device.chain", protocol::ErrorCode::attestation_failed);
  CHECK(known.validations() == 2);
  // And before its notBefore, equally.
  const auto earlier = now - std::chrono::hours(24 * 3);
  const Decision early = decide(*policy, make_guest(policy->nonces(), earlier), sample_image(), earlier);
  require_denied(early, "device.chain", protocol::ErrorCode::attestation_failed);
  // Back within the validity the certificate passes again.
  CHECK(decide(*policy, make_guest(policy->nonces(), now), sample_image(), now).verdict.passed());
}

TEST_CASE("a remembered chain stops at the notAfter second, as OpenSSL does") {
  const auto& device = foreign_device();
  verifier::DeviceCertificates known({device.ca_certificate()});
  auto entry = known.parse(device.device_certificate_blob());
  REQUIRE(entry.has_value());
  const auto& leaf = (*entry)->certificates().front();
  const std::span<const crypto::Certificate> intermediates((*entry)->certificates().data() + 1,
                                                           (*entry)->certificates().size() - 1);
  const auto not_after = leaf.not_after_seconds();
  REQUIRE(not_after.has_value());
  const auto valid = static_cast<std::time_t>(std::min<std::int64_t>(
      *not_after, *device.ca_certificate().not_after_seconds()));
  // Validated (and remembered) one second before the end of the window ...
  REQUIRE((*entry)->validate(leaf, intermediates, valid - 1).has_value());
  CHECK(known.validations() == 1);
  CHECK((*entry)->validate(leaf, intermediates, valid - 1).has_value());
  CHECK(known.validations() == 1);
  // ... but at the notAfter second itself the certificate has expired for OpenSSL, and so for
  // the cache: not served from memory.
  CHECK_FALSE((*entry)->validate(leaf, intermediates, valid).has_value());
}

TEST_CASE("reloaded roots start from an empty device certificate cache") {
  auto trusting = make_policy();
  const auto now = Clock::now();
  const Guest guest = make_guest(trusting->nonces(), now);
  REQUIRE(decide(*trusting, guest, sample_image(), now).verdict.passed());
  REQUIRE(trusting->decider().device_certificates().size() == 1);

  // A reload that no longer trusts the simulator's CA: the same certificate is untrusted.
  PolicyOptions other;
  other.roots = {foreign_device().ca_certificate()};
  auto reloaded = make_policy(other);
  CHECK(reloaded->decider().device_certificates().size() == 0);
  const Decision after = decide(*reloaded, make_guest(reloaded->nonces(), now), sample_image(), now);
  require_denied(after, "device.chain", protocol::ErrorCode::attestation_failed);
}
