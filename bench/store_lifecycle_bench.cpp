// store_lifecycle_bench: what the store's lifecycle operations cost on a real SQLite store of
// IMAGES enrolled images and RECORDS audit records: an online backup (with its read-back
// check), a KEK rotation (every key re-wrapped, the chain checked first, one transaction) and
// verify_audit_chain() across the rotation. Prints the figures; asserts nothing.
//
//   store_lifecycle_bench [IMAGES] [RECORDS] [DIRECTORY]   (default 1000, 10000, $TMPDIR or /tmp)
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

#include "common/crypto/random.hpp"
#include "common/protocol/messages.hpp"
#include "verifier-daemon/store/store.hpp"

using namespace fde;
using namespace fde::verifier;

namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

int failed(const char* what, const Error& error) {
  std::fprintf(stderr, "store_lifecycle_bench: %s: %s\n", what, error.describe().c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  const long images = argc > 1 ? std::strtol(argv[1], nullptr, 10) : 1000;
  const long records = argc > 2 ? std::strtol(argv[2], nullptr, 10) : 10000;
  const char* tmp = std::getenv("TMPDIR");
  std::string directory = argc > 3 ? argv[3] : (tmp != nullptr ? tmp : "/tmp");
  std::string pattern = directory + "/fde-lifecycle-bench-XXXXXX";
  if (images < 1 || records < 0 || ::mkdtemp(pattern.data()) == nullptr) {
    std::fprintf(stderr, "usage: store_lifecycle_bench [IMAGES >= 1] [RECORDS >= 0] [DIRECTORY]\n");
    return 2;
  }
  struct Cleanup {
    std::string path;
    ~Cleanup() { std::filesystem::remove_all(path); }
  } cleanup{pattern};
  auto kek = KeyEncryptionKey::from_bytes(crypto::random_bytes(KeyEncryptionKey::key_size));
  auto store = open_sqlite_store(pattern + "/verifier.db", std::move(*kek));
  if (!store) return failed("open", store.error());

  reference::ReferenceSet set;
  set.name = "kernel-6.6.0-28";
  set.boot = reference::BootMode::grub;
  set.grub.efi_applications = {crypto::random_bytes(32)};
  set.grub.grub_cfgs = {crypto::random_bytes(32)};
  set.grub.kernel = crypto::random_bytes(32);
  set.grub.initramfs = crypto::random_bytes(32);
  set.grub.kernel_cmdline = "/vmlinuz-6.6.0-28 root=/dev/mapper/root ro";
  set.grub.grub_commands = {"linux /vmlinuz-6.6.0-28 root=/dev/mapper/root ro", "boot"};
  const AdminActor actor{0, static_cast<std::int64_t>(::getpid())};
  const auto enrolling = Clock::now();
  for (long i = 0; i < images; ++i) {
    ImageRecord image;
    image.image_id = "bench-" + std::to_string(i);
    image.luks_uuid = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0";
    image.reference.hash_alg = crypto::HashAlg::sha256;
    image.reference.firmware_rims = {crypto::random_bytes(32)};
    image.reference.sets = {set};
    if (auto ok = (*store)->enroll(image, crypto::random_secret(64), actor); !ok) return failed("enroll", ok.error());
  }
  const double enroll_s = seconds_since(enrolling);
  AuditEntry entry{"bench-0", "192.0.2.1:40000", std::string(64, 'a'), R"({"rim":"00"})", "deny",
                   "reference.rim: expected one of {aa}, found bb", R"([{"name":"reference.rim","passed":false}])"};
  for (long i = 0; i < records; ++i)
    if (auto ok = (*store)->append_audit(entry); !ok) return failed("append", ok.error());

  const auto backing_up = Clock::now();
  auto backup = (*store)->backup(pattern + "/backup.db");
  const double backup_s = seconds_since(backing_up);
  if (!backup) return failed("backup", backup.error());

  auto new_kek = KeyEncryptionKey::from_bytes(crypto::random_bytes(KeyEncryptionKey::key_size));
  const auto rotating = Clock::now();
  auto rotation = (*store)->rotate_kek(std::move(*new_kek), actor);
  const double rotate_s = seconds_since(rotating);
  if (!rotation) return failed("rotate", rotation.error());

  const auto verifying = Clock::now();
  auto report = (*store)->verify_audit_chain();
  const double verify_s = seconds_since(verifying);
  if (!report || !report->intact) {
    std::fprintf(stderr, "store_lifecycle_bench: the chain does not verify after the rotation\n");
    return 1;
  }
  std::printf("images %ld, audit records %lld\n", images, static_cast<long long>(report->records));
  std::printf("enroll (fsync'd)          %.3f s total, %.2f ms per image\n", enroll_s, 1000 * enroll_s / images);
  std::printf("backup (copy + check)     %.3f s, %lld bytes\n", backup_s, static_cast<long long>(backup->bytes));
  std::printf("rotate-kek                %.3f s (%lld keys re-wrapped, chain checked first)\n", rotate_s,
              static_cast<long long>(rotation->images));
  std::printf("verify across rotation    %.3f s\n", verify_s);
  return 0;
}
