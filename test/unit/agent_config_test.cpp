// fde-agent configuration: the file format, rd.fde.* kernel arguments, and the one-line
// errors for bad or missing settings.
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "guest-agent/config/agent_config.hpp"

using namespace fde;
using namespace fde::agent;
using namespace std::chrono_literals;

namespace {

const char* const complete_file = R"(# the agent of image web-01
image_id = web-01
verifier = https://192.0.2.10:8443
verifier = https://[2001:db8::1]:9443, https://192.0.2.11
ca_file = /etc/fde/verifier-ca.pem
luks_uuid = 0F1E2D3C-4B5A-6978-8796-A5B4C3D2E1F0
failure_policy = passphrase
attempt_timeout = 20s
overall_timeout = 5m
backoff_initial = 500ms
released_key_check = 307b48afff2c389d47cf4f7f62b6be38ccbc1327389dca805741f27d3ebcc68c
volume_key_check = B5450757154F17899517CFC07828F3E2EEC652535323381A1BD16B34F8AB0581
)";

AgentConfig parsed(std::string_view text) {
  AgentConfig config;
  auto ok = parse_config_text(config, text, "agent.conf");
  INFO((ok ? std::string() : ok.error().message));
  REQUIRE(ok);
  return config;
}

std::string error_of(std::string_view text) {
  AgentConfig config;
  auto ok = parse_config_text(config, text, "agent.conf");
  REQUIRE_FALSE(ok);
  return ok.error().message;
}

bool single_line(const std::string& text) { return text.find('\n') == std::string::npos; }

}  // namespace

TEST_CASE("a complete configuration file sets every value it names and keeps defaults for the rest") {
  AgentConfig config = parsed(complete_file);
  CHECK(config.image_id == "web-01");
  REQUIRE(config.verifiers.size() == 3);
  CHECK(config.verifiers[0].host == "192.0.2.10");
  CHECK(config.verifiers[0].port == 8443);
  CHECK(config.verifiers[1].host == "2001:db8::1");
  CHECK(config.verifiers[1].port == 9443);
  CHECK(config.verifiers[2].port == 443);
  CHECK(config.ca_file == "/etc/fde/verifier-ca.pem");
  CHECK(config.luks_uuid == "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0");
  CHECK(config.mapper_name() == "luks-0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0");
  CHECK(config.failure_policy == FailurePolicy::passphrase);
  CHECK(config.attempt_timeout == 20s);
  CHECK(config.overall_timeout == 5min);
  CHECK(config.backoff_initial == 500ms);
  CHECK(config.backoff_max == 30s);
  CHECK(config.network_timeout == 60s);
  CHECK(config.platform == PlatformKind::tsi);
  CHECK(validate_config(config));
}

TEST_CASE("the failure policy defaults to poweroff") {
  AgentConfig config;
  CHECK(config.failure_policy == FailurePolicy::poweroff);
}

TEST_CASE("durations take ms, s, m and h units or plain seconds") {
  CHECK(*parse_duration("250ms") == 250ms);
  CHECK(*parse_duration("30") == 30s);
  CHECK(*parse_duration("30s") == 30s);
  CHECK(*parse_duration("2m") == 2min);
  CHECK(*parse_duration("1h") == 1h);
  CHECK_FALSE(parse_duration("30 s"));
  CHECK_FALSE(parse_duration("-1s"));
  CHECK_FALSE(parse_duration("1d"));
  CHECK_FALSE(parse_duration("s"));
  CHECK_FALSE(parse_duration("99999999999h"));
  CHECK(format_duration(1500ms) == "1.5s");
  CHECK(format_duration(30s) == "30s");
  CHECK(format_duration(5min) == "5m");
  CHECK(format_duration(250ms) == "250ms");
}

