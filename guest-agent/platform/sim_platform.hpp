// The simulated virtCCA platform (docs/fde-agent.md "Platforms"; docs/firmware-boot-test.md), compiled in only with FDE_WITH_SIM.
// Its inputs play the firmware's part: the simulated device (fde-sim device output) and the
// boot measurements, read from a directory or, in QEMU, from fw_cfg entries opt/fde/<name>.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "common/sim/sim_device.hpp"
#include "guest-agent/platform/platform.hpp"

namespace fde::agent {

// Names of the inputs (files in the directory, or fw_cfg entries opt/fde/<name>):
//   ca.pem device-cert.pem device-key.pem [rak-key.pem]  the device, as `fde-sim device` saves it
//   rim        hex, the RIM (required)
//   rems       optional: four hex lines, REM[0..3]
//   event-log  optional: the CCEL log area; without `rems` the REMs are its replay
//   ccel       optional: the CCEL table (built to match the log when absent)
//   rpv        optional: hex, the 64-byte personalization value (zeros when absent)
//   hash-alg   optional: sha-256 (default) or sha-512, for the RIM and REMs
//   measurements optional: "tpm" plays virtCCA's TMM over a TPM-measured boot (real edk2 and
//              grub measuring into a TPM, swtpm under QEMU): the event log is the TPM's log
//              (securityfs binary_bios_measurements), checked against the TPM's SHA-256 PCRs
//              and converted to a CCEL log (sim::convert_tpm_log); the REMs are its replay.
//              Excludes event-log and rems; needs SHA-256.
//   dump       optional, with measurements=tpm: print the TPM log, the PCRs, the CCEL log
//              and every token base64 on the console ("fde-sim-dump:" lines, with sha256), so
//              a test harness can keep them
inline constexpr const char* fw_cfg_directory = "/sys/firmware/qemu_fw_cfg/by_name/opt/fde";

// Where the TPM-measured boot is read from (measurements = tpm), and where the dump goes.
struct TpmPaths {
  std::string securityfs = "/sys/kernel/security";  // mounted here if the log is missing; empty: never
  std::string event_log = "/sys/kernel/security/tpm0/binary_bios_measurements";
  std::string pcr_directory = "/sys/class/tpm/tpm0/pcr-sha256";
  std::string dump_console = "/dev/console";  // empty: standard error
};

// A directory of inputs (sim_dir) stands in for the guest's TPM too: the firmware's TPM log
// as <directory>/tpm-event-log (what securityfs's binary_bios_measurements gives) and the
// SHA-256 PCRs as <directory>/pcr-sha256/<n> (as sysfs gives them). Nothing is mounted, and
// the dump goes to standard error. A test harness that captured a boot's log and PCRs from
// outside the guest (QEMU's memory, the software TPM) runs the agent on them this way.
TpmPaths directory_tpm_paths(const std::string& directory);

// Reads one named input; Errc::not_found when it is absent.
using SimInputReader = std::function<Result<Bytes>(std::string_view name)>;
SimInputReader directory_inputs(const std::string& directory);
// fw_cfg exposes each entry as <directory>/<name>/raw.
SimInputReader fw_cfg_inputs(const std::string& directory = fw_cfg_directory);

class SimPlatform final : public Platform {
 public:
  // Loads the device and the measurements once; every token uses them.
  static Result<std::unique_ptr<SimPlatform>> load(const std::string& source, const SimInputReader& read,
                                                    const TpmPaths& tpm = {});

  std::string_view name() const override { return "sim"; }
  Result<Bytes> attestation_token(ByteView challenge) override;
  Result<Bytes> device_certificate() override;
  Result<std::optional<BootEventLog>> boot_event_log() override;

 private:
  struct Measurements;
  SimPlatform(sim::SimDevice device, std::shared_ptr<const Measurements> measurements)
      : device_(std::move(device)), measurements_(std::move(measurements)) {}
  sim::SimDevice device_;
  std::shared_ptr<const Measurements> measurements_;
};

}  // namespace fde::agent
