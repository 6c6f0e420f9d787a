// The simulated TMM's conversion of a TPM-measured boot (common/sim/tpm_log_conversion.hpp),
// on real logs: OVMF (Secure Boot) + Debian's shim and grub measuring into swtpm, captured in
// the guest by test/e2e/firmware_boot_test.sh, and AAVMF + an arm64-efi grub starting the
// kernel through LoadImage, captured by test/e2e/firmware_boot_aarch64_test.sh
// (test/data/firmware-boot/README.txt).
#include <catch2/catch.hpp>

#include <algorithm>
#include <string>
#include <tuple>
#include <vector>

#include "common/eventlog/event_log.hpp"
#include "common/eventlog/event_types.hpp"
#include "common/reference/boot_event_policy.hpp"
#include "common/sim/event_log_builder.hpp"
#include "common/sim/tpm_log_conversion.hpp"
#include "common/util/file.hpp"

using namespace fde;

namespace {

const std::string data_dir = std::string(FDE_TEST_DATA) + "/firmware-boot";

Bytes tpm_log(const std::string& name = "tpm-event-log.bin") {
  auto log = read_file(data_dir + "/" + name, 1 << 20);
  REQUIRE(log);
  return *log;
}

sim::PcrValues pcrs(const std::string& name = "pcrs-sha256.txt") {
  auto text = read_file(data_dir + "/" + name, 1 << 16);
  REQUIRE(text);
  sim::PcrValues out;
  std::string_view rest = as_text(*text);
  while (!rest.empty()) {
    auto end = rest.find('\n');
    std::string_view line = rest.substr(0, end);
    rest = end == std::string_view::npos ? std::string_view{} : rest.substr(end + 1);
    if (line.empty()) continue;
    auto space = line.find(' ');
    REQUIRE(space != std::string_view::npos);
    auto value = sim::parse_pcr_text(as_bytes(line.substr(space + 1)));
    REQUIRE(value);
    out.emplace(static_cast<std::uint32_t>(std::stoul(std::string(line.substr(0, space)))), *value);
  }
  return out;
}

bool has_text(const eventlog::Event& event, std::string_view text) {
  return as_text(event.data).find(text) != std::string_view::npos;
}

}  // namespace

TEST_CASE("edk2's CC measurement mapping of PCRs to MRs") {
  CHECK(sim::cc_mr_index_for_pcr(0) == 0u);
  CHECK(sim::cc_mr_index_for_pcr(1) == 1u);
  CHECK(sim::cc_mr_index_for_pcr(7) == 1u);
  for (std::uint32_t pcr = 2; pcr <= 6; ++pcr) CHECK(sim::cc_mr_index_for_pcr(pcr) == 2u);
  for (std::uint32_t pcr = 8; pcr <= 15; ++pcr) CHECK(sim::cc_mr_index_for_pcr(pcr) == 3u);
  for (std::uint32_t pcr = 16; pcr <= 23; ++pcr) CHECK_FALSE(sim::cc_mr_index_for_pcr(pcr));
}

TEST_CASE("PCR values as sysfs shows them") {
  auto value = sim::parse_pcr_text(as_bytes(std::string(64, 'A') + "\n"));
  REQUIRE(value);
  CHECK(*value == Bytes(32, 0xAA));
  CHECK_FALSE(sim::parse_pcr_text(as_bytes(std::string(63, 'a'))));
  CHECK_FALSE(sim::parse_pcr_text(as_bytes(std::string(64, 'g'))));
}