TEST_CASE("verifier URLs must be https with an IP literal host and no path") {
  CHECK(parse_verifier_url("https://127.0.0.1:8443"));
  CHECK(parse_verifier_url("https://127.0.0.1:8443/"));
  CHECK(parse_verifier_url("https://[::1]:8443"));
  CHECK(parse_verifier_url("https://[::1]")->port == 443);
  auto name = parse_verifier_url("https://verifier.example:8443");
  REQUIRE_FALSE(name);
  CHECK(name.error().message.find("must be an IP address") != std::string::npos);
  CHECK_FALSE(parse_verifier_url("http://127.0.0.1:8443"));
  CHECK_FALSE(parse_verifier_url("https://127.0.0.1:8443/v1"));
  CHECK_FALSE(parse_verifier_url("https://127.0.0.1:0"));
  CHECK_FALSE(parse_verifier_url("https://127.0.0.1:65536"));
  CHECK_FALSE(parse_verifier_url("https://127.0.0.1:"));
  CHECK_FALSE(parse_verifier_url("https://::1:8443"));
  CHECK_FALSE(parse_verifier_url("https://user@127.0.0.1:8443"));
}

TEST_CASE("bad settings give one-line errors that name the file, line and key") {
  std::string unknown = error_of("image_id = a\nverifer = https://127.0.0.1:1\n");
  CHECK(unknown.find("agent.conf:2: unknown setting 'verifer'") == 0);
  CHECK(single_line(unknown));

  std::string policy = error_of("failure_policy = reboot\n");
  CHECK(policy == "agent.conf:1: failure_policy: 'reboot' is not poweroff, wait or passphrase");

  std::string duration = error_of("\n\novernight = 1\noverall_timeout = 5x\n");
  CHECK(duration.find("agent.conf:3: unknown setting") == 0);
  CHECK(error_of("overall_timeout = 5x\n") == "agent.conf:1: overall_timeout: '5x' is not a duration (e.g. 30s, 500ms, 5m)");
  CHECK(error_of("overall_timeout = 0\n") == "agent.conf:1: overall_timeout: must be more than zero");
  CHECK(error_of("luks_uuid = not-a-uuid\n").find("agent.conf:1: luks_uuid: 'not-a-uuid' is not a UUID") == 0);
  CHECK(error_of("image_id = a/b\n").find("agent.conf:1: image_id: ") == 0);
  CHECK(error_of("ca_file = relative.pem\n") == "agent.conf:1: ca_file: must be an absolute path");
  CHECK(error_of("image_id = a\nimage_id = b\n") == "agent.conf:2: image_id is set twice");
  CHECK(error_of("just words\n") == "agent.conf:1: expected 'key = value', found 'just words'");
  CHECK(error_of("image_id =\n") == "agent.conf:1: image_id: empty value");
  CHECK(error_of("luks_name = a/b\n").find("agent.conf:1: luks_name: ") == 0);
  CHECK(error_of("platform = sgx\n") == "agent.conf:1: platform: 'sgx' is not tsi or sim");
  std::string host = error_of("verifier = https://verifier.example\n");
  CHECK(host.find("agent.conf:1: verifier: ") == 0);
  CHECK(single_line(host));
}

TEST_CASE("missing required settings say which one and how to set it") {
  AgentConfig config = parsed("image_id = web-01\nca_file = /ca.pem\nluks_uuid = 0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0\n");
  auto result = validate_config(config);
  REQUIRE_FALSE(result);
  CHECK(result.error().message ==
        "verifier is not set (set 'verifier = https://192.0.2.10:8443' in the configuration file or rd.fde.verifier=)");
  config = parsed("verifier = https://127.0.0.1:1\nca_file = /ca.pem\nluks_uuid = 0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0\n");
  CHECK(validate_config(config).error().message.find("image_id is not set") == 0);
  config = parsed("image_id = a\nverifier = https://127.0.0.1:1\nluks_uuid = 0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0\n");
  CHECK(validate_config(config).error().message.find("ca_file is not set") == 0);
  config = parsed("image_id = a\nverifier = https://127.0.0.1:1\nca_file = /ca.pem\n");
  CHECK(validate_config(config).error().message.find("luks_uuid is not set") == 0);
}

