// What the benchmarks read about a server process from /proc, and their latency summaries.
// CPU time is utime + stime + cutime + cstime of /proc/PID/stat: the children's part counts
// the reaped per-connection processes of a forking server (socat + tangd), and is zero for
// fde-verifierd. Memory is VmRSS and VmHWM (peak RSS) of /proc/PID/status.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sched.h>
#include <sys/socket.h>
#include <sys/resource.h>
#include <sys/types.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

namespace fde::bench {

// CPU seconds the process and its reaped children have used; -1 if it cannot be read.
inline double process_cpu_seconds(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  // The command name (field 2) is in parentheses and may hold spaces: count after the last ')'.
  const auto close = text.rfind(')');
  if (close == std::string::npos) return -1;
  std::istringstream fields(text.substr(close + 2));
  std::vector<std::string> rest;
  for (std::string field; fields >> field;) rest.push_back(field);
  // rest[0] is field 3 (state); utime..cstime are fields 14..17.
  if (rest.size() < 15) return -1;
  double ticks = 0;
  for (int field = 14; field <= 17; ++field) ticks += std::stod(rest[static_cast<std::size_t>(field - 3)]);
  return ticks / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

// A "VmHWM:"-style line of /proc/PID/status in KiB; -1 if absent.
inline long process_status_kib(pid_t pid, const std::string& key) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(in, line);)
    if (line.rfind(key + ":", 0) == 0) return std::stol(line.substr(key.size() + 1));
  return -1;
}

// GET on the operator port (plain HTTP), the body.
inline std::string operator_get(std::uint16_t port, const std::string& target) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(port);
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::string response;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0) {
    const std::string request = "GET " + target + " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    if (::write(fd, request.data(), request.size()) == static_cast<ssize_t>(request.size())) {
      char buffer[8192];
      for (ssize_t n; (n = ::read(fd, buffer, sizeof buffer)) > 0;) response.append(buffer, static_cast<std::size_t>(n));
    }
  }
  ::close(fd);
  const auto body = response.find("\r\n\r\n");
  return body == std::string::npos ? std::string() : response.substr(body + 4);
}

// A counter's value from the Prometheus text, or nullopt when the daemon does not export it.
inline std::optional<double> metric(const std::string& text, const std::string& name) {
  std::istringstream lines(text);
  std::string line;
  while (std::getline(lines, line))
    if (line.rfind(name + " ", 0) == 0) return std::stod(line.substr(name.size() + 1));
  return std::nullopt;
}

// Moves every thread of `pid` to CPU `cpu` (threads it starts later inherit the mask);
// false if one could not be moved.
inline bool pin_process_to_cpu(pid_t pid, int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  std::error_code error;
  bool all = true;
  for (const auto& task : std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/task", error))
    if (::sched_setaffinity(static_cast<pid_t>(std::stol(task.path().filename().string())), sizeof set, &set) != 0)
      all = false;
  return all && !error;
}

// This process's own CPU seconds (the load client's cost).
inline double self_cpu_seconds() {
  rusage usage{};
  ::getrusage(RUSAGE_SELF, &usage);
  auto seconds = [](const timeval& t) { return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_usec) / 1e6; };
  return seconds(usage.ru_utime) + seconds(usage.ru_stime);
}

// The p-quantile (0..1) of `values` in milliseconds, nearest rank; 0 when empty.
inline double percentile_ms(std::vector<std::chrono::nanoseconds> values, double p) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  auto rank = static_cast<std::size_t>(p * static_cast<double>(values.size()) + 0.999999);
  rank = std::clamp<std::size_t>(rank, 1, values.size());
  return std::chrono::duration<double, std::milli>(values[rank - 1]).count();
}

}  // namespace fde::bench