TEST_CASE("a real OVMF + shim + grub TPM log converts to a SHA-256 CCEL log") {
  const Bytes log = tpm_log();
  auto converted = sim::convert_tpm_log(log, pcrs());
  if (!converted) FAIL(converted.error().describe());
  auto tpm = eventlog::parse_event_log(log);
  REQUIRE(tpm);
  CHECK(tpm->events.size() == converted->events_kept + converted->events_dropped);
  // This firmware logs no StartupLocality and measures nothing into PCR 16..23, and shim's
  // MOK lists (PCR 14) are CC-measured (MR3): every record is kept.
  CHECK(converted->events_dropped == 0);

  auto ccel = eventlog::parse_event_log(converted->ccel_log);
  if (!ccel) FAIL(ccel.error().describe());
  REQUIRE(ccel->algorithms.size() == 1);
  CHECK(ccel->algorithms[0].algorithm_id == eventlog::tpm_alg_sha256);
  REQUIRE(ccel->events.size() == converted->events_kept);

  // Every record of the CCEL log is the TPM record it came from, with the MR for its PCR.
  std::size_t j = 0;
  for (const auto& event : tpm->events) {
    auto mr = sim::cc_mr_index_for_pcr(event.mr_index);
    if (!mr || event.event_type == eventlog::ev_no_action) continue;
    REQUIRE(j < ccel->events.size());
    const auto& out = ccel->events[j++];
    CHECK(out.mr_index == *mr);
    CHECK(out.event_type == event.event_type);
    CHECK(out.data == event.data);
    REQUIRE(out.digests.size() == 1);
    CHECK(out.digests[0].second == *event.digest_for(eventlog::tpm_alg_sha256));
  }

  // The REMs are the CCEL log's replay; nothing measures into MR4.
  auto rems = eventlog::replay(*ccel, crypto::HashAlg::sha256);
  REQUIRE(rems);
  CHECK(*rems == converted->rems);
  CHECK(converted->rems[3] == Bytes(32, 0));

  // What lands where: shim, grub and the kernel (twice, Secure Boot) as EFI applications in
  // MR2, grub's commands and files in MR3.
  std::size_t applications = 0, grub_commands = 0, kernel_files = 0;
  for (const auto& event : ccel->events) {
    if (event.event_type == eventlog::ev_efi_boot_services_application) {
      CHECK(event.mr_index == 2u);
      ++applications;
    }
    if (event.event_type == eventlog::ev_ipl && has_text(event, "grub_cmd: ")) {
      CHECK(event.mr_index == 3u);
      ++grub_commands;
    }
    if (event.event_type == eventlog::ev_ipl && has_text(event, "/vmlinuz-")) ++kernel_files;
  }
  CHECK(applications == 4);
  CHECK(grub_commands >= 4);
  CHECK(kernel_files >= 1);
}

TEST_CASE("a TPM log that does not replay to the PCRs is refused") {
  const Bytes log = tpm_log();
  const auto values = pcrs();

  SECTION("a PCR value differs") {
    for (std::uint32_t pcr : {0u, 4u, 7u, 8u, 9u}) {
      auto changed = values;
      REQUIRE(changed.count(pcr));
      changed[pcr][0] ^= 1;
      auto converted = sim::convert_tpm_log(log, changed);
      REQUIRE_FALSE(converted);
      CHECK(converted.error().code == Errc::verification_failed);
    }
  }
  SECTION("a PCR the log extends was not read") {
    auto fewer = values;
    fewer.erase(9);
    auto converted = sim::convert_tpm_log(log, fewer);
    REQUIRE_FALSE(converted);
    CHECK(converted.error().code == Errc::not_found);
  }
  SECTION("a digest in the log was changed (a grub command that was not what ran)") {
    auto tpm = eventlog::parse_event_log(log);
    REQUIRE(tpm);
    auto it = std::find_if(tpm->events.begin(), tpm->events.end(),
                           [](const eventlog::Event& e) { return has_text(e, "grub_cmd: linux"); });
    REQUIRE(it != tpm->events.end());
    const Bytes& digest = *it->digest_for(eventlog::tpm_alg_sha256);
    Bytes changed = log;
    auto at = std::search(changed.begin(), changed.end(), digest.begin(), digest.end());
    REQUIRE(at != changed.end());
    *at ^= 0x80;
    auto converted = sim::convert_tpm_log(changed, values);
    REQUIRE_FALSE(converted);
    CHECK(converted.error().code == Errc::verification_failed);
  }
  SECTION("a record was removed from the end") {
    auto tpm = eventlog::parse_event_log(log);
    REQUIRE(tpm);
    // The last record (ExitBootServices, PCR 5): cut it off.
    const auto& last = tpm->events.back();
    std::size_t record_size = 12 + 2 * tpm->algorithms.size() + 4 + last.data.size();
    for (const auto& a : tpm->algorithms) record_size += a.digest_size;
    Bytes shorter(log.begin(), log.end() - static_cast<std::ptrdiff_t>(record_size));
    REQUIRE(eventlog::parse_event_log(shorter));
    auto converted = sim::convert_tpm_log(shorter, values);
    REQUIRE_FALSE(converted);
    CHECK(converted.error().code == Errc::verification_failed);
  }
  SECTION("not a log") { CHECK_FALSE(sim::convert_tpm_log(Bytes(100, 0x42), values)); }
}

