// Handing the released key to LUKS (docs/fde-agent.md, "What one boot looks like"), on a header the agent has
// checked: the LUKS2 header area is copied into a private file and checked there (no null
// cipher in any keyslot or segment, exactly one data segment with the configured cipher;
// unlock/luks2_header.hpp), then `cryptsetup open --header COPY --key-file=- DEVICE NAME`
// gets the key on its stdin through a pipe, so cryptsetup uses exactly the checked bytes.
// cryptsetup is told to put the volume key into the table (--disable-keyring), so that after
// the open the kernel's table of the mapping can be checked: it must show the configured
// cipher and a volume key with the configured check value, or the mapping is closed again
// (and if even that fails, unverified_mapping_open() says so). The key is never in a file, an
// argument or the environment.
// Debian has no static libcryptsetup, so the static agent runs the initramfs's cryptsetup
// rather than linking the library.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "common/util/error.hpp"
#include "common/util/secret_bytes.hpp"
#include "guest-agent/unlock/dm_table.hpp"

namespace fde::agent {

class VolumeUnlocker {
 public:
  virtual ~VolumeUnlocker() = default;
  // Describes what unlock() does, for status lines ("cryptsetup open /dev/vda2 luks-...").
  virtual std::string describe() const = 0;
  virtual Result<void> unlock(const SecretBytes& key) = 0;
  // What a successful unlock() did ("unlocked /dev/vda2 as /dev/mapper/...").
  virtual std::string done() const = 0;
  // True after an unlock() that failed with a mapping still open that it could not verify
  // and could not close. Nothing may then run on that volume, not even the passphrase
  // prompt (systemd-cryptsetup would find the mapping active and accept it): the VM must
  // power off whatever the failure policy.
  virtual bool unverified_mapping_open() const { return false; }
};

inline constexpr const char* default_luks_cipher = "aes-xts-plain64";
inline constexpr const char* default_header_directory = "/run/fde-agent/luks-header";

struct CryptsetupOptions {
  std::string cryptsetup;   // program path
  std::string device;       // the LUKS block device or image file
  std::string mapper_name;  // /dev/mapper/<name>
  // `--test-passphrase`: only check that the key opens a keyslot (no device-mapper needed;
  // used by the tests and for a dry run).
  bool test_only = false;
  // The data segment's cipher the header must name and the mapping must use (luks_cipher).
  std::string expected_cipher = default_luks_cipher;
  // Private directory for the header copy (tmpfs in the initramfs).
  std::string header_directory = default_header_directory;
  // The check value (common/crypto/key_check.hpp) the volume key in the opened mapping's
  // table must have (volume_key_check). Not used with test_only.
  Bytes volume_key_check;
  // The opened mapping as the kernel shows it; by default read_crypt_mapping (unlock/dm_table.hpp).
  std::function<Result<CryptMapping>(const std::string& mapper_name)> read_mapping;
};

class CryptsetupUnlocker final : public VolumeUnlocker {
 public:
  explicit CryptsetupUnlocker(CryptsetupOptions options);
  std::string describe() const override;
  Result<void> unlock(const SecretBytes& key) override;
  std::string done() const override;
  bool unverified_mapping_open() const override { return unverified_mapping_open_; }
  // The argument vectors (the key goes to stdin).
  std::vector<std::string> dump_arguments(const std::string& header_copy) const;
  std::vector<std::string> open_arguments(const std::string& header_copy) const;

 private:
  Result<void> confirm_mapping();
  CryptsetupOptions options_;
  bool unverified_mapping_open_ = false;
};

// The first executable of /usr/sbin, /sbin, /usr/bin, /bin named cryptsetup, or not_found.
Result<std::string> find_cryptsetup();

}  // namespace fde::agent
