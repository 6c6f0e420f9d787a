// Checking the LUKS2 header copy, then running cryptsetup with the key on a pipe.
#include "guest-agent/unlock/volume_unlocker.hpp"

#include <sys/wait.h>
#include <unistd.h>

#include "guest-agent/unlock/dm_table.hpp"
#include "guest-agent/unlock/luks2_header.hpp"
#include "guest-agent/unlock/program_runner.hpp"

namespace fde::agent {

namespace {

// `cryptsetup status`/`close` print a few lines.
constexpr std::size_t max_close_output = 64 * 1024;

std::string describe_open_status(int status) {
  if (WIFEXITED(status)) {
    // cryptsetup(8) EXIT STATUS.
    switch (WEXITSTATUS(status)) {
      case 1: return "cryptsetup failed: wrong parameters (exit 1)";
      case 2: return "the released key opens no keyslot of the volume (cryptsetup exit 2)";
      case 3: return "cryptsetup ran out of memory (exit 3)";
      case 4: return "cryptsetup: wrong device specified (exit 4)";
      case 5: return "cryptsetup: device already exists or is busy (exit 5)";
      default: return "cryptsetup failed (exit " + std::to_string(WEXITSTATUS(status)) + ")";
    }
  }
  return "cryptsetup " + describe_wait_status(status);
}

}  // namespace

CryptsetupUnlocker::CryptsetupUnlocker(CryptsetupOptions options) : options_(std::move(options)) {
  if (!options_.read_mapping)
    options_.read_mapping = [](const std::string& name) { return read_crypt_mapping(name); };
}

std::vector<std::string> CryptsetupUnlocker::dump_arguments(const std::string& header_copy) const {
  // --type luks2: a LUKS1 header is refused (exit 1). No token plugin is loaded for a header
  // the host wrote.
  return {options_.cryptsetup, "luksDump",      "--type", "luks2", "--disable-external-tokens",
          "--dump-json-metadata", header_copy};
}

std::vector<std::string> CryptsetupUnlocker::open_arguments(const std::string& header_copy) const {
  std::vector<std::string> args{options_.cryptsetup, "open"};
  if (options_.test_only) args.push_back("--test-passphrase");
  // --disable-keyring: the volume key goes into the kernel's table, where it can be compared
  // with volume_key_check (a key in the keyring cannot be read back).
  args.insert(args.end(), {"--type", "luks2", "--header", header_copy, "--disable-external-tokens",
                           "--disable-keyring", "--key-file=-", options_.device});
  if (!options_.test_only) args.push_back(options_.mapper_name);
  return args;
}

std::string CryptsetupUnlocker::describe() const {
  return options_.test_only ? "cryptsetup open --test-passphrase " + options_.device
                            : "cryptsetup open " + options_.device + " " + options_.mapper_name;
}

std::string CryptsetupUnlocker::done() const {
  return options_.test_only
             ? "the released key opens a keyslot of " + options_.device + " (--test-passphrase: nothing mapped)"
             : "unlocked " + options_.device + " as /dev/mapper/" + options_.mapper_name;
}

Result<void> CryptsetupUnlocker::unlock(const SecretBytes& key) {
  if (unverified_mapping_open_)
    return fail(Errc::verification_failed, "/dev/mapper/" + options_.mapper_name + " is still open, unverified");
  if (key.empty()) return fail(Errc::invalid_argument, "no key to unlock with");
  const std::string refused = "LUKS header of " + options_.device + " refused: ";

  // 1. A snapshot of the header area that the host cannot change any more.
  auto copy = copy_luks2_header(options_.device, options_.header_directory, options_.mapper_name);
  if (!copy) {
    if (copy.error().code == Errc::io)
      return fail(Errc::io, "cannot copy the LUKS header of " + options_.device + ": " + copy.error().message);
    return fail(Errc::verification_failed, refused + copy.error().message);
  }

  // 2. cryptsetup's own reading of that snapshot (checksums, JSON validation), then ours.
  auto dump = run_program(dump_arguments(copy->path()), {nullptr, max_luks_dump_output});
  if (!dump) return fail(Errc::io, "cryptsetup luksDump: " + dump.error().message);
  if (!dump->succeeded())
    return fail(Errc::verification_failed, refused + "cryptsetup luksDump does not read it as a LUKS2 header (" +
                                               describe_wait_status(dump->wait_status) + ")");
  if (auto checked = check_luks2_metadata(dump->output, options_.expected_cipher, copy->size()); !checked)
    return fail(Errc::verification_failed, refused + checked.error().message);

  // 3. The open, with exactly the checked bytes as the header.
  auto opened = run_program(open_arguments(copy->path()), {&key, 0});
  copy->remove();
  if (!opened) return fail(Errc::io, "cryptsetup open: " + opened.error().message);
  if (!opened->succeeded()) return fail(Errc::verification_failed, describe_open_status(opened->wait_status));
  if (options_.test_only) return {};

  // 4. What the kernel mapped, whatever cryptsetup believed.
  return confirm_mapping();
}

Result<void> CryptsetupUnlocker::confirm_mapping() {
  const std::string mapped = "/dev/mapper/" + options_.mapper_name;
  auto mapping = options_.read_mapping(options_.mapper_name);
  std::string problem;
  if (!mapping)
    problem = "cannot confirm " + mapped + ": " + mapping.error().message;
  else if (mapping->cipher != options_.expected_cipher)
    problem = mapped + " uses '" + mapping->cipher + "', expected '" + options_.expected_cipher + "'";
  else if (auto key = check_mapped_key(*mapping, options_.volume_key_check); !key)
    problem = mapped + ": " + key.error().message;
  else
    return {};
  auto closed = run_program({options_.cryptsetup, "close", options_.mapper_name}, {nullptr, max_close_output});
  const bool was_closed = closed && closed->succeeded();
  unverified_mapping_open_ = !was_closed;
  return fail(Errc::verification_failed,
              problem + (was_closed ? "; closed it again"
                                    : "; closing it failed (" +
                                          (closed ? describe_wait_status(closed->wait_status) : closed.error().message) +
                                          "), the boot must not continue"));
}

Result<std::string> find_cryptsetup() {
  for (const char* path : {"/usr/sbin/cryptsetup", "/sbin/cryptsetup", "/usr/bin/cryptsetup", "/bin/cryptsetup"})
    if (::access(path, X_OK) == 0) return std::string(path);
  return fail(Errc::not_found, "cryptsetup is not installed (looked in /usr/sbin, /sbin, /usr/bin, /bin)");
}

}  // namespace fde::agent
