// Hostile inputs against the real components, and the table of what each got in
// docs/reliability.md ("Hostile inputs"), which this test generates: it runs every input,
// renders the table and fails when the document's copy differs. After a deliberate change
// of behaviour, regenerate the document with
//   FDE_UPDATE_DOCS=1 ctest --test-dir build-test -R test_hostile_inputs
// and review the diff.
//
// The bases are real: the virtCCA token and AIK certificate from secGear, Arm's CCA token,
// a firmware TPM event log and a CCEL log (test/data/external, test/data/firmware-boot),
// images made by sgdisk, mkfs.vfat, qemu-img and cryptsetup (test/fuzz/seeds, made by
// test/fuzz/make-seeds.sh), shim's signed EFI binary. HTTP and JSON go to fde-verifierd
// over TLS on loopback; configurations to `fde-agent --check-config` and
// `fde-verifierd --check-config`; tokens, event logs and image files to the library
// functions the daemon, the agent and the builder call on them.
#include <catch2/catch.hpp>

#include <sys/stat.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/asio/write.hpp>
#include <cstdlib>
#include <functional>

#include "common/eventlog/ccel.hpp"
#include "common/eventlog/event_log.hpp"
#include "common/token/token.hpp"
#include "common/token/token_verifier.hpp"
#include "guest-agent/unlock/luks2_header.hpp"
#include "image-builder/assembly/efi_binaries.hpp"
#include "image-builder/disk/gpt.hpp"
#include "image-builder/disk/qcow2_header.hpp"
#include "image-builder/fs/fat_filesystem.hpp"
#include "image-builder/pe/authenticode.hpp"
#include "test/integration/daemon_support.hpp"

using namespace fde;
using namespace fde::itest;

namespace {

const std::string source_dir = FDE_SOURCE_DIR;
const std::string external = FDE_EXTERNAL_TESTDATA;
const std::string seeds = source_dir + "/test/fuzz/seeds";

Bytes read_bytes(const std::string& path) {
  const std::string text = read_text(path);
  if (text.empty()) throw std::runtime_error("missing or empty test input " + path);
  return Bytes(text.begin(), text.end());
}

void put_le32(Bytes& data, std::size_t offset, std::uint32_t value) {
  for (int i = 0; i < 4; ++i) data.at(offset + i) = static_cast<std::uint8_t>(value >> (8 * i));
}
void put_be32(Bytes& data, std::size_t offset, std::uint32_t value) {
  for (int i = 0; i < 4; ++i) data.at(offset + i) = static_cast<std::uint8_t>(value >> (8 * (3 - i)));
}
std::uint32_t le32(const Bytes& data, std::size_t offset) {
  std::uint32_t value = 0;
  for (int i = 3; i >= 0; --i) value = (value << 8) | data.at(offset + i);
  return value;
}

struct Row {
  std::string kind;
  std::string input;
  std::string component;
  std::string result;
  std::string message;
};

// One cell: single line, no pipes, temporary paths replaced, bounded length.
std::string cell(std::string text, const std::string& root = {}) {
  if (!root.empty())
    for (std::size_t at; (at = text.find(root)) != std::string::npos;) text.replace(at, root.size(), "DIR");
  for (auto& c : text)
    if (c == '\n' || c == '\r' || c == '\t') c = ' ';
  while (!text.empty() && text.back() == ' ') text.pop_back();
  std::string out;
  for (char c : text) {
    if (c == '|') out += "\\|";
    else if (static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) >= 0x7f) out += '?';
    else out += c;
  }
  if (out.size() > 180) out = out.substr(0, 177) + "...";
  return out;
}

template <class T>
std::pair<std::string, std::string> outcome(const Result<T>& result, const std::string& accepted) {
  if (result) return {"accepted", accepted};
  return {"refused (" + std::string(errc_name(result.error().code)) + ")", result.error().message};
}

