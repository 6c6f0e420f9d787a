// The outside world of the boot flow, one small interface each, so the flow's decisions can
// be tested with a fake clock and fake verifiers: time, the console, the network and the
// LUKS device node and what an already open mapping of it is.
#pragma once

#include <iosfwd>
#include <string>

#include "common/util/error.hpp"
#include "guest-agent/config/agent_config.hpp"
#include "guest-agent/retry/retry_schedule.hpp"
#include "guest-agent/unlock/dm_table.hpp"

namespace fde::agent {

class Clock {
 public:
  virtual ~Clock() = default;
  virtual TimePoint now() = 0;
  virtual void sleep_until(TimePoint when) = 0;
};

class SystemClock final : public Clock {
 public:
  TimePoint now() override { return SteadyClock::now(); }
  void sleep_until(TimePoint when) override;
};

// One status line per event on the console: "fde-agent: <line>".
class StatusReporter {
 public:
  explicit StatusReporter(std::ostream& out) : out_(out) {}
  void line(const std::string& text);

 private:
  std::ostream& out_;
};

class NetworkProbe {
 public:
  virtual ~NetworkProbe() = default;
  // True when the kernel has a route to the verifier (the interface is up and configured).
  virtual bool has_route(const VerifierUrl& verifier) = 0;
};

// Asks the routing table by connecting a UDP socket, which sends nothing.
class RoutingTableProbe final : public NetworkProbe {
 public:
  bool has_route(const VerifierUrl& verifier) override;
};

class DeviceLocator {
 public:
  virtual ~DeviceLocator() = default;
  // The device node of the LUKS volume, or Errc::not_found while it has not appeared.
  virtual Result<std::string> locate() = 0;
  // True if the volume is already open (/dev/mapper/<name> exists).
  virtual bool already_unlocked() = 0;
  // What the kernel says that open mapping is (unlock/dm_table.hpp).
  virtual Result<CryptMapping> existing_mapping() = 0;
};

// Finds the volume by UUID (unlock/luks_device.hpp) or, when a device was named on the
// command line, checks that its LUKS header carries that UUID.
class UuidDeviceLocator final : public DeviceLocator {
 public:
  UuidDeviceLocator(std::string uuid, std::string mapper_name, std::string explicit_device,
                    std::string mapper_directory = "/dev/mapper")
      : uuid_(std::move(uuid)),
        mapper_name_(std::move(mapper_name)),
        explicit_device_(std::move(explicit_device)),
        mapper_directory_(std::move(mapper_directory)) {}
  Result<std::string> locate() override;
  bool already_unlocked() override;
  Result<CryptMapping> existing_mapping() override;

 private:
  std::string uuid_;
  std::string mapper_name_;
  std::string explicit_device_;
  std::string mapper_directory_;
};

}  // namespace fde::agent
