// The simulated platform: tokens from the simulator's issuer over inputs that stand in for
// the firmware's measurements (docs/fde-agent.md, "Platforms").
#include "guest-agent/platform/sim_platform.hpp"

#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <filesystem>
#include <string_view>

#include "common/crypto/hash.hpp"
#include "common/eventlog/event_log.hpp"
#include "common/protocol/messages.hpp"
#include "common/sim/event_log_builder.hpp"
#include "common/sim/token_issuer.hpp"
#include "common/sim/tpm_log_conversion.hpp"
#include "common/token/token_framing.hpp"
#include "common/util/file.hpp"
#include "guest-agent/platform/tsi_platform.hpp"

namespace fde::agent {

namespace {

constexpr std::size_t max_input_size = protocol::max_event_log_size;

SimInputReader file_reader(std::function<std::string(std::string_view)> path_of) {
  return [path_of = std::move(path_of)](std::string_view name) -> Result<Bytes> {
    std::string path = path_of(name);
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) return fail(Errc::not_found, path + ": no such file");
    return read_file(path, max_input_size);
  };
}

Result<std::optional<Bytes>> optional_input(const SimInputReader& read, std::string_view name) {
  auto data = read(name);
  if (data) return std::optional<Bytes>(std::move(*data));
  if (data.error().code == Errc::not_found) return std::optional<Bytes>{};
  return tl::unexpected(data.error());
}

std::string trimmed_text(ByteView bytes) {
  std::string text(as_text(bytes));
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ' || text.back() == '\r')) text.pop_back();
  return text;
}

// The console for the dump (empty: stderr): written line by line (one write each), so other
// console output can only come between lines. Falls back to stderr.
void dump_lines(const std::string& console, const std::vector<std::string>& lines) {
  int fd = console.empty() ? -1 : ::open(console.c_str(), O_WRONLY | O_NOCTTY | O_CLOEXEC);
  const int out = fd >= 0 ? fd : STDERR_FILENO;
  for (const auto& line : lines) {
    std::string text = line + "\n";
    std::size_t done = 0;
    while (done < text.size()) {
      ssize_t n = ::write(out, text.data() + done, text.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      done += static_cast<std::size_t>(n);
    }
  }
  if (fd >= 0) ::close(fd);
}

// "fde-sim-dump: NAME begin SIZE SHA256", base64 lines of 76 characters, "... end".
void dump_blob(const std::string& console, const std::string& name, ByteView data) {
  std::vector<std::string> lines;
  const std::string prefix = "fde-sim-dump: " + name + " ";
  lines.push_back(prefix + "begin " + std::to_string(data.size()) + " " + hex_encode(crypto::sha256(data)));
  const std::string encoded = base64_encode(data);
  for (std::size_t i = 0; i < encoded.size(); i += 76) lines.push_back(prefix + "data " + encoded.substr(i, 76));
  lines.push_back(prefix + "end");
  dump_lines(console, lines);
}

// The TMM's view of a TPM-measured boot (measurements = tpm).
Result<sim::TmmMeasurements> read_tpm_measurements(const TpmPaths& paths, bool dump) {
  struct stat st {};
  if (!paths.securityfs.empty() && ::stat(paths.event_log.c_str(), &st) != 0) {
    // In an initramfs nobody may have mounted securityfs yet.
    if (::mount("securityfs", paths.securityfs.c_str(), "securityfs", 0, nullptr) != 0 && errno != EBUSY)
      return fail(Errc::io, "mount securityfs on " + paths.securityfs + ": " + std::strerror(errno));
  }
  auto log = read_file(paths.event_log, max_input_size);
  if (!log) return fail_with_context("the TPM event log (no TPM, or the kernel found no firmware log)", log.error());
  sim::PcrValues pcrs;
  std::string pcr_text;
  for (std::uint32_t pcr = 0; pcr < sim::tpm_pcr_count; ++pcr) {
    const std::string path = paths.pcr_directory + "/" + std::to_string(pcr);
    struct stat pst {};
    if (::stat(path.c_str(), &pst) != 0) continue;
    auto text = read_file(path, 8192);  // sysfs reports a 4096-byte size
    if (!text) return tl::unexpected(text.error());
    auto value = sim::parse_pcr_text(*text);
    if (!value) return fail_with_context(path, value.error());
    pcr_text += std::to_string(pcr) + " " + hex_encode(*value) + "\n";
    pcrs.emplace(pcr, std::move(*value));
  }
  if (dump) {
    dump_blob(paths.dump_console, "tpm-event-log", *log);
    dump_blob(paths.dump_console, "pcrs-sha256", as_bytes(pcr_text));
  }
  auto converted = sim::convert_tpm_log(*log, pcrs);
  if (!converted) return tl::unexpected(converted.error());
  if (dump) dump_blob(paths.dump_console, "ccel-event-log", converted->ccel_log);
  return converted;
}

Result<Bytes> hex_input(const std::string& source, std::string_view name, ByteView text) {
  auto bytes = hex_decode(as_text(text));
  if (!bytes) return fail_with_context(source + ": " + std::string(name), bytes.error());
  return bytes;
}

}  // namespace

SimInputReader directory_inputs(const std::string& directory) {
  return file_reader([directory](std::string_view name) {
    return (std::filesystem::path(directory) / std::string(name)).string();
  });
}

TpmPaths directory_tpm_paths(const std::string& directory) {
  TpmPaths paths;
  paths.securityfs.clear();
  paths.event_log = (std::filesystem::path(directory) / "tpm-event-log").string();
  paths.pcr_directory = (std::filesystem::path(directory) / "pcr-sha256").string();
  paths.dump_console.clear();
  return paths;
}

SimInputReader fw_cfg_inputs(const std::string& directory) {
  return file_reader([directory](std::string_view name) {
    return (std::filesystem::path(directory) / std::string(name) / "raw").string();
  });
}

struct SimPlatform::Measurements {
  crypto::HashAlg hash_alg = crypto::HashAlg::sha256;
  Bytes rim;
  std::array<Bytes, token::rem_count> rems;
  Bytes rpv = Bytes(token::rpv_size, 0);
  std::optional<BootEventLog> event_log;
  bool dump = false;
  std::string dump_console;
};

Result<std::unique_ptr<SimPlatform>> SimPlatform::load(const std::string& source, const SimInputReader& read,
                                                        const TpmPaths& tpm) {
  auto device = sim::SimDevice::load_from(source, read);
  if (!device) return tl::unexpected(device.error());

  auto measurements = std::make_shared<Measurements>();
  auto alg_text = optional_input(read, "hash-alg");
  if (!alg_text) return tl::unexpected(alg_text.error());
  if (*alg_text) {
    std::string name(as_text(**alg_text));
    while (!name.empty() && (name.back() == '\n' || name.back() == ' ')) name.pop_back();
    auto alg = crypto::hash_alg_from_name(name);
    if (!alg || *alg == crypto::HashAlg::sha384)
      return fail(Errc::invalid_argument, source + ": hash-alg must be sha-256 or sha-512, not '" + name + "'");
    measurements->hash_alg = *alg;
  }
  const std::size_t digest_size = crypto::digest_size(measurements->hash_alg);

  auto rim_text = read("rim");
  if (!rim_text) return fail_with_context(source + ": rim (the simulated RIM, hex)", rim_text.error());
  auto rim = hex_input(source, "rim", *rim_text);
  if (!rim) return tl::unexpected(rim.error());
  if (rim->size() != digest_size)
    return fail(Errc::invalid_argument, source + ": rim has " + std::to_string(rim->size()) + " bytes, not " +
                                            std::to_string(digest_size));
  measurements->rim = std::move(*rim);

  auto rpv_text = optional_input(read, "rpv");
  if (!rpv_text) return tl::unexpected(rpv_text.error());
  if (*rpv_text) {
    auto rpv = hex_input(source, "rpv", **rpv_text);
    if (!rpv) return tl::unexpected(rpv.error());
    if (rpv->size() != token::rpv_size) return fail(Errc::invalid_argument, source + ": rpv must be 64 bytes");
    measurements->rpv = std::move(*rpv);
  }

  auto mode = optional_input(read, "measurements");
  if (!mode) return tl::unexpected(mode.error());
  auto dump = optional_input(read, "dump");
  if (!dump) return tl::unexpected(dump.error());
  auto log = optional_input(read, "event-log");
  if (!log) return tl::unexpected(log.error());
  auto rems_text = optional_input(read, "rems");
  if (!rems_text) return tl::unexpected(rems_text.error());
  if (*mode) {
    const std::string name = trimmed_text(**mode);
    if (name != "tpm")
      return fail(Errc::invalid_argument, source + ": measurements must be 'tpm', not '" + name + "'");
    if (*log || *rems_text)
      return fail(Errc::invalid_argument, source + ": measurements = tpm excludes event-log and rems");
    if (measurements->hash_alg != crypto::HashAlg::sha256)
      return fail(Errc::invalid_argument, source + ": measurements = tpm needs hash-alg sha-256");
    measurements->dump = dump->has_value();
    measurements->dump_console = tpm.dump_console;
    auto converted = read_tpm_measurements(tpm, measurements->dump);
    if (!converted) return fail_with_context(source + ": measurements = tpm", converted.error());
    Bytes ccel = sim::build_ccel(converted->ccel_log.size());
    measurements->event_log = BootEventLog{std::move(ccel), std::move(converted->ccel_log)};
    measurements->rems = std::move(converted->rems);
    return std::unique_ptr<SimPlatform>(new SimPlatform(std::move(*device), std::move(measurements)));
  }
  if (*log) {
    auto table = optional_input(read, "ccel");
    if (!table) return tl::unexpected(table.error());
    Bytes ccel = *table ? std::move(**table) : sim::build_ccel((*log)->size());
    measurements->event_log = BootEventLog{std::move(ccel), std::move(**log)};
  }

  if (*rems_text) {
    // Four hex lines; blank lines are ignored.
    std::string_view text = as_text(**rems_text);
    std::size_t index = 0;
    while (!text.empty()) {
      std::size_t end = text.find('\n');
      std::string_view line = text.substr(0, end);
      text = end == std::string_view::npos ? std::string_view{} : text.substr(end + 1);
      if (line.find_first_not_of(" \t\r") == std::string_view::npos) continue;
      if (index == token::rem_count) return fail(Errc::invalid_argument, source + ": rems has more than 4 lines");
      auto rem = hex_input(source, "rems", as_bytes(line));
      if (!rem) return tl::unexpected(rem.error());
      if (rem->size() != digest_size) return fail(Errc::invalid_argument, source + ": rems: wrong digest size");
      measurements->rems[index++] = std::move(*rem);
    }
    if (index != token::rem_count) return fail(Errc::invalid_argument, source + ": rems needs 4 lines");
  } else if (measurements->event_log) {
    // The firmware extended the REMs with exactly what it logged (d.3): replay the log.
    auto parsed = eventlog::parse_event_log(measurements->event_log->event_log);
    if (!parsed) return fail_with_context(source + ": event-log", parsed.error());
    auto replayed = eventlog::replay(*parsed, measurements->hash_alg);
    if (!replayed) return fail_with_context(source + ": event-log", replayed.error());
    measurements->rems = std::move(*replayed);
  } else {
    for (auto& rem : measurements->rems) rem = Bytes(digest_size, 0);
  }
  return std::unique_ptr<SimPlatform>(new SimPlatform(std::move(*device), std::move(measurements)));
}

Result<Bytes> SimPlatform::attestation_token(ByteView challenge) {
  sim::TokenRequest request;
  request.challenge = to_bytes(challenge);
  request.rim = measurements_->rim;
  request.rems = measurements_->rems;
  request.personalization_value = measurements_->rpv;
  request.hash_alg = measurements_->hash_alg;
  // Legacy firmware pairs RSA device keys with CVM-only tokens (b.8).
  request.format = device_.type() == sim::DeviceType::rsa ? sim::TokenFormat::legacy : sim::TokenFormat::full;
  auto issued = sim::issue_token(device_, request);
  if (!issued) return fail_with_context("simulated token", issued.error());
  // The same check as for the device's output, so both platforms hand on only what passes it.
  if (auto framing = token::check_token_framing(issued->token); !framing)
    return fail_with_context("simulated token", framing.error());
  if (measurements_->dump) dump_blob(measurements_->dump_console, "token", issued->token);
  return std::move(issued->token);
}

Result<Bytes> SimPlatform::device_certificate() { return device_certificate_to_der(device_.device_certificate_blob()); }

Result<std::optional<BootEventLog>> SimPlatform::boot_event_log() { return measurements_->event_log; }

}  // namespace fde::agent
