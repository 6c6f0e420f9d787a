// Tests of `fde-admin verify-token` as an operator runs it: real files in a temporary
// directory (simulated devices and tokens, the public secGear and Arm CCA test data), the
// command's text and JSON output and its exit codes (docs/fde-admin.md).
#include <rapidjson/document.h>

#include <catch2/catch.hpp>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "common/crypto/certificate.hpp"
#include "common/crypto/hash.hpp"
#include "common/crypto/keys.hpp"
#include "common/crypto/random.hpp"
#include "common/reference/reference_values.hpp"
#include "common/sim/event_log_builder.hpp"
#include "common/sim/sim_device.hpp"
#include "common/sim/token_issuer.hpp"
#include "common/util/file.hpp"
#include "verifier-daemon/admin/verify_token_command.hpp"

using namespace fde;
namespace fs = std::filesystem;

namespace {

template <class T>
T expect_ok(Result<T> result) {
  if (!result) FAIL(result.error().describe());
  return std::move(*result);
}

const std::string external_data = FDE_EXTERNAL_TESTDATA;

// A directory under /tmp that is removed with everything in it when the test ends.
class TempDir {
 public:
  TempDir() : path_(fs::temp_directory_path() / ("fde-verify-token-test-" + hex_encode(crypto::random_bytes(6)))) {
    fs::create_directory(path_);
  }
  ~TempDir() {
    std::error_code error;
    fs::remove_all(path_, error);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  std::string path(const std::string& name) const { return (path_ / name).string(); }
  std::string write(const std::string& name, ByteView data) const {
    std::string file = path(name);
    if (auto ok = write_file_atomic(file, data, 0644); !ok) FAIL(ok.error().describe());
    return file;
  }
  std::string write(const std::string& name, std::string_view text) const { return write(name, as_bytes(text)); }

 private:
  fs::path path_;
};

// One run of the command, as a shell would see it.
struct Run {
  int code = -1;
  std::string out;
  std::string err;

  // The name of the check the verdict line gives as the reason ("Verdict: REJECTED (name: ...").
  std::string reason() const {
    static constexpr std::string_view marker = "Verdict: REJECTED (";
    auto at = out.find(marker);
    if (at == std::string::npos) return {};
    auto start = at + marker.size();
    return out.substr(start, out.find(':', start) - start);
  }
  // For failure messages: INFO(result.transcript()) after each run.
  std::string transcript() const {
    return "verify-token exit " + std::to_string(code) + "\nstdout:\n" + out + "stderr:\n" + err;
  }
  bool passed(std::string_view check) const { return has_line("  PASS " + std::string(check)); }
  bool failed(std::string_view check) const { return has_line("  FAIL " + std::string(check)); }
  std::size_t count(std::string_view prefix) const {
    std::size_t n = 0;
    std::istringstream lines(out);
    for (std::string line; std::getline(lines, line);)
      if (line.rfind(prefix, 0) == 0) ++n;
    return n;
  }

 private:
  bool has_line(const std::string& wanted) const {
    std::istringstream lines(out);
    for (std::string line; std::getline(lines, line);)
      if (line == wanted) return true;
    return false;
  }
};

Run run(const std::vector<std::string>& args) {
  std::ostringstream out;
  std::ostringstream err;
  Run result;
  result.code = verifier::run_verify_token(args, out, err);
  result.out = out.str();
  result.err = err.str();
  return result;
}

// A simulated device saved the way `fde-sim device` saves it, plus its certificate as
// TMM_GET_DEVICE_CERT returns it (DER on legacy RSA firmware, PEM on P-521 firmware).
struct SavedDevice {
  sim::SimDevice device;
  TempDir dir;
  std::string ca_pem;
  std::string device_cert;