// ---- HTTP over TLS to the real daemon: the status line and the JSON error, or the close.
std::pair<std::string, std::string> send_raw(const Daemon& daemon, const std::string& bytes) {
  namespace asio = boost::asio;
  asio::io_context io;
  asio::ssl::context tls(asio::ssl::context::tls_client);
  tls.set_verify_mode(asio::ssl::verify_none);
  asio::ssl::stream<asio::ip::tcp::socket> stream(io, tls);
  boost::system::error_code ec;
  stream.next_layer().connect({asio::ip::make_address("127.0.0.1"), daemon.port}, ec);
  if (ec) throw std::runtime_error("connect: " + ec.message());
  timeval timeout{10, 0};
  ::setsockopt(stream.next_layer().native_handle(), SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
  stream.handshake(asio::ssl::stream_base::client, ec);
  if (ec) throw std::runtime_error("handshake: " + ec.message());
  asio::write(stream, asio::buffer(bytes), ec);
  // The daemon may answer (and close) before it has read everything: keep reading.
  std::string answer;
  char buffer[4096];
  for (;;) {
    const std::size_t n = stream.read_some(asio::buffer(buffer), ec);
    answer.append(buffer, n);
    if (ec) break;
    if (answer.find("\r\n\r\n") != std::string::npos) {
      const auto length_at = answer.find("Content-Length: ");
      const auto head_end = answer.find("\r\n\r\n") + 4;
      if (length_at != std::string::npos && length_at < head_end &&
          answer.size() >= head_end + std::stoul(answer.substr(length_at + 16)))
        break;
    }
  }
  if (answer.rfind("HTTP/1.", 0) != 0) return {"connection closed, no answer", ""};
  const std::string status = answer.substr(9, 3);
  const std::string body = answer.substr(std::min(answer.size(), answer.find("\r\n\r\n") + 4));
  if (status == "100") return {"100 then closed", ""};
  auto error = protocol::parse_error_response(body);
  if (!error) return {status, body.empty() ? std::string("(no body)") : body};
  return {status, std::string(protocol::error_code_name(error->error)) + ": " + error->message};
}

std::string post(const std::string& target, const std::string& body, const std::string& extra_headers = {}) {
  return "POST " + target + " HTTP/1.1\r\nHost: verifier\r\nContent-Type: application/json\r\n" + extra_headers +
         "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
}

// ---- Programs: exit status and the first line of their output.
std::pair<std::string, std::string> run_program(const std::vector<std::string>& argv, const std::string& cwd) {
  const std::string log = cwd + "/program.log";
  fs::remove(log);
  Process process(argv, cwd, log);
  auto status = process.wait(60s);
  std::string output = read_text(log);
  std::string first;
  std::istringstream lines(output);
  for (std::string line; std::getline(lines, line);)
    if (line.find("error") != std::string::npos || line.find("fde-") == 0 || first.empty()) {
      first = line;
      if (line.find("error") != std::string::npos) break;
    }
  return {"exit " + (status ? std::to_string(*status) : std::string("killed")), first};
}

class Table {
 public:
  void add(Row row) { rows_.push_back(std::move(row)); }
  std::string render() const {
    std::string out = "| # | kind | hostile input | component | result | message |\n|---|---|---|---|---|---|\n";
    for (std::size_t i = 0; i < rows_.size(); ++i) {
      const Row& r = rows_[i];
      out += "| " + std::to_string(i + 1) + " | " + r.kind + " | " + r.input + " | " + r.component + " | " +
             r.result + " | " + r.message + " |\n";
    }
    return out;
  }
  const std::vector<Row>& rows() const { return rows_; }

 private:
  std::vector<Row> rows_;
};

// ---- Tokens: parse_token and verify_token as the daemon's decider runs them.
void token_rows(Table& table) {
  const Bytes secgear = read_bytes(external + "/virtcca-secgear/virtcca.cbor");
  const Bytes aik = read_bytes(external + "/virtcca-secgear/virtcca_aik_cert.der");
  const Bytes arm = read_bytes(external + "/armcca-tfm-iat-verifier/cca_token.cbor");
  auto check = [&](const std::string& input, const Bytes& token) {
    const std::string component = "verifier: parse_token + verify_token";
    auto parsed = token::parse_token(token);
    if (!parsed) {
      table.add({"token", input, component, "refused (" + std::string(errc_name(parsed.error().code)) + ")",
                 cell(parsed.error().message)});
      return;
    }
    token::TokenPolicy policy;
    policy.trusted_roots.push_back(need(crypto::Certificate::from_pem_or_der(read_bytes(external + "/huawei-pki/Huawei_Equipment_CA_root.pem")), "root"));
    policy.intermediates.push_back(
        need(crypto::Certificate::from_pem_or_der(read_bytes(external + "/huawei-pki/Huawei_IT_Product_CA.pem")), "CA"));
    policy.expected_challenge = Bytes(64, 0x5a);
    policy.allow_legacy = true;  // secGear's token is CVM-only: let the later checks speak
    policy.at_time = 1767225600;  // 2026-01-01: the table does not change with the date
    token::DeviceEvidence device;
    if (auto cert = crypto::Certificate::from_der(aik)) device.device_certificate = std::move(*cert);
    const auto verdict = token::verify_token(*parsed, device, policy);
    const auto* failure = verdict.first_failure();
    table.add({"token", input, component, verdict.passed() ? "ACCEPTED" : "refused (check " + (failure ? failure->name : std::string("?")) + ")",
               cell(verdict.summary())});
  };
  check("empty token", {});
  check("secGear virtCCA token cut in half", Bytes(secgear.begin(), secgear.begin() + secgear.size() / 2));
  Bytes trailing = secgear;
  trailing.push_back(0x00);
  check("secGear token + one trailing byte", trailing);
  Bytes tag = secgear;
  tag[0] ^= 0x01;
  check("secGear token, first byte (CBOR tag) changed", tag);
  Bytes signature = secgear;
  signature[signature.size() - 10] ^= 0x01;
  check("secGear token, a byte of the CVM signature flipped", signature);
  check("secGear token unmodified, challenge of another nonce", secgear);
  check("Arm CCA token (not virtCCA) from tfm-iat-verifier", arm);
  check("CBOR tag 399 + byte string claiming 2^64-1 bytes",
        Bytes{0xd9, 0x01, 0x8f, 0x5b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff});
  Bytes nested{0xd9, 0x01, 0x8f};
  nested.insert(nested.end(), 4000, 0x81);
  check("tag 399 + 4,000 nested one-element arrays", nested);
  Bytes big = secgear;
  big.resize(token::max_token_size + 1, 0);
  check("secGear token padded to 8 KiB + 1", big);
}

// ---- Event logs: the parser and replay the decider runs on the guest's log.
void event_log_rows(Table& table) {
  const Bytes tpm = read_bytes(source_dir + "/test/data/firmware-boot/tpm-event-log.bin");
  const Bytes ccel = read_bytes(external + "/ccel-trustee-eventlog/CCEL_data_grub");
  auto check = [&](const std::string& input, const Bytes& log) {
    auto parsed = eventlog::parse_event_log(log);
    std::string accepted;
    if (parsed) {
      auto replayed = eventlog::replay(*parsed, crypto::HashAlg::sha256);
      accepted = std::to_string(parsed->events.size()) + " events; " +
                 (replayed ? "replayed; the reference values decide" : "replay refused: " + replayed.error().message);
    }
    auto [result, message] = outcome(parsed, accepted);
    table.add({"event log", input, "verifier: parse_event_log + replay", result, cell(message)});
  };
  // TCG_PCR_EVENT (32 bytes of header) holds the Spec ID event: its size at 28, the number
  // of algorithms at 32 + 24.
  const std::size_t spec_size = le32(tpm, 28);
  const std::size_t first = 32 + spec_size;  // the first crypto-agile record
  check("firmware TPM log unmodified", tpm);
  check("empty log", {});
  check("firmware log cut inside the Spec ID event", Bytes(tpm.begin(), tpm.begin() + 40));
  Bytes algorithms = tpm;
  put_le32(algorithms, 56, 0xffffffff);
  check("Spec ID event claiming 2^32-1 algorithms", algorithms);
  Bytes count = tpm;
  put_le32(count, first + 8, 0x10000);
  check("first record with 65,536 digests", count);
  Bytes algorithm = tpm;
  algorithm.at(first + 12) = 0x34;
  algorithm.at(first + 13) = 0x12;
  check("first record with digest algorithm 0x1234", algorithm);
  Bytes size = tpm;
  size.resize(size.size() / 2 + 10);  // the middle is a record boundary; 10 bytes further is not
  check("firmware log cut in the middle of a record", size);
  check("CCEL log (Trustee, grub) unmodified", ccel);
  Bytes huge(eventlog::max_event_log_size + 1, 0xff);
  std::copy(tpm.begin(), tpm.end(), huge.begin());
  check("firmware log padded to 1 MiB + 1", huge);
  Bytes acpi(56, 0);
  std::copy_n("CCEL", 4, acpi.begin());
  put_le32(acpi, 4, 0xffffff);
  auto table_result = eventlog::parse_ccel_table(acpi);
  auto [result, message] = outcome(table_result, "accepted");
  table.add({"event log", "ACPI CCEL table claiming 16 MiB length", "verifier: parse_ccel_table", result, cell(message)});
}

// ---- HTTP and JSON: raw requests to fde-verifierd over TLS.
void network_rows(Table& table, const Daemon& daemon) {
  auto http = [&](const std::string& kind, const std::string& input, const std::string& bytes) {
    auto [result, message] = send_raw(daemon, bytes);
    table.add({kind, input, "fde-verifierd (TLS, loopback)", result, cell(message)});
  };
  http("HTTP", "request header of 9 KiB", "POST /v1/challenge HTTP/1.1\r\nHost: v\r\nX-Pad: " + std::string(9216, 'a') + "\r\n\r\n");
  http("HTTP", "attest with Content-Length 100,000,000 and no body",
       "POST /v1/attest HTTP/1.1\r\nHost: v\r\nContent-Length: 100000000\r\n\r\n");
  http("HTTP", "challenge with a 2 KiB body", post("/v1/challenge", "{\"image_id\":\"" + std::string(2048, 'a') + "\"}"));
  http("HTTP", "challenge with a chunked body growing past 1 KiB",
       "POST /v1/challenge HTTP/1.1\r\nHost: v\r\nTransfer-Encoding: chunked\r\n\r\n400\r\n" + std::string(1024, 'a') +
           "\r\n400\r\n" + std::string(1024, 'a') + "\r\n0\r\n\r\n");
  http("HTTP", "GET /v1/attest", "GET /v1/attest HTTP/1.1\r\nHost: v\r\n\r\n");
  http("HTTP", "POST /v1/unknown", "POST /v1/unknown HTTP/1.1\r\nHost: v\r\nContent-Length: 0\r\n\r\n");
  http("HTTP", "GET /metrics on the attestation port", "GET /metrics HTTP/1.1\r\nHost: v\r\n\r\n");
  http("HTTP", "two different Content-Length fields",
       "POST /v1/challenge HTTP/1.1\r\nHost: v\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}");
  http("HTTP", "request line of binary garbage", std::string("\x16\x03\x01\x00\xff garbage\r\n\r\n", 18));
  http("HTTP", "HTTP/2 connection preface inside TLS", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
  http("HTTP", "method BREW", "BREW /v1/challenge HTTP/1.1\r\nHost: v\r\nContent-Length: 0\r\n\r\n");

  auto json = [&](const std::string& input, const std::string& target, const std::string& body) {
    http("JSON", input, post(target, body));
  };
  json("challenge body `not json`", "/v1/challenge", "not json");
  json("challenge with image_id twice", "/v1/challenge", R"({"image_id":"a","image_id":"b"})");
  json("challenge for image `..`", "/v1/challenge", R"({"image_id":".."})");
  json("challenge with an empty image_id", "/v1/challenge", R"({"image_id":""})");
  json("challenge with an extra member", "/v1/challenge", R"({"image_id":"web","admin":true})");
  json("challenge with image_id a number", "/v1/challenge", R"({"image_id":42})");
  json("challenge with invalid UTF-8 in image_id", "/v1/challenge", "{\"image_id\":\"\xff\xfe\"}");
  json("challenge nested 500 arrays deep", "/v1/challenge", std::string(500, '[') + std::string(500, ']'));
  json("challenge with a trailing `}`", "/v1/challenge", R"({"image_id":"web"}})");
  const std::string nonce = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA==";
  const std::string key = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
  json("attest with nonce not base64", "/v1/attest",
       R"({"image_id":"web","nonce":"!!!!","ephemeral_public":")" + key + R"(","token":"AA==","device_cert":"AA=="})");
  json("attest without token", "/v1/attest",
       R"({"image_id":"web","nonce":")" + nonce + R"(","ephemeral_public":")" + key + R"(","device_cert":"AA=="})");
  json("attest with a 1 KiB nonce", "/v1/attest",
       R"({"image_id":"web","nonce":")" + std::string(1368, 'A') + R"(","ephemeral_public":")" + key +
           R"(","token":"AA==","device_cert":"AA=="})");
  json("attest with a well-formed nonce the verifier never issued", "/v1/attest",
       R"({"image_id":"web","nonce":")" + nonce + R"(","ephemeral_public":")" + key +
           R"(","token":"AA==","device_cert":"AA=="})");

  // Through the whole exchange with a nonce the daemon issued: the guest's answer.
  GuestOptions rim;
  rim.image_id = "web";
  rim.rim = Bytes(32, 0x42);
  auto exchange = attest(daemon, rim);
  auto error = protocol::parse_error_response(exchange.attest ? exchange.attest->body : "");
  table.add({"token", "simulated token with another firmware RIM, fresh nonce", "fde-verifierd (TLS, loopback)",
             exchange.attest ? std::to_string(exchange.attest->status) : "no answer",
             error ? cell(std::string(protocol::error_code_name(error->error)) + ": " + error->message) : ""});
  GuestOptions logged;
  logged.image_id = "web";
  sim::GrubBoot other = grub_boot();
  const std::vector<crypto::HashAlg> banks{crypto::HashAlg::sha256};
  other.grub_cfg = sim::Measurement::of_content(as_bytes("menuentry 'evil' { linux /vmlinuz init=/bin/sh }\n"), banks);
  logged.logged = other;
  exchange = attest(daemon, logged);
  error = protocol::parse_error_response(exchange.attest ? exchange.attest->body : "");
  table.add({"event log", "event log of another grub.cfg than booted, fresh nonce", "fde-verifierd (TLS, loopback)",
             exchange.attest ? std::to_string(exchange.attest->status) : "no answer",
             error ? cell(std::string(protocol::error_code_name(error->error)) + ": " + error->message) : ""});
}

