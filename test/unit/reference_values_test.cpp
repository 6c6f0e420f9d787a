// Reference-values format, importer and matcher tests (synthetic virtCCA grub boots).
#include <catch2/catch.hpp>

#include <fstream>
#include <functional>
#include <iterator>
#include <stdexcept>

#include <openssl/evp.h>

#include "common/eventlog/event_log.hpp"
#include "common/eventlog/event_types.hpp"
#include "common/reference/boot_event_policy.hpp"
#include "common/reference/reference_matcher.hpp"
#include "common/reference/reference_values.hpp"

using namespace fde;
using namespace fde::reference;

namespace {

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  REQUIRE(in.good());
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// Digests straight from OpenSSL, independent of fde::crypto.
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

Bytes unhex(std::string_view hex) {
  auto b = hex_decode(hex);
  if (!b) throw std::runtime_error("bad hex in a test constant");
  return *b;
}

std::string replace_once(std::string text, std::string_view from, std::string_view to) {
  auto pos = text.find(from);
  REQUIRE(pos != std::string::npos);
  text.replace(pos, from.size(), to);
  return text;
}

// ---------------------------------------------------------------------------------------
// Synthetic virtCCA grub boots (SHA-256), matching test/data/*.json

const std::string example_doc_path = std::string(FDE_TEST_DATA) + "/reference-values-example.json";
const std::string import_doc_path = std::string(FDE_TEST_DATA) + "/image_reference_measurement.json";
const std::string old_version = "6.6.0-28.0.0.34.oe2403.aarch64";
const std::string new_version = "6.6.0-72.0.0.76.oe2403sp1.aarch64";
const std::string debug_version = "6.6.0-debug";
const Bytes firmware_rim =
    unhex("38d644db0aeddedbf9e11a50dd56fb2d0c663f664d63ad62762490da41562108");
const Bytes direct_rim = sha256_of("direct boot RIM example");
const Bytes example_rpv = openssl_digest("SHA512", as_bytes("rpv of vm 1"));

std::string cmdline_for(const std::string& version) {
  return "/vmlinuz-" + version +
         " root=/dev/mapper/encroot ro cma=64M virtcca_cvm_guest=1 cvm_guest=1 "
         "swiotlb=65536,force loglevel=8";
}

struct TestEvent {
  std::uint32_t mr = 3;
  std::uint32_t type = eventlog::ev_ipl;
  Bytes digest;
  std::string data;  // written as-is (EV_IPL strings carry their NUL)
};

TestEvent ipl(std::string text, Bytes digest) {
  text.push_back('\0');
  return {3, eventlog::ev_ipl, std::move(digest), std::move(text)};
}

// What UEFI firmware and openEuler grub (tpm module) log for one boot (sections d.3, d.4).
std::vector<TestEvent> grub_boot(const std::string& kernel_version,
                                 const std::string& initramfs_version) {
  std::vector<TestEvent> e;
  e.push_back({1, 0x80000001, sha256_of("SecureBoot variable"), "SecureBoot"});
  e.push_back({1, eventlog::ev_separator, sha256_of(std::string(4, '\0')), std::string(4, '\0')});
  e.push_back({2, eventlog::ev_efi_boot_services_application,
               sha256_of("BOOTAA64.EFI authenticode of the example image"), "device path"});
  e.push_back(ipl("grub_cmd: set root=hd0,gpt1", sha256_of("set root=hd0,gpt1")));
  e.push_back(ipl("(hd0,gpt1)/EFI/openEuler/grub.cfg", sha256_of("grub.cfg of the example image")));
  const std::string linux_cmd = "linux " + cmdline_for(kernel_version);
  e.push_back(ipl("grub_cmd: " + linux_cmd, sha256_of(linux_cmd)));
  e.push_back(ipl("(hd0,gpt1)/vmlinuz-" + kernel_version, sha256_of("kernel image " + kernel_version)));
  e.push_back(ipl("kernel_cmdline: " + cmdline_for(kernel_version),
                  sha256_of(cmdline_for(kernel_version))));
  if (!initramfs_version.empty()) {
    const std::string initrd_cmd = "initrd /initramfs-" + initramfs_version + ".img";
    e.push_back(ipl("grub_cmd: " + initrd_cmd, sha256_of(initrd_cmd)));
    e.push_back(ipl("(hd0,gpt1)/initramfs-" + initramfs_version + ".img",
                    sha256_of("initramfs " + initramfs_version)));
  }
  return e;
}
std::vector<TestEvent> grub_boot(const std::string& version) { return grub_boot(version, version); }

// TCG2 crypto-agile serialization (d.2), SHA-256 bank only, 0xFF-filled like a CCEL area.
Bytes serialize(const std::vector<TestEvent>& events) {
  Bytes out, spec;
  const char signature[] = "Spec ID Event03";
  spec.insert(spec.end(), signature, signature + sizeof(signature));
  append_le32(spec, 0);
  spec.insert(spec.end(), {0, 2, 0, 2});
  append_le32(spec, 1);
  append_le16(spec, eventlog::tpm_alg_sha256);
  append_le16(spec, 32);
  spec.push_back(0);
  append_le32(out, 0);
  append_le32(out, eventlog::ev_no_action);
  out.insert(out.end(), 20, 0);
  append_le32(out, static_cast<std::uint32_t>(spec.size()));
  out.insert(out.end(), spec.begin(), spec.end());
  for (const auto& e : events) {
    append_le32(out, e.mr);
    append_le32(out, e.type);
    append_le32(out, 1);
    append_le16(out, eventlog::tpm_alg_sha256);
    out.insert(out.end(), e.digest.begin(), e.digest.end());
    append_le32(out, static_cast<std::uint32_t>(e.data.size()));
    out.insert(out.end(), e.data.begin(), e.data.end());
  }
  out.resize(out.size() + 256, 0xFF);
  return out;
}

// What the TMM would report after this boot: REM[m-1] extended with every MR m record
// (d.3), computed here with OpenSSL rather than with the code under test.
TokenMeasurements token_after(const std::vector<TestEvent>& events) {
  TokenMeasurements t;
  t.hash_alg = crypto::HashAlg::sha256;
  t.rim = firmware_rim;
  t.rpv = example_rpv;
  for (auto& r : t.rems) r.assign(32, 0);
  for (const auto& e : events) {
    if (e.type == eventlog::ev_no_action || e.mr < 1 || e.mr > 4) continue;
    Bytes buf = t.rems[e.mr - 1];
    buf.insert(buf.end(), e.digest.begin(), e.digest.end());
    t.rems[e.mr - 1] = openssl_digest("SHA256", buf);
  }
  return t;
}

ReferenceValues example_reference() {
  auto ref = parse_reference_values(read_text(example_doc_path));
  REQUIRE(ref);
  return *ref;
}

struct Run {
  Verdict verdict;
  MatchOutcome outcome;
  const Check* check(std::string_view name) const {
    for (const auto& c : verdict.checks())
      if (c.name == name) return &c;
    return nullptr;
  }
  bool passed(std::string_view name) const {
    const Check* c = check(name);
    return c != nullptr && c->passed;
  }
  bool failed(std::string_view name) const {
    const Check* c = check(name);
    return c != nullptr && !c->passed;
  }
};

Run match_boot(const std::vector<TestEvent>& events, const ReferenceValues& ref,
               const TokenMeasurements& token) {
  auto log = eventlog::parse_event_log(serialize(events));
  REQUIRE(log);
  Run run;
  run.outcome = match_reference_values(token, &*log, ref, run.verdict);
  return run;
}
Run match_boot(const std::vector<TestEvent>& events, const ReferenceValues& ref) {
  return match_boot(events, ref, token_after(events));
}

// A small valid document that the strictness tests mutate.
const std::string hex_a(64, 'a');
const std::string hex_b(64, 'b');
const std::string hex_c(64, 'c');
const std::string hex_d(64, 'd');
const std::string minimal_doc =
    R"({"version": 1, "hash_alg": "sha-256", "firmware_rims": [")" + hex_a +
    R"("], "sets": [{"name": "s1", "boot": "grub", "grub": [")" + hex_b +
    R"("], "grub_cfg": [")" + hex_c + R"("], "kernel": ")" + hex_d +
    R"(", "initramfs": null, "kernel_cmdline": "ro quiet", "grub_commands": ["linux /vmlinuz ro quiet"]}]})";

