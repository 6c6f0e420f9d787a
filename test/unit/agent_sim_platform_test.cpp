// The agent's simulated platform (FDE_WITH_SIM builds) and the sysfs CCEL reader: inputs
// from a directory or a QEMU fw_cfg layout, tokens the verifier's parser accepts, REMs
// replayed from the event log.
#include <unistd.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "common/eventlog/ccel.hpp"
#include "common/sim/event_log_builder.hpp"
#include "common/sim/tpm_log_conversion.hpp"
#include "common/token/token.hpp"
#include "common/util/file.hpp"
#include "guest-agent/platform/ccel_source.hpp"
#include "guest-agent/platform/sim_platform.hpp"

using namespace fde;
using namespace fde::agent;
namespace fs = std::filesystem;

namespace {

struct TempDir {
  std::string path;
  TempDir() {
    char pattern[] = "/tmp/fde-agent-sim-XXXXXX";
    path = ::mkdtemp(pattern);
  }
  ~TempDir() { fs::remove_all(path); }
  void write(const std::string& name, std::string_view text) const { std::ofstream(path + "/" + name) << text; }
  void write(const std::string& name, ByteView bytes) const {
    REQUIRE(write_file_atomic(path + "/" + name, bytes, 0600));
  }
};

const sim::SimDevice& device() {
  static const sim::SimDevice created = [] {
    sim::DeviceOptions options;
    options.type = sim::DeviceType::p521;
    return std::move(*sim::SimDevice::create(options));
  }();
  return created;
}

const std::string rim_hex = std::string(64, 'a');

sim::EventLogBuilder grub_log() {
  sim::GrubBoot boot;
  const crypto::HashAlg banks[] = {crypto::HashAlg::sha256};
  boot.grub_authenticode = sim::Measurement::of_content(as_bytes("grub"), banks);
  boot.grub_cfg = sim::Measurement::of_content(as_bytes("grub.cfg"), banks);
  boot.kernel = sim::Measurement::of_content(as_bytes("kernel"), banks);
  boot.initramfs = sim::Measurement::of_content(as_bytes("initramfs"), banks);
  auto builder = sim::build_grub_boot_log(boot);
  REQUIRE(builder);
  return std::move(*builder);
}

}  // namespace

TEST_CASE("the simulated platform issues a full token for the challenge from a device directory") {
  TempDir dir;
  REQUIRE(device().save(dir.path));
  dir.write("rim", rim_hex + "\n");
  auto platform = SimPlatform::load(dir.path, directory_inputs(dir.path));
  REQUIRE(platform);
  Bytes challenge(64, 0x33);
  auto raw = (*platform)->attestation_token(challenge);
  REQUIRE(raw);
  auto token = token::parse_token(*raw);
  REQUIRE(token);
  CHECK(token->is_full());
  CHECK(token->cvm.challenge == challenge);
  CHECK(token->cvm.initial_measurement == Bytes(32, 0xaa));
  CHECK(token->cvm.extensible_measurements[0] == Bytes(32, 0));
  CHECK(*(*platform)->device_certificate() == device().device_certificate().der());
  CHECK_FALSE((*platform)->boot_event_log()->has_value());
}

TEST_CASE("the simulated platform reads QEMU fw_cfg entries as <name>/raw") {
  TempDir source, fw_cfg;
  REQUIRE(device().save(source.path));
  for (const char* name : {"ca.pem", "device-cert.pem", "device-key.pem"}) {
    fs::create_directories(fw_cfg.path + "/" + name);
    fs::copy_file(source.path + "/" + name, fw_cfg.path + "/" + name + "/raw");
  }
  fs::create_directories(fw_cfg.path + "/rim");
  fw_cfg.write("rim/raw", rim_hex);
  fs::create_directories(fw_cfg.path + "/rpv");
  fw_cfg.write("rpv/raw", std::string(128, '7'));
  auto platform = SimPlatform::load("fw_cfg", fw_cfg_inputs(fw_cfg.path));
  REQUIRE(platform);
  auto token = token::parse_token(*(*platform)->attestation_token(Bytes(64, 1)));
  REQUIRE(token);
  CHECK(token->cvm.personalization_value == Bytes(64, 0x77));
}

TEST_CASE("the simulated REMs are the replay of the simulated event log, which is sent with its CCEL table") {
  TempDir dir;
  REQUIRE(device().save(dir.path));
  dir.write("rim", rim_hex);
  auto builder = grub_log();
  auto area = builder.log_area();
  REQUIRE(area);
  dir.write("event-log", *area);
  auto platform = SimPlatform::load(dir.path, directory_inputs(dir.path));
  REQUIRE(platform);
  auto token = token::parse_token(*(*platform)->attestation_token(Bytes(64, 2)));
  REQUIRE(token);
  CHECK(token->cvm.extensible_measurements == *builder.rems(crypto::HashAlg::sha256));
  auto log = (*platform)->boot_event_log();
  REQUIRE(log);
  REQUIRE(log->has_value());
  CHECK((*log)->event_log == *area);
  auto table = eventlog::parse_ccel_table((*log)->ccel_table);
  REQUIRE(table);
  CHECK(table->log_area_length == area->size());
}