// ---- Configuration: the agent's file and kernel command line, the daemon's TOML.
void configuration_rows(Table& table, const Daemon& daemon) {
  const std::string dir = daemon.root + "/agent";
  fs::create_directories(dir);
  write_text(dir + "/ca.pem", daemon.ca_pem);
  const std::string base =
      "image_id = web\nverifier = https://192.0.2.10:8443\nca_file = " + dir +
      "/ca.pem\nluks_uuid = 493500c5-ec0f-4ce7-8ccf-1ae6f2168f3e\n"
      "released_key_check = " + std::string(64, 'a') + "\nvolume_key_check = " + std::string(64, 'b') + "\n";
  auto agent = [&](const std::string& input, const std::string& config, const std::string& cmdline = "") {
    write_text(dir + "/agent.conf", config);
    write_text(dir + "/cmdline", cmdline + "\n");
    auto [result, message] = run_program(
        {FDE_AGENT, "--config", dir + "/agent.conf", "--cmdline", dir + "/cmdline", "--check-config"}, dir);
    table.add({"configuration", input, "fde-agent --check-config", result, cell(message, daemon.root)});
  };
  agent("agent.conf with an unknown key", base + "unlock_everything = yes\n");
  agent("verifier URL with a path", base + "verifier = https://192.0.2.11:8443/v1\n");
  agent("verifier over plain http", base + "verifier = http://192.0.2.11:8443\n");
  agent("luks_cipher = cipher_null-ecb", base + "luks_cipher = cipher_null-ecb\n");
  agent("attempt_timeout = 0", base + "attempt_timeout = 0\n");
  agent("overall_timeout of 10,000 hours", base + "overall_timeout = 10000h\n");
  agent("image_id given twice", base + "image_id = other\n");
  agent("image_id with a slash", "image_id = ../etc/passwd\n" + base.substr(base.find('\n') + 1));
  agent("a NUL byte inside a value", base + std::string("server_name = a\0b\n", 17));
  agent("kernel command line sets the file-only luks_cipher", base, "rd.fde.luks_cipher=cipher_null-ecb");

  const std::string toml = read_text(daemon.root + "/verifier.toml");
  auto verifier = [&](const std::string& input, const std::string& text, std::function<void()> before = {}) {
    write_text(daemon.root + "/hostile.toml", text);
    if (before) before();
    auto [result, message] = run_program({FDE_VERIFIERD, "--config", daemon.root + "/hostile.toml", "--check-config"},
                                         daemon.root);
    table.add({"configuration", input, "fde-verifierd --check-config", result, cell(message, daemon.root)});
  };
  verifier("verifier.toml that is not TOML", "[server\nthreads = = 1\n");
  verifier("unknown section [backdoor]", toml + "[backdoor]\nenabled = true\n");
  verifier("nonce lifetime of 0 s", std::string(toml).replace(toml.find("lifetime_seconds = "), 21, "lifetime_seconds = 0\n"));
  verifier("server.threads = -1", std::string(toml).replace(toml.find("threads = "), 11, "threads = -1"));
  verifier("KEK file readable by others (0644)", toml, [&] { ::chmod((daemon.root + "/kek").c_str(), 0644); });
  ::chmod((daemon.root + "/kek").c_str(), 0600);
  verifier("trusted root that is not a certificate", toml, [&] { write_text(daemon.root + "/sim-ca.pem", "not a PEM\n"); });
  write_text(daemon.root + "/sim-ca.pem", daemon.device->ca_certificate().pem());
}