Error parse_error(const std::string& json) {
  auto r = parse_reference_values(json);
  REQUIRE_FALSE(r);
  return r.error();
}

bool mentions(const Error& e, std::string_view text) {
  return e.message.find(text) != std::string::npos;
}

}  // namespace

// ---------------------------------------------------------------------------------------
// Format

TEST_CASE("the example reference values parse into two grub sets and one direct set") {
  ReferenceValues ref = example_reference();
  CHECK(ref.image_id == "openeuler-2403-web");
  CHECK(ref.hash_alg == crypto::HashAlg::sha256);
  REQUIRE(ref.firmware_rims.size() == 1);
  CHECK(ref.firmware_rims[0] == firmware_rim);
  REQUIRE(ref.allowed_rpvs.size() == 1);
  CHECK(ref.allowed_rpvs[0] == example_rpv);
  REQUIRE(ref.sets.size() == 3);
  CHECK(ref.sets[0].boot == BootMode::grub);
  CHECK(ref.sets[0].grub.kernel == sha256_of("kernel image " + old_version));
  CHECK(ref.sets[1].grub.kernel_cmdline == cmdline_for(new_version));
  CHECK(ref.sets[2].boot == BootMode::direct);
  CHECK(ref.sets[2].rims == std::vector<Bytes>{direct_rim});
  CHECK_FALSE(ref.sets[2].rems[0]);
  CHECK(ref.sets[2].rems[3] == Bytes(32, 0));
  CHECK(ref.find_set("kernel-6.6.0-72") == &ref.sets[1]);
  CHECK(ref.find_set("nope") == nullptr);
}

TEST_CASE("the example file is in canonical form: serializing it reproduces it byte for byte") {
  const std::string text = read_text(example_doc_path);
  auto ref = parse_reference_values(text);
  REQUIRE(ref);
  auto written = serialize_reference_values(*ref);
  REQUIRE(written);
  CHECK(*written == text);
}

TEST_CASE("serialized reference values parse back to the same document") {
  ReferenceValues ref = example_reference();
  ref.sets[1].grub.grub_commands = std::vector<std::string>{"set root=hd0,gpt1", "linux /vmlinuz"};
  ref.sets[1].grub.initramfs.reset();
  ref.sets[0].rems[2] = Bytes(32, 7);
  auto once = serialize_reference_values(ref);
  REQUIRE(once);
  auto parsed = parse_reference_values(*once);
  REQUIRE(parsed);
  CHECK_FALSE(parsed->sets[1].grub.initramfs);
  CHECK(parsed->sets[1].grub.grub_commands->size() == 2);
  CHECK(parsed->sets[0].rems[2] == Bytes(32, 7));
  auto twice = serialize_reference_values(*parsed);
  REQUIRE(twice);
  CHECK(*twice == *once);
}

TEST_CASE("hex digests are accepted in upper case and written back in lower case") {
  std::string upper = minimal_doc;
  upper = replace_once(upper, hex_d, std::string(60, 'D') + "0aF9");
  auto ref = parse_reference_values(upper);
  REQUIRE(ref);
  CHECK(hex_encode(ref->sets[0].grub.kernel) == std::string(60, 'd') + "0af9");
  CHECK(serialize_reference_values(*ref)->find(std::string(60, 'd') + "0af9") != std::string::npos);
}

TEST_CASE("a digest of the wrong length is refused with its JSON path") {
  Error e = parse_error(replace_once(minimal_doc, hex_d, hex_d.substr(1)));
  CHECK(e.code == Errc::malformed);
  CHECK(mentions(e, "sets[0].kernel"));
  CHECK(mentions(e, "expected 64 hex digits (sha-256), found 63"));
  Error list = parse_error(replace_once(minimal_doc, hex_b, hex_b + "bb"));
  CHECK(mentions(list, "sets[0].grub[0]"));
  Error rim = parse_error(replace_once(minimal_doc, hex_a, hex_a.substr(0, 62)));
  CHECK(mentions(rim, "firmware_rims[0]"));
}

TEST_CASE("a digest with non-hex characters or whitespace is refused") {
  CHECK(mentions(parse_error(replace_once(minimal_doc, hex_d, std::string(63, 'd') + "g")),
                 "sets[0].kernel: not a hex string"));
  CHECK(mentions(parse_error(replace_once(minimal_doc, hex_d, std::string(63, 'd') + " ")),
                 "sets[0].kernel"));
  CHECK(mentions(parse_error(replace_once(minimal_doc, "\"" + hex_d + "\"", "42")),
                 "sets[0].kernel: expected a hex string, found a number"));
}

TEST_CASE("an unknown field is refused, at the top level and inside a set") {
  CHECK(mentions(parse_error(replace_once(minimal_doc, "\"version\": 1", "\"version\": 1, \"extra\": 0")),
                 "extra: unknown field"));
  CHECK(mentions(parse_error(replace_once(minimal_doc, "\"name\": \"s1\"", "\"name\": \"s1\", \"kernal\": \"\"")),
                 "sets[0].kernal: unknown field"));
}

TEST_CASE("a duplicate key is refused rather than resolved first- or last-wins") {
  CHECK(mentions(parse_error(replace_once(minimal_doc, "\"version\": 1", "\"version\": 1, \"version\": 1")),
                 "version: duplicate field"));
  CHECK(mentions(parse_error(replace_once(minimal_doc, "\"kernel_cmdline\": \"ro quiet\"",
                                          "\"kernel_cmdline\": \"ro quiet\", \"kernel_cmdline\": \"ro init=/bin/sh\"")),
                 "sets[0].kernel_cmdline: duplicate field"));
}

TEST_CASE("a document without sets, or with an empty list of sets, is refused") {
  const std::string sets_part = minimal_doc.substr(minimal_doc.find(", \"sets\""));
  std::string no_sets = minimal_doc.substr(0, minimal_doc.find(", \"sets\"")) + "}";
  CHECK(mentions(parse_error(no_sets), "sets: missing required field"));
  std::string empty = minimal_doc.substr(0, minimal_doc.find(", \"sets\"")) + ", \"sets\": []}";
  CHECK(mentions(parse_error(empty), "sets: must contain at least one set"));
  std::string not_array = minimal_doc.substr(0, minimal_doc.find(", \"sets\"")) + ", \"sets\": {}}";
  CHECK(mentions(parse_error(not_array), "sets: expected an array"));
  CHECK_FALSE(sets_part.empty());
}

TEST_CASE("a document larger than 1 MiB is refused before parsing") {
  std::string big = minimal_doc;
  big.append(max_document_size, ' ');
  Error e = parse_error(big);
  CHECK(e.code == Errc::too_large);
}

