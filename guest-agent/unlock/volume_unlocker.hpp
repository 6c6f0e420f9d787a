// Handing the released key to LUKS: `cryptsetup open --key-file=- DEVICE NAME` with the key
// written to its stdin through a pipe (design.md section 2 step 7). The key is never in a
// file, an argument or the environment. Debian has no static libcryptsetup, so the static
// agent runs the initramfs's cryptsetup rather than linking the library.
#pragma once

#include <string>
#include <vector>

#include "common/util/error.hpp"
#include "common/util/secret_bytes.hpp"

namespace fde::agent {

class VolumeUnlocker {
 public:
  virtual ~VolumeUnlocker() = default;
  // Describes what unlock() does, for status lines ("cryptsetup open /dev/vda2 luks-...").
  virtual std::string describe() const = 0;
  virtual Result<void> unlock(const SecretBytes& key) = 0;
  // What a successful unlock() did ("unlocked /dev/vda2 as /dev/mapper/...").
  virtual std::string done() const = 0;
};

struct CryptsetupOptions {
  std::string cryptsetup;   // program path
  std::string device;       // the LUKS block device or image file
  std::string mapper_name;  // /dev/mapper/<name>
  // `--test-passphrase`: only check that the key opens a keyslot (no device-mapper needed;
  // used by the tests and for a dry run).
  bool test_only = false;
};

class CryptsetupUnlocker final : public VolumeUnlocker {
 public:
  explicit CryptsetupUnlocker(CryptsetupOptions options) : options_(std::move(options)) {}
  std::string describe() const override;
  Result<void> unlock(const SecretBytes& key) override;
  std::string done() const override;
  // The argument vector (without the key, which goes to stdin).
  std::vector<std::string> arguments() const;

 private:
  CryptsetupOptions options_;
};

// The first executable of /usr/sbin, /sbin, /usr/bin, /bin named cryptsetup, or not_found.
Result<std::string> find_cryptsetup();

}  // namespace fde::agent