// The verifier's allow-list on what real OVMF + shim + grub measured (converted as the TMM
// simulation converts it): the honest boot is explained event by event, and an extra file
// appended to the same honest log is not.
TEST_CASE("the allow-list explains a real OVMF + shim + grub boot and nothing added to it") {
  auto converted = sim::convert_tpm_log(tpm_log(), pcrs());
  REQUIRE(converted);
  auto log = eventlog::parse_event_log(converted->ccel_log);
  REQUIRE(log);
  const auto id = eventlog::tpm_alg_sha256;
  reference::ReferenceValues doc;
  doc.firmware_rims = {Bytes(32, 0x11)};
  reference::ReferenceSet set;
  set.name = "real";
  std::vector<Bytes> apps;
  std::vector<std::string> commands;
  bool after_cfg = false;
  for (const auto& e : log->events) {
    if (!eventlog::is_extended(e)) continue;
    const Bytes& d = *e.digest_for(id);
    std::string_view text = as_text(e.data);
    if (!text.empty() && text.back() == '\0') text.remove_suffix(1);
    if (e.event_type == eventlog::ev_efi_boot_services_application) apps.push_back(d);
    if (e.event_type != eventlog::ev_ipl) continue;
    if (text.ends_with("/grub.cfg") && text.front() == '(') {
      set.grub.grub_cfgs = {d};
      after_cfg = true;
    } else if (text.starts_with("/vmlinuz")) {
      set.grub.kernel = d;
    } else if (text.starts_with("/initrd")) {
      set.grub.initramfs = d;
    } else if (text.starts_with("kernel_cmdline: ")) {
      set.grub.kernel_cmdline = std::string(text.substr(16));
    } else if (text.starts_with("grub_cmd: ") && after_cfg) {
      commands.emplace_back(text.substr(10));
    }
  }
  REQUIRE(apps.size() == 4);  // shim, grub, and the kernel twice (shim verifies it for grub)
  set.grub.efi_applications = {apps[0], apps[1]};
  set.grub.kernel_efi = {apps[2]};
  set.grub.grub_commands = commands;
  doc.sets = {set};
  REQUIRE(reference::validate_reference_values(doc));

  reference::TokenMeasurements token;
  token.rim = doc.firmware_rims[0];
  token.rems = converted->rems;
  auto judge = [&](const eventlog::EventLog& l) {
    return reference::evaluate_grub_set(l, token, doc, doc.sets[0]);
  };
  for (const auto& c : judge(*log)) {
    INFO(c.name << ": " << c.found);
    CHECK(c.passed);
  }
  // Without the kernel's Authenticode digest (today's builders before kernel_efi), denied.
  doc.sets[0].grub.kernel_efi.clear();
  bool denied = false;
  for (const auto& c : judge(*log)) denied = denied || (c.name == "reference.events" && !c.passed);
  CHECK(denied);
  doc.sets[0].grub.kernel_efi = {apps[2]};
  // The same honest log with one more file grub read (a second initrd): denied, and named.
  eventlog::EventLog extra = *log;
  eventlog::Event file;
  file.mr_index = 3;
  file.event_type = eventlog::ev_ipl;
  file.digests = {{id, Bytes(32, 0x5a)}};
  const std::string path = "/extra.img";
  file.data.assign(path.begin(), path.end());
  file.data.push_back(0);
  extra.events.insert(extra.events.end() - 2, file);
  token.rems[2] = [&] {
    auto r = eventlog::replay(extra, crypto::HashAlg::sha256);
    REQUIRE(r);
    return (*r)[2];
  }();
  bool named = false;
  for (const auto& c : judge(extra))
    if (c.name == "reference.events") named = !c.passed && c.found.find("/extra.img") != std::string::npos;
  CHECK(named);
}

