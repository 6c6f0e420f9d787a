// CCEL table, TCG2 event log, replay and grub extraction tests (real TDX/CSV and synthetic logs).
#include <catch2/catch.hpp>

#include <cstdio>
#include <fstream>
#include <iterator>
#include <stdexcept>
#include <map>
#include <string>

#include <openssl/evp.h>
#include <rapidjson/document.h>

#include "common/eventlog/ccel.hpp"
#include "common/eventlog/event_log.hpp"
#include "common/eventlog/firmware_events.hpp"

using namespace fde;
using namespace fde::eventlog;

namespace {

const std::string ccel_dir = std::string(FDE_EXTERNAL_TESTDATA) + "/ccel-trustee-eventlog/";

Bytes read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  REQUIRE(in.good());
  return Bytes(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// Digests computed straight with OpenSSL, independent of fde::crypto.
Bytes openssl_digest(const char* name, ByteView data) {
  Bytes out(EVP_MAX_MD_SIZE);
  unsigned int len = 0;
  // No REQUIRE: this also runs during static initialization, outside any test case.
  if (EVP_Digest(data.data(), data.size(), out.data(), &len, EVP_get_digestbyname(name),
                 nullptr) != 1)
    throw std::runtime_error("EVP_Digest failed");
  out.resize(len);
  return out;
}
Bytes sha256_of(std::string_view text) { return openssl_digest("SHA256", as_bytes(text)); }

// A small writer of TCG2 crypto-agile logs (section d.2) for synthetic test logs; it also
// remembers where each record ends so truncation tests know the valid cut points.
class LogWriter {
 public:
  explicit LogWriter(std::vector<AlgorithmSize> algorithms = {{tpm_alg_sha256, 32}})
      : algorithms_(std::move(algorithms)) {
    Bytes spec;
    const char signature[] = "Spec ID Event03";  // 15 characters + NUL = 16 bytes
    spec.insert(spec.end(), signature, signature + sizeof(signature));
    append_le32(spec, 0);          // platformClass
    spec.push_back(0);             // specVersionMinor
    spec.push_back(2);             // specVersionMajor
    spec.push_back(0);             // specErrata
    spec.push_back(2);             // uintnSize
    append_le32(spec, static_cast<std::uint32_t>(algorithms_.size()));
    for (const auto& a : algorithms_) {
      append_le16(spec, a.algorithm_id);
      append_le16(spec, a.digest_size);
    }
    spec.push_back(0);  // vendorInfoSize
    append_le32(out_, 0);
    append_le32(out_, ev_no_action);
    out_.insert(out_.end(), 20, 0);
    append_le32(out_, static_cast<std::uint32_t>(spec.size()));
    out_.insert(out_.end(), spec.begin(), spec.end());
    boundaries_.push_back(out_.size());
  }

  // A TCG_PCR_EVENT2 record: the SHA-256 bank gets `sha256_digest`, any other bank a filler
  // of the right size (its value does not matter to these tests).
  LogWriter& add(std::uint32_t mr, std::uint32_t type, const Bytes& sha256_digest, ByteView data) {
    append_le32(out_, mr);
    append_le32(out_, type);
    append_le32(out_, static_cast<std::uint32_t>(algorithms_.size()));
    for (const auto& a : algorithms_) {
      append_le16(out_, a.algorithm_id);
      if (a.algorithm_id == tpm_alg_sha256) {
        out_.insert(out_.end(), sha256_digest.begin(), sha256_digest.end());
      } else {
        out_.insert(out_.end(), a.digest_size, static_cast<std::uint8_t>(a.algorithm_id));
      }
    }
    append_le32(out_, static_cast<std::uint32_t>(data.size()));
    out_.insert(out_.end(), data.begin(), data.end());
    boundaries_.push_back(out_.size());
    return *this;
  }
  // A grub string or file event (EV_IPL): data = text + NUL.
  LogWriter& ipl(std::string_view text, const Bytes& digest) {
    std::string data(text);
    data.push_back('\0');
    return add(3, ev_ipl, digest, as_bytes(data));
  }

  Bytes bytes() const { return out_; }
  // The log area as firmware hands it over: the records, then fill up to `area` bytes.
  Bytes area(std::size_t area_size, std::uint8_t fill = 0xFF) const {
    Bytes b = out_;
    b.resize(std::max(area_size, b.size()), fill);
    return b;
  }
  const std::vector<std::size_t>& boundaries() const { return boundaries_; }

 private:
  std::vector<AlgorithmSize> algorithms_;
  Bytes out_;
  std::vector<std::size_t> boundaries_;
};

// A virtCCA-style grub boot: firmware events in MR1, grub in MR2, grub's strings and files
// in MR3 (section d.3 mapping).
const std::string grub_cfg_text = "set timeout=0\nmenuentry 'openEuler' { linux /vmlinuz-6.6.0 }\n";
const std::string kernel_image = "decompressed arm64 Image of 6.6.0";
const std::string initramfs_image = "initramfs cpio of 6.6.0";
const std::string cmdline = "/vmlinuz-6.6.0 root=/dev/mapper/encroot ro";
const Bytes grub_authenticode = sha256_of("authenticode of BOOTAA64.EFI");

LogWriter virtcca_grub_log() {
  LogWriter w;
  Bytes zero4(4, 0);
  w.add(1, 0x80000001, sha256_of("SecureBoot variable"), as_bytes("SecureBoot"));
  w.add(1, ev_separator, openssl_digest("SHA256", zero4), zero4);
  w.add(2, ev_efi_boot_services_application, grub_authenticode, as_bytes("device path"));
  w.ipl("grub_cmd: set root=hd0,gpt1", sha256_of("set root=hd0,gpt1"));
  w.ipl("(hd0,gpt1)/EFI/openEuler/grub.cfg", sha256_of(grub_cfg_text));
  w.ipl("grub_cmd: linux /vmlinuz-6.6.0 root=/dev/mapper/encroot ro",
        sha256_of("linux /vmlinuz-6.6.0 root=/dev/mapper/encroot ro"));
  w.ipl("(hd0,gpt1)/vmlinuz-6.6.0", sha256_of(kernel_image));
  w.ipl("kernel_cmdline: " + cmdline, sha256_of(cmdline));
  w.ipl("grub_cmd: initrd /initramfs-6.6.0.img", sha256_of("initrd /initramfs-6.6.0.img"));
  w.ipl("(hd0,gpt1)/initramfs-6.6.0.img", sha256_of(initramfs_image));
  return w;
}

// Expected REMs from a list of (mr, digest) pairs, computed with OpenSSL (d.3 extend rule).
std::array<Bytes, 4> expected_rems(const char* md, std::size_t size,
                                   const std::vector<std::pair<std::uint32_t, Bytes>>& extends) {
  std::array<Bytes, 4> rems;
  for (auto& r : rems) r.assign(size, 0);
  for (const auto& [mr, digest] : extends) {
    Bytes buf = rems[mr - 1];
    buf.insert(buf.end(), digest.begin(), digest.end());
    rems[mr - 1] = openssl_digest(md, buf);
  }
  return rems;
}

// trustee's names for the event types in its *_out.json files (TCG PC Client spec values).
const std::map<std::string, std::uint32_t> event_type_by_name = {
    {"EV_NO_ACTION", 0x3},
    {"EV_SEPARATOR", 0x4},
    {"EV_EVENT_TAG", 0x6},
    {"EV_PLATFORM_CONFIG_FLAGS", 0xA},
    {"EV_IPL", 0xD},
    {"EV_EFI_VARIABLE_DRIVER_CONFIG", 0x80000001},
    {"EV_EFI_VARIABLE_BOOT", 0x80000002},
    {"EV_EFI_BOOT_SERVICES_APPLICATION", 0x80000003},
    {"EV_EFI_GPT_EVENT", 0x80000006},
    {"EV_EFI_ACTION", 0x80000007},
    {"EV_EFI_PLATFORM_FIRMWARE_BLOB2", 0x8000000A},
    {"EV_EFI_HANDOFF_TABLES2", 0x8000000B},
    {"EV_EFI_VARIABLE_AUTHORITY", 0x800000E0},
};
const std::map<std::string, std::uint16_t> alg_by_name = {{"SHA-384", tpm_alg_sha384},
                                                          {"SM3", tpm_alg_sm3_256}};

// Compares a parsed log with trustee's parsed JSON: count, MR index, type, digests, data.
void compare_with_trustee_json(const EventLog& log, const std::string& json_path) {
  Bytes json = read_file(json_path);
  rapidjson::Document doc;
  doc.Parse(reinterpret_cast<const char*>(json.data()), json.size());
  REQUIRE_FALSE(doc.HasParseError());
  const auto& events = doc["uefi_event_logs"];
  REQUIRE(events.IsArray());
  REQUIRE(log.events.size() == events.Size());
  for (rapidjson::SizeType i = 0; i < events.Size(); ++i) {
    INFO("event " << i);
    const auto& e = events[i];
    const Event& parsed = log.events[i];
    CHECK(parsed.mr_index == e["index"].GetUint());
    auto type = event_type_by_name.find(e["type_name"].GetString());
    REQUIRE(type != event_type_by_name.end());
    CHECK(parsed.event_type == type->second);
    const auto& digests = e["digests"];
    REQUIRE(parsed.digests.size() == digests.Size());
    for (rapidjson::SizeType d = 0; d < digests.Size(); ++d) {
      auto alg = alg_by_name.find(digests[d]["alg"].GetString());
      REQUIRE(alg != alg_by_name.end());
      const Bytes* digest = parsed.digest_for(alg->second);
      REQUIRE(digest != nullptr);
      CHECK(hex_encode(*digest) == digests[d]["digest"].GetString());
    }
    auto data = base64_decode(e["event"].GetString());
    REQUIRE(data);
    CHECK(parsed.data == *data);
  }
}

// The (mr, sha-384 digest) sequence that trustee's JSON says is extended.
std::vector<std::pair<std::uint32_t, Bytes>> trustee_extends(const std::string& json_path) {
  Bytes json = read_file(json_path);
  rapidjson::Document doc;
  doc.Parse(reinterpret_cast<const char*>(json.data()), json.size());
  std::vector<std::pair<std::uint32_t, Bytes>> out;
  for (const auto& e : doc["uefi_event_logs"].GetArray()) {
    std::uint32_t mr = e["index"].GetUint();
    if (mr < 1 || mr > 4 || std::string(e["type_name"].GetString()) == "EV_NO_ACTION") continue;
    auto d = hex_decode(e["digests"][0]["digest"].GetString());
    REQUIRE(d);
    out.emplace_back(mr, *d);
  }
  return out;
}

}  // namespace

// ---------------------------------------------------------------------------------------
// CCEL table (section d.1)

TEST_CASE("a CCEL table built for the simulator parses back to the same fields") {
  CcelTable t;
  t.revision = 1;
  t.oem_id = "HWCCA";
  t.cc_type = 3;
  t.cc_subtype = 0;
  t.log_area_length = 0x10000;
  t.log_area_address = 0x7fff0000;
  Bytes table = build_ccel_table(t);
  REQUIRE(table.size() == ccel_table_size);
  auto parsed = parse_ccel_table(table);
  REQUIRE(parsed);
  CHECK(parsed->length == ccel_table_size);
  CHECK(parsed->revision == 1);
  CHECK(parsed->oem_id == "HWCCA");
  CHECK(parsed->cc_type == 3);
  CHECK(parsed->log_area_length == 0x10000);
  CHECK(parsed->log_area_address == 0x7fff0000);
}

TEST_CASE("a CCEL table with a bad checksum, signature or length is refused") {
  Bytes good = build_ccel_table(CcelTable{});
  REQUIRE(parse_ccel_table(good));

  Bytes bad_sum = good;
  bad_sum[20] ^= 1;
  CHECK(parse_ccel_table(bad_sum).error().code == Errc::malformed);

  Bytes bad_sig = good;
  bad_sig[0] = 'X';
  bad_sig[9] = static_cast<std::uint8_t>(bad_sig[9] + 'C' - 'X');  // keep the checksum right
  auto sig = parse_ccel_table(bad_sig);
  REQUIRE_FALSE(sig);
  CHECK(sig.error().message.find("signature") != std::string::npos);

  // Declared length larger than the buffer (checksum fixed up so only the length is wrong).
  Bytes bad_len = good;
  bad_len[4] = 60;
  bad_len[9] = static_cast<std::uint8_t>(bad_len[9] - 4);
  auto len = parse_ccel_table(bad_len);
  REQUIRE_FALSE(len);
  CHECK(len.error().message.find("length") != std::string::npos);

  for (std::size_t n = 0; n < good.size(); ++n)
    CHECK_FALSE(parse_ccel_table(ByteView(good).first(n)));
}

TEST_CASE("a CCEL table longer than 56 bytes is accepted when its length field says so") {
  Bytes table = build_ccel_table(CcelTable{});
  table.resize(64, 0);
  table[4] = 64;
  table[9] = 0;
  unsigned sum = 0;
  for (auto b : table) sum += b;
  table[9] = static_cast<std::uint8_t>((0x100 - (sum & 0xFF)) & 0xFF);
  CHECK(parse_ccel_table(table));
}

// ---------------------------------------------------------------------------------------
// Real logs (TDX SHA-384, Hygon CSV SM3)

TEST_CASE("the TDX grub log parses to trustee's 37 events with matching types, MRs and digests") {
  auto log = parse_event_log(read_file(ccel_dir + "CCEL_data_grub"));
  REQUIRE(log);
  REQUIRE(log->algorithms.size() == 1);
  CHECK(log->algorithms[0].algorithm_id == tpm_alg_sha384);
  CHECK(log->algorithms[0].digest_size == 48);
  CHECK(log->events.size() == 37);
  compare_with_trustee_json(*log, ccel_dir + "CCEL_data_grub_out.json");
}

TEST_CASE("the Hygon CSV log parses with 32-byte SM3 digests to trustee's 82 events") {
  auto log = parse_event_log(read_file(ccel_dir + "CCEL_data_csv"));
  REQUIRE(log);
  REQUIRE(log->algorithms.size() == 1);
  CHECK(log->algorithms[0].algorithm_id == tpm_alg_sm3_256);
  CHECK(log->algorithms[0].digest_size == 32);
  CHECK(log->events.size() == 82);
  compare_with_trustee_json(*log, ccel_dir + "CCEL_data_csv_out.json");
}

TEST_CASE("the td-shim log whose unused area is zero-filled parses to trustee's 5 events") {
  Bytes raw = read_file(ccel_dir + "CCEL_data");
  REQUIRE(raw.size() == max_event_log_size);
  auto log = parse_event_log(raw);
  REQUIRE(log);
  compare_with_trustee_json(*log, ccel_dir + "CCEL_data_out.json");
}

TEST_CASE("every other trustee log parses and replays with SHA-384") {
  const std::map<std::string, std::size_t> counts = {{"CCEL_data_gcp", 21},
                                                     {"CCEL_data_grub_gke", 35},
                                                     {"CCEL_data_ovmf", 20},
                                                     {"CCEL_AAEL_alibabacloud", 87}};
  for (const auto& [name, count] : counts) {
    INFO(name);
    auto log = parse_event_log(read_file(ccel_dir + name));
    REQUIRE(log);
    CHECK(log->events.size() == count);
    auto rems = replay(*log, crypto::HashAlg::sha384);
    REQUIRE(rems);
    for (const auto& r : *rems) CHECK(r.size() == 48);
  }
}

TEST_CASE("replaying the TDX grub log with SHA-384 gives the values computed from trustee's JSON") {
  auto log = parse_event_log(read_file(ccel_dir + "CCEL_data_grub"));
  REQUIRE(log);
  auto rems = replay(*log, crypto::HashAlg::sha384);
  REQUIRE(rems);
  auto expected = expected_rems("SHA384", 48, trustee_extends(ccel_dir + "CCEL_data_grub_out.json"));
  for (std::size_t i = 0; i < 4; ++i) CHECK(hex_encode((*rems)[i]) == hex_encode(expected[i]));
  // Known structure: this log extends MR 1..3 only, so REM[3] stays zero.
  CHECK((*rems)[3] == Bytes(48, 0));
  CHECK((*rems)[0] != Bytes(48, 0));
}

TEST_CASE("MR 0 events of the GKE log are not folded into any REM") {
  auto log = parse_event_log(read_file(ccel_dir + "CCEL_data_grub_gke"));
  REQUIRE(log);
  std::vector<std::pair<std::uint32_t, Bytes>> extends;
  bool saw_mr0 = false, saw_no_action = false;
  for (const auto& e : log->events) {
    saw_mr0 = saw_mr0 || e.mr_index == 0;
    saw_no_action = saw_no_action || e.event_type == ev_no_action;
    if (e.mr_index >= 1 && e.mr_index <= 4 && e.event_type != ev_no_action)
      extends.emplace_back(e.mr_index, *e.digest_for(tpm_alg_sha384));
  }
  CHECK(saw_mr0);
  CHECK(saw_no_action);
  auto rems = replay(*log, crypto::HashAlg::sha384);
  REQUIRE(rems);
  auto expected = expected_rems("SHA384", 48, extends);
  for (std::size_t i = 0; i < 4; ++i) CHECK((*rems)[i] == expected[i]);
}

TEST_CASE("replay with an algorithm the log lacks fails cleanly as unsupported") {
  auto csv = parse_event_log(read_file(ccel_dir + "CCEL_data_csv"));
  REQUIRE(csv);
  auto r = replay(*csv, crypto::HashAlg::sha256);
  REQUIRE_FALSE(r);
  CHECK(r.error().code == Errc::unsupported);
  auto tdx = parse_event_log(read_file(ccel_dir + "CCEL_data_grub"));
  REQUIRE(tdx);
  CHECK(replay(*tdx, crypto::HashAlg::sha256).error().code == Errc::unsupported);
  CHECK(extract_firmware_events(*tdx, crypto::HashAlg::sha512).error().code == Errc::unsupported);
}

TEST_CASE("the TDX grub log yields its EFI applications and no grub files") {
  auto log = parse_event_log(read_file(ccel_dir + "CCEL_data_grub"));
  REQUIRE(log);
  auto fw = extract_firmware_events(*log, crypto::HashAlg::sha384);
  REQUIRE(fw);
  CHECK(fw->boot_applications.size() == 5);
  // shim's EV_IPL "MokList" strings are not file paths.
  CHECK_FALSE(fw->kernel);
  CHECK_FALSE(fw->grub_cfg);
  CHECK(fw->grub_commands.empty());
}

// ---------------------------------------------------------------------------------------
// Synthetic virtCCA logs

TEST_CASE("a synthetic virtCCA grub log replays into REM[0..2] as computed independently") {
  LogWriter w = virtcca_grub_log();
  auto log = parse_event_log(w.area(4096));
  REQUIRE(log);
  REQUIRE(log->events.size() == 10);
  std::vector<std::pair<std::uint32_t, Bytes>> extends;
  for (const auto& e : log->events) extends.emplace_back(e.mr_index, *e.digest_for(tpm_alg_sha256));
  auto rems = replay(*log, crypto::HashAlg::sha256);
  REQUIRE(rems);
  auto expected = expected_rems("SHA256", 32, extends);
  for (std::size_t i = 0; i < 4; ++i) CHECK((*rems)[i] == expected[i]);
  CHECK((*rems)[3] == Bytes(32, 0));
}

TEST_CASE("EV_NO_ACTION records and MR 0 records are never extended, MR 4 goes to REM[3]") {
  LogWriter base = virtcca_grub_log();
  auto plain = replay(*parse_event_log(base.bytes()), crypto::HashAlg::sha256);
  REQUIRE(plain);

  LogWriter noisy = virtcca_grub_log();
  noisy.add(1, ev_no_action, sha256_of("not extended"), as_bytes("StartupLocality"));
  noisy.add(0, ev_ipl, sha256_of("not extended either"), as_bytes("(hd0)/vmlinuz-evil"));
  noisy.add(7, ev_ipl, sha256_of("MR 7 is no REM"), as_bytes("x"));
  auto log = parse_event_log(noisy.bytes());
  REQUIRE(log);
  CHECK(log->events.size() == 13);  // kept, just not extended
  auto rems = replay(*log, crypto::HashAlg::sha256);
  REQUIRE(rems);
  CHECK(*rems == *plain);

  LogWriter mr4 = virtcca_grub_log();
  Bytes d = sha256_of("mr4");
  mr4.add(4, ev_ipl, d, as_bytes("x"));
  auto rems4 = replay(*parse_event_log(mr4.bytes()), crypto::HashAlg::sha256);
  REQUIRE(rems4);
  CHECK((*rems4)[3] == expected_rems("SHA256", 32, {{4, d}})[3]);
  CHECK((*rems4)[2] == (*plain)[2]);
}

TEST_CASE("a log in a SHA-256 and SHA-512 bank replays with either algorithm") {
  LogWriter w({{tpm_alg_sha256, 32}, {tpm_alg_sha512, 64}});
  w.add(1, ev_separator, sha256_of("sep"), as_bytes("sep"));
  auto log = parse_event_log(w.bytes());
  REQUIRE(log);
  CHECK(replay(*log, crypto::HashAlg::sha256));
  auto r512 = replay(*log, crypto::HashAlg::sha512);
  REQUIRE(r512);
  CHECK((*r512)[0].size() == 64);
}

TEST_CASE("grub events are classified into grub.cfg, kernel, initramfs, command line and commands") {
  auto log = parse_event_log(virtcca_grub_log().area(8192));
  REQUIRE(log);
  auto fw = extract_firmware_events(*log, crypto::HashAlg::sha256);
  REQUIRE(fw);
  REQUIRE(fw->boot_applications.size() == 1);
  CHECK(fw->boot_applications[0] == grub_authenticode);
  REQUIRE(fw->grub_cfg);
  CHECK(fw->grub_cfg->text == "(hd0,gpt1)/EFI/openEuler/grub.cfg");
  CHECK(fw->grub_cfg->digest == sha256_of(grub_cfg_text));
  // "grub_cmd: linux /vmlinuz-6.6.0 ..." comes first but is a command, not the kernel.
  REQUIRE(fw->kernel);
  CHECK(fw->kernel->text == "(hd0,gpt1)/vmlinuz-6.6.0");
  CHECK(fw->kernel->digest == sha256_of(kernel_image));
  REQUIRE(fw->initramfs);
  CHECK(fw->initramfs->text == "(hd0,gpt1)/initramfs-6.6.0.img");
  CHECK(fw->initramfs->digest == sha256_of(initramfs_image));
  REQUIRE(fw->kernel_cmdline);
  CHECK(fw->kernel_cmdline->text == cmdline);
  CHECK(string_digest_matches(crypto::HashAlg::sha256, kernel_cmdline_prefix,
                              fw->kernel_cmdline->text, fw->kernel_cmdline->digest));
  REQUIRE(fw->grub_commands.size() == 3);
  CHECK(fw->grub_commands[1].text == "linux /vmlinuz-6.6.0 root=/dev/mapper/encroot ro");
  CHECK(fw->kernels.size() == 1);
  CHECK(fw->initramfses.size() == 1);
  CHECK(fw->kernel_cmdlines.size() == 1);
}

TEST_CASE("a grub string digest over the prefixed text is accepted, any other digest is not") {
  const auto alg = crypto::HashAlg::sha256;
  CHECK(string_digest_matches(alg, kernel_cmdline_prefix, "ro quiet", sha256_of("ro quiet")));
  CHECK(string_digest_matches(alg, kernel_cmdline_prefix, "ro quiet",
                              sha256_of("kernel_cmdline: ro quiet")));
  CHECK_FALSE(string_digest_matches(alg, kernel_cmdline_prefix, "ro quiet",
                                    sha256_of("ro quiet init=/bin/sh")));
  CHECK_FALSE(string_digest_matches(alg, kernel_cmdline_prefix, "ro quiet", Bytes(31, 0)));
}

TEST_CASE("events outside MR 1..4 or of type EV_NO_ACTION never count as grub measurements") {
  LogWriter w;
  w.add(0, ev_ipl, sha256_of("evil"), as_bytes(std::string("(hd0)/vmlinuz-evil") + '\0'));
  w.add(3, ev_no_action, sha256_of("evil"), as_bytes(std::string("(hd0)/initramfs-evil") + '\0'));
  w.add(9, ev_efi_boot_services_application, sha256_of("evil"), as_bytes("x"));
  w.ipl("(hd0,gpt1)/vmlinuz-6.6.0", sha256_of(kernel_image));
  auto fw = extract_firmware_events(*parse_event_log(w.bytes()), crypto::HashAlg::sha256);
  REQUIRE(fw);
  REQUIRE(fw->kernel);
  CHECK(fw->kernel->digest == sha256_of(kernel_image));
  CHECK(fw->kernels.size() == 1);
  CHECK(fw->initramfses.empty());
  CHECK(fw->boot_applications.empty());
}

TEST_CASE("every kernel and initramfs event is collected, not only the first") {
  LogWriter w = virtcca_grub_log();
  w.ipl("(hd0,gpt1)/vmlinuz-6.6.0-evil", sha256_of("evil kernel"));
  w.ipl("/boot/initrd.img-evil", sha256_of("evil initrd"));
  w.ipl("(hd0,gpt1)/boot/grub2/grub.cfg", sha256_of("second config"));
  w.ipl("kernel_cmdline: init=/bin/sh", sha256_of("init=/bin/sh"));
  auto fw = extract_firmware_events(*parse_event_log(w.bytes()), crypto::HashAlg::sha256);
  REQUIRE(fw);
  CHECK(fw->kernel->digest == sha256_of(kernel_image));
  CHECK(fw->kernels.size() == 2);
  CHECK(fw->initramfses.size() == 2);
  CHECK(fw->grub_cfgs.size() == 2);
  CHECK(fw->kernel_cmdlines.size() == 2);
}

// ---------------------------------------------------------------------------------------
// Hostile input

TEST_CASE("a log truncated at every offset parses only at record boundaries, never overreads") {
  LogWriter w = virtcca_grub_log();
  Bytes full = w.bytes();
  const auto& cuts = w.boundaries();
  for (std::size_t n = 0; n < full.size(); ++n) {
    // A fresh heap copy of exactly n bytes, so AddressSanitizer sees any read past the end.
    Bytes prefix(full.begin(), full.begin() + static_cast<std::ptrdiff_t>(n));
    auto log = parse_event_log(prefix);
    auto boundary = std::find(cuts.begin(), cuts.end(), n);
    INFO("length " << n);
    if (boundary == cuts.end()) {
      REQUIRE_FALSE(log);
      CHECK(log.error().code == Errc::malformed);
    } else {
      REQUIRE(log);
      CHECK(log->events.size() == static_cast<std::size_t>(boundary - cuts.begin()));
    }
  }
}

TEST_CASE("an event size past the end of the log, or a huge one, is refused") {
  LogWriter w;
  w.add(1, ev_separator, sha256_of("x"), as_bytes("abcd"));
  Bytes log = w.bytes();
  const std::size_t size_offset = log.size() - 4 - 4;
  for (std::uint32_t bad : {5u, 1000u, 0x7FFFFFFFu, 0xFFFFFFFFu}) {
    Bytes b = log;
    b[size_offset] = static_cast<std::uint8_t>(bad);
    b[size_offset + 1] = static_cast<std::uint8_t>(bad >> 8);
    b[size_offset + 2] = static_cast<std::uint8_t>(bad >> 16);
    b[size_offset + 3] = static_cast<std::uint8_t>(bad >> 24);
    auto r = parse_event_log(b);
    REQUIRE_FALSE(r);
    CHECK(r.error().message.find("past the end") != std::string::npos);
  }
}

TEST_CASE("a digest count that differs from the Spec ID event is refused") {
  for (std::uint32_t count : {0u, 2u, 0xFFFFFFFFu}) {
    LogWriter w;
    w.add(1, ev_separator, sha256_of("x"), as_bytes("abcd"));
    Bytes b = w.bytes();
    const std::size_t record = w.boundaries()[0];
    b[record + 8] = static_cast<std::uint8_t>(count);
    b[record + 9] = static_cast<std::uint8_t>(count >> 8);
    b[record + 10] = static_cast<std::uint8_t>(count >> 16);
    b[record + 11] = static_cast<std::uint8_t>(count >> 24);
    auto r = parse_event_log(b);
    REQUIRE_FALSE(r);
    CHECK(r.error().message.find("digest count") != std::string::npos);
  }
}

TEST_CASE("a record digest of an algorithm the Spec ID event does not list is refused") {
  LogWriter w;
  w.add(1, ev_separator, sha256_of("x"), as_bytes("abcd"));
  Bytes b = w.bytes();
  const std::size_t record = w.boundaries()[0];
  b[record + 12] = 0x99;  // algorithm id 0x0099 instead of 0x000b
  auto r = parse_event_log(b);
  REQUIRE_FALSE(r);
  CHECK(r.error().message.find("not in the Spec ID") != std::string::npos);
}

TEST_CASE("a record listing the same algorithm twice is refused") {
  LogWriter w({{tpm_alg_sha256, 32}, {tpm_alg_sm3_256, 32}});
  w.add(1, ev_separator, sha256_of("x"), as_bytes("abcd"));
  Bytes b = w.bytes();
  const std::size_t second_alg = w.boundaries()[0] + 12 + 2 + 32;
  b[second_alg] = 0x0B;
  b[second_alg + 1] = 0x00;
  CHECK_FALSE(parse_event_log(b));
}

TEST_CASE("a malformed Spec ID event is refused") {
  const Bytes good = LogWriter().bytes();
  REQUIRE(parse_event_log(good));
  const std::size_t spec = 32;  // start of the TCG_EfiSpecIDEvent
  SECTION("first record of another type") {
    Bytes b = good;
    b[4] = 1;
    CHECK_FALSE(parse_event_log(b));
  }
  SECTION("wrong signature") {
    Bytes b = good;
    b[spec + 14] = '2';  // "Spec ID Event02"
    CHECK(parse_event_log(b).error().message.find("Spec ID") != std::string::npos);
  }
  SECTION("SHA-256 declared with a 48-byte digest") {
    Bytes b = good;
    b[spec + 30] = 48;
    CHECK(parse_event_log(b).error().message.find("0x000b") != std::string::npos);
  }
  SECTION("zero or too many algorithms") {
    for (std::uint8_t n : {std::uint8_t{0}, std::uint8_t{17}, std::uint8_t{255}}) {
      Bytes b = good;
      b[spec + 24] = n;
      CHECK_FALSE(parse_event_log(b));
    }
  }
  SECTION("a zero-sized or oversized digest for an unknown algorithm") {
    for (std::uint8_t size : {std::uint8_t{0}, std::uint8_t{65}}) {
      Bytes b = good;
      b[spec + 28] = 0x77;  // unknown algorithm id 0x0077
      b[spec + 30] = size;
      CHECK_FALSE(parse_event_log(b));
    }
  }
  SECTION("a vendor info size past the event") {
    Bytes b = good;
    b[spec + 32] = 1;
    CHECK_FALSE(parse_event_log(b));
  }
  SECTION("trailing bytes inside the Spec ID event") {
    Bytes b = good;
    b[28] = static_cast<std::uint8_t>(b[28] + 1);
    b.push_back(0);
    CHECK(parse_event_log(b).error().message.find("trailing") != std::string::npos);
  }
  SECTION("an empty buffer") { CHECK_FALSE(parse_event_log(Bytes{})); }
}

TEST_CASE("an unknown algorithm with a sane size in the Spec ID event is parsed and skipped") {
  LogWriter w({{tpm_alg_sha256, 32}, {0x0077, 20}});
  w.add(1, ev_separator, sha256_of("x"), as_bytes("abcd"));
  auto log = parse_event_log(w.bytes());
  REQUIRE(log);
  CHECK(log->events[0].digest_for(0x0077)->size() == 20);
  CHECK(replay(*log, crypto::HashAlg::sha256));
}

TEST_CASE("0xFF fill ends the log, zero fill only when it runs to the end") {
  LogWriter w = virtcca_grub_log();
  CHECK(parse_event_log(w.area(65536, 0xFF))->events.size() == 10);
  CHECK(parse_event_log(w.area(65536, 0x00))->events.size() == 10);
  // A short tail of fill, shorter than a record header.
  CHECK(parse_event_log(w.area(w.bytes().size() + 5, 0xFF))->events.size() == 10);
  // Zeros followed by something that is not fill is a malformed record, not an end.
  Bytes b = w.area(w.bytes().size() + 64, 0x00);
  b.back() = 1;
  CHECK_FALSE(parse_event_log(b));
  // Stray non-fill bytes shorter than a header.
  Bytes stray = w.bytes();
  stray.push_back(0x12);
  CHECK_FALSE(parse_event_log(stray));
}

TEST_CASE("a log larger than 1 MiB is refused before parsing") {
  Bytes big = LogWriter().area(max_event_log_size + 1);
  auto r = parse_event_log(big);
  REQUIRE_FALSE(r);
  CHECK(r.error().code == Errc::too_large);
}

TEST_CASE("a log with more records than the limit is refused") {
  // Smallest records: one 1-byte digest of an unknown algorithm, no data.
  LogWriter w({{0x0077, 1}});
  for (std::size_t i = 0; i <= max_event_count; ++i) w.add(1, ev_separator, {}, {});
  REQUIRE(w.bytes().size() <= max_event_log_size);
  auto r = parse_event_log(w.bytes());
  REQUIRE_FALSE(r);
  CHECK(r.error().code == Errc::too_large);
}

TEST_CASE("random corruption of a log gives an error or a log, never a crash") {
  const Bytes good = virtcca_grub_log().area(2048);
  std::uint32_t state = 12345;
  auto next = [&] {
    state = state * 1103515245u + 12345u;
    return state >> 8;
  };
  for (int round = 0; round < 2000; ++round) {
    Bytes b = good;
    const int flips = 1 + static_cast<int>(next() % 4);
    for (int f = 0; f < flips; ++f)
      b[next() % b.size()] = static_cast<std::uint8_t>(next());
    auto log = parse_event_log(b);
    if (log) {
      (void)replay(*log, crypto::HashAlg::sha256);
      (void)extract_firmware_events(*log, crypto::HashAlg::sha256);
    }
  }
  SUCCEED();
}