TEST_CASE("deeply nested JSON is refused without exhausting the stack") {
  std::string deep(500000, '[');
  deep.append(500000, ']');
  Error e = parse_error(deep);
  CHECK(mentions(e, "expected an object"));
}

TEST_CASE("malformed JSON, comments, trailing commas and invalid UTF-8 are refused") {
  CHECK(mentions(parse_error("{"), "invalid JSON"));
  CHECK(mentions(parse_error(replace_once(minimal_doc, "\"version\": 1,", "\"version\": 1, /* c */")),
                 "invalid JSON"));
  CHECK(mentions(parse_error(replace_once(minimal_doc, "ro quiet\"]}", "ro quiet\"],}")),
                 "invalid JSON"));
  CHECK(mentions(parse_error(replace_once(minimal_doc, "ro quiet", "ro \xff quiet")), "invalid JSON"));
  CHECK(mentions(parse_error(minimal_doc + " {}"), "invalid JSON"));
}

TEST_CASE("version, hash algorithm and boot mode must be known values") {
  CHECK(parse_error(replace_once(minimal_doc, "\"version\": 1", "\"version\": 2")).code ==
        Errc::unsupported);
  CHECK(mentions(parse_error(replace_once(minimal_doc, "\"version\": 1", "\"version\": \"1\"")),
                 "version"));
  CHECK(parse_error(replace_once(minimal_doc, "sha-256", "sha-1")).code == Errc::unsupported);
  CHECK(mentions(parse_error(replace_once(minimal_doc, "\"boot\": \"grub\"", "\"boot\": \"uefi\"")),
                 "sets[0].boot"));
}

TEST_CASE("digest lengths follow the document's hash algorithm") {
  std::string sha512 = replace_once(minimal_doc, "sha-256", "sha-512");
  CHECK(mentions(parse_error(sha512), "expected 128 hex digits (sha-512)"));
  for (const auto& h : {hex_a, hex_b, hex_c, hex_d}) sha512 = replace_once(sha512, h, h + h);
  auto ref = parse_reference_values(sha512);
  REQUIRE(ref);
  CHECK(ref->sets[0].grub.kernel.size() == 64);
}

TEST_CASE("a grub set must pin the kernel command line by text or by REM[2]") {
  std::string no_cmdline = replace_once(minimal_doc, ", \"kernel_cmdline\": \"ro quiet\"", "");
  CHECK(mentions(parse_error(no_cmdline), "must pin the kernel command line"));
  std::string rem2 = replace_once(no_cmdline, "\"initramfs\": null",
                                  "\"initramfs\": null, \"rems\": [null, null, \"" + hex_a + "\", null]");
  auto ref = parse_reference_values(rem2);
  REQUIRE(ref);
  CHECK(ref->sets[0].rems[2] == Bytes(32, 0xaa));
  std::string rem1 = replace_once(no_cmdline, "\"initramfs\": null",
                                  "\"initramfs\": null, \"rems\": [null, \"" + hex_a + "\", null, null]");
  CHECK(mentions(parse_error(rem1), "must pin the kernel command line"));
}

TEST_CASE("fields of the other boot mode are refused") {
  CHECK(mentions(parse_error(replace_once(minimal_doc, "\"initramfs\": null",
                                          "\"initramfs\": null, \"rims\": [\"" + hex_a + "\"]")),
                 "sets[0].rims: not allowed"));
  const std::string direct = R"({"version": 1, "hash_alg": "sha-256", "sets": [{"name": "d", "boot": "direct", "rims": [")" +
                             hex_a + R"("]}]})";
  REQUIRE(parse_reference_values(direct));
  CHECK(mentions(parse_error(replace_once(direct, "\"boot\": \"direct\"",
                                          "\"boot\": \"direct\", \"kernel\": \"" + hex_b + "\"")),
                 "sets[0].kernel: not allowed in a \"direct\" set"));
  CHECK(mentions(parse_error(replace_once(direct, "\"rims\": [\"" + hex_a + "\"]", "\"rims\": []")),
                 "sets[0].rims: must list at least one digest"));
}

TEST_CASE("missing required set fields and empty digest lists are refused") {
  CHECK(mentions(parse_error(replace_once(minimal_doc, ", \"initramfs\": null", "")),
                 "sets[0].initramfs: missing required field"));
  CHECK(mentions(parse_error(replace_once(minimal_doc, "\"name\": \"s1\", ", "")),
                 "sets[0].name: missing required field"));
  CHECK(mentions(parse_error(replace_once(minimal_doc, "\"grub\": [\"" + hex_b + "\"]", "\"grub\": []")),
                 "sets[0].grub: must list at least one digest"));
  CHECK(mentions(parse_error(replace_once(minimal_doc, "\"firmware_rims\": [\"" + hex_a + "\"], ", "")),
                 "firmware_rims: grub-boot sets need at least one firmware RIM"));
}

TEST_CASE("duplicate set names, NUL characters and bad RPVs or REM lists are refused") {
  const std::string set = minimal_doc.substr(minimal_doc.find("{\"name\""));
  std::string two = replace_once(minimal_doc, "}]}", "}, " + set.substr(0, set.size() - 2) + "]}");
  CHECK(mentions(parse_error(two), "sets[1].name: duplicate set name \"s1\""));
  CHECK(mentions(parse_error(replace_once(minimal_doc, "ro quiet", "ro\\u0000 quiet")),
                 "sets[0].kernel_cmdline: contains a NUL character"));
  CHECK(mentions(parse_error(replace_once(minimal_doc, "\"version\": 1",
                                          "\"version\": 1, \"allowed_rpvs\": [\"" + hex_a + "\"]")),
                 "allowed_rpvs[0]: expected 128 hex digits (RPV)"));
  CHECK(mentions(parse_error(replace_once(minimal_doc, "\"initramfs\": null",
                                          "\"initramfs\": null, \"rems\": [null, null, null]")),
                 "sets[0].rems: expected an array of 4"));
}

TEST_CASE("the serializer refuses a document the parser would refuse") {
  ReferenceValues ref = example_reference();
  ref.sets[0].grub.kernel.pop_back();
  auto r = serialize_reference_values(ref);
  REQUIRE_FALSE(r);
  CHECK(mentions(r.error(), "sets[0].kernel: expected 32 bytes"));
}

TEST_CASE("a kernel update adds a set and later retires the old one") {
  ReferenceValues ref = example_reference();
  ReferenceSet next = ref.sets[1];
  next.name = "kernel-6.6.0-99";
  next.grub.kernel = sha256_of("kernel image 6.6.0-99");
  REQUIRE(add_reference_set(ref, next));
  CHECK(ref.sets.size() == 4);
  CHECK(add_reference_set(ref, next).error().message.find("duplicate set name") != std::string::npos);
  ReferenceSet broken = next;
  broken.name = "broken";
  broken.grub.kernel_cmdline.reset();
  CHECK_FALSE(add_reference_set(ref, broken));
  CHECK(ref.sets.size() == 4);
  REQUIRE(retire_reference_set(ref, "kernel-6.6.0-28"));
  CHECK(ref.find_set("kernel-6.6.0-28") == nullptr);
  CHECK(retire_reference_set(ref, "kernel-6.6.0-28").error().code == Errc::not_found);
  REQUIRE(retire_reference_set(ref, "kernel-6.6.0-72"));
  REQUIRE(retire_reference_set(ref, "direct-6.6.0-72"));
  CHECK(retire_reference_set(ref, "kernel-6.6.0-99").error().code == Errc::invalid_argument);
  CHECK(serialize_reference_values(ref));
}