// The aarch64 boot (AAVMF, Secure Boot off; grub-mkimage arm64-efi with the tpm module;
// Debian's arm64 kernel started through the firmware's LoadImage), judged with the reference
// values fde-image computed for that image alone: the honest boot passes every check, and the
// host's grub-menu edit that appended a second initrd is denied with the file named.
TEST_CASE("the allow-list with fde-image's reference values explains a real AAVMF + arm64 grub boot, not its grub edit") {
  auto json = read_file(data_dir + "/aarch64/reference-values.json", 1 << 20);
  REQUIRE(json);
  auto doc = reference::parse_reference_values(as_text(*json));
  if (!doc) FAIL(doc.error().describe());
  REQUIRE(doc->sets.size() == 1);
  auto judge = [&](const std::string& boot) {
    auto converted = sim::convert_tpm_log(tpm_log("aarch64/" + boot + "-tpm-event-log.bin"),
                                          pcrs("aarch64/" + boot + "-pcrs-sha256.txt"));
    if (!converted) FAIL(converted.error().describe());
    auto log = eventlog::parse_event_log(converted->ccel_log);
    REQUIRE(log);
    reference::TokenMeasurements token;
    token.rim = doc->firmware_rims.at(0);
    token.rems = converted->rems;
    return std::make_pair(*log, reference::evaluate_grub_set(*log, token, *doc, doc->sets[0]));
  };

  auto [log, checks] = judge("positive");
  for (const auto& c : checks) {
    INFO(c.name << ": " << c.found);
    CHECK(c.passed);
  }
  // What makes this boot arm64's: the kernel is an EFI application in REM[1] (MR2) measured by
  // the firmware at grub's `boot` (after every grub command and file), and the EFI stub's
  // load-options tag (PCR 9) follows it in REM[2].
  std::size_t kernel_application = 0, boot_command = 0, load_options = 0;
  for (std::size_t i = 0; i < log.events.size(); ++i) {
    const auto& e = log.events[i];
    if (e.event_type == eventlog::ev_efi_boot_services_application &&
        *e.digest_for(eventlog::tpm_alg_sha256) == doc->sets[0].grub.kernel_efi.at(0)) {
      CHECK(e.mr_index == 2u);
      kernel_application = i;
    }
    if (e.event_type == eventlog::ev_ipl && has_text(e, "grub_cmd: boot")) boot_command = i;
    if (e.event_type == eventlog::ev_event_tag) {
      CHECK(e.mr_index == 3u);
      load_options = i;
    }
  }
  CHECK(boot_command > 0);
  CHECK(kernel_application > boot_command);
  CHECK(load_options > kernel_application);

  auto [edited_log, edited] = judge("grub-edit");
  bool named = false, grub_cfg_failed = false;
  for (const auto& c : edited) {
    if (c.name == "reference.events") named = !c.passed && c.found.find("\"/extra.img\"") != std::string::npos;
    if (c.name == "reference.grub_cfg") grub_cfg_failed = !c.passed;
  }
  CHECK(named);
  CHECK(grub_cfg_failed);
}