TEST_CASE("inconsistent deadlines are refused") {
  AgentConfig config = parsed(complete_file);
  config.attempt_timeout = 10min;
  CHECK(validate_config(config).error().message == "attempt_timeout (10m) is longer than overall_timeout (5m)");
  config = parsed(complete_file);
  config.backoff_initial = 1min;
  CHECK(validate_config(config).error().message == "backoff_initial (60s) is longer than backoff_max (30s)");
}

TEST_CASE("the kernel command line is split on spaces with double quotes grouping") {
  auto args = split_kernel_command_line("BOOT_IMAGE=/vmlinuz root=UUID=x  rd.fde.x=\"a b\" quiet\n");
  REQUIRE(args.size() == 4);
  CHECK(args[2] == "rd.fde.x=a b");
  CHECK(args[3] == "quiet");
}

TEST_CASE("rd.fde kernel arguments override the file and the first rd.fde.verifier replaces its list") {
  AgentConfig config = parsed(complete_file);
  auto ok = apply_kernel_command_line(
      config,
      "ro quiet rd.fde.failure_policy=wait rd.fde.verifier=https://10.0.0.1:8443 rd.fde.verifier=https://10.0.0.2:8443 "
      "rd.fde.overall_timeout=10m rd.fde.luks_name=cryptroot rd.luks.uuid=abc");
  INFO((ok ? std::string() : ok.error().message));
  REQUIRE(ok);
  CHECK(config.failure_policy == FailurePolicy::wait);
  REQUIRE(config.verifiers.size() == 2);
  CHECK(config.verifiers[0].text == "https://10.0.0.1:8443");
  CHECK(config.verifiers[1].text == "https://10.0.0.2:8443");
  CHECK(config.overall_timeout == 10min);
  CHECK(config.mapper_name() == "cryptroot");
  CHECK(config.image_id == "web-01");
}

TEST_CASE("the trust anchor and the cryptsetup program cannot be changed from the kernel command line") {
  AgentConfig config = parsed(complete_file);
  auto ca = apply_kernel_command_line(config, "rd.fde.ca_file=/sys/firmware/qemu_fw_cfg/by_name/opt/x/raw");
  REQUIRE_FALSE(ca);
  CHECK(ca.error().message ==
        "kernel argument rd.fde.ca_file: ca_file: can only be set in the configuration file inside the initramfs");
  CHECK_FALSE(apply_kernel_command_line(config, "rd.fde.cryptsetup=/tmp/evil"));
  CHECK(config.ca_file == "/etc/fde/verifier-ca.pem");
}

TEST_CASE("the key check values are required, come only from the configuration file and are 32 bytes in hex") {
  AgentConfig config = parsed(complete_file);
  CHECK(hex_encode(config.released_key_check) == "307b48afff2c389d47cf4f7f62b6be38ccbc1327389dca805741f27d3ebcc68c");
  CHECK(hex_encode(config.volume_key_check) == "b5450757154f17899517cfc07828f3e2eec652535323381a1bd16b34f8ab0581");
  CHECK(validate_config(config));
  SECTION("not from the kernel command line: the host would choose them") {
    for (const char* key : {"released_key_check", "volume_key_check"}) {
      auto changed = apply_kernel_command_line(config, std::string("rd.fde.") + key + "=" + std::string(64, 'a'));
      REQUIRE_FALSE(changed);
      CHECK(changed.error().message == std::string("kernel argument rd.fde.") + key + ": " + key +
                                           ": can only be set in the configuration file inside the initramfs");
    }
    CHECK(hex_encode(config.volume_key_check) == "b5450757154f17899517cfc07828f3e2eec652535323381a1bd16b34f8ab0581");
  }
  SECTION("missing: an image built before the check values existed is refused, not booted without them") {
    for (const char* key : {"released_key_check", "volume_key_check"}) {
      std::string text = complete_file;
      const std::size_t at = text.find(std::string(key) + " = ");
      text.erase(at, text.find('\n', at) - at + 1);
      AgentConfig without = parsed(text);
      auto result = validate_config(without);
      REQUIRE_FALSE(result);
      CHECK(result.error().message == std::string(key) +
                                          " is not set: fde-image build writes it into the configuration (an image "
                                          "built before key check values existed must be built again; "
                                          "docs/fde-agent.md)");
    }
  }
  SECTION("malformed") {
    CHECK(error_of("volume_key_check = abc\n") ==
          "agent.conf:1: volume_key_check: expected 64 hex digits (SHA-256), found 3 characters");
    CHECK(error_of("released_key_check = " + std::string(63, 'a') + "g\n") ==
          "agent.conf:1: released_key_check: expected 64 hex digits (SHA-256)");
    CHECK(error_of("volume_key_check = " + std::string(64, 'a') + "\nvolume_key_check = " + std::string(64, 'b') + "\n")
              .find("volume_key_check") != std::string::npos);
  }
}