// ---------------------------------------------------------------------------------------
// Importer

ImageReferenceImport import_options() {
  ImageReferenceImport options;
  options.firmware_rims = {firmware_rim};
  for (const auto& v : {old_version, new_version, debug_version}) {
    options.kernel_cmdlines[v] = cmdline_for(v);
    options.grub_commands[v] = {"linux " + cmdline_for(v)};
    if (v != debug_version) options.grub_commands[v].push_back("initrd /initramfs-" + v + ".img");
  }
  return options;
}

TEST_CASE("the reference implementation's file imports as one set per kernel sharing grub and grub.cfg") {
  auto ref = import_image_reference_measurement(read_text(import_doc_path), import_options());
  REQUIRE(ref);
  CHECK(ref->hash_alg == crypto::HashAlg::sha256);
  CHECK(ref->firmware_rims == std::vector<Bytes>{firmware_rim});
  REQUIRE(ref->sets.size() == 3);
  for (const auto& set : ref->sets) {
    CHECK(set.boot == BootMode::grub);
    CHECK(set.grub.efi_applications ==
          std::vector<Bytes>{sha256_of("BOOTAA64.EFI authenticode of the example image")});
    CHECK(set.grub.grub_cfgs == std::vector<Bytes>{sha256_of("grub.cfg of the example image")});
  }
  CHECK(ref->sets[0].name == "kernel-" + old_version);
  CHECK(ref->sets[1].kernel_version == new_version);
  CHECK(ref->sets[1].grub.kernel == sha256_of("kernel image " + new_version));
  CHECK(ref->sets[1].grub.initramfs == sha256_of("initramfs " + new_version));
  CHECK(ref->sets[1].grub.kernel_cmdline == cmdline_for(new_version));
  CHECK_FALSE(ref->sets[2].grub.initramfs);  // "NOT_FOUND"
  CHECK(serialize_reference_values(*ref));
}

TEST_CASE("an import without a command line for every kernel version is refused") {
  ImageReferenceImport options = import_options();
  options.kernel_cmdlines.erase(new_version);
  auto r = import_image_reference_measurement(read_text(import_doc_path), options);
  REQUIRE_FALSE(r);
  CHECK(mentions(r.error(), "kernels[1].version"));
  CHECK(mentions(r.error(), new_version));
}

TEST_CASE("an import of a malformed reference implementation file names the problem") {
  const std::string text = read_text(import_doc_path);
  auto sha512 = import_image_reference_measurement(replace_once(text, "sha-256", "sha-512"),
                                                   import_options());
  CHECK(sha512.error().code == Errc::unsupported);
  auto unknown = import_image_reference_measurement(
      replace_once(text, "\"hash_alg\"", "\"comment\": \"x\", \"hash_alg\""), import_options());
  CHECK(mentions(unknown.error(), "image reference measurement: comment: unknown field"));
  auto short_hex = import_image_reference_measurement(
      replace_once(text, "80692d39", "80692d3"), import_options());
  CHECK(mentions(short_hex.error(), "kernels[1].kernel: expected 64 hex digits"));
  auto empty_grub = import_image_reference_measurement(
      replace_once(text, "011c41e60f45f00b0ce252f98df559dafce6883c4f6563c6bc213d8ae8465305", ""),
      import_options());
  CHECK(mentions(empty_grub.error(), "grub: expected 64 hex digits"));
  auto no_kernels = import_image_reference_measurement(
      R"({"grub": ")" + hex_a + R"(", "grub.cfg": ")" + hex_a + R"(", "kernels": [], "hash_alg": "sha-256"})",
      import_options());
  CHECK(mentions(no_kernels.error(), "kernels"));
}

// ---------------------------------------------------------------------------------------
// Matcher: grub boot

TEST_CASE("a grub boot of the newer kernel matches the newer set and passes every check") {
  Run run = match_boot(grub_boot(new_version), example_reference());
  INFO(run.verdict.summary());
  CHECK(run.verdict.passed());
  CHECK(run.outcome.passed);
  CHECK(run.outcome.set_name == "kernel-6.6.0-72");
  CHECK(run.outcome.set_index == 1u);
  for (const char* name : {"reference.hash_alg", "reference.rpv", "reference.rim", "eventlog.replay",
                           "reference.grub", "reference.grub_cfg", "reference.kernel",
                           "reference.initramfs", "reference.kernel_cmdline", "reference.rem3",
                           "reference.set"})
    CHECK(run.passed(name));
  CHECK(run.check("reference.set")->found == "\"kernel-6.6.0-72\"");
}

TEST_CASE("the older kernel matches while its set is accepted, and fails once it is retired") {
  ReferenceValues ref = example_reference();
  Run before = match_boot(grub_boot(old_version), ref);
  CHECK(before.verdict.passed());
  CHECK(before.outcome.set_name == "kernel-6.6.0-28");
  REQUIRE(retire_reference_set(ref, "kernel-6.6.0-28"));
  Run after = match_boot(grub_boot(old_version), ref);
  CHECK_FALSE(after.verdict.passed());
  CHECK(after.failed("reference.set"));
  CHECK_FALSE(after.outcome.set_index);
}

TEST_CASE("a kernel from one set with the initramfs of another matches no set") {
  Run run = match_boot(grub_boot(new_version, old_version), example_reference());
  CHECK_FALSE(run.verdict.passed());
  CHECK(run.failed("reference.set"));
  CHECK(run.failed("reference.initramfs"));
  CHECK(run.passed("reference.kernel"));
  CHECK(run.check("reference.set")->found.find("kernel-6.6.0-72") != std::string::npos);
}

TEST_CASE("a tampered kernel fails reference.kernel and no set matches") {
  auto events = grub_boot(new_version);
  events[6].digest = sha256_of("kernel image with a backdoor");
  Run run = match_boot(events, example_reference());
  CHECK(run.passed("eventlog.replay"));  // the token reflects the tampered boot faithfully
  CHECK(run.failed("reference.kernel"));
  CHECK(run.failed("reference.set"));
  CHECK_FALSE(run.outcome.passed);
}

TEST_CASE("a tampered initramfs fails reference.initramfs") {
  auto events = grub_boot(new_version);
  events.back().digest = sha256_of("initramfs that logs the disk key");
  Run run = match_boot(events, example_reference());
  CHECK(run.failed("reference.initramfs"));
  CHECK(run.failed("reference.set"));
}

TEST_CASE("a missing initramfs event fails when the set expects one") {
  Run run = match_boot(grub_boot(new_version, ""), example_reference());
  CHECK(run.failed("reference.initramfs"));
  CHECK(run.check("reference.initramfs")->found == "none");
  CHECK(run.failed("reference.set"));
}

TEST_CASE("an initramfs event fails a set that expects none") {
  auto ref = import_image_reference_measurement(read_text(import_doc_path), import_options());
  REQUIRE(ref);
  Run without = match_boot(grub_boot(debug_version, ""), *ref);
  INFO(without.verdict.summary());
  CHECK(without.verdict.passed());
  CHECK(without.outcome.set_name == "kernel-6.6.0-debug");
  Run with = match_boot(grub_boot(debug_version, debug_version), *ref);
  CHECK(with.failed("reference.events"));  // an archive the set does not list
  CHECK(with.failed("reference.set"));
}