// The harness's idea of an arm64 grub boot (sim::build_grub_boot_log with the kernel started
// through LoadImage) against the real one: from grub.cfg on, every REM[2] event (grub.cfg,
// each command, the files, the command line, the stub's load-options tag) is the real log's,
// byte for byte, and the kernel's EFI application sits where the firmware logged it: after the
// last grub event, before the load options. (The firmware's own events, which the harness
// leaves out, are listed in docs/firmware-boot-test.md.)
TEST_CASE("the simulated arm64 grub boot (LoadImage) has the real AAVMF + grub log's grub and kernel events") {
  auto json = read_file(data_dir + "/aarch64/reference-values.json", 1 << 20);
  REQUIRE(json);
  auto doc = reference::parse_reference_values(as_text(*json));
  REQUIRE(doc);
  const auto& g = doc->sets.at(0).grub;
  auto cfg = read_file(data_dir + "/aarch64/grub.cfg", 1 << 16);
  REQUIRE(cfg);
  const auto sha256 = crypto::HashAlg::sha256;
  sim::GrubBoot boot;
  boot.grub_authenticode = sim::Measurement::of_digest(sha256, g.efi_applications.at(0));
  boot.grub_cfg_path = "(hd0,gpt1)/EFI/BOOT/grub.cfg";
  boot.grub_cfg = sim::Measurement::of_digest(sha256, g.grub_cfgs.at(0));
  boot.kernel = sim::Measurement::of_digest(sha256, g.kernel);
  boot.initramfs = sim::Measurement::of_digest(sha256, *g.initramfs);
  boot.kernel_efi = sim::Measurement::of_digest(sha256, g.kernel_efi.at(0));
  std::vector<std::string> script;
  std::string_view rest = as_text(*cfg);
  while (!rest.empty()) {
    auto end = rest.find('\n');
    std::string line(rest.substr(0, end));
    rest = end == std::string_view::npos ? std::string_view{} : rest.substr(end + 1);
    if (!line.empty() && line.front() != '#') script.push_back(line);
  }
  boot.script = script;

  auto real = sim::convert_tpm_log(tpm_log("aarch64/positive-tpm-event-log.bin"), pcrs("aarch64/positive-pcrs-sha256.txt"));
  REQUIRE(real);
  auto real_log = eventlog::parse_event_log(real->ccel_log);
  REQUIRE(real_log);
  // (MR, type, digest, data) from the grub.cfg event on, the firmware's ExitBootServices
  // actions (MR2, after the kernel has started) left out.
  auto tail = [&](const eventlog::EventLog& log) {
    std::vector<std::tuple<std::uint32_t, std::uint32_t, Bytes, Bytes>> out;
    bool seen_cfg = false;
    for (const auto& e : log.events) {
      seen_cfg = seen_cfg || (e.event_type == eventlog::ev_ipl && has_text(e, "/grub.cfg"));
      if (!seen_cfg || (e.mr_index == 2 && e.event_type == 0x80000007)) continue;
      Bytes data = e.data;
      if (e.event_type == eventlog::ev_efi_boot_services_application) data.clear();  // load address
      out.emplace_back(e.mr_index, e.event_type, *e.digest_for(eventlog::tpm_alg_sha256), data);
    }
    return out;
  };

  boot.kernel_efi_by = sim::KernelEfiMeasurer::load_image;
  auto built = sim::build_grub_boot_log(boot);
  REQUIRE(built);
  auto built_log = eventlog::parse_event_log(built->log());
  REQUIRE(built_log);
  const auto expected = tail(*real_log);
  // grub.cfg, 6 commands, kernel and initrd files, the command line, the kernel, the load options
  CHECK(expected.size() == 12);
  CHECK(tail(*built_log) == expected);
  // The application event names the kernel by a memory-mapped device path, as the firmware's.
  auto application = std::find_if(built_log->events.rbegin(), built_log->events.rend(), [](const auto& e) {
    return e.event_type == eventlog::ev_efi_boot_services_application;
  });
  REQUIRE(application != built_log->events.rend());
  REQUIRE(application->data.size() > 34);
  CHECK(application->data[32] == 0x01);  // hardware device path
  CHECK(application->data[33] == 0x03);  // memory mapped

  // Shim's place (x86_64 Secure Boot) is not the arm64 one.
  boot.kernel_efi_by = sim::KernelEfiMeasurer::shim;
  auto shim = sim::build_grub_boot_log(boot);
  REQUIRE(shim);
  CHECK(tail(*eventlog::parse_event_log(shim->log())) != expected);
}
