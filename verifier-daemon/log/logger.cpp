// logfmt lines on stderr (or a test sink).
#include "verifier-daemon/log/logger.hpp"

#include <unistd.h>

#include <cstdlib>

namespace fde::verifier {

std::string_view log_level_name(LogLevel level) {
  switch (level) {
    case LogLevel::error: return "error";
    case LogLevel::warning: return "warning";
    case LogLevel::info: return "info";
    case LogLevel::debug: return "debug";
  }
  return "info";
}

std::optional<LogLevel> log_level_from_name(std::string_view name) {
  for (LogLevel level : {LogLevel::error, LogLevel::warning, LogLevel::info, LogLevel::debug})
    if (log_level_name(level) == name) return level;
  return std::nullopt;
}

std::string logfmt_value(std::string_view value) {
  static constexpr char digits[] = "0123456789abcdef";
  bool bare = !value.empty();
  for (char c : value) {
    const auto byte = static_cast<unsigned char>(c);
    if (byte <= 0x20 || byte >= 0x7f || c == '"' || c == '=' || c == '\\') {
      bare = false;
      break;
    }
  }
  if (bare) return std::string(value);
  std::string out = "\"";
  for (char c : value) {
    const auto byte = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\t') {
      out += "\\t";
    } else if (byte < 0x20 || byte == 0x7f) {
      // Control characters would let a crafted claim forge log lines or drive a terminal.
      out += "\\x";
      out += digits[byte >> 4];
      out += digits[byte & 0xf];
    } else {
      out += c;
    }
  }
  out += '"';
  return out;
}

Logger::Logger(LogLevel level, bool syslog_prefixes)
    : level_(level), syslog_prefixes_(syslog_prefixes), sink_([](std::string_view line) {
        // One write per line, so lines from several threads never interleave mid-line.
        std::size_t written = 0;
        while (written < line.size()) {
          const ssize_t n = ::write(STDERR_FILENO, line.data() + written, line.size() - written);
          if (n <= 0) return;
          written += static_cast<std::size_t>(n);
        }
      }) {}

Logger::Logger(LogLevel level, Sink sink) : level_(level), sink_(std::move(sink)) {}

bool Logger::stderr_is_journal() {
  // systemd sets JOURNAL_STREAM to "<device>:<inode>" of the stream it connected to stderr.
  return std::getenv("JOURNAL_STREAM") != nullptr;
}

void Logger::log(LogLevel level, std::string_view event, std::initializer_list<LogField> fields) {
  if (!enabled(level)) return;
  std::string line;
  if (syslog_prefixes_) line += "<" + std::to_string(static_cast<int>(level)) + ">";
  line += "level=";
  line += log_level_name(level);
  line += " event=";
  line += logfmt_value(event);
  for (const auto& [key, value] : fields) {
    line += ' ';
    line += key;
    line += '=';
    line += logfmt_value(value);
  }
  line += '\n';
  std::lock_guard lock(mutex_);
  sink_(line);
}

std::optional<std::uint64_t> LogThrottle::admit(std::string_view kind, SteadyClock::time_point now) {
  std::lock_guard lock(mutex_);
  auto [it, inserted] = kinds_.try_emplace(std::string(kind));
  Kind& state = it->second;
  if (!inserted && now - state.last_line < interval_) {
    ++state.suppressed;
    return std::nullopt;
  }
  state.last_line = now;
  return std::exchange(state.suppressed, 0);
}

}  // namespace fde::verifier