TEST_CASE("a boot without a grub.cfg event or without a kernel event fails") {
  auto no_cfg = grub_boot(new_version);
  no_cfg.erase(no_cfg.begin() + 4);
  Run run = match_boot(no_cfg, example_reference());
  CHECK(run.failed("reference.grub_cfg"));
  CHECK(run.check("reference.grub_cfg")->found == "none");
  CHECK(run.failed("reference.set"));

  auto no_kernel = grub_boot(new_version);
  no_kernel.erase(no_kernel.begin() + 6);
  Run run2 = match_boot(no_kernel, example_reference());
  CHECK(run2.failed("reference.kernel"));
  CHECK(run2.failed("reference.set"));
}

TEST_CASE("a boot without a grub measurement fails reference.grub") {
  auto events = grub_boot(new_version);
  events.erase(events.begin() + 2);
  Run run = match_boot(events, example_reference());
  CHECK(run.failed("reference.grub"));
  CHECK(run.failed("reference.set"));
}

TEST_CASE("an extra EFI application beside grub fails reference.grub") {
  auto events = grub_boot(new_version);
  events.insert(events.begin() + 3, TestEvent{2, eventlog::ev_efi_boot_services_application,
                                              sha256_of("UEFI shell"), "shell"});
  Run run = match_boot(events, example_reference());
  CHECK(run.failed("reference.grub"));
}

TEST_CASE("a changed kernel command line fails although every file hash matches") {
  auto events = grub_boot(new_version);
  const std::string evil = cmdline_for(new_version) + " init=/bin/sh";
  events[7] = ipl("kernel_cmdline: " + evil, sha256_of(evil));
  Run run = match_boot(events, example_reference());
  CHECK(run.passed("reference.kernel"));
  CHECK(run.passed("reference.initramfs"));
  CHECK(run.failed("reference.kernel_cmdline"));
  CHECK(run.failed("reference.set"));
}

TEST_CASE("a command line event whose text was rewritten in the log fails") {
  auto events = grub_boot(new_version);
  // The firmware measured init=/bin/sh; the host then rewrote the unmeasured event text.
  events[7].digest = sha256_of(cmdline_for(new_version) + " init=/bin/sh");
  Run run = match_boot(events, example_reference());
  CHECK(run.passed("eventlog.replay"));
  CHECK(run.failed("reference.kernel_cmdline"));
  CHECK(run.check("reference.kernel_cmdline")->found.find("not the digest") != std::string::npos);
}

TEST_CASE("a kernel command line digest over the prefixed event string is also accepted") {
  auto events = grub_boot(new_version);
  events[7].digest = sha256_of("kernel_cmdline: " + cmdline_for(new_version));
  Run run = match_boot(events, example_reference());
  CHECK(run.verdict.passed());
}

TEST_CASE("a second kernel or a second command line loaded after the expected ones fails") {
  auto second_kernel = grub_boot(new_version);
  second_kernel.push_back(ipl("(hd0,gpt1)/vmlinuz-" + new_version, sha256_of("swapped on disk")));
  Run run = match_boot(second_kernel, example_reference());
  CHECK(run.failed("reference.events"));  // a file the set does not list
  CHECK(run.failed("reference.set"));

  auto second_cmdline = grub_boot(new_version);
  second_cmdline.push_back(second_cmdline[7]);
  Run run2 = match_boot(second_cmdline, example_reference());
  CHECK(run2.failed("reference.kernel_cmdline"));
  CHECK(run2.check("reference.kernel_cmdline")->found == "2 kernel_cmdline events");
}

TEST_CASE("events in MR 0 or of type EV_NO_ACTION cannot inject or mask measurements") {
  auto events = grub_boot(new_version);
  events.insert(events.begin(), TestEvent{0, eventlog::ev_ipl, sha256_of("evil"),
                                          std::string("(hd0,gpt1)/vmlinuz-evil") + '\0'});
  events.push_back(TestEvent{3, eventlog::ev_no_action, sha256_of("init=/bin/sh"),
                             std::string("kernel_cmdline: init=/bin/sh") + '\0'});
  Run run = match_boot(events, example_reference());
  INFO(run.verdict.summary());
  CHECK(run.verdict.passed());
}

TEST_CASE("an event log that does not replay to the token's REMs fails before any set is judged") {
  auto events = grub_boot(new_version);
  TokenMeasurements token = token_after(events);
  token.rems[2][0] ^= 1;
  Run run = match_boot(events, example_reference(), token);
  CHECK(run.failed("eventlog.replay"));
  CHECK(run.check("eventlog.replay")->found.find("REM[2]") != std::string::npos);
  CHECK(run.check("reference.kernel") == nullptr);
  CHECK(run.failed("reference.set"));
  CHECK_FALSE(run.outcome.set_index);
}

TEST_CASE("an event added to the log after the token was made fails replay") {
  auto events = grub_boot(new_version);
  TokenMeasurements token = token_after(events);
  events.push_back(ipl("grub_cmd: echo hi", sha256_of("echo hi")));
  CHECK(match_boot(events, example_reference(), token).failed("eventlog.replay"));
}

TEST_CASE("a non-zero REM[3] fails unless the set pins it") {
  auto events = grub_boot(new_version);
  TokenMeasurements token = token_after(events);
  token.rems[3] = sha256_of("IMA boot aggregate");
  ReferenceValues ref = example_reference();
  Run run = match_boot(events, ref, token);
  CHECK(run.failed("reference.rem3"));
  CHECK(run.failed("reference.set"));

  ref.sets[1].rems[3] = token.rems[3];
  Run pinned = match_boot(events, ref, token);
  INFO(pinned.verdict.summary());
  CHECK(pinned.verdict.passed());
  CHECK(pinned.passed("reference.rems"));
  CHECK(pinned.check("reference.rem3") == nullptr);
}

TEST_CASE("pinned golden REMs pass when equal and fail when the boot differs") {
  auto golden = grub_boot(new_version);
  TokenMeasurements golden_token = token_after(golden);
  ReferenceValues ref = example_reference();
  ref.sets[1].grub.kernel_cmdline.reset();  // REM[2] covers it instead
  ref.sets[1].rems = {golden_token.rems[0], golden_token.rems[1], golden_token.rems[2], std::nullopt};
  REQUIRE(validate_reference_values(ref));
  Run run = match_boot(golden, ref);
  INFO(run.verdict.summary());
  CHECK(run.verdict.passed());
  CHECK(run.passed("reference.rems"));
  CHECK(run.check("reference.kernel_cmdline")->expected == "covered by the pinned rems[2]");

  // An extra grub command (typed at the console) changes only REM[2].
  auto edited = golden;
  edited.insert(edited.begin() + 5, ipl("grub_cmd: insmod memrw", sha256_of("insmod memrw")));
  Run run2 = match_boot(edited, ref);
  CHECK(run2.passed("eventlog.replay"));
  CHECK(run2.failed("reference.rems"));
  CHECK(run2.failed("reference.set"));
}

TEST_CASE("a set built in code that pins no command line at all never passes the command line check") {
  ReferenceValues ref = example_reference();
  ref.sets[1].grub.kernel_cmdline.reset();
  REQUIRE_FALSE(validate_reference_values(ref));
  Run run = match_boot(grub_boot(new_version), ref);
  CHECK(run.failed("reference.kernel_cmdline"));
  CHECK_FALSE(run.verdict.passed());
}

