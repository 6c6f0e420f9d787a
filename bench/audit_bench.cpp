// audit_bench: what the keyed audit chain costs. Appends N denials (each its own fsync'd
// transaction, as the attestation path does) to a fresh SQLite store, then times
// verify_audit_chain() over them. Prints the figures; asserts nothing.
//
//   audit_bench [RECORDS] [DIRECTORY]     (default 20000 records, in $TMPDIR or /tmp)
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

#include "common/crypto/random.hpp"
#include "verifier-daemon/store/store.hpp"

using namespace fde;
using namespace fde::verifier;

int main(int argc, char** argv) {
  const long records = argc > 1 ? std::strtol(argv[1], nullptr, 10) : 20000;
  const char* tmp = std::getenv("TMPDIR");
  std::string directory = argc > 2 ? argv[2] : (tmp != nullptr ? tmp : "/tmp");
  std::string pattern = directory + "/fde-audit-bench-XXXXXX";
  if (records < 1 || ::mkdtemp(pattern.data()) == nullptr) {
    std::fprintf(stderr, "usage: audit_bench [RECORDS >= 1] [DIRECTORY]\n");
    return 2;
  }
  struct Cleanup {
    std::string path;
    ~Cleanup() { std::filesystem::remove_all(path); }
  } cleanup{pattern};
  auto kek = KeyEncryptionKey::from_bytes(crypto::random_bytes(KeyEncryptionKey::key_size));
  auto store = open_sqlite_store(pattern + "/verifier.db", std::move(*kek));
  if (!store) {
    std::fprintf(stderr, "audit_bench: %s\n", store.error().describe().c_str());
    return 1;
  }
  AuditEntry entry{"bench-image", "192.0.2.1:40000", std::string(64, 'a'), R"({"rim":"00"})", "deny",
                   "reference.rim: expected one of {aa}, found bb", R"([{"name":"reference.rim","passed":false}])"};
  using Clock = std::chrono::steady_clock;
  const auto appending = Clock::now();
  for (long i = 0; i < records; ++i)
    if (auto ok = (*store)->append_audit(entry); !ok) {
      std::fprintf(stderr, "audit_bench: %s\n", ok.error().describe().c_str());
      return 1;
    }
  const double append_s = std::chrono::duration<double>(Clock::now() - appending).count();
  const auto verifying = Clock::now();
  auto report = (*store)->verify_audit_chain();
  const double verify_s = std::chrono::duration<double>(Clock::now() - verifying).count();
  if (!report || !report->intact) {
    std::fprintf(stderr, "audit_bench: the chain does not verify\n");
    return 1;
  }
  const double count = static_cast<double>(records);
  std::printf("records            %ld\n", records);
  std::printf("append (fsync'd)   %.3f s total, %.3f ms per record\n", append_s, 1000 * append_s / count);
  std::printf("verify (HMAC each) %.3f s total, %.1f us per record, %.0f records/s\n", verify_s,
              1e6 * verify_s / count, count / verify_s);
  return 0;
}
