// Progress bar / plain progress lines.
#include "image-builder/assembly/progress.hpp"

#include <unistd.h>

#include <atomic>

namespace fde::image {
namespace {
std::atomic<bool> cancelled{false};
static_assert(std::atomic<bool>::is_always_lock_free);
}  // namespace

void request_cancel() { cancelled.store(true); }
bool cancel_requested() { return cancelled.load(); }

std::string format_bytes(std::uint64_t bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double value = static_cast<double>(bytes);
  int unit = 0;
  while (value >= 1024 && unit < 4) {
    value /= 1024;
    ++unit;
  }
  char text[32];
  std::snprintf(text, sizeof text, unit == 0 ? "%.0f %s" : "%.1f %s", value, units[unit]);
  return text;
}

Progress::Progress(std::FILE* out) : out_(out) { terminal_ = out_ && ::isatty(::fileno(out_)); }

void Progress::note(const std::string& line) {
  if (!out_) return;
  std::fprintf(out_, "%s\n", line.c_str());
  std::fflush(out_);
}

void Progress::begin(const std::string& stage, std::uint64_t total_bytes) {
  stage_ = stage;
  total_ = total_bytes;
  done_ = 0;
  last_decile_ = -1;
  started_ = last_draw_ = std::chrono::steady_clock::now();
  if (out_ && !terminal_)
    std::fprintf(out_, "%s: %s\n", stage_.c_str(), format_bytes(total_).c_str());
  draw(false);
}

Result<void> Progress::advance(std::uint64_t bytes) {
  done_ += bytes;
  if (cancel_requested()) return fail(Errc::io, "interrupted");
  const auto now = std::chrono::steady_clock::now();
  if (now - last_draw_ >= std::chrono::milliseconds(200)) {
    last_draw_ = now;
    draw(false);
  }
  return {};
}

void Progress::end() {
  draw(true);
  stage_.clear();
}

void Progress::draw(bool final) {
  if (!out_ || stage_.empty()) return;
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started_).count();
  const double rate = seconds > 0 ? static_cast<double>(done_) / seconds : 0;
  const double fraction = total_ ? static_cast<double>(done_) / static_cast<double>(total_) : 1.0;
  if (terminal_) {
    constexpr int width = 30;
    const int filled = static_cast<int>(fraction * width);
    std::string bar(static_cast<std::size_t>(std::min(filled, width)), '#');
    bar.resize(width, '-');
    char eta[32] = "--:--";
    if (rate > 0 && done_ < total_) {
      const auto left = static_cast<long>(static_cast<double>(total_ - done_) / rate);
      std::snprintf(eta, sizeof eta, "%ld:%02ld", left / 60, left % 60);
    } else if (final) {
      std::snprintf(eta, sizeof eta, "%.1fs", seconds);
    }
    std::fprintf(out_, "\r%-22s [%s] %3d%% %10s/s %s %s   ", stage_.c_str(), bar.c_str(),
                 static_cast<int>(fraction * 100), format_bytes(static_cast<std::uint64_t>(rate)).c_str(),
                 final ? "in" : "ETA", eta);
    if (final) std::fputc('\n', out_);
  } else {
    const int decile = static_cast<int>(fraction * 10);
    if (final) {
      std::fprintf(out_, "%s: done, %s in %.1f s (%s/s)\n", stage_.c_str(), format_bytes(done_).c_str(), seconds,
                   format_bytes(static_cast<std::uint64_t>(rate)).c_str());
    } else if (decile != last_decile_ && decile > 0 && decile < 10) {
      std::fprintf(out_, "%s: %d%% (%s/s)\n", stage_.c_str(), decile * 10,
                   format_bytes(static_cast<std::uint64_t>(rate)).c_str());
    }
    last_decile_ = decile;
  }
  std::fflush(out_);
}

}  // namespace fde::image