TEST_CASE("pinned grub commands must all be present, in order, with matching digests") {
  auto events = grub_boot(new_version);
  ReferenceValues ref = example_reference();
  Run run = match_boot(events, ref);
  INFO(run.verdict.summary());
  CHECK(run.verdict.passed());
  CHECK(run.passed("reference.grub_commands"));

  // Before grub.cfg (events[4]) only the embedded configuration's grammar is allowed.
  auto extra = events;
  extra.insert(extra.begin() + 4, ipl("grub_cmd: insmod memrw", sha256_of("insmod memrw")));
  Run prelude = match_boot(extra, ref);
  CHECK(prelude.failed("reference.grub_commands"));
  CHECK(prelude.check("reference.grub_commands")->found.find("insmod") != std::string::npos);

  // After it, the pinned list exactly.
  auto after = events;
  after.insert(after.begin() + 5, ipl("grub_cmd: set debug=all", sha256_of("set debug=all")));
  Run pinned = match_boot(after, ref);
  CHECK(pinned.failed("reference.grub_commands"));
  CHECK(pinned.check("reference.grub_commands")->found.find("set debug=all") != std::string::npos);

  auto forged = events;
  forged[3].digest = sha256_of("set root=hd1,gpt1");
  Run run2 = match_boot(forged, ref);
  CHECK(run2.failed("reference.events"));
  CHECK(run2.check("reference.events")->found.find("digest is not that of its text") != std::string::npos);
}

TEST_CASE("a RIM outside the firmware RIMs fails reference.rim") {
  auto events = grub_boot(new_version);
  TokenMeasurements token = token_after(events);
  token.rim = sha256_of("other firmware");
  Run run = match_boot(events, example_reference(), token);
  CHECK(run.failed("reference.rim"));
  CHECK(run.passed("reference.set"));  // the boot chain itself is fine; the verdict still fails
  CHECK_FALSE(run.verdict.passed());
  CHECK_FALSE(run.outcome.passed);
}

TEST_CASE("an RPV outside the allowed list, or no RPV, fails reference.rpv") {
  auto events = grub_boot(new_version);
  TokenMeasurements token = token_after(events);
  token.rpv = Bytes(64, 0);
  CHECK(match_boot(events, example_reference(), token).failed("reference.rpv"));
  token.rpv.reset();
  CHECK(match_boot(events, example_reference(), token).failed("reference.rpv"));
  ReferenceValues any = example_reference();
  any.allowed_rpvs.clear();
  Run run = match_boot(events, any, token);
  CHECK(run.check("reference.rpv") == nullptr);
  CHECK(run.verdict.passed());
}

TEST_CASE("a token hash algorithm other than the document's fails reference.hash_alg") {
  auto events = grub_boot(new_version);
  TokenMeasurements token = token_after(events);
  token.hash_alg = crypto::HashAlg::sha512;
  Run run = match_boot(events, example_reference(), token);
  CHECK(run.failed("reference.hash_alg"));
  CHECK(run.failed("eventlog.replay"));  // the log has no SHA-512 bank
  CHECK(run.check("eventlog.replay")->found.find("unsupported") != std::string::npos);
}