  SavedDevice(sim::SimDevice created, const std::string& name) : device(std::move(created)) {
    std::string directory = dir.path(name);
    if (auto ok = device.save(directory); !ok) FAIL(ok.error().describe());
    ca_pem = (fs::path(directory) / std::string(sim::ca_file_name)).string();
    device_cert = dir.write(name + "-cert" + (device.type() == sim::DeviceType::rsa ? ".der" : ".pem"),
                            device.device_certificate_blob());
  }
};

// Devices are made once per test binary: an RSA-4096 key takes seconds.
const SavedDevice& p521_device() {
  static const SavedDevice saved(expect_ok(sim::SimDevice::create({sim::DeviceType::p521, "SIMCLIP521", false})),
                                 "p521");
  return saved;
}
const SavedDevice& rsa_device() {
  static const SavedDevice saved(expect_ok(sim::SimDevice::create({sim::DeviceType::rsa, "SIMCLIRSA1", false})),
                                 "rsa");
  return saved;
}
// A device of another simulated CA: a verifier pinning it must refuse p521_device().
const SavedDevice& other_ca_device() {
  static const SavedDevice saved(expect_ok(sim::SimDevice::create({sim::DeviceType::p521, "SIMCLIOTHER", false})),
                                 "other");
  return saved;
}
// Two boards under one CA, for splicing one's platform token with the other's CVM token.
struct BoardPair {
  SavedDevice a;
  SavedDevice b;
};
const BoardPair& board_pair() {
  static const BoardPair pair = [] {
    auto ca = expect_ok(sim::SimCa::create(crypto::KeyType::ec_p521));
    return BoardPair{
        SavedDevice(expect_ok(sim::SimDevice::create({sim::DeviceType::p521, "SIMCLIBOARDA", false}, ca)), "a"),
        SavedDevice(expect_ok(sim::SimDevice::create({sim::DeviceType::p521, "SIMCLIBOARDB", false}, ca)), "b")};
  }();
  return pair;
}

sim::TokenRequest token_request(sim::TokenFormat format) {
  sim::TokenRequest request;
  request.challenge = crypto::random_bytes(token::challenge_size);
  request.rim = crypto::sha256(as_bytes("simulated firmware and DTB"));
  request.format = format;
  return request;
}

// The options that make a token from `saved` verify: its certificate, its CA, the challenge.
std::vector<std::string> genuine_options(const std::string& token_file, const SavedDevice& saved,
                                         const Bytes& challenge) {
  return {"--token", token_file, "--device-cert", saved.device_cert, "--roots", saved.ca_pem,
          "--challenge", hex_encode(challenge)};
}

std::vector<std::string> with(std::vector<std::string> args, const std::vector<std::string>& more) {
  args.insert(args.end(), more.begin(), more.end());
  return args;
}

std::string read_text_file(const std::string& path) {
  return std::string(as_text(expect_ok(read_file(path, 1024 * 1024))));
}

// The checks a full token from a simulated device must pass (token_verifier.hpp).
const std::vector<std::string> full_token_checks = {
    "token.kind", "cvm.claim_sizes", "cvm.hash_algo", "cvm.rak", "cvm.signature", "device.chain",
    "platform.signature", "platform.rak_binding", "platform.claims", "platform.lifecycle", "cvm.challenge"};

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

// The reference document an image builder would publish for `boot` on firmware `rim`.
reference::ReferenceValues reference_for(const sim::GrubBoot& boot, const Bytes& rim) {
  const auto alg = crypto::HashAlg::sha256;
  reference::ReferenceSet set;
  set.name = "kernel-6.6.0-28";
  set.boot = reference::BootMode::grub;
  set.grub.efi_applications = {*boot.grub_authenticode.digest_for(alg)};
  set.grub.grub_cfgs = {*boot.grub_cfg.digest_for(alg)};
  set.grub.kernel = *boot.kernel.digest_for(alg);
  set.grub.initramfs = *boot.initramfs.digest_for(alg);
  set.grub.kernel_cmdline = sim::grub_kernel_cmdline(boot);
  set.grub.grub_commands = sim::grub_boot_commands(boot);
  reference::ReferenceValues values;
  values.image_id = "sim-openeuler-fde";
  values.hash_alg = alg;
  values.firmware_rims = {rim};
  values.sets = {std::move(set)};
  return values;
}

}  // namespace

// --- Genuine simulated tokens ---

TEST_CASE("a simulated full P-521 token with its device certificate, roots and challenge verifies") {
  const auto& saved = p521_device();
  auto request = token_request(sim::TokenFormat::full);
  auto issued = expect_ok(sim::issue_token(saved.device, request));
  TempDir dir;
  auto token_file = dir.write("token.cbor", issued.token);
  auto args = genuine_options(token_file, saved, request.challenge);

  SECTION("the text report shows every check passing") {
    auto result = run(args);
    INFO(result.transcript());
    CHECK(result.code == verifier::exit_verified);
    CHECK(result.err.empty());
    for (const auto& check : full_token_checks) CHECK(result.passed(check));
    CHECK(result.count("  FAIL ") == 0);
    CHECK(result.count("  PASS ") >= full_token_checks.size());
    CHECK(result.out.find("Token: full (platform + CVM)") != std::string::npos);
    CHECK(result.out.find("CVM token (ES512)") != std::string::npos);
    CHECK(result.out.find("Verdict: VERIFIED") != std::string::npos);
  }
  SECTION("the JSON report parses and has verdict \"verified\" with every check passed") {
    auto result = run(with(args, {"--json"}));
    INFO(result.transcript());
    CHECK(result.code == verifier::exit_verified);
    rapidjson::Document json;
    json.Parse<rapidjson::kParseValidateEncodingFlag>(result.out.c_str());
    REQUIRE_FALSE(json.HasParseError());
    REQUIRE(json.IsObject());
    REQUIRE(json.HasMember("verdict"));
    CHECK(std::string(json["verdict"].GetString()) == "verified");
    CHECK(std::string(json["kind"].GetString()) == "full");
    CHECK(std::string(json["cvm"]["challenge"].GetString()) == hex_encode(request.challenge));
    REQUIRE(json.HasMember("checks"));
    REQUIRE(json["checks"].IsArray());
    const auto& checks = json["checks"].GetArray();
    CHECK(checks.Size() >= full_token_checks.size());
    std::set<std::string> names;
    for (const auto& check : checks) {
      REQUIRE(check.IsObject());
      REQUIRE(check.HasMember("passed"));
      REQUIRE(check["passed"].IsBool());
      CHECK(check["passed"].GetBool());
      CHECK(check.HasMember("expected"));
      CHECK(check.HasMember("found"));
      names.insert(check["name"].GetString());
    }
    for (const auto& check : full_token_checks) CHECK(names.count(check) == 1);
  }
  SECTION("without --challenge the challenge is printed but not compared") {
    auto result = run({"--token", token_file, "--device-cert", saved.device_cert, "--roots", saved.ca_pem});
    INFO(result.transcript());
    CHECK(result.code == verifier::exit_verified);
    CHECK(result.out.find("cvm.challenge") == std::string::npos);
    CHECK(result.out.find(hex_encode(request.challenge)) != std::string::npos);
  }
}

TEST_CASE("a simulated legacy RSA token verifies only with --allow-legacy") {
  const auto& saved = rsa_device();
  auto request = token_request(sim::TokenFormat::legacy);
  auto issued = expect_ok(sim::issue_token(saved.device, request));
  TempDir dir;
  auto args = genuine_options(dir.write("legacy.cbor", issued.token), saved, request.challenge);

  SECTION("with --allow-legacy it verifies, its RAK being the device key") {
    auto result = run(with(args, {"--allow-legacy"}));
    INFO(result.transcript());
    CHECK(result.code == verifier::exit_verified);
    CHECK(result.passed("legacy.policy"));
    CHECK(result.passed("legacy.rak_is_device_key"));
    CHECK(result.passed("cvm.signature"));
    CHECK(result.passed("device.chain"));
    CHECK(result.count("  FAIL ") == 0);
    CHECK(result.out.find("Token: legacy (CVM only)") != std::string::npos);
    CHECK(result.out.find("CVM token (PS256)") != std::string::npos);
  }
  SECTION("without --allow-legacy it is rejected naming legacy.policy") {
    auto result = run(args);
    INFO(result.transcript());
    CHECK(result.code == verifier::exit_check_failed);
    CHECK(result.failed("legacy.policy"));
    CHECK(result.reason() == "legacy.policy");
  }
}

TEST_CASE("a token stored as hex text gives the same result as the raw token") {
  const auto& saved = p521_device();
  auto request = token_request(sim::TokenFormat::full);
  auto issued = expect_ok(sim::issue_token(saved.device, request));
  // Line-broken like a hex dump, and in upper case, as hand-copied tokens sometimes are.
  std::string hex = hex_encode(issued.token);
  std::transform(hex.begin(), hex.end(), hex.begin(),
                 [](char c) { return static_cast<char>(std::toupper(static_cast<unsigned char>(c))); });
  std::string dump;
  for (std::size_t i = 0; i < hex.size(); i += 64) dump += hex.substr(i, 64) + "\n";
  TempDir dir;
  auto raw_file = dir.write("token.cbor", issued.token);
  auto hex_file = dir.write("token.cbor.hex", dump);

  SECTION("a verified token") {
    auto raw = run(genuine_options(raw_file, saved, request.challenge));
    INFO(raw.transcript());
    auto hexed = run(genuine_options(hex_file, saved, request.challenge));
    INFO(hexed.transcript());
    CHECK(raw.code == verifier::exit_verified);
    CHECK(hexed.code == raw.code);
    CHECK(hexed.out == raw.out);
  }
  SECTION("a rejected token") {
    Bytes other_challenge = crypto::random_bytes(token::challenge_size);
    auto raw = run(genuine_options(raw_file, saved, other_challenge));
    INFO(raw.transcript());
    auto hexed = run(genuine_options(hex_file, saved, other_challenge));
    INFO(hexed.transcript());
    CHECK(raw.code == verifier::exit_check_failed);
    CHECK(hexed.code == raw.code);
    CHECK(hexed.out == raw.out);
  }
}

// --- Certificate files ---

TEST_CASE("one --roots file may hold several roots, and the device's is found among them") {
  const auto& saved = p521_device();
  auto request = token_request(sim::TokenFormat::full);
  auto issued = expect_ok(sim::issue_token(saved.device, request));
  TempDir dir;
  auto token_file = dir.write("token.cbor", issued.token);
  std::string own = read_text_file(saved.ca_pem);
  std::string other = read_text_file(other_ca_device().ca_pem);

  SECTION("the device's root second in the bundle") {
    auto bundle = dir.write("roots.pem", other + own);
    auto result = run({"--token", token_file, "--device-cert", saved.device_cert, "--roots", bundle,
                       "--challenge", hex_encode(request.challenge)});
    INFO(result.transcript());
    CHECK(result.code == verifier::exit_verified);
    CHECK(result.out.find("2 pinned root(s)") != std::string::npos);
  }
  SECTION("the device's root first in the bundle") {
    auto bundle = dir.write("roots.pem", own + other);
    auto result = run({"--token", token_file, "--device-cert", saved.device_cert, "--roots", bundle});
    INFO(result.transcript());
    CHECK(result.code == verifier::exit_verified);
  }
  SECTION("a bundle of other roots only is refused") {
    auto bundle = dir.write("roots.pem", other + read_text_file(board_pair().a.ca_pem));
    auto result = run({"--token", token_file, "--device-cert", saved.device_cert, "--roots", bundle});
    INFO(result.transcript());
    CHECK(result.code == verifier::exit_check_failed);
    CHECK(result.failed("device.chain"));
  }
}

TEST_CASE("a device certificate file holding the leaf and its intermediate chains to the root") {
  // A three-level PKI like Huawei's (root -> product CA -> device): the device certificate
  // is re-issued for the simulated device's key by an intermediate under a new root.
  const auto& saved = p521_device();
  auto root_key = expect_ok(crypto::PrivateKey::generate(crypto::KeyType::ec_p521));
  auto root = expect_ok(crypto::issue_certificate({"Test Equipment Root CA", "test", true, 3650, 11},
                                                  root_key.public_key(), root_key, nullptr));
  auto intermediate_key = expect_ok(crypto::PrivateKey::generate(crypto::KeyType::ec_p521));
  auto intermediate = expect_ok(crypto::issue_certificate({"Test Product CA", "test", true, 3650, 12},
                                                          intermediate_key.public_key(), root_key, &root));
  auto leaf = expect_ok(crypto::issue_certificate({"SIMCLICHAINED", "test", false, 3650, 13},
                                                  saved.device.device_key().public_key(), intermediate_key,
                                                  &intermediate));
  auto request = token_request(sim::TokenFormat::full);
  auto issued = expect_ok(sim::issue_token(saved.device, request));
  TempDir dir;
  auto token_file = dir.write("token.cbor", issued.token);
  auto root_file = dir.write("root.pem", root.pem());

  SECTION("leaf followed by the intermediate in --device-cert") {
    auto chain_file = dir.write("device-chain.pem", leaf.pem() + intermediate.pem());
    auto result = run({"--token", token_file, "--device-cert", chain_file, "--roots", root_file, "--challenge",
                       hex_encode(request.challenge)});
    INFO(result.transcript());
    CHECK(result.code == verifier::exit_verified);
    CHECK(result.passed("device.chain"));
    CHECK(result.out.find("CN=SIMCLICHAINED") != std::string::npos);
  }
  SECTION("the intermediate in the --roots file serves as an intermediate, not a trust anchor") {
    auto leaf_file = dir.write("leaf.pem", leaf.pem());
    auto roots_file = dir.write("roots.pem", intermediate.pem() + root.pem());
    auto result = run({"--token", token_file, "--device-cert", leaf_file, "--roots", roots_file});
    INFO(result.transcript());
    CHECK(result.code == verifier::exit_verified);
    auto intermediate_only = dir.write("intermediate.pem", intermediate.pem());
    auto refused = run({"--token", token_file, "--device-cert", leaf_file, "--roots", intermediate_only});
    INFO(refused.transcript());
    CHECK(refused.code == verifier::exit_check_failed);
    CHECK(refused.failed("device.chain"));
  }
  SECTION("the leaf alone does not chain") {
    auto leaf_file = dir.write("leaf.pem", leaf.pem());
    auto result = run({"--token", token_file, "--device-cert", leaf_file, "--roots", root_file});
    INFO(result.transcript());
    CHECK(result.code == verifier::exit_check_failed);
    CHECK(result.failed("device.chain"));
  }
}

// --- Hostile and broken input ---

TEST_CASE("a token with one byte flipped in a signature is rejected naming the signature") {
  const auto& saved = p521_device();
  auto request = token_request(sim::TokenFormat::full);
  auto issued = expect_ok(sim::issue_token(saved.device, request));
  TempDir dir;

  SECTION("the CVM token's signature (the last bytes of the token)") {
    Bytes tampered = issued.token;
    tampered.back() ^= 0x01;
    auto result = run(genuine_options(dir.write("tampered.cbor", tampered), saved, request.challenge));
    INFO(result.transcript());
    CHECK(result.code == verifier::exit_check_failed);
    CHECK(result.failed("cvm.signature"));
    CHECK(result.reason() == "cvm.signature");
  }
  SECTION("the platform token's signature") {
    const Bytes& platform = *issued.platform_sign1;
    auto at = std::search(issued.token.begin(), issued.token.end(), platform.begin(), platform.end());
    REQUIRE(at != issued.token.end());
    Bytes tampered = issued.token;
    auto last = static_cast<std::size_t>(at - issued.token.begin()) + platform.size() - 1;
    tampered[last] ^= 0x80;
    auto result = run(genuine_options(dir.write("tampered.cbor", tampered), saved, request.challenge));
    INFO(result.transcript());
    CHECK(result.code == verifier::exit_check_failed);
    CHECK(result.failed("platform.signature"));
    CHECK(result.reason() == "platform.signature");
  }
}

TEST_CASE("a token is rejected for a challenge other than its own") {
  const auto& saved = p521_device();
  auto request = token_request(sim::TokenFormat::full);
  auto issued = expect_ok(sim::issue_token(saved.device, request));
  TempDir dir;
  auto result = run(genuine_options(dir.write("token.cbor", issued.token), saved,
                                    crypto::random_bytes(token::challenge_size)));
  INFO(result.transcript());
  CHECK(result.code == verifier::exit_check_failed);
  CHECK(result.failed("cvm.challenge"));
  CHECK(result.reason() == "cvm.challenge");
}

TEST_CASE("a token is rejected against the roots of another simulated CA or with no roots at all") {
  const auto& saved = p521_device();
  auto request = token_request(sim::TokenFormat::full);
  auto issued = expect_ok(sim::issue_token(saved.device, request));
  TempDir dir;
  auto token_file = dir.write("token.cbor", issued.token);

  SECTION("another CA's root") {
    auto result = run({"--token", token_file, "--device-cert", saved.device_cert, "--roots",
                       other_ca_device().ca_pem, "--challenge", hex_encode(request.challenge)});
    INFO(result.transcript());
    CHECK(result.code == verifier::exit_check_failed);
    CHECK(result.failed("device.chain"));
    CHECK(result.reason() == "device.chain");
  }
  SECTION("no --roots") {
    auto result = run({"--token", token_file, "--device-cert", saved.device_cert, "--challenge",
                       hex_encode(request.challenge)});
    INFO(result.transcript());
    CHECK(result.code == verifier::exit_check_failed);
    CHECK(result.failed("device.chain"));
    CHECK(result.reason() == "device.chain");
  }
  SECTION("no --device-cert: a full token's platform signature cannot be checked") {
    auto result = run({"--token", token_file, "--roots", saved.ca_pem});
    INFO(result.transcript());
    CHECK(result.code == verifier::exit_check_failed);
    CHECK(result.failed("device.chain"));
    CHECK_FALSE(result.passed("platform.signature"));
  }
}

TEST_CASE("a platform token from device A spliced with a CVM token from device B is rejected") {
  const auto& pair = board_pair();
  auto request = token_request(sim::TokenFormat::full);
  auto from_a = expect_ok(sim::issue_token(pair.a.device, request));
  auto from_b = expect_ok(sim::issue_token(pair.b.device, request));
  TempDir dir;
  auto spliced = dir.write("spliced.cbor", sim::encode_token(*from_a.platform_sign1, from_b.cvm_sign1));

  SECTION("with A's certificate the RAK binding fails") {
    auto result = run(genuine_options(spliced, pair.a, request.challenge));
    INFO(result.transcript());
    CHECK(result.code == verifier::exit_check_failed);
    CHECK(result.passed("device.chain"));
    CHECK(result.passed("platform.signature"));
    CHECK(result.failed("platform.rak_binding"));
    CHECK(result.reason() == "platform.rak_binding");
  }
  SECTION("with B's certificate the platform signature fails") {
    auto result = run(genuine_options(spliced, pair.b, request.challenge));
    INFO(result.transcript());
    CHECK(result.code == verifier::exit_check_failed);
    CHECK(result.failed("platform.signature"));
  }
  SECTION("each board's own token verifies under the shared CA") {
    CHECK(run(genuine_options(dir.write("a.cbor", from_a.token), pair.a, request.challenge)).code ==
          verifier::exit_verified);
    CHECK(run(genuine_options(dir.write("b.cbor", from_b.token), pair.b, request.challenge)).code ==
          verifier::exit_verified);
  }
}

TEST_CASE("a token that is not a well-formed token is unusable input, with the reason on stderr") {
  const auto& saved = p521_device();
  auto issued = expect_ok(sim::issue_token(saved.device, token_request(sim::TokenFormat::full)));
  TempDir dir;
  auto unusable = [&](const std::string& file, std::string_view reason) {
    auto result = run({"--token", file, "--device-cert", saved.device_cert, "--roots", saved.ca_pem});
    INFO(result.transcript());
    CHECK(result.code == verifier::exit_unusable);
    CHECK(result.out.empty());
    CHECK(result.err.find(reason) != std::string::npos);
    CHECK(std::count(result.err.begin(), result.err.end(), '\n') == 1);
  };

  SECTION("truncated to 100 bytes") {
    unusable(dir.write("truncated.cbor", ByteView(issued.token).first(100)), "input ends inside an item");
  }
  SECTION("missing its last byte") {
    unusable(dir.write("truncated.cbor", ByteView(issued.token).first(issued.token.size() - 1)),
             "input ends inside an item");
  }
  SECTION("an 8193-byte file") {
    Bytes big = issued.token;
    big.resize(token::max_token_size + 1, 0xA5);
    unusable(dir.write("big.cbor", big), "8193 bytes exceeds the limit of 8192");
  }
  SECTION("hex text that decodes to 8193 bytes") {
    Bytes big = issued.token;
    big.resize(token::max_token_size + 1, 0xA5);
    unusable(dir.write("big.hex", hex_encode(big)), "8193 bytes exceeds the limit of 8192");
  }
  SECTION("not CBOR") {
    // The first byte happens to be a CBOR text head; what follows is garbage.
    unusable(dir.write("text.cbor", "this is a text file, not an attestation token\n"),
             "token: CBOR: 25 trailing bytes after the item");
  }
  SECTION("an empty file") { unusable(dir.write("empty.cbor", ""), "empty"); }
  SECTION("hex text with an odd number of digits") { unusable(dir.write("odd.hex", "d9018fa"), "odd.hex"); }
  SECTION("trailing bytes after the token") {
    Bytes longer = issued.token;
    longer.push_back(0x00);
    unusable(dir.write("trailing.cbor", longer), "trailing bytes");
  }
}

TEST_CASE("every truncation of a simulated full token is refused and none is accepted") {
  const auto& saved = p521_device();
  auto issued = expect_ok(sim::issue_token(saved.device, token_request(sim::TokenFormat::full)));
  TempDir dir;
  std::string file = dir.path("cut.cbor");
  std::map<int, std::size_t> codes;
  for (std::size_t size = 0; size < issued.token.size(); ++size) {
    // Plain stream writes: the atomic writer's fsync per file would make this loop slow.
    std::ofstream(file, std::ios::binary | std::ios::trunc)
        .write(reinterpret_cast<const char*>(issued.token.data()), static_cast<std::streamsize>(size));
    std::ostringstream out;
    std::ostringstream err;
    int code = verifier::run_verify_token({"--token", file, "--device-cert", saved.device_cert, "--roots",
                                           saved.ca_pem},
                                          out, err);
    ++codes[code];
    if (code == verifier::exit_verified) FAIL_CHECK("a token cut to " << size << " bytes verified");
  }
  CHECK(codes.count(verifier::exit_verified) == 0);
  CHECK(codes[verifier::exit_unusable] == issued.token.size());
}

TEST_CASE("bad arguments and unreadable files are unusable input") {
  const auto& saved = p521_device();
  auto issued = expect_ok(sim::issue_token(saved.device, token_request(sim::TokenFormat::full)));
  TempDir dir;
  auto token_file = dir.write("token.cbor", issued.token);
  auto unusable = [](const Run& result, std::string_view reason) {
    CHECK(result.code == verifier::exit_unusable);
    CHECK(result.out.empty());
    CHECK(result.err.rfind("fde-admin verify-token: ", 0) == 0);
    CHECK(result.err.find(reason) != std::string::npos);
  };

  SECTION("no --token") { unusable(run({"--roots", saved.ca_pem}), "--token FILE is required"); }
  SECTION("no arguments at all") { unusable(run({}), "--token FILE is required"); }
  SECTION("an unknown option") { unusable(run({"--token", token_file, "--bogus"}), "unknown option --bogus"); }
  SECTION("an option without its value") { unusable(run({"--token"}), "--token needs a value"); }
  SECTION("a flag given a value") { unusable(run({"--token", token_file, "--json=yes"}), "--json takes no value"); }
  SECTION("--token twice") {
    unusable(run({"--token", token_file, "--token", token_file}), "--token given more than once");
  }
  SECTION("a stray positional argument") {
    unusable(run({"--token", token_file, token_file}), "unexpected argument");
  }
  SECTION("a token file that does not exist") {
    auto missing = dir.path("missing.cbor");
    unusable(run({"--token", missing}), missing + ": No such file or directory");
  }
  SECTION("a directory given as the token") { unusable(run({"--token", dir.path("")}), "not a readable file"); }
  SECTION("a --roots file that does not exist") {
    unusable(run({"--token", token_file, "--roots", dir.path("roots.pem")}), "roots.pem");
  }
  SECTION("a --roots file without a certificate") {
    unusable(run({"--token", token_file, "--roots", dir.write("roots.pem", "not a certificate\n")}), "roots.pem");
  }
  SECTION("a --device-cert file that is not a certificate") {
    unusable(run({"--token", token_file, "--device-cert", token_file}), "token.cbor");
  }
  SECTION("a --challenge of the wrong length") {
    unusable(run({"--token", token_file, "--challenge", hex_encode(crypto::random_bytes(32))}),
             "--challenge must be 64 bytes (128 hex digits), got 32");
  }
  SECTION("a --challenge that is not hex") {
    unusable(run({"--token", token_file, "--challenge", "xyz"}), "--challenge");
  }
  SECTION("--event-log without --reference") {
    auto log = dir.write("log.bin", expect_ok(expect_ok(sim::build_grub_boot_log(sample_grub_boot())).log_area()));
    unusable(run({"--token", token_file, "--event-log", log}), "--event-log needs --reference");
  }
  SECTION("a --reference file that is not a reference-values document") {
    unusable(run({"--token", token_file, "--reference", dir.write("ref.json", "{\"version\": 99}")}), "ref.json");
  }
}

TEST_CASE("the platform policy options judge lifecycle, firmware and issuer as the daemon does") {
  const auto& saved = p521_device();
  auto request = token_request(sim::TokenFormat::full);
  auto issued = expect_ok(sim::issue_token(saved.device, request));
  TempDir dir;
  auto token_file = dir.write("token.cbor", issued.token);
  auto args = genuine_options(token_file, saved, request.challenge);
  const std::string bl31 = hex_encode(crypto::sha256(as_bytes("virtCCA FDE simulator: measurement of BL31")));
  const auto& ca = saved.device.ca_certificate();

  SECTION("by default the secured lifecycle passes") {
    auto result = run(args);
    INFO(result.transcript());
    CHECK(result.code == verifier::exit_verified);
    CHECK(result.passed("platform.lifecycle"));
  }
  SECTION("--lifecycle replaces the allowed states") {
    auto result = run(with(args, {"--lifecycle", "non_rot_debug", "--lifecycle", "recoverable_rot_debug"}));
    INFO(result.transcript());
    CHECK(result.code == verifier::exit_check_failed);
    CHECK(result.reason() == "platform.lifecycle");
  }
  SECTION("--require-sw-component passes for firmware present and fails for firmware absent") {
    auto present = run(with(args, {"--require-sw-component", "BL31:" + bl31}));
    INFO(present.transcript());
    CHECK(present.code == verifier::exit_verified);
    CHECK(present.passed("platform.sw_components"));
    auto absent = run(with(args, {"--require-sw-component", "BL31:" + std::string(64, '0')}));
    INFO(absent.transcript());
    CHECK(absent.code == verifier::exit_check_failed);
    CHECK(absent.reason() == "platform.sw_components");
  }
  SECTION("--device-issuer-sha256 pins the CA that issued the device certificate") {
    auto pinned = run(with(args, {"--device-issuer-sha256", hex_encode(ca.sha256_fingerprint())}));
    INFO(pinned.transcript());
    CHECK(pinned.code == verifier::exit_verified);
    CHECK(pinned.passed("device.issuer"));
    auto other = run(with(args, {"--device-issuer-sha256", std::string(64, 'e')}));
    CHECK(other.code == verifier::exit_check_failed);
    CHECK(other.reason() == "device.issuer");
  }
  SECTION("bad values are unusable input naming the option") {
    for (const auto& bad : std::vector<std::vector<std::string>>{{"--lifecycle", "debug"},
                                                                  {"--require-sw-component", "BL31:12"},
                                                                  {"--device-issuer-sha256", "12"}}) {
      auto result = run(with({"--token", token_file}, bad));
      INFO(result.transcript());
      CHECK(result.code == verifier::exit_unusable);
      CHECK(result.err.find(bad[0]) != std::string::npos);
    }
  }
}

TEST_CASE("--help prints the usage and exits 0") {
  auto result = run({"--help"});
  INFO(result.transcript());
  CHECK(result.code == verifier::exit_verified);
  CHECK(result.out.find("usage: fde-admin verify-token") != std::string::npos);
  CHECK(result.out.find("--allow-legacy") != std::string::npos);
}

// --- Claim text from a hostile token ---

TEST_CASE("claim text with terminal control characters is printed escaped and the JSON stays valid") {
  // A token's text claims come from whoever made the token; printed raw, a crafted token
  // could drive the operator's terminal (retitle it, clear it, fake a PASS line).
  const auto& saved = p521_device();
  auto request = token_request(sim::TokenFormat::full);
  auto claims = saved.device.platform_claims();
  claims.sw_components[0].type = "\x1b]0;owned\x07\x1b[2J";
  claims.sw_components[1].version = "1.0\n  PASS everything\r\xc2\x9b" "31m";  // LF, CR, C1 CSI
  claims.sw_components[2].version = "1.0 \xe6\xb5\x8b\xe8\xaf\x95";             // printable UTF-8 is kept
  request.platform_claims = claims;
  auto issued = expect_ok(sim::issue_token(saved.device, request));
  TempDir dir;
  auto args = genuine_options(dir.write("token.cbor", issued.token), saved, request.challenge);

  SECTION("text") {
    auto result = run(args);
    INFO(result.transcript());
    CHECK(result.code == verifier::exit_verified);
    CHECK(result.out.find('\x1b') == std::string::npos);
    CHECK(result.out.find('\x07') == std::string::npos);
    CHECK(result.out.find('\r') == std::string::npos);
    CHECK(result.out.find("\xc2\x9b") == std::string::npos);
    CHECK_FALSE(result.passed("everything"));
    CHECK(result.out.find(" v1.0\\x0a  PASS everything\\x0d\\xc2\\x9b31m\n") != std::string::npos);
    CHECK(result.out.find(" v1.0 \xe6\xb5\x8b\xe8\xaf\x95\n") != std::string::npos);
    CHECK(result.out.find("\\x1b]0;owned\\x07\\x1b[2J") != std::string::npos);
  }
  SECTION("JSON keeps the claim exactly, escaped by the JSON writer") {
    auto result = run(with(args, {"--json"}));
    INFO(result.transcript());
    CHECK(result.code == verifier::exit_verified);
    CHECK(result.out.find('\x1b') == std::string::npos);
    rapidjson::Document json;
    json.Parse<rapidjson::kParseValidateEncodingFlag>(result.out.c_str());
    REQUIRE_FALSE(json.HasParseError());
    CHECK(std::string(json["platform"]["sw_components"][0]["type"].GetString()) == claims.sw_components[0].type);
  }
}

TEST_CASE("claim text that is not valid UTF-8 makes the token unusable") {
  const auto& saved = p521_device();
  auto request = token_request(sim::TokenFormat::full);
  auto claims = saved.device.platform_claims();
  claims.sw_components[1].version = "1.0\xff\xfe";
  request.platform_claims = claims;
  auto issued = expect_ok(sim::issue_token(saved.device, request));
  TempDir dir;
  auto result = run(genuine_options(dir.write("token.cbor", issued.token), saved, request.challenge));
  INFO(result.transcript());
  CHECK(result.code == verifier::exit_unusable);
  CHECK(result.err.find("platform token") != std::string::npos);
}

// --- Reference values and the event log ---

TEST_CASE("a token whose REMs replay from the event log matches its reference values") {
  const auto& saved = p521_device();
  auto boot = sample_grub_boot();
  auto builder = expect_ok(sim::build_grub_boot_log(boot));
  auto request = token_request(sim::TokenFormat::full);
  auto rems = expect_ok(builder.rems(crypto::HashAlg::sha256));
  std::copy(rems.begin(), rems.end(), request.rems.begin());
  auto issued = expect_ok(sim::issue_token(saved.device, request));
  TempDir dir;
  auto args = genuine_options(dir.write("token.cbor", issued.token), saved, request.challenge);
  auto log_file = dir.write("CCEL.log", expect_ok(builder.log_area()));
  auto reference = reference_for(boot, request.rim);

  SECTION("the published reference values verify") {
    auto ref_file = dir.write("reference.json", expect_ok(reference::serialize_reference_values(reference)));
    auto result = run(with(args, {"--reference", ref_file, "--event-log", log_file}));
    INFO(result.transcript());
    CHECK(result.code == verifier::exit_verified);
    for (const auto* check : {"reference.hash_alg", "reference.rim", "eventlog.replay", "reference.grub",
                              "reference.grub_cfg", "reference.kernel", "reference.initramfs",
                              "reference.kernel_cmdline", "reference.rem3", "reference.set"})
      CHECK(result.passed(check));
    CHECK(result.count("  FAIL ") == 0);
  }
  SECTION("a reference whose initramfs differs is rejected naming reference.initramfs") {
    reference.sets[0].grub.initramfs = crypto::sha256(as_bytes("an initramfs someone else built"));
    auto ref_file = dir.write("reference.json", expect_ok(reference::serialize_reference_values(reference)));
    auto result = run(with(args, {"--reference", ref_file, "--event-log", log_file}));
    INFO(result.transcript());
    CHECK(result.code == verifier::exit_check_failed);
    CHECK(result.passed("eventlog.replay"));
    CHECK(result.failed("reference.initramfs"));
    CHECK(result.reason() == "reference.initramfs");
  }
  SECTION("a reference for other firmware is rejected naming reference.rim") {
    reference.firmware_rims = {crypto::sha256(as_bytes("other firmware"))};
    auto ref_file = dir.write("reference.json", expect_ok(reference::serialize_reference_values(reference)));
    auto result = run(with(args, {"--reference", ref_file, "--event-log", log_file}));
    INFO(result.transcript());
    CHECK(result.code == verifier::exit_check_failed);
    CHECK(result.failed("reference.rim"));
  }
  SECTION("a token that fails verification has its measurements left unchecked, not passed") {
    auto ref_file = dir.write("reference.json", expect_ok(reference::serialize_reference_values(reference)));
    auto other_challenge = request.challenge;
    other_challenge[0] ^= 1;
    auto result = run(with(genuine_options(dir.write("token.cbor", issued.token), saved, other_challenge),
                           {"--reference", ref_file, "--event-log", log_file}));
    INFO(result.transcript());
    CHECK(result.code == verifier::exit_check_failed);
    CHECK(result.failed("reference.values"));
    CHECK_FALSE(result.passed("reference.rim"));
    CHECK_FALSE(result.passed("eventlog.replay"));
  }
  SECTION("the log of another boot does not replay to the token's REMs") {
    auto other_boot = boot;
    other_boot.initramfs = sim::Measurement::of_content(as_bytes("initramfs with init=/bin/sh"),
                                                        std::vector<crypto::HashAlg>{crypto::HashAlg::sha256});
    auto other_log = dir.write("other.log", expect_ok(expect_ok(sim::build_grub_boot_log(other_boot)).log_area()));
    auto ref_file = dir.write("reference.json", expect_ok(reference::serialize_reference_values(reference)));
    auto result = run(with(args, {"--reference", ref_file, "--event-log", other_log}));
    INFO(result.transcript());
    CHECK(result.code == verifier::exit_check_failed);
    CHECK(result.failed("eventlog.replay"));
  }
}

// --- Real public test data (test/data/external, README.md there) ---

TEST_CASE("the real secGear legacy token is refused because its RAK is not the device key, "
          "though its signature and the AIK chain to Huawei's root verify") {
  const std::string base = external_data + "/";
  for (const char* token : {"virtcca-secgear/virtcca.cbor", "virtcca-secgear/virtcca.cbor.hex"}) {
    DYNAMIC_SECTION(token) {
      std::vector<std::string> args{"--token", base + token,
                                    "--device-cert", base + "virtcca-secgear/virtcca_aik_cert.der",
                                    "--roots", base + "huawei-pki/Huawei_Equipment_CA_root.pem",
                                    "--roots", base + "huawei-pki/Huawei_IT_Product_CA.pem",
                                    "--allow-legacy"};
      auto result = run(args);
      INFO(result.transcript());
      CHECK(result.code == verifier::exit_check_failed);
      CHECK(result.reason() == "legacy.rak_is_device_key");
      CHECK(result.failed("legacy.rak_is_device_key"));
      CHECK(result.passed("device.chain"));
      CHECK(result.passed("cvm.signature"));
      CHECK(result.passed("cvm.claim_sizes"));
      CHECK(result.passed("legacy.policy"));
      CHECK(result.out.find("CVM payload double-wrapped (virtCCA)") != std::string::npos);
      CHECK(result.out.find("7309ec52e2870938ffa6930793d61e55ab982a756111410829d6073f66c71708") != std::string::npos);

      auto json_result = run(with(args, {"--json"}));
      INFO(json_result.transcript());
      rapidjson::Document json;
      json.Parse<rapidjson::kParseValidateEncodingFlag>(json_result.out.c_str());
      REQUIRE_FALSE(json.HasParseError());
      CHECK(std::string(json["verdict"].GetString()) == "rejected");
      CHECK(std::string(json["reason"].GetString()).rfind("legacy.rak_is_device_key:", 0) == 0);
    }
  }
}

TEST_CASE("the real secGear token is refused without --allow-legacy, and without the sub CA") {
  const std::string base = external_data + "/";
  std::vector<std::string> args{"--token", base + "virtcca-secgear/virtcca.cbor", "--device-cert",
                                base + "virtcca-secgear/virtcca_aik_cert.der", "--roots",
                                base + "huawei-pki/Huawei_Equipment_CA_root.pem"};
  SECTION("no --allow-legacy") {
    auto result = run(with(args, {"--roots", base + "huawei-pki/Huawei_IT_Product_CA.pem"}));
    INFO(result.transcript());
    CHECK(result.code == verifier::exit_check_failed);
    CHECK(result.reason() == "legacy.policy");
  }
  SECTION("the root alone: the AIK certificate cannot reach it") {
    auto result = run(with(args, {"--allow-legacy"}));
    INFO(result.transcript());
    CHECK(result.code == verifier::exit_check_failed);
    CHECK(result.failed("device.chain"));
    CHECK(result.passed("cvm.signature"));
  }
}

namespace {

// What each public token gives with `--token FILE --allow-legacy` (no certificate exists
// for the Arm tokens: their CPAKs are raw keys): the exit code and the first failed check
// (exit 1) or a part of the error line (exit 2). docs/testdata-verdicts.md explains each.
struct ExpectedOutcome {
  int code;
  std::string reason;
};
const std::map<std::string, ExpectedOutcome>& public_token_outcomes() {
  static const std::map<std::string, ExpectedOutcome> outcomes{
      // virtCCA legacy token: well-formed; without a device certificate the chain fails.
      {"virtcca-secgear/virtcca.cbor", {1, "device.chain"}},
      {"virtcca-secgear/virtcca.cbor.hex", {1, "device.chain"}},
      // Arm CCA tag-399 tokens: the realm RAK is a 97-byte P-384 point (or a COSE_Key), not
      // virtCCA's 133-byte P-521 point.
      {"armcca-rust-ccatoken/cca-token-01.cbor", {1, "cvm.claim_sizes"}},
      {"armcca-rust-ccatoken/cca-token-02.cbor", {1, "cvm.claim_sizes"}},
      {"armcca-rust-ccatoken/bug-33-repro.cbor", {1, "cvm.claim_sizes"}},
      {"armcca-rust-ccatoken/cca-token-draft-ffm-00.cbor", {1, "cvm.claim_sizes"}},
      {"armcca-veraison-ccatoken/cca_token.cbor", {1, "cvm.claim_sizes"}},
      {"armcca-trustee/cca-example-token.cbor", {1, "cvm.claim_sizes"}},
      // Newer Arm draft: tag 907 collections of CMW entries.
      {"armcca-tfm-iat-verifier/cca_token.cbor", {2, "tag 907"}},
      {"armcca-tfm-iat-verifier/cca_example_token.cbor", {2, "tag 907"}},
      {"armcca-tfm-iat-verifier/cca_example_token_legacy.cbor", {2, "tag 907"}},
      // Platform tokens alone: a bare COSE_Sign1.
      {"armcca-tfm-iat-verifier/cca_platform_token.cbor", {2, "bare COSE_Sign1 (tag 18)"}},
      {"armcca-tfm-iat-verifier/cca_example_platform_token.cbor", {2, "bare COSE_Sign1 (tag 18)"}},
      {"armcca-tfm-iat-verifier/cca_example_platform_token_legacy.cbor", {2, "bare COSE_Sign1 (tag 18)"}},
  };
  return outcomes;
}

}  // namespace

TEST_CASE("no token in the public test data verifies as a virtCCA token, and none crashes the command") {
  std::set<std::string> found;
  for (const char* folder : {"virtcca-secgear", "armcca-rust-ccatoken", "armcca-veraison-ccatoken", "armcca-trustee",
                             "armcca-tfm-iat-verifier"}) {
    for (const auto& entry : fs::directory_iterator(fs::path(external_data) / folder)) {
      std::string name = entry.path().filename().string();
      bool token_like = name.size() > 5 && (name.ends_with(".cbor") || name.ends_with(".cbor.hex"));
      if (entry.is_regular_file() && token_like) found.insert(std::string(folder) + "/" + name);
    }
  }
  // A new file in the test data must have its outcome recorded here and in the doc.
  std::set<std::string> recorded;
  for (const auto& [file, outcome] : public_token_outcomes()) recorded.insert(file);
  CHECK(found == recorded);

  for (const auto& file : found) {
    DYNAMIC_SECTION(file) {
      auto result = run({"--token", external_data + "/" + file, "--allow-legacy"});
      INFO(result.transcript());
      CHECK(result.code != verifier::exit_verified);
      CHECK((result.code == verifier::exit_check_failed || result.code == verifier::exit_unusable));
      auto expected = public_token_outcomes().find(file);
      REQUIRE(expected != public_token_outcomes().end());
      CHECK(result.code == expected->second.code);
      if (result.code == verifier::exit_check_failed)
        CHECK(result.reason() == expected->second.reason);
      else
        CHECK(result.err.find(expected->second.reason) != std::string::npos);
      // JSON output stays valid for whatever a well-formed token carries.
      if (result.code == verifier::exit_check_failed) {
        auto json_result = run({"--token", external_data + "/" + file, "--allow-legacy", "--json"});
        INFO(json_result.transcript());
        rapidjson::Document json;
        json.Parse<rapidjson::kParseValidateEncodingFlag>(json_result.out.c_str());
        CHECK_FALSE(json.HasParseError());
      }
    }
  }
}

TEST_CASE("the Arm CCA tokens are refused even with the secGear device certificate and Huawei roots") {
  // With a certificate the command gets further; it must still never accept a non-virtCCA token.
  const std::string base = external_data + "/";
  for (const auto& [file, outcome] : public_token_outcomes()) {
    if (file.rfind("armcca-", 0) != 0) continue;
    DYNAMIC_SECTION(file) {
      auto result = run({"--token", base + file, "--device-cert", base + "virtcca-secgear/virtcca_aik_cert.der",
                         "--roots", base + "huawei-pki/Huawei_Equipment_CA_root.pem", "--roots",
                         base + "huawei-pki/Huawei_IT_Product_CA.pem", "--allow-legacy"});
      INFO(result.transcript());
      CHECK(result.code == outcome.code);
      // Their realm signatures are genuine (ES384 by the embedded P-384 RAK), but no
      // Huawei device key signed their platform tokens.
      if (result.code == verifier::exit_check_failed) {
        CHECK(result.passed("device.chain"));
        CHECK(result.failed("cvm.claim_sizes"));
        CHECK(result.failed("platform.signature"));
        CHECK(result.failed("platform.rak_binding"));
      }
    }
  }
}

namespace {

// A JWK coordinate (base64url without padding) as bytes.
Bytes jwk_coordinate(std::string_view text) {
  std::string standard(text);
  std::replace(standard.begin(), standard.end(), '-', '+');
  std::replace(standard.begin(), standard.end(), '_', '/');
  while (standard.size() % 4 != 0) standard += '=';
  return expect_ok(base64_decode(standard));
}

// The P-256 trust anchor of cca-token-02 (ta-02-ok.json) as a public key.
crypto::PublicKey token_02_platform_key() {
  rapidjson::Document json;
  json.Parse(read_text_file(external_data + "/armcca-rust-ccatoken/ta-02-ok.json").c_str());
  REQUIRE_FALSE(json.HasParseError());
  const auto& jwk = json[0]["pkey"];
  Bytes point{0x04};
  for (const char* coordinate : {"x", "y"}) {
    Bytes value = jwk_coordinate(jwk[coordinate].GetString());
    point.insert(point.end(), value.begin(), value.end());
  }
  return expect_ok(crypto::PublicKey::from_ec_point(crypto::KeyType::ec_p256, point));
}

}  // namespace

TEST_CASE("with certificates for their platform keys, the Arm CCA tokens pass the signatures "
          "test/data/external/README.md says pass and are refused only by the virtCCA profile") {
  // Arm publishes its example platform keys as keys, not certificates. Certificates for them
  // from a test CA let the command check the real ES384/ES256 platform signatures and RAK
  // bindings: a cross-check of the COSE path against tokens signed by someone else.
  TempDir dir;
  auto ca_key = expect_ok(crypto::PrivateKey::generate(crypto::KeyType::ec_p256));
  auto ca = expect_ok(crypto::issue_certificate({"Test CA for Arm keys", "test", true, 3650, 21}, ca_key.public_key(),
                                                ca_key, nullptr));
  auto ca_file = dir.write("arm-test-ca.pem", ca.pem());
  auto certify = [&](const std::string& name, const crypto::PublicKey& key, long serial) {
    auto certificate = expect_ok(crypto::issue_certificate({name, "test", false, 3650, serial}, key, ca_key, &ca));
    return dir.write(name + ".pem", certificate.pem());
  };
  auto cpak = expect_ok(
      crypto::PublicKey::from_pem(read_text_file(external_data + "/armcca-veraison-ccatoken/cca_platform.pem")));
  auto cpak_file = certify("cpak", cpak, 22);
  auto ta02_file = certify("ta-02", token_02_platform_key(), 23);

  struct Case {
    std::string token;
    std::string device_cert;
    std::string roots;
    std::vector<std::string> failing;  // exactly these checks fail
  };
  const std::vector<Case> cases{
      {"armcca-rust-ccatoken/cca-token-01.cbor", cpak_file, ca_file, {"cvm.claim_sizes"}},
      {"armcca-veraison-ccatoken/cca_token.cbor", cpak_file, ca_file, {"cvm.claim_sizes"}},
      {"armcca-trustee/cca-example-token.cbor", cpak_file, ca_file, {"cvm.claim_sizes"}},
      // Both signatures verify, but the platform vouches for another RAK.
      {"armcca-rust-ccatoken/bug-33-repro.cbor", cpak_file, ca_file, {"cvm.claim_sizes", "platform.rak_binding"}},
      // The RAK is a COSE_Key map, which virtCCA never uses.
      {"armcca-rust-ccatoken/cca-token-draft-ffm-00.cbor", cpak_file, ca_file,
       {"cvm.claim_sizes", "cvm.rak", "cvm.signature"}},
      // ES256 platform token; sha-512 RAK binding; 64-byte measurements under "sha-256".
      {"armcca-rust-ccatoken/cca-token-02.cbor", ta02_file, ca_file, {"cvm.claim_sizes"}},
  };
  for (const auto& c : cases) {
    DYNAMIC_SECTION(c.token) {
      auto result = run({"--token", external_data + "/" + c.token, "--device-cert", c.device_cert, "--roots", c.roots});
      INFO(result.transcript());
      CHECK(result.code == verifier::exit_check_failed);
      CHECK(result.reason() == "cvm.claim_sizes");
      CHECK(result.count("  FAIL ") == c.failing.size());
      for (const auto& check : c.failing) CHECK(result.failed(check));
      CHECK(result.passed("device.chain"));
      CHECK(result.passed("platform.signature"));
    }
  }
}
