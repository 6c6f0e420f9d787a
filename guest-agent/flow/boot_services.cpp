// The real clock, console, routing probe.
#include "guest-agent/flow/boot_services.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <ostream>
#include <thread>

#include "guest-agent/unlock/luks_device.hpp"

namespace fde::agent {

void SystemClock::sleep_until(TimePoint when) { std::this_thread::sleep_until(when); }

void StatusReporter::line(const std::string& text) { out_ << "fde-agent: " << text << std::endl; }

bool RoutingTableProbe::has_route(const VerifierUrl& verifier) {
  sockaddr_storage address{};
  socklen_t length = 0;
  auto* v4 = reinterpret_cast<sockaddr_in*>(&address);
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&address);
  if (::inet_pton(AF_INET, verifier.host.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(verifier.port);
    length = sizeof *v4;
  } else if (::inet_pton(AF_INET6, verifier.host.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(verifier.port);
    length = sizeof *v6;
  } else {
    return false;
  }
  int fd = ::socket(address.ss_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  // connect() on a datagram socket only picks a route and a source address: ENETUNREACH
  // while no interface is configured for the destination.
  bool routed = ::connect(fd, reinterpret_cast<sockaddr*>(&address), length) == 0;
  ::close(fd);
  return routed;
}

Result<std::string> UuidDeviceLocator::locate() {
  if (explicit_device_.empty()) return find_luks_device(uuid_);
  auto header = read_luks_header(explicit_device_);
  if (!header) return fail(Errc::not_found, header.error().message);
  if (header->uuid != uuid_)
    return fail(Errc::not_found, explicit_device_ + " holds LUKS volume " + header->uuid + ", not " + uuid_);
  return explicit_device_;
}

bool UuidDeviceLocator::already_unlocked() {
  struct stat st {};
  return ::stat((mapper_directory_ + "/" + mapper_name_).c_str(), &st) == 0;
}

Result<CryptMapping> UuidDeviceLocator::existing_mapping() { return read_crypt_mapping(mapper_name_); }

}  // namespace fde::agent