TEST_CASE("an event log without SHA-256 digests fails replay cleanly") {
  std::ifstream in(std::string(FDE_EXTERNAL_TESTDATA) + "/ccel-trustee-eventlog/CCEL_data_grub",
                   std::ios::binary);
  Bytes raw((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  auto log = eventlog::parse_event_log(raw);
  REQUIRE(log);
  Verdict verdict;
  auto outcome = match_reference_values(token_after(grub_boot(new_version)), &*log,
                                        example_reference(), verdict);
  CHECK_FALSE(outcome.passed);
  CHECK_FALSE(verdict.passed());
  REQUIRE(verdict.first_failure() != nullptr);
  CHECK(verdict.first_failure()->name == "eventlog.replay");
}

TEST_CASE("a document without grub-boot sets cannot accept an event log") {
  ReferenceValues ref = example_reference();
  ref.sets.erase(ref.sets.begin(), ref.sets.begin() + 2);
  Run run = match_boot(grub_boot(new_version), ref);
  CHECK(run.failed("reference.set"));
  CHECK(run.check("reference.set")->found == "no grub-boot set in the reference values");
}

TEST_CASE("the imported reference implementation file accepts a boot of each of its kernels") {
  auto ref = import_image_reference_measurement(read_text(import_doc_path), import_options());
  REQUIRE(ref);
  TokenMeasurements token = token_after(grub_boot(old_version));
  token.rpv.reset();  // the imported document lists no RPVs
  Run old_boot = match_boot(grub_boot(old_version), *ref, token);
  CHECK(old_boot.verdict.passed());
  CHECK(old_boot.outcome.set_name == "kernel-" + old_version);
  Run new_boot = match_boot(grub_boot(new_version), *ref);
  INFO(new_boot.verdict.summary());
  CHECK(new_boot.verdict.passed());
  CHECK(new_boot.outcome.set_name == "kernel-" + new_version);
}

// ---------------------------------------------------------------------------------------
// Matcher: direct boot

TEST_CASE("a direct boot matches the direct-boot set by its RIM") {
  TokenMeasurements token;
  token.rim = direct_rim;
  token.rpv = example_rpv;
  for (auto& r : token.rems) r.assign(32, 0);
  token.rems[0] = sha256_of("IMA in REM[0]");  // not pinned by the set
  Verdict verdict;
  auto outcome = match_reference_values(token, nullptr, example_reference(), verdict);
  INFO(verdict.summary());
  CHECK(verdict.passed());
  CHECK(outcome.set_name == "direct-6.6.0-72");
  CHECK(outcome.set_index == 2u);

  token.rems[3] = sha256_of("REM[3] is pinned to zero in this set");
  Verdict pinned;
  auto failed = match_reference_values(token, nullptr, example_reference(), pinned);
  CHECK_FALSE(pinned.passed());
  CHECK_FALSE(failed.set_index);
}

TEST_CASE("a direct boot whose RIM no direct-boot set lists fails, even the firmware RIM") {
  TokenMeasurements token;
  token.rim = firmware_rim;  // a grub-boot VM that withheld its event log
  token.rpv = example_rpv;
  for (auto& r : token.rems) r.assign(32, 0);
  Verdict verdict;
  auto outcome = match_reference_values(token, nullptr, example_reference(), verdict);
  CHECK_FALSE(outcome.passed);
  REQUIRE(verdict.first_failure() != nullptr);
  CHECK(verdict.first_failure()->name == "reference.rim");

  auto grub_only = import_image_reference_measurement(read_text(import_doc_path), import_options());
  REQUIRE(grub_only);
  Verdict v2;
  match_reference_values(token, nullptr, *grub_only, v2);
  CHECK_FALSE(v2.passed());
}

// ---------------------------------------------------------------------------------------
// Matcher: the allow-list. Each hostile boot below is honestly measured (the token's REMs
// are the replay of exactly these events); it must still be denied.

namespace {

TestEvent application(std::string_view what) {
  return {2, eventlog::ev_efi_boot_services_application, sha256_of(what), "image load event"};
}

std::size_t index_of(const std::vector<TestEvent>& events, std::string_view data_prefix) {
  for (std::size_t i = 0; i < events.size(); ++i)
    if (events[i].data.starts_with(data_prefix)) return i;
  throw std::runtime_error("no such event in the fixture");
}

bool events_mention(const Run& run, std::string_view text) {
  const Check* c = run.check("reference.events");
  return c != nullptr && c->found.find(text) != std::string::npos;
}

}  // namespace

TEST_CASE("allow-list: the genuine boot explains every event") {
  Run run = match_boot(grub_boot(new_version), example_reference());
  INFO(run.verdict.summary());
  CHECK(run.verdict.passed());
  CHECK(run.passed("reference.events"));
}

TEST_CASE("allow-list: a second initrd appended at the grub console is denied and named") {
  auto events = grub_boot(new_version);
  const std::size_t at = index_of(events, "grub_cmd: initrd");
  const std::string edited = "initrd /initramfs-" + new_version + ".img /x.cpio";
  events[at] = ipl("grub_cmd: " + edited, sha256_of(edited));
  events.push_back(ipl("(hd0,gpt1)/x.cpio", sha256_of("host archive")));
  Run run = match_boot(events, example_reference());
  CHECK_FALSE(run.verdict.passed());
  CHECK(run.failed("reference.events"));
  CHECK(events_mention(run, "(hd0,gpt1)/x.cpio"));
  CHECK(run.failed("reference.grub_commands"));
  CHECK(run.passed("reference.initramfs"));  // the genuine archive is there too
}

TEST_CASE("allow-list: an EFI driver the host added through Driver#### is denied unless listed") {
  auto events = grub_boot(new_version);
  TestEvent driver{2, eventlog::ev_efi_boot_services_driver, sha256_of("host driver"), "driver"};
  events.insert(events.begin() + 2, driver);
  Run run = match_boot(events, example_reference());
  CHECK_FALSE(run.verdict.passed());
  CHECK(events_mention(run, "EV_EFI_BOOT_SERVICES_DRIVER"));
  CHECK(events_mention(run, hex_encode(driver.digest)));

  ReferenceValues listed = example_reference();
  listed.firmware_drivers = {driver.digest};
  Run allowed = match_boot(events, listed);
  INFO(allowed.verdict.summary());
  CHECK(allowed.verdict.passed());
  for (auto type : {eventlog::ev_efi_runtime_services_driver, 0x80000008u /* firmware blob */}) {
    auto other = grub_boot(new_version);
    other.insert(other.begin() + 2, TestEvent{2, type, sha256_of("option rom"), "rom"});
    CHECK(match_boot(other, example_reference()).failed("reference.events"));
  }
}

TEST_CASE("allow-list: a grub module the host replaced on /boot is denied whatever its name") {
  auto events = grub_boot(new_version);
  ReferenceValues ref = example_reference();
  const std::size_t cfg = index_of(events, "(hd0,gpt1)/EFI/openEuler/grub.cfg");
  events.insert(events.begin() + static_cast<std::ptrdiff_t>(cfg) + 1,
                {ipl("grub_cmd: insmod gzio", sha256_of("insmod gzio")),
                 ipl("(hd0,gpt1)/grub/arm64-efi/gzio.mod", sha256_of("host module"))});
  ref.sets[1].grub.grub_commands->insert(ref.sets[1].grub.grub_commands->begin(), "insmod gzio");
  Run run = match_boot(events, ref);
  CHECK_FALSE(run.verdict.passed());
  CHECK(run.passed("reference.grub_commands"));  // the commands are unchanged
  CHECK(events_mention(run, "gzio.mod"));
  // Named like the initramfs, it is still not the initramfs.
  events[cfg + 2] = ipl("(hd0,gpt1)/initramfs-" + new_version + ".img", sha256_of("host module"));
  CHECK(match_boot(events, ref).failed("reference.events"));
}

TEST_CASE("allow-list: the kernel as an EFI application is explained by kernel_efi, even twice") {
  auto events = grub_boot(new_version);
  const std::size_t kernel = index_of(events, "(hd0,gpt1)/vmlinuz-");
  // shim measures the kernel when grub asks it to verify it (twice on Debian), arm64 grub's
  // LoadImage once: the digest is the kernel's Authenticode hash.
  events.insert(events.begin() + static_cast<std::ptrdiff_t>(kernel) + 1,
                {application("kernel authenticode"), application("kernel authenticode")});
  Run denied = match_boot(events, example_reference());
  CHECK(denied.failed("reference.grub"));
  CHECK(denied.failed("reference.events"));
  ReferenceValues ref = example_reference();
  ref.sets[1].grub.kernel_efi = {sha256_of("kernel authenticode")};
  Run run = match_boot(events, ref);
  INFO(run.verdict.summary());
  CHECK(run.verdict.passed());
  // The kernel alone cannot stand in for grub.
  auto no_grub = events;
  no_grub.erase(no_grub.begin() + 2);
  CHECK(match_boot(no_grub, ref).failed("reference.grub"));
}

TEST_CASE("allow-list: the compressed kernel digest is accepted when listed as an alternative") {
  auto events = grub_boot(new_version);
  const std::size_t kernel = index_of(events, "(hd0,gpt1)/vmlinuz-");
  events[kernel].digest = sha256_of("compressed kernel file");
  CHECK(match_boot(events, example_reference()).failed("reference.kernel"));
  ReferenceValues ref = example_reference();
  ref.sets[1].grub.kernel_alternatives = {sha256_of("compressed kernel file")};
  CHECK(match_boot(events, ref).verdict.passed());
}

TEST_CASE("allow-list: what else a host can make firmware, shim or grub log is denied") {
  struct Case {
    const char* what;
    std::function<void(std::vector<TestEvent>&)> change;
  };
  const std::vector<Case> cases = {
      {"an EFI application in REM[0]",
       [](auto& e) { e.insert(e.begin() + 1, TestEvent{1, eventlog::ev_efi_boot_services_application, sha256_of("x"), "x"}); }},
      {"an unknown event type in REM[1]",
       [](auto& e) { e.insert(e.begin() + 2, TestEvent{2, 0x0000000C, sha256_of("compact"), "c"}); }},
      {"an unknown event type in REM[2]",
       [](auto& e) { e.push_back(TestEvent{3, 0x80000010, sha256_of("new"), "n"}); }},
      {"a separator that signals an error",
       [](auto& e) { e.insert(e.begin() + 2, TestEvent{2, eventlog::ev_separator, sha256_of(std::string("\1\0\0\0", 4)), std::string("\1\0\0\0", 4)}); }},
      {"an EFI action nobody predicted",
       [](auto& e) { e.insert(e.begin() + 2, TestEvent{2, 0x80000007, sha256_of("Boot from host"), "Boot from host"}); }},
      {"a known EFI action whose digest is not its text",
       [](auto& e) { e.insert(e.begin() + 2, TestEvent{2, 0x80000007, sha256_of("x"), "Exit Boot Services Invocation"}); }},
      {"a second partition table",
       [](auto& e) {
         TestEvent gpt{2, 0x80000006, sha256_of("EFI PART header"), "EFI PART header"};
         e.insert(e.begin() + 2, {gpt, gpt});
       }},
      {"a partition-table event whose digest is not its data",
       [](auto& e) { e.insert(e.begin() + 2, TestEvent{2, 0x80000006, sha256_of("other"), "EFI PART header"}); }},
      {"a multiboot module command line",
       [](auto& e) { e.push_back(ipl("module_cmdline: /x.bin", sha256_of("/x.bin"))); }},
      {"an EV_IPL text that is not grub's or shim's",
       [](auto& e) { e.push_back(ipl("HostNote", sha256_of("HostNote"))); }},
      {"a command typed at a grub shell after the pinned ones",
       [](auto& e) { e.push_back(ipl("grub_cmd: chainloader /evil.efi", sha256_of("chainloader /evil.efi"))); }},
      {"a second EFI application (an EFI shell)",
       [](auto& e) { e.insert(e.begin() + 3, application("UEFI shell")); }},
      {"kernel load options other than the measured command line",
       [](auto& e) {
         std::string data("\xed\x22\x3b\x8f\x1a\x00\x00\x00LOADED_IMAGE::LoadOptions\0", 34);
         e.push_back(TestEvent{3, 0x00000006, sha256_of("BOOT_IMAGE=/vmlinuz init=/bin/sh"), data});
       }},
      {"an initrd tag for another archive",
       [](auto& e) {
         std::string data("\xec\x22\x3b\x8f\x0d\x00\x00\x00Linux initrd\0", 21);
         e.push_back(TestEvent{3, 0x00000006, sha256_of("host archive"), data});
       }},
  };
  for (const auto& c : cases) {
    auto events = grub_boot(new_version);
    c.change(events);
    Run run = match_boot(events, example_reference());
    INFO(c.what << ": " << run.verdict.summary());
    CHECK_FALSE(run.verdict.passed());
    CHECK_FALSE(run.outcome.passed);
  }
}

TEST_CASE("allow-list: honest firmware and shim events pass") {
  auto events = grub_boot(new_version);
  const std::string action = "Exit Boot Services Invocation";
  const std::string gpt = "EFI PART header and entries";
  events.insert(events.begin() + 2,
                {TestEvent{1, 0x80000002, sha256_of("Boot0001"), "Boot0001 variable"},
                 TestEvent{1, 0x800000E0, sha256_of("db cert"), "db authority"},
                 TestEvent{2, 0x80000006, sha256_of(gpt), gpt},
                 TestEvent{2, eventlog::ev_separator, sha256_of(std::string(4, '\0')), std::string(4, '\0')}});
  events.push_back(ipl("MokList", sha256_of("mok list contents")));
  events.push_back(ipl("MokListTrusted", sha256_of(std::string(1, '\1'))));
  // The Linux EFI stub: its load options are grub's "BOOT_IMAGE=" + the measured command line.
  Bytes utf16;
  for (char ch : "BOOT_IMAGE=" + cmdline_for(new_version)) {
    utf16.push_back(static_cast<std::uint8_t>(ch));
    utf16.push_back(0);
  }
  events.push_back({3, 0x00000006, openssl_digest("SHA256", utf16),
                    std::string("\xed\x22\x3b\x8f\x1a\x00\x00\x00LOADED_IMAGE::LoadOptions\0", 34)});
  events.push_back({2, 0x80000007, sha256_of(action), action});
  Run run = match_boot(events, example_reference());
  INFO(run.verdict.summary());
  CHECK(run.verdict.passed());
}

TEST_CASE("allow-list: Debian's signed grub prelude passes, a shell session before grub.cfg does not") {
  auto events = grub_boot(new_version);
  const std::size_t cfg = index_of(events, "(hd0,gpt1)/EFI/openEuler/grub.cfg");
  const std::vector<std::string> prelude = {
      "[ -z (hd0,gpt1)/EFI/debian -o ! -e (hd0,gpt1)/EFI/debian ]",
      "search --file --set=root /.disk/info", "set prefix=(hd0,gpt1)/EFI/debian",
      "[ -e (hd0,gpt1)/EFI/debian/grub.cfg ]", "source (hd0,gpt1)/EFI/debian/grub.cfg"};
  auto with = [&](const std::vector<std::string>& commands) {
    auto e = events;
    std::vector<TestEvent> added;
    for (const auto& c : commands) added.push_back(ipl("grub_cmd: " + c, sha256_of(c)));
    e.insert(e.begin() + static_cast<std::ptrdiff_t>(cfg), added.begin(), added.end());
    return match_boot(e, example_reference());
  };
  Run good = with(prelude);
  INFO(good.verdict.summary());
  CHECK(good.verdict.passed());
  for (const std::string bad : {"set superusers=", "search --set=prefix --file /x", "source /boot/evil.cfg",
                                "linux /vmlinuz init=/bin/sh", "search.fs_uuid 1234 prefix"}) {
    Run run = with({bad});
    INFO(bad);
    CHECK(run.failed("reference.grub_commands"));
  }
}

TEST_CASE("allow-list: a pinned REM explains its events by the golden value") {
  auto events = grub_boot(new_version);
  events.insert(events.begin() + 2, TestEvent{2, eventlog::ev_efi_boot_services_driver, sha256_of("rom"), "rom"});
  ReferenceValues ref = example_reference();
  ref.sets[1].rems[1] = token_after(events).rems[1];
  Run run = match_boot(events, ref);
  INFO(run.verdict.summary());
  CHECK(run.verdict.passed());
}

TEST_CASE("allow-list: the document's firmware_rem0 pins REM[0]") {
  auto events = grub_boot(new_version);
  ReferenceValues ref = example_reference();
  ref.firmware_rem0 = {sha256_of("another firmware configuration")};
  CHECK(match_boot(events, ref).failed("reference.rem0"));
  ref.firmware_rem0.push_back(token_after(events).rems[0]);
  CHECK(match_boot(events, ref).verdict.passed());
}

TEST_CASE("allow-list: many unexplained events are counted, and at most eight are named") {
  auto events = grub_boot(new_version);
  for (int i = 0; i < 20; ++i) events.push_back(ipl("(hd0,gpt1)/m" + std::to_string(i), sha256_of(std::to_string(i))));
  Run run = match_boot(events, example_reference());
  const Check* c = run.check("reference.events");
  REQUIRE(c != nullptr);
  CHECK(c->found.starts_with("20 unexplained"));
  CHECK(c->found.find("/m7") != std::string::npos);
  CHECK(c->found.find("/m8") == std::string::npos);
}

TEST_CASE("allow-list: a real TDX grub log explains its REM[0] and REM[1] once its applications are listed") {
  // Ubuntu's shim, fallback and grub with the kernel as the fourth application (td-shim /
  // OVMF measuring through the CC protocol, as virtCCA's firmware does). Its grub measures
  // no commands or files, so only REM[2] stays unexplained for a grub set.
  std::ifstream in(std::string(FDE_EXTERNAL_TESTDATA) + "/ccel-trustee-eventlog/CCEL_data_grub", std::ios::binary);
  REQUIRE(in.good());
  Bytes raw((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  auto log = eventlog::parse_event_log(raw);
  REQUIRE(log);
  ReferenceValues ref = example_reference();
  ReferenceSet& set = ref.sets[1];
  set.grub.efi_applications.clear();
  std::vector<Bytes> apps;
  for (const auto& e : log->events)
    if (eventlog::is_extended(e) && e.event_type == eventlog::ev_efi_boot_services_application)
      apps.push_back(*e.digest_for(eventlog::tpm_alg_sha384));  // TDX logs SHA-384
  REQUIRE(apps.size() >= 4);
  set.grub.kernel_efi = {apps.back()};
  set.grub.efi_applications.assign(apps.begin(), apps.end() - 1);
  auto replayed = eventlog::replay(*log, crypto::HashAlg::sha384);
  REQUIRE(replayed);
  TokenMeasurements token;
  token.hash_alg = crypto::HashAlg::sha384;
  token.rim = firmware_rim;
  token.rpv = example_rpv;
  for (std::size_t i = 0; i < 4; ++i) token.rems[i] = (*replayed)[i];
  token.rems[3].assign(48, 0);
  const auto checks = evaluate_grub_set(*log, token, ref, set);
  const Check* events = nullptr;
  for (const auto& c : checks)
    if (c.name == "reference.events") events = &c;
  REQUIRE(events != nullptr);
  INFO(events->found);
  CHECK_FALSE(events->passed);
  CHECK(events->found.find("REM[0]") == std::string::npos);
  CHECK(events->found.find("REM[1]") == std::string::npos);
  CHECK(events->found.find("REM[2] EV_EVENT_TAG") != std::string::npos);  // the stub's load options
}