// ---- Image files: the builder's readers of the host's image, the agent's LUKS2 checks.
struct TempFile {
  explicit TempFile(const std::string& where, const Bytes& data) : path(where) {
    write_text(path, as_text(data), 0600);
  }
  ~TempFile() { fs::remove(path); }
  std::string path;
};

void image_rows(Table& table, const std::string& dir) {
  auto qcow2 = [&](const std::string& input, const Bytes& head) {
    auto header = image::parse_qcow2_header(head);
    Result<void> checked = header ? image::check_self_contained(*header, "input.qcow2") : Result<void>(tl::unexpected(header.error()));
    auto [result, message] = outcome(checked, "self-contained");
    table.add({"image", input, "fde-image: qcow2 header check", result, cell(message)});
  };
  qcow2("qcow2 with a backing file (qemu-img -b)", read_bytes(seeds + "/fuzz_qcow2_header/backed.bin"));
  qcow2("qcow2 with an external data file", read_bytes(seeds + "/fuzz_qcow2_header/external.bin"));
  Bytes cluster = read_bytes(seeds + "/fuzz_qcow2_header/plain.bin");
  put_be32(cluster, 20, 31);
  qcow2("qcow2 with cluster_bits 31", cluster);
  Bytes encrypted = read_bytes(seeds + "/fuzz_qcow2_header/plain.bin");
  put_be32(encrypted, 32, 1);
  qcow2("qcow2 with AES encryption (crypt_method 1)", encrypted);
  Bytes header_length = read_bytes(seeds + "/fuzz_qcow2_header/plain.bin");
  put_be32(header_length, 100, 0x7fffffff);
  qcow2("qcow2 v3 with header_length 2 GiB", header_length);

  auto partition_table = [&](const std::string& input, Bytes disk) {
    disk.resize(1024 * 1024, 0);
    TempFile file(dir + "/disk.raw", disk);
    auto raw = need(image::RawFile::open(file.path, image::RawFile::Mode::read_only), "open");
    auto read = image::read_partition_table(raw);
    auto [result, message] = outcome(read, read ? std::to_string(read->partitions.size()) + " partitions" : "");
    table.add({"image", input, "fde-image: read_partition_table", result, cell(message)});
  };
  const Bytes gpt = read_bytes(seeds + "/fuzz_gpt/gpt.bin");
  Bytes crc = gpt;
  crc[512 + 0x28] ^= 0x01;  // first usable LBA, under the header CRC; the backup is absent
  partition_table("GPT (sgdisk) header changed, no backup", crc);
  Bytes entries = gpt;
  put_le32(entries, 512 + 80, 0x100000);  // number of entries
  put_le32(entries, 512 + 16, 0);
  put_le32(entries, 512 + 16, image::crc32(ByteView(entries.data() + 512, 92)));
  partition_table("GPT with 1,048,576 entries and a valid header CRC", entries);
  Bytes extended = read_bytes(seeds + "/fuzz_gpt/mbr.bin");
  put_le32(extended, 446 + 8, 64);  // both partitions inside the 1 MiB disk
  put_le32(extended, 446 + 12, 512);
  put_le32(extended, 446 + 16 + 8, 1024);
  put_le32(extended, 446 + 16 + 12, 512);
  extended[446 + 16 + 4] = 0x05;
  partition_table("MBR with an extended partition", extended);
  Bytes overlap = read_bytes(seeds + "/fuzz_gpt/mbr.bin");
  put_le32(overlap, 446 + 12, 0xffffffff);  // first partition: 2^32-1 sectors
  partition_table("MBR partition larger than the disk", overlap);

  auto fat = [&](const std::string& input, const Bytes& image) {
    TempFile file(dir + "/esp.img", image);
    auto opened = image::FatFilesystem::open(file.path, 0, image.size());
    Result<std::vector<image::EfiBinary>> found =
        opened ? image::find_efi_binaries(*opened) : Result<std::vector<image::EfiBinary>>(tl::unexpected(opened.error()));
    auto [result, message] = outcome(found, found ? std::to_string(found->size()) + " EFI binaries" : "");
    table.add({"image", input, "fde-image: FAT reader + EFI binary scan", result, cell(message)});
  };
  const Bytes esp = read_bytes(seeds + "/fuzz_fat/fat12-spc1.img");
  Bytes zero_spc = esp;
  zero_spc[13] = 0;
  fat("FAT12 ESP with 0 sectors per cluster", zero_spc);
  Bytes loop = esp;
  const std::size_t fat_start = 512u * (loop[14] | (loop[15] << 8));
  const std::size_t fat_bytes = 512u * (loop[22] | (loop[23] << 8));
  for (std::size_t i = 3; i + 3 <= fat_bytes; i += 3) {  // every entry: "next is cluster 3"
    loop[fat_start + i] = 0x03;
    loop[fat_start + i + 1] = 0x30;
    loop[fat_start + i + 2] = 0x00;
  }
  fat("FAT12 ESP whose every cluster chain loops", loop);
  Bytes root_entries = esp;
  root_entries[17] = 0xff;
  root_entries[18] = 0xff;
  fat("FAT12 ESP with 65,535 root directory entries", root_entries);
  fat("FAT12 ESP whose BOOTX64.EFI is a cut PE", esp);

  auto pe = [&](const std::string& input, const Bytes& file) {
    auto digest = image::authenticode_sha256(file);
    auto [result, message] = outcome(digest, "digest computed");
    table.add({"image", input, "fde-image: PE/Authenticode", result, cell(message)});
  };
  const std::string shim = "/usr/lib/shim/fbx64.efi.signed";
  const Bytes efi = fs::exists(shim) ? read_bytes(shim) : read_bytes(seeds + "/fuzz_pe/fbx64-headers.bin");
  Bytes lfanew = efi;
  put_le32(lfanew, 0x3c, 0x7ffffff0);
  pe("EFI binary with e_lfanew past the end", lfanew);
  pe("EFI binary cut to its first 4 KiB", Bytes(efi.begin(), efi.begin() + 4096));
  Bytes certificate = efi;
  const std::size_t optional_header = le32(efi, 0x3c) + 24;
  put_le32(certificate, optional_header + 144, 0xfffffff0);  // PE32+: certificate table entry
  pe("EFI binary whose certificate table starts past the end", certificate);

  auto luks_area = [&](const std::string& input, const Bytes& head) {
    TempFile file(dir + "/luks.img", head);
    const int fd = ::open(file.path.c_str(), O_RDONLY | O_CLOEXEC);
    auto area = agent::read_luks2_header_area(fd);
    ::close(fd);
    auto [result, message] = outcome(area, area ? "header area of " + std::to_string(area->data_offset) + " bytes" : "");
    table.add({"image", input, "fde-agent: LUKS2 header area", result, cell(message)});
  };
  const Bytes luks = read_bytes(seeds + "/fuzz_luks2_header/luks2-head.bin");
  Bytes hdr_size = luks;
  for (int i = 0; i < 8; ++i) hdr_size[8 + i] = 0;
  hdr_size[8 + 6] = 0x30;  // 12,288: not a power of two
  luks_area("LUKS2 binary header with hdr_size 12,288", hdr_size);
  Bytes magic = luks;
  magic[0] = 'X';
  luks_area("LUKS2 header with a damaged magic", magic);

  auto luks_json = [&](const std::string& input, const std::string& json) {
    auto checked = agent::check_luks2_metadata(json, "aes-xts-plain64", 16 * 1024 * 1024);
    auto [result, message] = outcome(checked, "the agent would open it");
    table.add({"image", input, "fde-agent: LUKS2 metadata check", result, cell(message)});
  };
  const std::string dump = read_text(seeds + "/fuzz_luks2_header/luks2-dump.json");
  std::string null_slot = dump;
  null_slot.replace(null_slot.find("\"aes-xts-plain64\""), 17, "\"cipher_null-ecb\"");
  luks_json("LUKS2 metadata whose keyslot uses cipher_null", null_slot);
  std::string null_segment = dump;
  null_segment.replace(null_segment.rfind("\"aes-xts-plain64\""), 17, "\"cipher_null-ecb\"");
  luks_json("LUKS2 metadata whose data segment uses cipher_null", null_segment);
  std::string token = dump;
  token.insert(token.find("\"tokens\":{") + 10, R"("0":{"type":"clevis","keyslots":["0"]})");
  luks_json("LUKS2 metadata with a token", token);
  luks_json("LUKS2 metadata that is not JSON", dump.substr(0, dump.size() / 2));
}

