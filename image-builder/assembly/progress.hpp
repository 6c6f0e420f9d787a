// Progress of long steps: a bar with throughput and ETA on a terminal, plain lines
// otherwise (logs, CI). Also the cancellation flag that SIGINT/SIGTERM set.
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>

#include "common/util/error.hpp"

namespace fde::image {

// Async-signal-safe: only stores to a lock-free atomic.
void request_cancel();
bool cancel_requested();

class Progress {
 public:
  // `out` nullptr: silent (library callers, tests).
  explicit Progress(std::FILE* out);
  void note(const std::string& line);  // one plain line ("reading the partition table")
  void begin(const std::string& stage, std::uint64_t total_bytes);
  // Fails with "interrupted" once cancellation was requested.
  Result<void> advance(std::uint64_t bytes);
  void end();

 private:
  void draw(bool final);
  std::FILE* out_;
  bool terminal_ = false;
  std::string stage_;
  std::uint64_t total_ = 0;
  std::uint64_t done_ = 0;
  int last_decile_ = -1;
  std::chrono::steady_clock::time_point started_;
  std::chrono::steady_clock::time_point last_draw_;
};

std::string format_bytes(std::uint64_t bytes);

}  // namespace fde::image
