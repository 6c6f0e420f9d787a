// The agent.conf reading and rewriting fde-image rebind does (image-builder/initramfs/agent_config_file.hpp).
#include "image-builder/initramfs/agent_config_file.hpp"

#include <catch2/catch.hpp>
#include <sstream>

using namespace fde;
using namespace fde::image;

namespace {

const std::string generated =
    "# fde-agent configuration, written by fde-image (measured as part of the initramfs)\n"
    "image_id = web\n"
    "verifier = https://192.0.2.1:8443\n"
    "verifier = https://192.0.2.2:8443\n"
    "ca_file = /etc/fde/verifier-ca.pem\n"
    "luks_uuid = 0f0e0d0c-0b0a-0908-0706-050403020100\n"
    "# check values\n"
    "released_key_check = 00112233445566778899aabbccddeeff\n"
    "volume_key_check = ffeeddccbbaa99887766554433221100\n";

}  // namespace

TEST_CASE("the verifier lines are replaced where the first one was, everything else kept", "[rebind]") {
  auto rewritten = replace_verifier_lines(generated, {"https://198.51.100.5:9443"});
  REQUIRE(rewritten);
  std::string expected = generated;
  expected.replace(expected.find("verifier = "), 2 * std::string("verifier = https://192.0.2.1:8443\n").size(),
                   verifier_config_lines({"https://198.51.100.5:9443"}));
  CHECK(*rewritten == expected);
  auto summary = read_agent_config_summary(*rewritten);
  REQUIRE(summary);
  CHECK(summary->image_id == "web");
  CHECK(summary->verifiers == std::vector<std::string>{"https://198.51.100.5:9443"});
  CHECK(summary->released_key_check == "00112233445566778899aabbccddeeff");
  CHECK(summary->ca_file == "/etc/fde/verifier-ca.pem");

  // Scattered and comma-listed verifier lines (a supplied --agent-config) become one block.
  const std::string supplied = "image_id = a\nverifier = https://192.0.2.1:1, https://192.0.2.2:1\n"
                               "ca_file = /etc/fde/verifier-ca.pem\n  verifier=https://192.0.2.3:1\nluks_uuid = u\n"
                               "released_key_check = 00\nvolume_key_check = 11";
  auto again = replace_verifier_lines(supplied, {"https://192.0.2.9:2", "https://192.0.2.10:2"});
  REQUIRE(again);
  CHECK(*again == "image_id = a\nverifier = https://192.0.2.9:2\nverifier = https://192.0.2.10:2\n"
                  "ca_file = /etc/fde/verifier-ca.pem\nluks_uuid = u\nreleased_key_check = 00\nvolume_key_check = 11");
}

TEST_CASE("an agent.conf without what fde-image writes is refused", "[rebind]") {
  for (const char* key : {"image_id", "luks_uuid", "ca_file", "released_key_check", "volume_key_check", "verifier"}) {
    std::string text;
    std::istringstream lines(generated);
    for (std::string line; std::getline(lines, line);)
      if (line.rfind(std::string(key) + " =", 0) != 0) text += line + "\n";
    INFO(key);
    CHECK_FALSE(read_agent_config_summary(text));
  }
  CHECK_FALSE(read_agent_config_summary(generated + "image_id = twice\n"));
  CHECK_FALSE(read_agent_config_summary(generated + "no equals sign\n"));
  CHECK_FALSE(replace_verifier_lines("image_id = a\n", {"https://192.0.2.1:1"}));
  CHECK_FALSE(read_agent_config_summary(std::string(70000, '#')));
}

TEST_CASE("verifier URLs must be https with a host", "[rebind]") {
  CHECK(check_verifier_urls({"https://192.0.2.1:8443", "https://[2001:db8::1]:8443"}));
  for (const char* bad : {"http://192.0.2.1", "https://", "https://:8443", "https:///x", "https://a b", "https://a,b"})
    CHECK_FALSE(check_verifier_urls({bad}));
  CHECK_FALSE(check_verifier_urls({}));
}