TEST_CASE("the expected LUKS cipher defaults to aes-xts-plain64 and comes only from the configuration file") {
  CHECK(parsed(complete_file).luks_cipher == "aes-xts-plain64");
  AgentConfig config = parsed(std::string(complete_file) + "luks_cipher = capi:xts(aes)-plain64\n");
  CHECK(config.luks_cipher == "capi:xts(aes)-plain64");
  auto from_kernel = apply_kernel_command_line(config, "rd.fde.luks_cipher=cipher_null-ecb");
  REQUIRE_FALSE(from_kernel);
  CHECK(from_kernel.error().message ==
        "kernel argument rd.fde.luks_cipher: luks_cipher: can only be set in the configuration file inside the "
        "initramfs");
  CHECK(config.luks_cipher == "capi:xts(aes)-plain64");
}

TEST_CASE("a null or malformed luks_cipher is refused") {
  CHECK(error_of("luks_cipher = cipher_null-ecb\n") ==
        "agent.conf:1: luks_cipher: 'cipher_null-ecb' is a null cipher: the disk would not be encrypted");
  CHECK(error_of("luks_cipher = capi:ecb(CIPHER_NULL)\n").find("is a null cipher") != std::string::npos);
  CHECK(error_of("luks_cipher = aes xts\n").find("is not a cipher specification") != std::string::npos);
}

TEST_CASE("an unknown or valueless rd.fde argument is an error") {
  AgentConfig config = parsed(complete_file);
  auto unknown = apply_kernel_command_line(config, "rd.fde.verfier=https://10.0.0.1");
  REQUIRE_FALSE(unknown);
  CHECK(unknown.error().message.find("kernel argument rd.fde.verfier: unknown setting 'verfier'") == 0);
  CHECK_FALSE(apply_kernel_command_line(config, "rd.fde.failure_policy"));
  CHECK(apply_kernel_command_line(config, "rd.fdefoo=1 rd.luks=0"));
}

TEST_CASE("load_config reads the file, applies the command line and validates") {
  char pattern[] = "/tmp/fde-agent-config-XXXXXX";
  std::string dir = ::mkdtemp(pattern);
  std::string path = dir + "/agent.conf";
  std::ofstream(path) << complete_file;
  auto config = load_config(path, std::string("rd.fde.image_id=web-02"));
  REQUIRE(config);
  CHECK(config->image_id == "web-02");
  auto missing = load_config(dir + "/absent.conf", std::nullopt);
  REQUIRE_FALSE(missing);
  CHECK(missing.error().message.find("cannot read the configuration: ") == 0);
  std::ofstream(path) << "image_id = a\n";
  auto incomplete = load_config(path, std::nullopt);
  REQUIRE_FALSE(incomplete);
  CHECK(incomplete.error().message.find(path + ": verifier is not set") == 0);
  std::filesystem::remove_all(dir);
}