TEST_CASE("explicit REMs override the replay and must be four digests") {
  TempDir dir;
  REQUIRE(device().save(dir.path));
  dir.write("rim", rim_hex);
  dir.write("rems", std::string(64, '1') + "\n" + std::string(64, '2') + "\n\n" + std::string(64, '3') + "\n" +
                        std::string(64, '4') + "\n");
  auto platform = SimPlatform::load(dir.path, directory_inputs(dir.path));
  REQUIRE(platform);
  auto token = token::parse_token(*(*platform)->attestation_token(Bytes(64, 2)));
  CHECK(token->cvm.extensible_measurements[3] == Bytes(32, 0x44));
  dir.write("rems", std::string(64, '1') + "\n");
  auto short_rems = SimPlatform::load(dir.path, directory_inputs(dir.path));
  REQUIRE_FALSE(short_rems);
  CHECK(short_rems.error().message.find("rems needs 4 lines") != std::string::npos);
}

// A real OVMF + shim + grub TPM log and its PCRs (test/data/firmware-boot) in a sim_dir, as
// the aarch64 real-firmware test hands a log captured outside the guest to the agent.
TEST_CASE("measurements = tpm from a directory: the agent converts the directory's TPM log as the TMM would") {
  const std::string data = std::string(FDE_TEST_DATA) + "/firmware-boot";
  auto log = read_file(data + "/tpm-event-log.bin", 1 << 20);
  REQUIRE(log);
  auto pcr_lines = read_file(data + "/pcrs-sha256.txt", 1 << 16);
  REQUIRE(pcr_lines);
  TempDir dir;
  REQUIRE(device().save(dir.path));
  dir.write("rim", rim_hex);
  dir.write("measurements", "tpm\n");
  dir.write("tpm-event-log", *log);
  fs::create_directories(dir.path + "/pcr-sha256");
  sim::PcrValues pcrs;
  std::istringstream in{std::string(as_text(*pcr_lines))};
  for (std::string index, value; in >> index >> value;) {
    dir.write("pcr-sha256/" + index, value + "\n");
    pcrs.emplace(static_cast<std::uint32_t>(std::stoul(index)), *sim::parse_pcr_text(as_bytes(value)));
  }
  auto expected = sim::convert_tpm_log(*log, pcrs);
  REQUIRE(expected);

  auto platform = SimPlatform::load(dir.path, directory_inputs(dir.path), directory_tpm_paths(dir.path));
  if (!platform) FAIL(platform.error().describe());
  auto token = token::parse_token(*(*platform)->attestation_token(Bytes(64, 3)));
  REQUIRE(token);
  CHECK(token->cvm.extensible_measurements == expected->rems);
  auto sent = (*platform)->boot_event_log();
  REQUIRE(sent);
  REQUIRE(sent->has_value());
  CHECK((*sent)->event_log == expected->ccel_log);

  // One PCR that is not what the log replays to: the directory's log is refused.
  std::string pcr4 = std::string(as_text(*read_file(dir.path + "/pcr-sha256/4", 100)));
  pcr4[0] = pcr4[0] == '0' ? '1' : '0';
  dir.write("pcr-sha256/4", pcr4);
  auto refused = SimPlatform::load(dir.path, directory_inputs(dir.path), directory_tpm_paths(dir.path));
  REQUIRE_FALSE(refused);
  CHECK(refused.error().message.find("does not replay to PCR 4") != std::string::npos);
  // No log in the directory: named, and nothing is mounted in its place.
  fs::remove(dir.path + "/tpm-event-log");
  auto missing = SimPlatform::load(dir.path, directory_inputs(dir.path), directory_tpm_paths(dir.path));
  REQUIRE_FALSE(missing);
  CHECK(missing.error().message.find("tpm-event-log") != std::string::npos);
}

TEST_CASE("missing simulated inputs are named") {
  TempDir dir;
  REQUIRE(device().save(dir.path));
  auto no_rim = SimPlatform::load(dir.path, directory_inputs(dir.path));
  REQUIRE_FALSE(no_rim);
  CHECK(no_rim.error().message.find("rim (the simulated RIM, hex)") != std::string::npos);
  TempDir empty;
  auto no_device = SimPlatform::load(empty.path, directory_inputs(empty.path));
  REQUIRE_FALSE(no_device);
  CHECK(no_device.error().message.find("ca.pem") != std::string::npos);
}

TEST_CASE("the sysfs CCEL reader returns the table and log, nothing without a table, an error for a bad table") {
  TempDir dir;
  CcelSource source{dir.path + "/CCEL", dir.path + "/data-CCEL"};
  CHECK_FALSE(source.read()->has_value());
  auto area = grub_log().log_area();
  dir.write("CCEL", sim::build_ccel(area->size()));
  dir.write("data-CCEL", *area);
  auto read = source.read();
  REQUIRE(read);
  REQUIRE(read->has_value());
  CHECK((*read)->event_log == *area);
  dir.write("CCEL", Bytes(56, 0));
  auto bad = source.read();
  REQUIRE_FALSE(bad);
  CHECK(bad.error().message.find("CCEL table") == 0);
}