std::string generated_section(const std::string& document) {
  const std::string begin = "<!-- hostile-inputs:begin -->\n", end = "<!-- hostile-inputs:end -->";
  const auto from = document.find(begin), to = document.find(end);
  if (from == std::string::npos || to == std::string::npos || to < from) return {};
  return document.substr(from + begin.size(), to - from - begin.size());
}

}  // namespace

TEST_CASE("hostile inputs get clear refusals, and docs/reliability.md lists what each got", "[hostile]") {
  DaemonOptions options;
  options.attest_per_minute = 0;
  Daemon daemon(options);
  daemon.start();
  REQUIRE(daemon.enroll("web", crypto::random_secret(64)).status == 0);

  Table table;
  token_rows(table);
  event_log_rows(table);
  network_rows(table, daemon);
  configuration_rows(table, daemon);
  image_rows(table, daemon.root);

  // What must hold for every row, whatever the document says.
  REQUIRE(table.rows().size() >= 40);
  for (const Row& row : table.rows()) {
    INFO(row.kind << ": " << row.input << " -> " << row.result << " " << row.message);
    CHECK(row.result != "ACCEPTED");
    CHECK(row.result.find("500") == std::string::npos);
    if (row.component.find("fde-verifierd (TLS") == 0 && row.result.size() == 3 && row.result[0] == '4')
      CHECK(!row.message.empty());
  }
  CHECK(daemon.stop() == 0);  // and nothing above crashed it

  const std::string path = source_dir + "/docs/reliability.md";
  const std::string document = read_text(path);
  const std::string rendered = table.render();
  if (const char* update = std::getenv("FDE_UPDATE_DOCS"); update && std::string(update) == "1") {
    const std::string begin = "<!-- hostile-inputs:begin -->\n";
    const auto from = document.find(begin), to = document.find("<!-- hostile-inputs:end -->");
    REQUIRE((from != std::string::npos && to != std::string::npos && to > from));
    std::string updated = document;
    updated.replace(from + begin.size(), to - from - begin.size(), rendered);
    write_text(path, updated);
    WARN("docs/reliability.md updated");
  } else {
    INFO("docs/reliability.md differs from what the inputs got; review and regenerate with "
         "FDE_UPDATE_DOCS=1 ctest --test-dir build-test -R test_hostile_inputs");
    CHECK(generated_section(document) == rendered);
  }
}
