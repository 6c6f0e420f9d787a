// The daemon's log: one line per event on stderr in logfmt ("key=value ..."), which journald
// stores as-is; under systemd (JOURNAL_STREAM set) each line carries a "<N>" syslog priority
// prefix so journald records its level. Callers never pass key material: values are texts,
// ids, digests and check names only.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>

namespace fde::verifier {

enum class LogLevel { error = 3, warning = 4, info = 6, debug = 7 };  // syslog priorities
std::string_view log_level_name(LogLevel level);
std::optional<LogLevel> log_level_from_name(std::string_view name);

using LogField = std::pair<std::string_view, std::string_view>;

class Logger {
 public:
  using Sink = std::function<void(std::string_view line)>;  // gets a whole line with its '\n'
  // Writes to stderr; with `syslog_prefixes` each line starts with "<N>".
  explicit Logger(LogLevel level = LogLevel::info, bool syslog_prefixes = false);
  // Writes to `sink` (tests capture lines this way).
  Logger(LogLevel level, Sink sink);
  // stderr, with prefixes when the daemon's stderr is connected to the journal.
  static bool stderr_is_journal();

  void set_level(LogLevel level) { level_.store(level); }
  LogLevel level() const { return level_.load(); }
  bool enabled(LogLevel level) const { return static_cast<int>(level) <= static_cast<int>(level_.load()); }

  // level=<level> event=<event> key=value ...; values are quoted and escaped when they hold
  // spaces, quotes, '=' or control characters, so one event is always one line.
  void log(LogLevel level, std::string_view event, std::initializer_list<LogField> fields);
  void error(std::string_view event, std::initializer_list<LogField> fields) { log(LogLevel::error, event, fields); }
  void warning(std::string_view event, std::initializer_list<LogField> fields) { log(LogLevel::warning, event, fields); }
  void info(std::string_view event, std::initializer_list<LogField> fields) { log(LogLevel::info, event, fields); }
  void debug(std::string_view event, std::initializer_list<LogField> fields) { log(LogLevel::debug, event, fields); }

 private:
  std::atomic<LogLevel> level_;
  bool syslog_prefixes_ = false;
  Sink sink_;
  std::mutex mutex_;
};

// For events an unauthenticated client can cause at will (refused requests): at most one
// line per kind and interval, so a flood costs the journal a line every few seconds, not one
// per request. admit() says whether to write a line now and, if so, how many of that kind
// were held back since the last line (the line carries that count as suppressed=N). Kinds
// are a fixed vocabulary chosen by the caller, never request text. Thread-safe.
class LogThrottle {
 public:
  using SteadyClock = std::chrono::steady_clock;
  explicit LogThrottle(std::chrono::milliseconds interval = std::chrono::seconds(10)) : interval_(interval) {}
  std::optional<std::uint64_t> admit(std::string_view kind, SteadyClock::time_point now);

 private:
  struct Kind {
    SteadyClock::time_point last_line;
    std::uint64_t suppressed = 0;
  };
  std::chrono::milliseconds interval_;
  std::mutex mutex_;
  std::unordered_map<std::string, Kind> kinds_;
};

// One logfmt value: bare if it is a plain token, else quoted with \" \\ \n \t \xNN escapes.
std::string logfmt_value(std::string_view value);

}  // namespace fde::verifier
