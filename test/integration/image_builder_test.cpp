// fde-image end to end on a synthetic CVM image made here (GPT by sgdisk, ext4 by
// mke2fs -d): the bundle's key opens the keyslot, the payload decrypts (independently of
// the builder's code) to the input's used blocks, e2fsck is clean, and hostile inputs fail
// without leaving output behind.
#include <libcryptsetup.h>
#include <openssl/evp.h>
#include <rapidjson/document.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>

#include "common/crypto/key_check.hpp"
#include "common/crypto/hash.hpp"
#include "image-builder/assembly/boot_files.hpp"
#include "image-builder/assembly/image_builder.hpp"
#include "image-builder/assembly/rebind.hpp"
#include "image-builder/disk/gpt.hpp"
#include "image-builder/disk/qcow2_image.hpp"
#include "image-builder/fs/ext_filesystem.hpp"
#include "image-builder/initramfs/cpio_writer.hpp"

using namespace fde;
using namespace fde::image;
namespace fsys = std::filesystem;

namespace {

constexpr const char* recovery_text = "correct horse battery";

int sh(const std::string& command) { return std::system(("bash -c '" + command + "' >/dev/null 2>&1").c_str()); }

struct Fixture {
  std::string dir;
  Fixture() {
    char pattern[] = "/tmp/fde-image-test-XXXXXX";
    dir = ::mkdtemp(pattern);
    const std::string script = R"(set -e; cd DIR
truncate -s 160M disk.raw
sgdisk -n1:2048:+32M -t1:8300 -c1:boot -n2:0:+120M -t2:8300 -c2:root disk.raw
mkdir -p boot/grub root/etc root/usr/bin
head -c 300000 /dev/urandom | gzip -c > boot/vmlinuz-6.1.0-test
(cd root && echo hi > etc/hello && find etc | cpio -o -H newc | gzip -c) > boot/initrd.img-6.1.0-test
printf "menuentry x {\n linux /vmlinuz-6.1.0-test root=UUID=abc ro quiet\n initrd /initrd.img-6.1.0-test\n}\n" > boot/grub/grub.cfg
echo "UUID=abc / ext4 defaults 0 1" > root/etc/fstab
head -c 5000000 /dev/urandom > root/usr/bin/big
mke2fs -q -t ext4 -L boot -d boot -E offset=1048576 disk.raw 32M
mke2fs -q -t ext4 -b 4096 -L rootfs -d root -E offset=34603008 disk.raw 120M
qemu-img convert -O qcow2 disk.raw in.qcow2
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem -subj /CN=test -days 1
echo "RECOVERY" > recovery.txt
printf "#!/bin/sh\necho agent\n" > agent)";
    std::string text = script;
    text.replace(text.find("DIR"), 3, dir);
    text.replace(text.find("RECOVERY"), 8, recovery_text);
    std::ofstream(dir + "/make.sh") << text;
    REQUIRE(std::system(("bash " + dir + "/make.sh >/dev/null 2>&1").c_str()) == 0);
  }
  ~Fixture() { fsys::remove_all(dir); }
  std::string path(const std::string& name) const { return dir + "/" + name; }

  BuildOptions options(const std::string& output) const {
    BuildOptions o;
    o.input = path("in.qcow2");
    o.output = path(output);
    o.image_id = "test-image";
    o.verifiers = {"https://verifier.example:8443"};
    o.verifier_ca = path("ca.pem");
    o.agent = path("agent");
    o.grub_efi_digests = {Bytes(32, 0x11)};
    o.firmware_rims = {Bytes(32, 0x22)};
    o.bundle_path = o.output + ".enrollment.json";
    o.reference_path = o.output + ".reference.json";
    return o;
  }
};

Bytes read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return Bytes(std::istreambuf_iterator<char>(in), {});
}

// The test's own aes-xts-plain64 (tweak = byte offset / 512), not the builder's.
void xts_decrypt(const Bytes& key, std::uint8_t* data, std::size_t size, std::uint64_t offset) {
  EVP_CIPHER_CTX* ctx = EVP_CIPHER_CTX_new();
  for (std::size_t at = 0; at < size; at += 4096) {
    std::uint8_t iv[16] = {};
    const std::uint64_t sector = (offset + at) / 512;
    for (int i = 0; i < 8; ++i) iv[i] = static_cast<std::uint8_t>(sector >> (8 * i));
    int n = 0;
    EVP_DecryptInit_ex(ctx, EVP_aes_256_xts(), nullptr, key.data(), iv);
    EVP_DecryptUpdate(ctx, data + at, &n, data + at, 4096);
  }
  EVP_CIPHER_CTX_free(ctx);
}

// The initramfs of the fixture's kernel as the output image's boot partition holds it.
Bytes booted_initramfs(const std::string& raw_image) {
  auto boot = ExtFilesystem::open(raw_image, 1u << 20, false);
  REQUIRE(boot);
  auto initramfs = boot->read_file("/initrd.img-6.1.0-test", 64u << 20);
  REQUIRE(initramfs);
  return std::move(*initramfs);
}

std::string output_of(const std::string& command, int& status) {
  std::string text;
  FILE* pipe = ::popen(command.c_str(), "r");
  REQUIRE(pipe);
  char buffer[4096];
  for (std::size_t n; (n = std::fread(buffer, 1, sizeof buffer, pipe)) > 0;) text.append(buffer, n);
  status = ::pclose(pipe);
  return text;
}

bool no_output_left(const Fixture& f, const std::string& name) {
  for (const auto& entry : fsys::directory_iterator(f.dir)) {
    const std::string file = entry.path().filename().string();
    if (file.rfind(name, 0) == 0 || file.rfind(".fde-image-", 0) == 0) return false;
  }
  return true;
}

}  // namespace

TEST_CASE("an encrypted image opens with the bundle's key and decrypts to the input's filesystem", "[image]") {
  Fixture f;
  auto options = f.options("out.qcow2");
  options.recovery_passphrase_file = f.path("recovery.txt");
  Progress quiet(nullptr);
  auto report = build_image(options, quiet);
  REQUIRE(report);
  CHECK(report->root_partition == 2);

  struct stat st {};
  REQUIRE(::stat(options.bundle_path.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
  const Bytes bundle_bytes = read_all(options.bundle_path);
  rapidjson::Document bundle;
  bundle.Parse(reinterpret_cast<const char*>(bundle_bytes.data()), bundle_bytes.size());
  REQUIRE(bundle.IsObject());
  CHECK(std::string(bundle["format"].GetString()) == "virtcca-fde-enrollment/v1");
  CHECK(std::string(bundle["image_id"].GetString()) == "test-image");
  CHECK(std::string(bundle["luks_uuid"].GetString()) == report->luks_uuid);
  CHECK(bundle["reference"]["sets"][0]["kernel_cmdline"].GetString() ==
        std::string("/vmlinuz-6.1.0-test root=UUID=abc ro quiet ima_rot=tpm"));
  auto disk_key = base64_decode(bundle["disk_key"].GetString());
  REQUIRE(disk_key);
  REQUIRE(disk_key->size() == 32);

  // The output's root partition, as the guest sees it.
  REQUIRE(sh("qemu-img convert -f qcow2 -O raw " + f.path("out.qcow2") + " " + f.path("out.raw")) == 0);
  auto out = RawFile::open(f.path("out.raw"), RawFile::Mode::read_only);
  REQUIRE(out);
  auto table = read_gpt(*out);
  REQUIRE(table);
  const GptPartition* root = table->find(2);
  REQUIRE(root);
  CHECK(root->size() == 136ull << 20);
  REQUIRE(sh("dd if=" + f.path("out.raw") + " of=" + f.path("part.img") + " bs=512 skip=" +
             std::to_string(root->first_lba) + " count=" + std::to_string(root->last_lba - root->first_lba + 1) +
             " conv=sparse") == 0);

  crypt_device* cd = nullptr;
  crypt_metadata_locking(nullptr, 0);
  REQUIRE(crypt_init(&cd, f.path("part.img").c_str()) == 0);
  REQUIRE(crypt_load(cd, CRYPT_LUKS2, nullptr) == 0);
  CHECK(crypt_get_data_offset(cd) * 512 == 16u << 20);
  CHECK(crypt_get_sector_size(cd) == 4096);
  CHECK(std::string(crypt_get_cipher_mode(cd)) == "xts-plain64");
  const auto* key = reinterpret_cast<const char*>(disk_key->data());
  CHECK(crypt_activate_by_passphrase(cd, nullptr, CRYPT_ANY_SLOT, key, disk_key->size(), 0) == 0);
  CHECK(crypt_activate_by_passphrase(cd, nullptr, CRYPT_ANY_SLOT, recovery_text, std::strlen(recovery_text), 0) == 1);
  CHECK(crypt_activate_by_passphrase(cd, nullptr, CRYPT_ANY_SLOT, "wrong passphrase", 16, 0) < 0);
  Bytes volume_key(64);
  std::size_t volume_key_size = volume_key.size();
  REQUIRE(crypt_volume_key_get(cd, CRYPT_ANY_SLOT, reinterpret_cast<char*>(volume_key.data()), &volume_key_size, key,
                               disk_key->size()) >= 0);
  crypt_free(cd);

  // The measured agent configuration carries the check values of both keys, not the keys.
  {
    const Bytes initramfs = booted_initramfs(f.path("out.raw"));
    const auto entries = list_appended_cpio(initramfs);
    const auto conf = std::find_if(entries.begin(), entries.end(),
                                   [](const CpioEntry& e) { return e.path == "/etc/fde/agent.conf"; });
    REQUIRE(conf != entries.end());
    const std::string text(as_text(cpio_entry_content(initramfs, *conf)));
    INFO(text);
    CHECK(text.find("\nreleased_key_check = " +
                    hex_encode(crypto::key_check_value(crypto::KeyCheckKind::released_key, *disk_key)) + "\n") !=
          std::string::npos);
    CHECK(text.find("\nvolume_key_check = " +
                    hex_encode(crypto::key_check_value(crypto::KeyCheckKind::volume_key, volume_key)) + "\n") !=
          std::string::npos);
    CHECK(text.find(hex_encode(*disk_key)) == std::string::npos);
    CHECK(text.find(hex_encode(volume_key)) == std::string::npos);
  }

  // Decrypt the whole data segment and compare every used block with the input.
  Bytes part = read_all(f.path("part.img"));
  Bytes plain(part.begin() + (16 << 20), part.end());
  xts_decrypt(volume_key, plain.data(), plain.size(), 0);
  std::ofstream(f.path("dec.img"), std::ios::binary).write(reinterpret_cast<const char*>(plain.data()),
                                                           static_cast<std::streamsize>(plain.size()));
  const Bytes input = read_all(f.path("disk.raw"));
  auto input_fs = ExtFilesystem::open(f.path("disk.raw"), 34603008, false);
  REQUIRE(input_fs);
  auto used = input_fs->live_extents(4096);
  REQUIRE(used);
  std::size_t compared = 0;
  for (const auto& e : *used) {
    REQUIRE(std::equal(plain.begin() + static_cast<std::ptrdiff_t>(e.offset),
                       plain.begin() + static_cast<std::ptrdiff_t>(e.offset + e.length),
                       input.begin() + 34603008 + static_cast<std::ptrdiff_t>(e.offset)));
    compared += e.length;
  }
  CHECK(compared == report->encrypted_bytes);
  CHECK(sh("e2fsck -fn " + f.path("dec.img")) == 0);
  auto decrypted_fs = ExtFilesystem::open(f.path("dec.img"), 0, false);
  REQUIRE(decrypted_fs);
  CHECK(decrypted_fs->uuid() == input_fs->uuid());
  CHECK(decrypted_fs->label() == "rootfs");

  // The boot filesystem is still clean, and measure agrees with the build's references.
  REQUIRE(sh("dd if=" + f.path("out.raw") + " of=" + f.path("boot.img") + " bs=1M skip=1 count=32") == 0);
  CHECK(sh("e2fsck -fn " + f.path("boot.img")) == 0);
  MeasureRequest measure;
  measure.image = f.path("out.qcow2");
  measure.image_id = "test-image";
  measure.grub_efi_digests = options.grub_efi_digests;
  measure.firmware_rims = options.firmware_rims;
  auto values = measure_image(measure);
  REQUIRE(values);
  auto json = reference::serialize_reference_values(*values);
  REQUIRE(json);
  const Bytes written = read_all(options.reference_path);
  CHECK(*json == std::string(written.begin(), written.end()));
  auto inspected = inspect_image(f.path("out.qcow2"), std::nullopt, std::nullopt);
  REQUIRE(inspected);
  CHECK(inspected->find("/usr/sbin/fde-agent (") != std::string::npos);
  CHECK(inspected->find("/usr/libexec/fde-agent/fde-unlock (") != std::string::npos);
  CHECK(inspected->find("/lib/dracut/hooks/initqueue/settled/40-fde-agent-settled.sh (") != std::string::npos);
  CHECK(inspected->find("/usr/lib/systemd/system/fde-agent.service (") != std::string::npos);
  CHECK(inspected->find("/usr/lib/systemd/system/initrd.target.wants/fde-agent.service -> ../fde-agent.service") !=
        std::string::npos);
  CHECK(inspected->find("/etc/cmdline.d/90fde-agent.conf (") != std::string::npos);
  CHECK(inspected->find("/lib/dracut/hooks/pre-pivot/10-fde-verify-root.sh (") != std::string::npos);
  CHECK(inspected->find("keyslot 0: pbkdf2 (1000 iterations)") != std::string::npos);
}

TEST_CASE("hostile inputs fail with a clear message and leave no output behind", "[image]") {
  Fixture f;
  Progress quiet(nullptr);
  SECTION("a raw disk given as qcow2") {
    auto options = f.options("out.qcow2");
    options.input = f.path("disk.raw");
    auto report = build_image(options, quiet);
    REQUIRE_FALSE(report);
    CHECK(report.error().message.find("is not a qcow2 image") != std::string::npos);
  }
  SECTION("an image without a root partition") {
    REQUIRE(sh("cd " + f.dir + " && sgdisk -d 2 disk.raw && qemu-img convert -O qcow2 disk.raw noroot.qcow2") == 0);
    auto options = f.options("out.qcow2");
    options.input = f.path("noroot.qcow2");
    auto report = build_image(options, quiet);
    REQUIRE_FALSE(report);
    CHECK(report.error().message.find("no root partition") != std::string::npos);
    ::unlink(f.path("noroot.qcow2").c_str());
  }
  SECTION("an existing output is not overwritten") {
    std::ofstream(f.path("out.qcow2")) << "precious";
    auto report = build_image(f.options("out.qcow2"), quiet);
    REQUIRE_FALSE(report);
    CHECK(report.error().message.find("already exists") != std::string::npos);
    const Bytes kept = read_all(f.path("out.qcow2"));
    CHECK(std::string(kept.begin(), kept.end()) == "precious");
    ::unlink(f.path("out.qcow2").c_str());
  }
  SECTION("a full disk") {
    const std::string small = f.path("small");
    fsys::create_directory(small);
    if (sh("mount -t tmpfs -o size=24m tmpfs " + small) != 0) {
      WARN("cannot mount a tmpfs (not root): disk-full case skipped");
      return;
    }
    auto options = f.options("small/out.qcow2");
    auto report = build_image(options, quiet);
    const bool empty = fsys::is_empty(small);
    sh("umount " + small);
    REQUIRE_FALSE(report);
    CHECK(report.error().message.find("No space left on device") != std::string::npos);
    CHECK(empty);
  }
  CHECK(no_output_left(f, "out.qcow2"));
}

TEST_CASE("an interrupted run removes its partial output", "[image]") {
  Fixture f;
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    const std::string in = f.path("in.qcow2"), out = f.path("out.qcow2"), ca = f.path("ca.pem"),
                      rec = f.path("recovery.txt"), agent = f.path("agent");
    ::execl(FDE_IMAGE_BINARY, "fde-image", "build", "--input", in.c_str(), "--output", out.c_str(), "--image-id", "x",
            "--verifier", "https://v.example", "--verifier-ca", ca.c_str(), "--recovery-passphrase-file", rec.c_str(),
            "--grub-efi-digest", "1111111111111111111111111111111111111111111111111111111111111111", "--rim",
            "2222222222222222222222222222222222222222222222222222222222222222", "--agent", agent.c_str(), "--quiet",
            static_cast<char*>(nullptr));
    ::_exit(127);
  }
  ::usleep(400 * 1000);
  ::kill(pid, SIGTERM);
  int status = 0;
  REQUIRE(::waitpid(pid, &status, 0) == pid);
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 130);
  CHECK(no_output_left(f, "out.qcow2"));
}

namespace {

constexpr const char* admin_marker = "ADMIN-PRIVATE-KEY-MARKER";

// Runs a bash script in the fixture's directory (the script may hold any quotes).
int run_script(const Fixture& f, const std::string& script) {
  const std::string file = f.path("step.sh");
  std::ofstream(file) << "set -e\ncd '" << f.dir << "'\n" << script << "\n";
  const int status = std::system(("bash " + file + " >/dev/null 2>&1").c_str());
  ::unlink(file.c_str());
  return status;
}

bool holds(const Bytes& data, std::string_view text) {
  return std::search(data.begin(), data.end(), text.begin(), text.end()) != data.end();
}

// Whether any output of a build at `output` (qcow2 read as the guest sees it) holds `text`.
bool outputs_hold(const Fixture& f, const std::string& output, std::string_view text) {
  bool found = false;
  for (const auto& path : {output + ".enrollment.json", output + ".reference.json"})
    if (fsys::exists(path)) found = found || holds(read_all(path), text);
  if (fsys::exists(output)) {
    const std::string raw = f.path("seen.raw");
    REQUIRE(sh("qemu-img convert -f qcow2 -O raw " + output + " " + raw) == 0);
    found = found || holds(read_all(raw), text);
    ::unlink(raw.c_str());
  }
  return found;
}

// Progress lines of a build, so a test can tell whether the heavy work started.
struct ProgressLog {
  std::FILE* file = std::tmpfile();
  Progress progress{file};
  ~ProgressLog() { std::fclose(file); }
  std::string text() {
    std::fflush(file);
    std::rewind(file);
    std::string out;
    char buffer[4096];
    for (std::size_t n; (n = std::fread(buffer, 1, sizeof buffer, file)) > 0;) out.append(buffer, n);
    return out;
  }
};

// Changes the working directory for one test (relative names are what a protocol prefix needs).
struct WorkingDirectory {
  fsys::path saved = fsys::current_path();
  explicit WorkingDirectory(const std::string& dir) { fsys::current_path(dir); }
  ~WorkingDirectory() { fsys::current_path(saved); }
};

}  // namespace

TEST_CASE("a qcow2 input that reads another file of this machine is refused before any work and none of that "
          "file reaches an output",
          "[image][hostile]") {
  Fixture f;
  REQUIRE(run_script(f, "yes ADMIN-PRIVATE-KEY-MARKER | head -c 2M > adminkey\n"
                        "mkdir adminhome && cp adminkey adminhome/id_ed25519\n"
                        "cp in.qcow2 evil.qcow2") == 0);
  std::string refusal;
  SECTION("a raw backing file") {
    REQUIRE(run_script(f, "qemu-img rebase -u -F raw -b \"$PWD/adminkey\" evil.qcow2") == 0);
    refusal = "has a backing file (\"" + f.path("adminkey") + "\")";
  }
  SECTION("a directory as backing file (fat:DIR, vvfat)") {
    REQUIRE(run_script(f, "qemu-img rebase -u -F vvfat -b \"fat:$PWD/adminhome\" evil.qcow2") == 0);
    refusal = "has a backing file (\"fat:" + f.path("adminhome") + "\")";
  }
  SECTION("a json: backing file") {
    REQUIRE(run_script(f, "qemu-img rebase -u -F raw -b "
                          "\"json:{\\\"driver\\\":\\\"raw\\\",\\\"file\\\":{\\\"driver\\\":\\\"file\\\","
                          "\\\"filename\\\":\\\"$PWD/adminkey\\\"}}\" evil.qcow2") == 0);
    refusal = "has a backing file (\"json:{";
  }
  SECTION("an external data file") {
    // Written through qemu-img, so the data file holds the disk with the key in the gap
    // before partition 1, and the image's tables point there.
    REQUIRE(run_script(f, "rm evil.qcow2 && cp disk.raw source.raw\n"
                          "dd if=adminkey of=source.raw bs=64k seek=4 count=4 conv=notrunc\n"
                          "qemu-img create -f qcow2 -o data_file=\"$PWD/data.raw\" evil.qcow2 160M\n"
                          "qemu-img convert -n -f raw -O qcow2 source.raw evil.qcow2\nrm source.raw") == 0);
    refusal = "has an external data file (\"" + f.path("data.raw") + "\")";
  }
  auto options = f.options("out.qcow2");
  options.input = f.path("evil.qcow2");
  ProgressLog log;
  auto report = build_image(options, log.progress);
  CHECK_FALSE(outputs_hold(f, options.output, admin_marker));
  REQUIRE_FALSE(report);
  CHECK(report.error().message.find(refusal) != std::string::npos);
  CHECK(log.text().find("copying other partitions") == std::string::npos);
  CHECK(no_output_left(f, "out.qcow2"));

  // inspect and measure read the image the same way.
  auto inspected = inspect_image(options.input, std::nullopt, std::nullopt);
  CHECK_FALSE(inspected);
  if (!inspected) CHECK(inspected.error().message.find(refusal) != std::string::npos);
  MeasureRequest measure;
  measure.image = options.input;
  measure.grub_efi_digests = options.grub_efi_digests;
  measure.firmware_rims = options.firmware_rims;
  auto measured = measure_image(measure);
  CHECK_FALSE(measured);
  if (!measured) CHECK(measured.error().message.find(refusal) != std::string::npos);
}

TEST_CASE("file names with a qemu protocol prefix (fat:, nbd:, json:) are plain files", "[image][hostile]") {
  Fixture f;
  const std::string json_name = R"(json:{"driver":"raw","file":{"driver":"file","filename":"adminkey"}})";
  REQUIRE(run_script(f, "mkdir fat:in nbd:out && cp in.qcow2 fat:in/in.qcow2\n"
                        "yes ADMIN-PRIVATE-KEY-MARKER | head -c 2M > adminkey\n"
                        "cp in.qcow2 '" + json_name + "'") == 0);
  WorkingDirectory here(f.dir);
  auto options = f.options("out.qcow2");
  options.input = "fat:in/in.qcow2";
  options.output = "nbd:out/out.qcow2";
  options.bundle_path = options.output + ".enrollment.json";
  options.reference_path = options.output + ".reference.json";
  Progress quiet(nullptr);
  auto report = build_image(options, quiet);
  REQUIRE(report);
  CHECK(report->root_partition == 2);
  auto inspected = inspect_image(options.output, std::nullopt, std::nullopt);
  REQUIRE(inspected);
  CHECK(inspected->find("LUKS2 " + report->luks_uuid) != std::string::npos);

  // The json: name is a file holding the fixture's image, not a description of another file.
  auto listed = inspect_image(json_name, std::nullopt, std::string("nbd:out"));
  REQUIRE(listed);
  CHECK(listed->find("partition 2: start") != std::string::npos);
  MeasureRequest measure;
  measure.image = options.output;
  measure.grub_efi_digests = options.grub_efi_digests;
  measure.firmware_rims = options.firmware_rims;
  CHECK(measure_image(measure));
}

TEST_CASE("a name planted where an output is staged is neither written through nor removed, and the build stops "
          "before any work",
          "[image][hostile]") {
  Fixture f;
  std::ofstream(f.path("victim")) << "precious";
  auto options = f.options("out.qcow2");
  std::string planted;
  std::string target = f.path("victim");
  bool symlink = true;
  SECTION("a symlink at the image's .partial") { planted = options.output + ".partial"; }
  SECTION("a dangling symlink at the image's .partial") {
    planted = options.output + ".partial";
    target = f.path("created-elsewhere");
  }
  SECTION("a symlink at the enrollment bundle's .partial") { planted = options.bundle_path + ".partial"; }
  SECTION("a symlink at the reference values' .partial") { planted = options.reference_path + ".partial"; }
  SECTION("a symlink at a raw image's .partial") {
    options = f.options("out.raw");
    options.output_format = ImageFormat::raw;
    planted = options.output + ".partial";
  }
  SECTION("a file at the reference values' .partial") {
    planted = options.reference_path + ".partial";
    symlink = false;
  }
  if (symlink)
    REQUIRE(::symlink(target.c_str(), planted.c_str()) == 0);
  else
    std::ofstream(planted) << "mine";
  ProgressLog log;
  auto report = build_image(options, log.progress);

  const Bytes victim = read_all(f.path("victim"));
  CHECK(std::string(victim.begin(), victim.end()) == "precious");
  CHECK_FALSE(fsys::exists(f.path("created-elsewhere")));
  struct stat st {};
  REQUIRE(::lstat(planted.c_str(), &st) == 0);  // still there: not ours to remove
  if (symlink) {
    CHECK(S_ISLNK(st.st_mode));
  } else {
    const Bytes kept = read_all(planted);
    CHECK(std::string(kept.begin(), kept.end()) == "mine");
  }
  CHECK_FALSE(report);
  if (!report) CHECK(report.error().message.find(planted + " already exists") != std::string::npos);
  CHECK(log.text().find("copying other partitions") == std::string::npos);
  for (const auto& path : {options.output, options.bundle_path, options.reference_path}) {
    CHECK_FALSE(fsys::exists(fsys::symlink_status(path)));
    ::unlink(path.c_str());
  }
  ::unlink(planted.c_str());
  CHECK(no_output_left(f, "out."));
}

TEST_CASE("the appended archive holds the dracut runtime files byte for byte and no directory entry for /lib",
          "[image]") {
  Fixture f;
  auto options = f.options("out.raw");
  options.output_format = ImageFormat::raw;
  options.agent_platform = AgentPlatform::sim;
  Progress quiet(nullptr);
  auto report = build_image(options, quiet);
  REQUIRE(report);
  REQUIRE(report->initramfs_changed == std::vector<std::string>{"/initrd.img-6.1.0-test"});

  const Bytes initramfs = booted_initramfs(f.path("out.raw"));
  // The base initramfs is kept as it was; ours follows it.
  const Bytes base = read_all(f.path("boot/initrd.img-6.1.0-test"));
  REQUIRE(initramfs.size() > base.size());
  CHECK(std::equal(base.begin(), base.end(), initramfs.begin()));
  const auto entries = list_appended_cpio(initramfs);
  std::map<std::string, CpioEntry> by_path;
  for (const auto& e : entries) {
    CHECK(by_path.count(e.path) == 0);
    by_path[e.path] = e;
  }
  auto content_of = [&](const std::string& path) {
    REQUIRE(by_path.count(path) == 1);
    return to_bytes(cpio_entry_content(initramfs, by_path.at(path)));
  };
  auto mode_of = [&](const std::string& path) {
    REQUIRE(by_path.count(path) == 1);
    return by_path.at(path).mode;
  };
  const std::string dracut = FDE_DRACUT_SOURCE_DIR;
  const std::map<std::string, std::pair<std::string, std::uint32_t>> runtime_files = {
      {"/usr/libexec/fde-agent/fde-unlock", {dracut + "/fde-unlock.sh", 0100755}},
      {"/lib/dracut/hooks/initqueue/settled/40-fde-agent-settled.sh", {dracut + "/fde-agent-settled.sh", 0100755}},
      {"/lib/dracut/hooks/initqueue/finished/40-fde-agent-finished.sh", {dracut + "/fde-agent-finished.sh", 0100755}},
      {"/lib/dracut/hooks/pre-pivot/10-fde-verify-root.sh", {dracut + "/fde-verify-root.sh", 0100755}},
      {"/etc/cmdline.d/90fde-agent.conf", {dracut + "/fde-agent-cmdline.conf", 0100644}},
      {"/usr/lib/systemd/system/fde-agent.service", {dracut + "/fde-agent.service", 0100644}},
      {"/usr/sbin/fde-agent", {f.path("agent"), 0100755}},
      {"/etc/fde/verifier-ca.pem", {f.path("ca.pem"), 0100644}},
  };
  for (const auto& [path, source] : runtime_files) {
    CAPTURE(path);
    const Bytes expected = read_all(source.first);
    REQUIRE_FALSE(expected.empty());
    CHECK(content_of(path) == expected);
    CHECK(mode_of(path) == source.second);
  }
  const std::string wants = "/usr/lib/systemd/system/initrd.target.wants/fde-agent.service";
  CHECK(mode_of(wants) == 0120777);
  CHECK(as_text(content_of(wants)) == "../fde-agent.service");
  CHECK(mode_of("/usr/lib/systemd/system/initrd.target.wants") == 040755);
  // No shell on the host-controlled console once the volume is open.
  const std::string cmdline(as_text(content_of("/etc/cmdline.d/90fde-agent.conf")));
  CHECK(cmdline.find("rd.neednet=1") != std::string::npos);
  CHECK(cmdline.find("rd.shell=0") != std::string::npos);
  CHECK(cmdline.find("rd.emergency=poweroff") != std::string::npos);
  const Bytes config = content_of("/etc/fde/agent.conf");
  const std::string config_text(config.begin(), config.end());
  CHECK(config_text.find("\nluks_uuid = " + report->luks_uuid + "\n") != std::string::npos);
  CHECK(config_text.find("\nplatform = sim\n") != std::string::npos);

  // Nothing that could replace a usr-merge symlink: no entry for /lib, /bin, /sbin, ... at
  // all, and under /lib only the hook files, which rely on the base's directories.
  for (const char* refused : {"/lib", "/lib32", "/lib64", "/libx32", "/bin", "/sbin", "/usr/sbin"}) {
    CAPTURE(refused);
    CHECK(by_path.count(refused) == 0);
  }
  for (const auto& e : entries) {
    CAPTURE(e.path);
    if ((e.mode & 0170000) == 040000) CHECK(e.path.rfind("/lib/", 0) != 0);
    if (e.path.rfind("/lib/", 0) == 0 || e.path.rfind("/bin/", 0) == 0 || e.path.rfind("/sbin/", 0) == 0)
      CHECK((e.path == "/lib/dracut/hooks/initqueue/settled/40-fde-agent-settled.sh" ||
             e.path == "/lib/dracut/hooks/initqueue/finished/40-fde-agent-finished.sh" ||
             e.path == "/lib/dracut/hooks/pre-pivot/10-fde-verify-root.sh"));
  }
}

TEST_CASE("--agent-config gets fde-image's key check values appended and may not set them itself", "[image]") {
  Fixture f;
  Progress quiet(nullptr);
  auto options = f.options("out.raw");
  options.output_format = ImageFormat::raw;
  options.agent_config = f.path("agent.conf");
  SECTION("appended") {
    std::ofstream(f.path("agent.conf")) << "image_id = test-image\nfailure_policy = wait";  // no final newline
    REQUIRE(build_image(options, quiet));
    const Bytes initramfs = booted_initramfs(f.path("out.raw"));
    const auto entries = list_appended_cpio(initramfs);
    const auto conf = std::find_if(entries.begin(), entries.end(),
                                   [](const CpioEntry& e) { return e.path == "/etc/fde/agent.conf"; });
    REQUIRE(conf != entries.end());
    const std::string text(as_text(cpio_entry_content(initramfs, *conf)));
    CHECK(text.rfind("image_id = test-image\nfailure_policy = wait\n# check values", 0) == 0);
    CHECK(text.find("\nreleased_key_check = ") != std::string::npos);
    CHECK(text.find("\nvolume_key_check = ") != std::string::npos);
  }
  SECTION("refused when the file sets one") {
    std::ofstream(f.path("agent.conf")) << "image_id = test-image\n  volume_key_check = " << std::string(64, 'a') << "\n";
    auto report = build_image(options, quiet);
    REQUIRE_FALSE(report);
    CHECK(report.error().message == "--agent-config " + f.path("agent.conf") +
                                        ": sets volume_key_check, which fde-image writes itself (it alone knows the keys)");
    CHECK(no_output_left(f, "out.raw"));
  }
}

TEST_CASE("without --agent-platform the generated agent.conf names no platform (the agent's default, tsi)",
          "[image]") {
  Fixture f;
  auto options = f.options("out.raw");
  options.output_format = ImageFormat::raw;
  Progress quiet(nullptr);
  REQUIRE(build_image(options, quiet));
  const Bytes initramfs = booted_initramfs(f.path("out.raw"));
  const auto entries = list_appended_cpio(initramfs);
  const auto conf = std::find_if(entries.begin(), entries.end(),
                                 [](const CpioEntry& e) { return e.path == "/etc/fde/agent.conf"; });
  REQUIRE(conf != entries.end());
  const std::string text(as_text(cpio_entry_content(initramfs, *conf)));
  CHECK(text.find("image_id = test-image\n") != std::string::npos);
  CHECK(text.find("platform") == std::string::npos);
}

TEST_CASE("an overlay or option that would break the initramfs fails before any work and leaves no output",
          "[image]") {
  Fixture f;
  Progress quiet(nullptr);
  auto options = f.options("out.qcow2");
  const std::string overlay = f.path("overlay");
  SECTION("an overlay with a lib/ directory") {
    fsys::create_directories(overlay + "/lib/dracut/hooks/pre-pivot");
    std::ofstream(overlay + "/lib/dracut/hooks/pre-pivot/50-x.sh") << "true\n";
    options.initramfs_overlay = overlay;
    auto report = build_image(options, quiet);
    REQUIRE_FALSE(report);
    CHECK(report.error().code == Errc::unsupported);
    CHECK(report.error().message.find("--initramfs-overlay " + overlay) != std::string::npos);
    CHECK(report.error().message.find("refusing a directory entry for /lib") != std::string::npos);
  }
  SECTION("an overlay with a file in usr/sbin/") {
    fsys::create_directories(overlay + "/usr/sbin");
    std::ofstream(overlay + "/usr/sbin/tool") << "#!/bin/sh\n";
    options.initramfs_overlay = overlay;
    auto report = build_image(options, quiet);
    REQUIRE_FALSE(report);
    CHECK(report.error().message.find("refusing a directory entry for /usr/sbin") != std::string::npos);
  }
  SECTION("an overlay that replaces one of the agent's files") {
    fsys::create_directories(overlay + "/usr/libexec/fde-agent");
    std::ofstream(overlay + "/usr/libexec/fde-agent/fde-unlock") << "#!/bin/sh\nexit 0\n";
    options.initramfs_overlay = overlay;
    auto report = build_image(options, quiet);
    REQUIRE_FALSE(report);
    CHECK(report.error().message.find("/usr/libexec/fde-agent/fde-unlock is already in the archive") !=
          std::string::npos);
  }
  SECTION("--agent-platform together with --agent-config") {
    std::ofstream(f.path("agent.conf")) << "image_id = x\n";
    options.agent_config = f.path("agent.conf");
    options.agent_platform = AgentPlatform::sim;
    auto report = build_image(options, quiet);
    REQUIRE_FALSE(report);
    CHECK(report.error().code == Errc::invalid_argument);
    CHECK(report.error().message.find("--agent-platform") != std::string::npos);
  }
  CHECK(no_output_left(f, "out.qcow2"));
}

TEST_CASE("fde-image --help names each option once and --agent-platform takes only tsi or sim", "[image]") {
  int status = 0;
  const std::string help = output_of(std::string(FDE_IMAGE_BINARY) + " --help", status);
  CHECK(status == 0);
  CHECK(help.find("--agent-platform tsi|sim") != std::string::npos);
  CHECK(help.find("(repeatable) (repeatable)") == std::string::npos);
  CHECK(help.find("in order) (repeatable)") == std::string::npos);
  Fixture f;
  output_of(std::string(FDE_IMAGE_BINARY) + " build --input " + f.path("in.qcow2") + " --output " +
                f.path("out.qcow2") + " --image-id x --verifier https://v.example --verifier-ca " + f.path("ca.pem") +
                " --agent-platform realm --quiet 2>&1",
            status);
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 2);
  CHECK(no_output_left(f, "out.qcow2"));
}

namespace {

// fde-image build on the fixture with `extra` arguments; stdout and stderr in `text`.
int run_fde_image_build(const Fixture& f, const std::string& extra, std::string& text, double& seconds) {
  int status = 0;
  const auto start = std::chrono::steady_clock::now();
  text = output_of(std::string(FDE_IMAGE_BINARY) + " build --input " + f.path("in.qcow2") + " --output " +
                       f.path("out.qcow2") + " --verifier https://192.0.2.1:8443 --verifier-ca " + f.path("ca.pem") +
                       " --grub-efi-digest " + std::string(64, '1') + " " + extra + " 2>&1",
                   status);
  seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  REQUIRE(WIFEXITED(status));
  return WEXITSTATUS(status);
}

}  // namespace

TEST_CASE("fde-image build refuses a bad --image-id or --rim at once, before reading the input", "[image]") {
  Fixture f;
  const std::string rim = " --rim " + std::string(64, '2');
  const std::string agent = " --agent " + f.path("agent");
  std::string text;
  double seconds = 0;
  int code = 0;
  SECTION("an image id with a space and a slash") {
    code = run_fde_image_build(f, "--image-id 'web 01/x'" + rim + agent, text, seconds);
    CHECK(text.find("--image-id web 01/x: ") != std::string::npos);
  }
  SECTION("no --rim") {
    code = run_fde_image_build(f, "--image-id web-01" + agent, text, seconds);
    CHECK(text.find("--rim is required") != std::string::npos);
  }
  SECTION("a --rim of 63 hex digits") {
    code = run_fde_image_build(f, "--image-id web-01 --rim " + std::string(63, '2') + agent, text, seconds);
    CHECK(text.find("--rim: expected 64 hex digits") != std::string::npos);
  }
  SECTION("a verifier CA file that is not a certificate") {
    std::ofstream(f.path("ca.pem")) << "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n";
    code = run_fde_image_build(f, "--image-id web-01" + rim + agent, text, seconds);
    CHECK(text.find("--verifier-ca " + f.path("ca.pem") + ": ") != std::string::npos);
  }
  INFO(text);
  CHECK(code != 0);
  CHECK(seconds < 1.0);
  // Refused before the work: no progress line, and the admin reads no internal code name.
  CHECK(text.find("encrypting") == std::string::npos);
  CHECK(text.find("copying other partitions") == std::string::npos);
  CHECK(text.find("invalid_argument") == std::string::npos);
  CHECK(text.find("malformed:") == std::string::npos);
  CHECK(no_output_left(f, "out.qcow2"));
}

TEST_CASE("a build needs --agent, or --no-agent for a base initramfs that already holds the agent", "[image]") {
  Fixture f;
  Progress quiet(nullptr);
  SECTION("the library refuses neither and both") {
    auto options = f.options("out.qcow2");
    options.agent.reset();
    auto report = build_image(options, quiet);
    REQUIRE_FALSE(report);
    CHECK(report.error().code == Errc::invalid_argument);
    CHECK(report.error().message.find("--no-agent") != std::string::npos);
    options.agent = f.path("agent");
    options.without_agent = true;
    report = build_image(options, quiet);
    REQUIRE_FALSE(report);
    CHECK(report.error().message.find("contradict") != std::string::npos);
    CHECK(no_output_left(f, "out.qcow2"));
  }
  SECTION("the command refuses a build without either") {
    std::string text;
    double seconds = 0;
    CHECK(run_fde_image_build(f, "--image-id web-01 --rim " + std::string(64, '2'), text, seconds) == 2);
    CHECK(text.find("--agent PATH is required") != std::string::npos);
    CHECK(text.find("added the agent") == std::string::npos);
    CHECK(no_output_left(f, "out.qcow2"));
  }
  SECTION("--no-agent adds the configuration but no agent, and says so") {
    std::string text;
    double seconds = 0;
    const int code = run_fde_image_build(
        f, "--image-id web-01 --rim " + std::string(64, '2') + " --no-agent --output-format raw --quiet", text, seconds);
    INFO(text);
    REQUIRE(code == 0);
    CHECK(text.find("added the agent,") == std::string::npos);
    CHECK(text.find("no agent binary: --no-agent") != std::string::npos);
    const Bytes initramfs = booted_initramfs(f.path("out.qcow2"));
    const auto entries = list_appended_cpio(initramfs);
    CHECK(std::none_of(entries.begin(), entries.end(), [](const CpioEntry& e) { return e.path == "/usr/sbin/fde-agent"; }));
    CHECK(std::any_of(entries.begin(), entries.end(), [](const CpioEntry& e) { return e.path == "/etc/fde/agent.conf"; }));
  }
}

TEST_CASE("fde-image answers -h, build -h and --version", "[image]") {
  int status = 0;
  CHECK(output_of(std::string(FDE_IMAGE_BINARY) + " -h", status).find("--no-agent") != std::string::npos);
  CHECK(status == 0);
  CHECK(output_of(std::string(FDE_IMAGE_BINARY) + " build -h", status).find("usage: fde-image build") !=
        std::string::npos);
  CHECK(status == 0);
  CHECK(output_of(std::string(FDE_IMAGE_BINARY) + " --version", status).rfind("fde-image ", 0) == 0);
  CHECK(status == 0);
}

namespace {

// An image whose ESP (FAT32, made by mkfs.vfat and filled by mcopy) holds Debian's signed
// shim as the removable-media loader and its signed grub twice (beside shim and under a
// vendor directory), in front of the fixture's boot and root filesystems.
struct EspFixture {
  Fixture base;
  bool ready = false;
  static constexpr const char* shim = "/usr/lib/shim/shimx64.efi.signed";
  static constexpr const char* grub = "/usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed";
  EspFixture() {
    for (const char* needed : {"mkfs.vfat", "mcopy", "pesign", "osslsigncode"})
      if (sh(std::string("command -v ") + needed) != 0) {
        missing(needed);
        return;
      }
    for (const char* needed : {shim, grub})
      if (!fsys::exists(needed)) {
        missing(needed);
        return;
      }
    const std::string script = std::string(R"(set -e; cd DIR; export MTOOLS_SKIP_CHECK=1
truncate -s 64M esp.img
mkfs.vfat -F 32 -n ESP esp.img
mmd -i esp.img ::/EFI ::/EFI/BOOT ::/EFI/debian
mcopy -i esp.img SHIM ::/EFI/BOOT/BOOTX64.EFI
mcopy -i esp.img GRUB ::/EFI/BOOT/grubx64.efi
mcopy -i esp.img GRUB ::/EFI/debian/grubx64.efi
echo "configfile (hd0,gpt2)/grub/grub.cfg" > stub.cfg
mcopy -i esp.img stub.cfg ::/EFI/debian/grub.cfg
truncate -s 240M esp-disk.raw
sgdisk -n1:2048:+64M -t1:ef00 -c1:esp -n2:0:+32M -t2:8300 -c2:boot -n3:0:+120M -t3:8300 -c3:root esp-disk.raw
dd if=esp.img of=esp-disk.raw bs=1M seek=1 conv=notrunc,sparse
mke2fs -q -t ext4 -L boot -d boot -E offset=68157440 esp-disk.raw 32M
mke2fs -q -t ext4 -b 4096 -L rootfs -d root -E offset=101711872 esp-disk.raw 120M
qemu-img convert -O qcow2 esp-disk.raw esp-in.qcow2)");
    std::string text = script;
    text.replace(text.find("DIR"), 3, base.dir);
    text.replace(text.find("SHIM"), 4, shim);
    for (std::size_t at; (at = text.find("GRUB")) != std::string::npos;) text.replace(at, 4, grub);
    std::ofstream(base.path("make-esp.sh")) << text;
    REQUIRE(std::system(("bash " + base.path("make-esp.sh") + " >/dev/null 2>&1").c_str()) == 0);
    ready = true;
  }
  void missing(const std::string& what) {
    if (std::getenv("CI")) FAIL(what << " is missing (scripts/install-deps.sh installs it)");
    WARN(what << " is missing: ESP test skipped");
  }
};

std::string lowercase(std::string text) {
  for (auto& c : text) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return text;
}

// Independent Authenticode digests: pesign -h, and osslsigncode's "Calculated message digest".
std::string pesign_digest(const std::string& path) {
  int status = 0;
  const std::string out = output_of("pesign -h -i '" + path + "' 2>&1", status);
  const auto at = out.find("hash: ");
  return at == std::string::npos ? "pesign failed: " + out : out.substr(at + 6, 64);
}

std::string osslsigncode_digest(const std::string& path) {
  int status = 0;
  const std::string out = output_of("osslsigncode verify -in '" + path + "' 2>&1", status);
  const std::string label = "Calculated message digest";
  auto at = out.find(label);
  if (at == std::string::npos) return "osslsigncode failed: " + out;
  at = out.find(':', at);
  while (at < out.size() && (out[at] == ':' || out[at] == ' ')) ++at;
  return lowercase(out.substr(at, 64));
}

std::vector<std::string> grub_digests_of(const std::string& reference_json) {
  rapidjson::Document doc;
  doc.Parse(reference_json.c_str());
  REQUIRE(doc.IsObject());
  REQUIRE(doc["sets"].Size() == 1);
  std::vector<std::string> digests;
  for (const auto& d : doc["sets"][0]["grub"].GetArray()) digests.push_back(d.GetString());
  return digests;
}

}  // namespace

TEST_CASE("without a grub digest option the reference lists the ESP's boot applications as pesign and "
          "osslsigncode hash them", "[image][esp]") {
  EspFixture f;
  if (!f.ready) return;
  const std::string shim_digest = pesign_digest(EspFixture::shim);
  const std::string grub_digest = pesign_digest(EspFixture::grub);
  REQUIRE(shim_digest.size() == 64);
  REQUIRE(grub_digest.size() == 64);
  CHECK(osslsigncode_digest(EspFixture::grub) == grub_digest);  // a second tool agrees
  CHECK(shim_digest != grub_digest);

  auto options = f.base.options("out.qcow2");
  options.input = f.base.path("esp-in.qcow2");
  options.grub_efi_digests.clear();
  Progress quiet(nullptr);
  auto report = build_image(options, quiet);
  REQUIRE(report);
  CHECK(report->root_partition == 3);
  const Bytes written = read_all(options.reference_path);
  CHECK(grub_digests_of(std::string(written.begin(), written.end())) ==
        std::vector<std::string>{shim_digest, grub_digest});

  // measure reads the same ESP from the output image and agrees with the build.
  MeasureRequest measure;
  measure.image = f.base.path("out.qcow2");
  measure.image_id = "test-image";
  measure.firmware_rims = options.firmware_rims;
  auto values = measure_image(measure);
  REQUIRE(values);
  auto json = reference::serialize_reference_values(*values);
  REQUIRE(json);
  CHECK(*json == std::string(written.begin(), written.end()));

  // An explicit digest replaces the ESP's.
  measure.grub_efi_digests = {Bytes(32, 0x11)};
  auto given = measure_image(measure);
  REQUIRE(given);
  REQUIRE(given->sets.size() == 1);
  CHECK(given->sets[0].grub.efi_applications == std::vector<Bytes>{Bytes(32, 0x11)});

  auto inspected = inspect_image(f.base.path("out.qcow2"), std::nullopt, std::nullopt);
  REQUIRE(inspected);
  CHECK(inspected->find("EFI System Partition, FAT32") != std::string::npos);
  CHECK(inspected->find("/EFI/BOOT/BOOTX64.EFI: x86_64, " + std::to_string(fsys::file_size(EspFixture::shim)) +
                        " bytes, signed, Authenticode sha256 " + shim_digest) != std::string::npos);
  CHECK(inspected->find("/EFI/BOOT/grubx64.efi: x86_64") != std::string::npos);
  CHECK(inspected->find("/EFI/debian/grubx64.efi: x86_64, " + std::to_string(fsys::file_size(EspFixture::grub)) +
                        " bytes, signed, Authenticode sha256 " + grub_digest) != std::string::npos);

  // The command line prints the same digests.
  int status = 0;
  const std::string printed =
      output_of(std::string(FDE_IMAGE_BINARY) + " measure " + f.base.path("out.qcow2") + " --rim " +
                    std::string(64, '2') + " 2>&1",
                status);
  CAPTURE(printed);
  CHECK(status == 0);
  CHECK(printed.find(shim_digest) != std::string::npos);
  CHECK(printed.find(grub_digest) != std::string::npos);
}

TEST_CASE("without a grub digest option an image without an ESP fails before any work", "[image][esp]") {
  Fixture f;
  auto options = f.options("out.qcow2");
  options.grub_efi_digests.clear();
  Progress quiet(nullptr);
  auto report = build_image(options, quiet);
  REQUIRE_FALSE(report);
  CHECK(report.error().code == Errc::not_found);
  CHECK(report.error().message.find("has no EFI System Partition: pass --grub-efi-digest or --reference-in") !=
        std::string::npos);
  CHECK(no_output_left(f, "out.qcow2"));
  MeasureRequest measure;
  measure.image = f.path("in.qcow2");
  auto values = measure_image(measure);
  REQUIRE_FALSE(values);
  CHECK(values.error().message.find("no EFI System Partition") != std::string::npos);
}

TEST_CASE("kernel command lines that give the host's console a shell are refused", "[cmdline]") {
  const std::string base = "/vmlinuz-6.1.0 root=UUID=0b4e ro console=ttyS0 ip=dhcp";
  CHECK(check_kernel_cmdline(base));
  CHECK(check_kernel_cmdline(base + " rd.shell=0 rd.emergency=poweroff"));
  CHECK(check_kernel_cmdline(base + " rd.shell=no rd.emergency=reboot"));
  CHECK(check_kernel_cmdline(base + " rd.breakfast=1 initrd=/x"));  // other names that only start alike
  for (const std::string hostile : {"rd.break", "rd.break=pre-mount", "rd.shell", "rd.shell=1", "rdshell", "init=/bin/sh",
                                    "rdinit=/bin/sh", "rd.systemd.unit=emergency.target", "systemd.unit=rescue.target",
                                    "systemd.debug_shell", "rd.emergency=shell"}) {
    CAPTURE(hostile);
    const auto refused = check_kernel_cmdline(base + " " + hostile);
    REQUIRE_FALSE(refused);
    CHECK(refused.error().message.find("'" + hostile + "'") != std::string::npos);
  }
}

TEST_CASE("the shell check reads names as the kernel and systemd do, and knows the runlevel words", "[cmdline]") {
  const std::string base = "/vmlinuz-6.1.0 root=UUID=0b4e ro console=ttyS0";
  // '-' and '_' are one character to the kernel and to systemd; quotes are stripped.
  for (const std::string hostile :
       {"systemd.debug-shell", "systemd.debug-shell=1", "systemd.debug_shell=tty1", "rd.systemd.debug_shell",
        "rd.systemd.debug-shell=yes", "systemd.debug-shell=on", "\"init=/bin/sh\"", "systemd.unit=emergency.target",
        "rd.systemd.unit=rescue.target", "systemd.wants=debug-shell.service",
        "rd.systemd.wants=debug-shell.service", "systemd.mask=fde-agent.service", "rdbreak",
        // Runlevel words the kernel hands to init; systemd starts rescue or emergency mode.
        "emergency", "rescue", "single", "s", "S", "1", "-s", "-b", "rd.emergency", "rd.rescue",
        // Values that do not switch the shell off.
        "rd.shell=false", "rd.shell=yes", "systemd.debug_shell=yes", "rd.emergency=shell"}) {
    CAPTURE(hostile);
    const auto refused = check_kernel_cmdline(base + " " + hostile);
    REQUIRE_FALSE(refused);
    CHECK(refused.error().message.find("'" + hostile + "'") != std::string::npos);
  }
  // A tab separates arguments as a space does.
  CHECK_FALSE(check_kernel_cmdline(base + "\tsingle"));
  // Off values, and names that only look alike, pass.
  for (const std::string fine : {"rd.shell=off", "systemd.debug_shell=0", "systemd.debug-shell=false",
                                 "rd.systemd.debug_shell=no", "rd.emergency=halt", "single_user_mode=0", "s390",
                                 "10", "quiet", "systemd.show_status=1", "rd.luks=0"}) {
    CAPTURE(fine);
    CHECK(check_kernel_cmdline(base + " " + fine));
  }
}

namespace {

// The SDK's layout: an MBR table, partition 1 a FAT /boot that the firmware reads too
// (EFI/BOOT/BOOTX64.EFI, the vendor's efi/EFI/<vendor>/grub.cfg, kernels and initramfs),
// partition 2 the ext4 root. The booted kernel is a gzip-compressed PE image (arm64's
// Image.gz form; Debian's signed grub stands in, a PE image at hand); a second, newer kernel
// is there too, and --kernel-version picks the older one.
struct MbrFatFixture {
  Fixture base;
  bool ready = false;
  static constexpr const char* pe = "/usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed";
  MbrFatFixture() {
    for (const char* needed : {"mkfs.vfat", "mcopy", "python3", "pesign"})
      if (sh(std::string("command -v ") + needed) != 0) {
        missing(needed);
        return;
      }
    if (!fsys::exists(pe)) {
      missing(pe);
      return;
    }
    const std::string script = std::string(R"(set -e; cd DIR; export MTOOLS_SKIP_CHECK=1
gzip -c < PEFILE > Image.gz
truncate -s 48M fat.img
mkfs.vfat -F 32 -i 1a2b3c4d -n BOOT fat.img
mmd -i fat.img ::/EFI ::/EFI/BOOT ::/efi/EFI ::/efi/EFI/openEuler
mcopy -i fat.img PEFILE ::/EFI/BOOT/BOOTX64.EFI
printf "menuentry x {\n linux /vmlinuz-6.6.0-2 root=UUID=abc ro console=ttyAMA0\n initrd /initramfs-6.6.0-2.img\n}\n" > sdk.cfg
mcopy -i fat.img sdk.cfg ::/efi/EFI/openEuler/grub.cfg
mcopy -i fat.img Image.gz ::/vmlinuz-6.6.0-2
mcopy -i fat.img boot/initrd.img-6.1.0-test ::/initramfs-6.6.0-2.img
mcopy -i fat.img boot/vmlinuz-6.1.0-test ::/vmlinuz-6.6.0-10
mcopy -i fat.img boot/initrd.img-6.1.0-test ::/initramfs-6.6.0-10.img
truncate -s 200M mbr.raw
python3 -c "
import struct
mbr = bytearray(512)
mbr[446:462] = struct.pack('<B3sB3sII', 0, b'', 0x0c, b'', 2048, 98304)
mbr[462:478] = struct.pack('<B3sB3sII', 0, b'', 0x83, b'', 100352, 245760)
mbr[510:512] = b'\x55\xaa'
f = open('mbr.raw', 'r+b')
f.write(mbr)
f.close()
"
dd if=fat.img of=mbr.raw bs=1M seek=1 conv=notrunc,sparse
mke2fs -q -t ext4 -b 4096 -L rootfs -d root -E offset=51380224 mbr.raw 120M
qemu-img convert -O qcow2 mbr.raw mbr.qcow2)");
    std::string text = script;
    text.replace(text.find("DIR"), 3, base.dir);
    for (std::size_t at; (at = text.find("PEFILE")) != std::string::npos;) text.replace(at, 6, pe);
    std::ofstream(base.path("make-mbr.sh")) << text;
    REQUIRE(std::system(("bash " + base.path("make-mbr.sh") + " >/dev/null 2>&1").c_str()) == 0);
    ready = true;
  }
  void missing(const std::string& what) {
    if (std::getenv("CI")) FAIL(what << " is missing (scripts/install-deps.sh installs it)");
    WARN(what << " is missing: MBR + FAT /boot test skipped");
  }
};

std::string mtype(const std::string& image, const std::string& path) {
  int status = 0;
  return output_of("MTOOLS_SKIP_CHECK=1 mtype -i '" + image + "@@1M' '::" + path + "' 2>/dev/null", status);
}

std::string sha256_of(const std::string& text) {
  return hex_encode(crypto::sha256(as_bytes(text)));
}

}  // namespace

TEST_CASE("an MBR image with a FAT /boot: grub.cfg written there, references that match its files",
          "[image][mbr]") {
  MbrFatFixture f;
  if (!f.ready) return;
  auto options = f.base.options("out.raw");
  options.input = f.base.path("mbr.qcow2");
  options.output_format = ImageFormat::raw;
  options.kernel_version = "6.6.0-2";  // not the newest: chosen by the option
  Progress quiet(nullptr);
  auto report = build_image(options, quiet);
  REQUIRE(report);
  CHECK(report->root_partition == 2);
  CHECK(report->kernel_version == "6.6.0-2");
  CHECK(report->initramfs_changed == std::vector<std::string>{"/initramfs-6.6.0-2.img"});
  const std::string out = f.base.path("out.raw");

  // The MBR now gives the root partition 16 MiB more; partition 1 is where it was.
  auto disk = RawFile::open(out, RawFile::Mode::read_only);
  REQUIRE(disk);
  auto table = read_partition_table(*disk);
  REQUIRE(table);
  CHECK(table->mbr);
  REQUIRE(table->partitions.size() == 2);
  CHECK(table->partitions[0].first_lba == 2048);
  CHECK(table->partitions[0].mbr_type == 0x0c);
  CHECK(table->partitions[1].size() == (120ull + 16) << 20);
  disk->close();
  CHECK(sh("dd if=" + out + " of=" + f.base.path("fat-out.img") + " bs=1M skip=1 count=48 && fsck.vfat -n " +
           f.base.path("fat-out.img")) == 0);

  // The grub.cfg, read back with mtools: the straight-line form, the SDK's arguments kept.
  const std::string cfg = mtype(out, "/efi/EFI/openEuler/grub.cfg");
  CAPTURE(cfg);
  const std::vector<std::string> lines = [&] {
    std::vector<std::string> v;
    std::istringstream in(cfg);
    for (std::string line; std::getline(in, line);)
      if (!line.empty() && line[0] != '#') v.push_back(line);
    return v;
  }();
  REQUIRE(lines.size() == 6);
  CHECK(lines[0] == "set superusers=fde");
  CHECK(lines[1].rfind("password_pbkdf2 fde grub.pbkdf2.sha512.10000.", 0) == 0);
  CHECK(lines[2] == "search --no-floppy --fs-uuid --set=root 1a2b-3c4d");
  CHECK(lines[3] == "linux /vmlinuz-6.6.0-2 root=UUID=abc ro console=ttyAMA0 ima_rot=tpm");
  CHECK(lines[4] == "initrd /initramfs-6.6.0-2.img");
  CHECK(lines[5] == "boot");
  CHECK(cfg.find("menuentry") == std::string::npos);

  // The reference set, against the files as the output holds them.
  const Bytes written = read_all(options.reference_path);
  auto values = reference::parse_reference_values(as_text(written));
  REQUIRE(values);
  REQUIRE(values->sets.size() == 1);
  const auto& g = values->sets[0].grub;
  // Named by kernel and initramfs, so a rebuilt initramfs on the same kernel gets a new name.
  REQUIRE(g.initramfs);
  CHECK(values->sets[0].name == "kernel-6.6.0-2-initrd-" + hex_encode(*g.initramfs).substr(0, 8));
  CHECK(g.grub_commands == lines);
  CHECK(g.kernel_cmdline == std::string("/vmlinuz-6.6.0-2 root=UUID=abc ro console=ttyAMA0 ima_rot=tpm"));
  CHECK(g.grub_cfgs == std::vector<Bytes>{crypto::sha256(as_bytes(cfg))});
  CHECK(hex_encode(g.grub_cfgs[0]) == sha256_of(cfg));
  const Bytes pe_file = read_all(MbrFatFixture::pe);
  CHECK(g.kernel == crypto::sha256(pe_file));  // decompressed
  CHECK(g.kernel_alternatives == std::vector<Bytes>{crypto::sha256(read_all(f.base.path("Image.gz")))});
  REQUIRE(g.kernel_efi.size() == 1);
  CHECK(hex_encode(g.kernel_efi[0]) == pesign_digest(MbrFatFixture::pe));
  CHECK(g.efi_applications == options.grub_efi_digests);
  const std::string initramfs = mtype(out, "/initramfs-6.6.0-2.img");
  REQUIRE(g.initramfs);
  CHECK(*g.initramfs == crypto::sha256(as_bytes(initramfs)));
  const auto entries = list_appended_cpio(as_bytes(initramfs));
  CHECK(std::any_of(entries.begin(), entries.end(), [](const CpioEntry& e) { return e.path == "/etc/fde/agent.conf"; }));
  // The kernel not booted keeps its initramfs.
  CHECK(mtype(out, "/initramfs-6.6.0-10.img").size() == fsys::file_size(f.base.path("boot/initrd.img-6.1.0-test")));

  // measure reads the same values back; without a grub digest it finds BOOTX64.EFI on the FAT /boot.
  MeasureRequest measure;
  measure.image = out;
  measure.format = ImageFormat::raw;
  measure.image_id = "test-image";
  measure.grub_efi_digests = options.grub_efi_digests;
  measure.firmware_rims = options.firmware_rims;
  auto again = measure_image(measure);
  REQUIRE(again);
  auto json = reference::serialize_reference_values(*again);
  REQUIRE(json);
  CHECK(*json == as_text(written));
  measure.grub_efi_digests.clear();
  auto from_fat = measure_image(measure);
  REQUIRE(from_fat);
  CHECK(hex_encode(from_fat->sets[0].grub.efi_applications.at(0)) == pesign_digest(MbrFatFixture::pe));
}

TEST_CASE("build refuses kernel arguments it cannot write or that would break the REM[0] replay, before any work",
          "[image][cmdline]") {
  Fixture f;
  Progress quiet(nullptr);
  auto options = f.options("out.qcow2");
  SECTION("ima_rot=virtcca") {
    options.kernel_cmdline = "root=UUID=abc ro ima_rot=virtcca";
    auto report = build_image(options, quiet);
    REQUIRE_FALSE(report);
    CHECK(report.error().message.find("'ima_rot=virtcca'") != std::string::npos);
    CHECK(report.error().message.find("REM[0]") != std::string::npos);
  }
  SECTION("a quote") {
    options.kernel_cmdline = "root=UUID=abc dyndbg=\"file x +p\"";
    auto report = build_image(options, quiet);
    REQUIRE_FALSE(report);
    CHECK(report.error().code == Errc::invalid_argument);
  }
  SECTION("a path in front") {
    options.kernel_cmdline = "/vmlinuz-6.1.0-test root=UUID=abc";
    auto report = build_image(options, quiet);
    REQUIRE_FALSE(report);
    CHECK(report.error().message.find("give the arguments only") != std::string::npos);
  }
  SECTION("an unknown kernel version") {
    options.kernel_version = "9.9.9";
    auto report = build_image(options, quiet);
    REQUIRE_FALSE(report);
    CHECK(report.error().message.find("no such kernel") != std::string::npos);
  }
  CHECK(no_output_left(f, "out.qcow2"));
}

TEST_CASE("the straight-line grub.cfg reads back to its commands; other grub.cfg files are refused", "[cmdline]") {
  GrubConfigRequest request;
  auto hash = unusable_grub_password_hash();
  REQUIRE(hash);
  request.password_hash = *hash;
  request.fs_uuid = "0b4e9d1c-8f3a-4c2e-9a51-2f7d3e6b1a90";
  request.kernel_path = "/vmlinuz-6.6.0";
  request.kernel_arguments = "root=UUID=abc ro ima_rot=tpm";
  request.initramfs_path = "/initramfs-6.6.0.img";
  auto config = make_grub_config(request);
  REQUIRE(config);
  CHECK(config->kernel_cmdline == "/vmlinuz-6.6.0 root=UUID=abc ro ima_rot=tpm");
  CHECK(config->commands.back() == "boot");
  auto parsed = parse_grub_config(config->text);
  REQUIRE(parsed);
  CHECK(parsed->commands == config->commands);
  for (const std::string other : {"menuentry x {\n linux /vmlinuz a\n}\n", "linux /vmlinuz $args\nboot\n",
                                  "insmod gzio\nlinux /vmlinuz a\nboot\n", "linux /vmlinuz  a\nboot\n"}) {
    CAPTURE(other);
    CHECK_FALSE(parse_grub_config(other));
  }
  // grub-mkpasswd-pbkdf2's form; RFC 6070-style check of the PBKDF2-HMAC-SHA512 wiring.
  auto known = grub_password_hash(as_bytes("password"), as_bytes("salt"), 1);
  REQUIRE(known);
  CHECK(*known == "grub.pbkdf2.sha512.1.73616C74.867F70CF1ADE02CFF3752599A3A53DC4AF34C7A669815AE5D513554E1C8CF252"
                  "C02D470A285A0501BAD999BFE943C08F050235D7D68B1DA55E63F73B60A57FCE");
  CHECK(compare_versions("6.6.10", "6.6.9") > 0);
  CHECK(compare_versions("6.6.0-28.oe2403", "6.6.0-28.oe2403") == 0);
  CHECK(prepare_kernel_arguments("root=x  ro") == std::string("root=x ro ima_rot=tpm"));
  CHECK(prepare_kernel_arguments("root=x ima_rot=tpm") == std::string("root=x ima_rot=tpm"));
}

// ---- fde-image rebind --------------------------------------------------------------------

namespace {

// A second CA (another verifier's) in the fixture's directory.
std::string make_second_ca(const Fixture& f) {
  REQUIRE(sh("cd " + f.dir + " && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "
             "ca2.key -out ca2.pem -subj /CN=second-verifier -days 1") == 0);
  return f.path("ca2.pem");
}

RebindOptions rebind_options(const Fixture& f, const std::string& input, const std::string& output) {
  RebindOptions o;
  o.input = f.path(input);
  o.output = f.path(output);
  o.grub_efi_digests = {Bytes(32, 0x11)};
  o.firmware_rims = {Bytes(32, 0x22)};
  o.reference_path = o.output + ".reference.json";
  return o;
}

std::string sha256_file_range(const std::string& path, std::uint64_t offset, std::uint64_t length) {
  auto file = RawFile::open(path, RawFile::Mode::read_only);
  REQUIRE(file);
  Bytes range(static_cast<std::size_t>(length));
  REQUIRE(file->read_at(offset, range));
  return hex_encode(crypto::sha256(range));
}

std::string appended_file(ByteView initramfs, const std::string& path) {
  for (const auto& e : list_appended_cpio(initramfs))
    if (e.path == path) return std::string(as_text(cpio_entry_content(initramfs, e)));
  return "(missing)";
}

std::string first_set_name(const std::string& reference_path) {
  const Bytes json = read_all(reference_path);
  rapidjson::Document doc;
  doc.Parse(reinterpret_cast<const char*>(json.data()), json.size());
  REQUIRE(doc.IsObject());
  return doc["sets"][0]["name"].GetString();
}

}  // namespace

TEST_CASE("rebind changes the verifiers and CA in the initramfs and nothing of the LUKS2 partition", "[image][rebind]") {
  Fixture f;
  Progress quiet(nullptr);
  const auto build = f.options("out.qcow2");
  REQUIRE(build_image(build, quiet));
  const std::string ca2 = make_second_ca(f);
  auto options = rebind_options(f, "out.qcow2", "re.qcow2");
  options.verifiers = {"https://192.0.2.7:9443", "https://192.0.2.8:9443"};
  options.verifier_ca = ca2;
  auto report = rebind_image(options, quiet);
  REQUIRE(report);
  CHECK(report->image_id == "test-image");
  CHECK(report->old_verifiers == build.verifiers);
  CHECK(report->new_verifiers == options.verifiers);
  CHECK(report->ca_replaced);

  REQUIRE(sh("qemu-img convert -f qcow2 -O raw " + f.path("out.qcow2") + " " + f.path("a.raw")) == 0);
  REQUIRE(sh("qemu-img convert -f qcow2 -O raw " + f.path("re.qcow2") + " " + f.path("b.raw")) == 0);
  auto disk = RawFile::open(f.path("b.raw"), RawFile::Mode::read_only);
  REQUIRE(disk);
  auto table = read_gpt(*disk);
  REQUIRE(table);
  const GptPartition* boot = table->find(1);
  const GptPartition* root = table->find(2);
  REQUIRE((boot && root));
  const auto size = fsys::file_size(f.path("a.raw"));
  REQUIRE(fsys::file_size(f.path("b.raw")) == size);
  // The LUKS2 header and every encrypted byte (the whole root partition), the partition
  // table and everything in front of the boot partition, and the backup GPT: all unchanged.
  CHECK(sha256_file_range(f.path("a.raw"), root->offset(), root->size()) ==
        sha256_file_range(f.path("b.raw"), root->offset(), root->size()));
  CHECK(sha256_file_range(f.path("a.raw"), 0, boot->offset()) == sha256_file_range(f.path("b.raw"), 0, boot->offset()));
  const std::uint64_t tail = root->offset() + root->size();
  CHECK(sha256_file_range(f.path("a.raw"), tail, size - tail) == sha256_file_range(f.path("b.raw"), tail, size - tail));
  // Written as a qcow2 of the root's allocated clusters only: the same clusters hold data in
  // both images (the unused parts of the encrypted root stay unallocated), and the file is
  // valid for qemu.
  CHECK(sh("qemu-img check -q " + f.path("re.qcow2")) == 0);
  auto clusters = [&](const std::string& name) {
    auto file = RawFile::open(f.path(name), RawFile::Mode::read_only);
    REQUIRE(file);
    auto reader = Qcow2Reader::open(std::move(*file), name);
    REQUIRE(reader);
    auto ranges = (*reader)->data_ranges(root->offset(), root->size());
    REQUIRE(ranges);
    std::vector<std::pair<std::uint64_t, std::uint64_t>> list;
    for (const auto& r : *ranges) list.emplace_back(r.offset, r.length);
    return list;
  };
  const auto built_clusters = clusters("out.qcow2");
  CHECK(clusters("re.qcow2") == built_clusters);
  std::uint64_t allocated = 0;
  for (const auto& [offset, length] : built_clusters) allocated += length;
  CHECK(allocated < root->size() / 2);

  // The new agent.conf names the new verifiers; everything else in it, the key check values
  // included, is as build wrote it; the CA is the new one; the base initramfs is untouched.
  const Bytes before = booted_initramfs(f.path("a.raw"));
  const Bytes after = booted_initramfs(f.path("b.raw"));
  const std::string old_conf = appended_file(before, "/etc/fde/agent.conf");
  const std::string new_conf = appended_file(after, "/etc/fde/agent.conf");
  INFO(new_conf);
  CHECK(new_conf.find("verifier = https://192.0.2.7:9443\nverifier = https://192.0.2.8:9443\n") != std::string::npos);
  CHECK(new_conf.find("verifier.example") == std::string::npos);
  std::string expected = old_conf;
  expected.replace(expected.find("verifier = https://verifier.example:8443\n"), 41,
                   "verifier = https://192.0.2.7:9443\nverifier = https://192.0.2.8:9443\n");
  CHECK(new_conf == expected);
  CHECK(new_conf.find("released_key_check = ") != std::string::npos);
  const Bytes ca2_bytes = read_all(ca2);
  CHECK(appended_file(after, "/etc/fde/verifier-ca.pem") == std::string(ca2_bytes.begin(), ca2_bytes.end()));
  auto old_archive = find_appended_cpio(before);
  auto new_archive = find_appended_cpio(after);
  REQUIRE((old_archive && new_archive));
  CHECK(old_archive->offset == new_archive->offset);
  CHECK(std::equal(before.begin(), before.begin() + static_cast<std::ptrdiff_t>(old_archive->offset), after.begin()));
  CHECK(new_archive->entries.size() == old_archive->entries.size());
  REQUIRE(sh("dd if=" + f.path("b.raw") + " of=" + f.path("boot.img") + " bs=1M skip=1 count=32") == 0);
  CHECK(sh("e2fsck -fn " + f.path("boot.img")) == 0);

  // The new reference values are what measure reads from the rebound image; the build's no
  // longer match it (another initramfs digest, another set name).
  MeasureRequest measure;
  measure.image = f.path("re.qcow2");
  measure.image_id = "test-image";
  measure.grub_efi_digests = options.grub_efi_digests;
  measure.firmware_rims = options.firmware_rims;
  auto values = measure_image(measure);
  REQUIRE(values);
  auto json = reference::serialize_reference_values(*values);
  REQUIRE(json);
  const Bytes written = read_all(options.reference_path);
  CHECK(*json == std::string(written.begin(), written.end()));
  CHECK(values->sets[0].grub.initramfs == crypto::sha256(after));
  const Bytes old_written = read_all(build.reference_path);
  CHECK(std::string(old_written.begin(), old_written.end()) != *json);
  CHECK(first_set_name(build.reference_path) == report->old_set);
  CHECK(report->new_set == values->sets[0].name);
  CHECK(report->new_set != report->old_set);
  measure.image = f.path("out.qcow2");
  auto old_values = measure_image(measure);
  REQUIRE(old_values);
  CHECK(old_values->sets[0].grub.initramfs != values->sets[0].grub.initramfs);
  CHECK(old_values->sets[0].grub.kernel == values->sets[0].grub.kernel);
  CHECK(old_values->sets[0].grub.grub_commands == values->sets[0].grub.grub_commands);

  // Bound back to the build's verifier and CA, the initramfs is the build's byte for byte:
  // the archive is written again entry for entry, nothing else moves.
  auto back = rebind_options(f, "re.qcow2", "back.qcow2");
  back.verifiers = build.verifiers;
  back.verifier_ca = build.verifier_ca;
  REQUIRE(rebind_image(back, quiet));
  REQUIRE(sh("qemu-img convert -f qcow2 -O raw " + f.path("back.qcow2") + " " + f.path("c.raw")) == 0);
  CHECK(booted_initramfs(f.path("c.raw")) == before);
  CHECK(read_all(back.reference_path) == old_written);
}

TEST_CASE("rebind with only a new CA keeps the verifiers; with only URLs keeps the CA", "[image][rebind]") {
  Fixture f;
  Progress quiet(nullptr);
  REQUIRE(build_image(f.options("out.qcow2"), quiet));
  auto ca_only = rebind_options(f, "out.qcow2", "ca.qcow2");
  ca_only.verifier_ca = make_second_ca(f);
  auto report = rebind_image(ca_only, quiet);
  REQUIRE(report);
  CHECK(report->new_verifiers == report->old_verifiers);
  auto urls_only = rebind_options(f, "out.qcow2", "urls.qcow2");
  urls_only.verifiers = {"https://192.0.2.9:8443"};
  REQUIRE(rebind_image(urls_only, quiet));
  for (const char* name : {"out", "ca", "urls"})
    REQUIRE(sh("qemu-img convert -f qcow2 -O raw " + f.path(std::string(name) + ".qcow2") + " " +
               f.path(std::string(name) + ".raw")) == 0);
  const Bytes original = booted_initramfs(f.path("out.raw"));
  const Bytes with_ca = booted_initramfs(f.path("ca.raw"));
  const Bytes with_urls = booted_initramfs(f.path("urls.raw"));
  CHECK(appended_file(with_ca, "/etc/fde/agent.conf") == appended_file(original, "/etc/fde/agent.conf"));
  CHECK(appended_file(with_ca, "/etc/fde/verifier-ca.pem") != appended_file(original, "/etc/fde/verifier-ca.pem"));
  CHECK(appended_file(with_urls, "/etc/fde/verifier-ca.pem") == appended_file(original, "/etc/fde/verifier-ca.pem"));
  CHECK(appended_file(with_urls, "/etc/fde/agent.conf").find("verifier = https://192.0.2.9:8443\n") !=
        std::string::npos);
}

TEST_CASE("rebind refuses images fde-image did not build, backing files, planted names and bad arguments",
          "[image][rebind][hostile]") {
  Fixture f;
  Progress quiet(nullptr);
  REQUIRE(build_image(f.options("out.qcow2"), quiet));
  const std::string ca2 = make_second_ca(f);
  auto refused = [&](RebindOptions options, const std::string& message) {
    auto report = rebind_image(options, quiet);
    REQUIRE_FALSE(report);
    INFO(report.error().message);
    CHECK(report.error().message.find(message) != std::string::npos);
    CHECK_FALSE(fsys::exists(options.output));
    CHECK_FALSE(fsys::exists(options.output + ".partial"));
    CHECK_FALSE(fsys::exists(options.reference_path));
  };
  auto options = rebind_options(f, "out.qcow2", "re.qcow2");
  options.verifiers = {"https://192.0.2.7:9443"};
  options.verifier_ca = ca2;

  SECTION("the plaintext input: its grub.cfg is not fde-image's") {
    auto o = options;
    o.input = f.path("in.qcow2");
    refused(o, "rebind changes only images that fde-image build made");
  }
  SECTION("fde-image's grub.cfg but an initramfs without the agent configuration") {
    REQUIRE(sh("qemu-img convert -f qcow2 -O raw " + f.path("out.qcow2") + " " + f.path("plain.raw")) == 0);
    {
      auto boot = ExtFilesystem::open(f.path("plain.raw"), 1u << 20, true);
      REQUIRE(boot);
      REQUIRE(boot->replace_file("/initrd.img-6.1.0-test", read_all(f.path("boot/initrd.img-6.1.0-test"))));
      REQUIRE(boot->close());
    }
    REQUIRE(sh("qemu-img convert -O qcow2 " + f.path("plain.raw") + " " + f.path("plain.qcow2")) == 0);
    auto o = options;
    o.input = f.path("plain.qcow2");
    refused(o, "holds no fde-image agent configuration (/etc/fde/agent.conf)");
  }
  SECTION("something appended after fde-image's archive would be lost") {
    REQUIRE(sh("qemu-img convert -f qcow2 -O raw " + f.path("out.qcow2") + " " + f.path("more.raw")) == 0);
    {
      auto boot = ExtFilesystem::open(f.path("more.raw"), 1u << 20, true);
      REQUIRE(boot);
      REQUIRE(boot->append_to_file("/initrd.img-6.1.0-test", as_bytes(std::string("extra archive"))));
      REQUIRE(boot->close());
    }
    REQUIRE(sh("qemu-img convert -O qcow2 " + f.path("more.raw") + " " + f.path("more.qcow2")) == 0);
    auto o = options;
    o.input = f.path("more.qcow2");
    refused(o, "data follows the appended archive");
  }
  SECTION("a qcow2 with a backing file") {
    REQUIRE(sh("cd " + f.dir + " && qemu-img create -q -f qcow2 -b out.qcow2 -F qcow2 overlay.qcow2") == 0);
    auto o = options;
    o.input = f.path("overlay.qcow2");
    refused(o, "backing");
  }
  SECTION("a raw image given without --input-format raw") {
    REQUIRE(sh("qemu-img convert -f qcow2 -O raw " + f.path("out.qcow2") + " " + f.path("out.raw")) == 0);
    auto o = options;
    o.input = f.path("out.raw");
    refused(o, "is not a qcow2 image");
  }
  SECTION("a symlink planted at the output's staging name is neither written through nor removed") {
    std::ofstream(f.path("victim")) << "victim";
    REQUIRE(::symlink(f.path("victim").c_str(), f.path("re.qcow2.partial").c_str()) == 0);
    auto report = rebind_image(options, quiet);
    REQUIRE_FALSE(report);
    const Bytes victim = read_all(f.path("victim"));
    CHECK(std::string(victim.begin(), victim.end()) == "victim");
    CHECK(fsys::is_symlink(f.path("re.qcow2.partial")));
    CHECK_FALSE(fsys::exists(f.path("re.qcow2")));
    CHECK_FALSE(fsys::exists(options.reference_path));
  }
  SECTION("an existing output, a symlink included, is refused before any work") {
    REQUIRE(::symlink(f.path("victim").c_str(), f.path("re.qcow2").c_str()) == 0);
    ProgressLog log;
    auto report = rebind_image(options, log.progress);
    REQUIRE_FALSE(report);
    CHECK(report.error().message.find("already exists") != std::string::npos);
    CHECK(log.text().empty());
    CHECK_FALSE(fsys::exists(f.path("victim")));
  }
  SECTION("--in-place on a symlink is refused") {
    REQUIRE(::symlink(f.path("out.qcow2").c_str(), f.path("link.qcow2").c_str()) == 0);
    auto o = options;
    o.input = f.path("link.qcow2");
    o.output.clear();
    o.in_place = true;
    o.reference_path = f.path("link.reference.json");
    auto report = rebind_image(o, quiet);
    REQUIRE_FALSE(report);
    CHECK(report.error().message.find("not a regular file") != std::string::npos);
  }
  SECTION("arguments are checked before the image is read") {
    ProgressLog log;
    auto check = [&](RebindOptions o, const std::string& message) {
      auto report = rebind_image(o, log.progress);
      REQUIRE_FALSE(report);
      INFO(report.error().message);
      CHECK(report.error().code == Errc::invalid_argument);
      CHECK(report.error().message.find(message) != std::string::npos);
    };
    auto o = options;
    o.verifiers.clear();
    o.verifier_ca.reset();
    check(o, "nothing to change");
    o = options;
    o.verifiers = {"http://192.0.2.7:9443"};
    check(o, "must be an https:// URL");
    o = options;
    o.firmware_rims.clear();
    check(o, "--rim");
    o = options;
    o.in_place = true;
    check(o, "contradict");
    o = options;
    o.verifier_ca = f.path("agent");
    auto report = rebind_image(o, log.progress);
    REQUIRE_FALSE(report);
    CHECK(report.error().message.find("no PEM certificate") != std::string::npos);
    CHECK(log.text().empty());
    CHECK_FALSE(fsys::exists(options.output));
  }
}

TEST_CASE("rebind --in-place replaces the image only once everything succeeded", "[image][rebind]") {
  Fixture f;
  Progress quiet(nullptr);
  REQUIRE(build_image(f.options("out.qcow2"), quiet));
  REQUIRE(::chmod(f.path("out.qcow2").c_str(), 0640) == 0);
  struct stat before {};
  REQUIRE(::stat(f.path("out.qcow2").c_str(), &before) == 0);
  auto options = rebind_options(f, "out.qcow2", "");
  options.output.clear();
  options.in_place = true;
  options.verifiers = {"https://192.0.2.7:9443"};
  options.reference_path = f.path("out.qcow2.rebind.reference.json");
  REQUIRE(rebind_image(options, quiet));
  struct stat after {};
  REQUIRE(::stat(f.path("out.qcow2").c_str(), &after) == 0);
  CHECK(after.st_ino != before.st_ino);
  CHECK((after.st_mode & 0777) == 0640);
  CHECK_FALSE(fsys::exists(f.path("out.qcow2.partial")));
  REQUIRE(sh("qemu-img convert -f qcow2 -O raw " + f.path("out.qcow2") + " " + f.path("b.raw")) == 0);
  CHECK(appended_file(booted_initramfs(f.path("b.raw")), "/etc/fde/agent.conf").find("https://192.0.2.7:9443") !=
        std::string::npos);
  MeasureRequest measure;
  measure.image = f.path("out.qcow2");
  measure.image_id = "test-image";
  measure.grub_efi_digests = options.grub_efi_digests;
  measure.firmware_rims = options.firmware_rims;
  auto values = measure_image(measure);
  REQUIRE(values);
  auto json = reference::serialize_reference_values(*values);
  REQUIRE(json);
  const Bytes written = read_all(options.reference_path);
  CHECK(*json == std::string(written.begin(), written.end()));
  // A failing in-place rebind (nothing to change) leaves the image as it was.
  options.verifiers.clear();
  options.reference_path = f.path("again.json");
  CHECK_FALSE(rebind_image(options, quiet));
  struct stat untouched {};
  REQUIRE(::stat(f.path("out.qcow2").c_str(), &untouched) == 0);
  CHECK(untouched.st_ino == after.st_ino);
  // One that fails after the image was read (not fde-image's) leaves it and nothing else.
  const Bytes plain = read_all(f.path("in.qcow2"));
  options.input = f.path("in.qcow2");
  options.verifiers = {"https://192.0.2.7:9443"};
  auto refused = rebind_image(options, quiet);
  REQUIRE_FALSE(refused);
  CHECK(refused.error().message.find("rebind changes only images that fde-image build made") != std::string::npos);
  CHECK(read_all(f.path("in.qcow2")) == plain);
  CHECK_FALSE(fsys::exists(f.path("in.qcow2.partial")));
  CHECK_FALSE(fsys::exists(options.reference_path));
}

TEST_CASE("rebind of a raw image with a FAT /boot (MBR) writes the initramfs through mtools", "[image][rebind][mbr]") {
  MbrFatFixture f;
  if (!f.ready) return;
  auto build = f.base.options("out.raw");
  build.input = f.base.path("mbr.qcow2");
  build.output_format = ImageFormat::raw;
  build.kernel_version = "6.6.0-2";
  Progress quiet(nullptr);
  REQUIRE(build_image(build, quiet));
  auto options = rebind_options(f.base, "out.raw", "re.raw");
  options.input_format = ImageFormat::raw;
  options.verifiers = {"https://192.0.2.7:9443"};
  options.verifier_ca = make_second_ca(f.base);
  auto report = rebind_image(options, quiet);
  REQUIRE(report);
  CHECK(report->initramfs == "/initramfs-6.6.0-2.img (partition 1)");
  const std::string conf = [&] {
    const std::string initramfs = mtype(f.base.path("re.raw"), "/initramfs-6.6.0-2.img");
    return appended_file(as_bytes(initramfs), "/etc/fde/agent.conf");
  }();
  CHECK(conf.find("verifier = https://192.0.2.7:9443\n") != std::string::npos);
  // The root partition (LUKS2 header and data) is the build's, byte for byte.
  auto disk = RawFile::open(f.base.path("re.raw"), RawFile::Mode::read_only);
  REQUIRE(disk);
  auto table = read_partition_table(*disk);
  REQUIRE(table);
  const GptPartition* root = table->find(2);
  REQUIRE(root);
  CHECK(sha256_file_range(f.base.path("out.raw"), root->offset(), root->size()) ==
        sha256_file_range(f.base.path("re.raw"), root->offset(), root->size()));
  MeasureRequest measure;
  measure.image = f.base.path("re.raw");
  measure.format = ImageFormat::raw;
  measure.image_id = "test-image";
  measure.grub_efi_digests = options.grub_efi_digests;
  measure.firmware_rims = options.firmware_rims;
  auto values = measure_image(measure);
  REQUIRE(values);
  auto json = reference::serialize_reference_values(*values);
  REQUIRE(json);
  const Bytes written = read_all(options.reference_path);
  CHECK(*json == std::string(written.begin(), written.end()));
}

TEST_CASE("fde-image rebind says the enrollment stays and how to load the new reference set", "[image][rebind]") {
  Fixture f;
  Progress quiet(nullptr);
  REQUIRE(build_image(f.options("out.qcow2"), quiet));
  int status = 0;
  const std::string text =
      output_of(std::string(FDE_IMAGE_BINARY) + " rebind " + f.path("out.qcow2") + " --output " + f.path("re.qcow2") +
                    " --verifier https://192.0.2.7:9443 --rim " + std::string(64, '2') + " --grub-efi-digest " +
                    std::string(64, '1') + " --quiet 2>&1",
                status);
  INFO(text);
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  CHECK(text.find("no re-enrollment is needed") != std::string::npos);
  const std::string old_set = first_set_name(f.path("out.qcow2.reference.json"));
  CHECK(text.find("fde-admin add-reference test-image --file " + f.path("re.qcow2.reference.json") + " --replace " +
                  old_set) != std::string::npos);
  const std::string refused = output_of(std::string(FDE_IMAGE_BINARY) + " rebind " + f.path("in.qcow2") +
                                            " --output " + f.path("x.qcow2") + " --verifier https://192.0.2.7:9443 --rim " +
                                            std::string(64, '2') + " --quiet 2>&1",
                                        status);
  CHECK(WEXITSTATUS(status) == 1);
  CHECK(refused.find("fde-image rebind: ") == 0);
  CHECK(refused.find("rebind changes only images that fde-image build made") != std::string::npos);
  output_of(std::string(FDE_IMAGE_BINARY) + " rebind " + f.path("out.qcow2") + " --output " + f.path("y.qcow2") +
                " --rim " + std::string(64, '2') + " 2>&1",
            status);
  CHECK(WEXITSTATUS(status) == 2);
}

TEST_CASE("an image with holes and deleted data builds to a small output that unlocks and fscks clean", "[image]") {
  Fixture f;
  // 300 MiB root filesystem: 8 MiB file, a 100 MiB sparse file with 1 MiB of data, and a
  // deleted 48 MiB file whose blocks are free but still hold data in the input.
  REQUIRE(run_script(f, R"(truncate -s 400M sparse.raw
sgdisk -n1:2048:+32M -t1:8300 -n2:0:+300M -t2:8300 sparse.raw
mkdir -p sboot/grub sroot/etc sroot/data
cp boot/vmlinuz-6.1.0-test boot/initrd.img-6.1.0-test sboot/
cp boot/grub/grub.cfg sboot/grub/
cp root/etc/fstab sroot/etc/
head -c 8M /dev/urandom > sroot/data/kept
truncate -s 100M sroot/data/sparse
head -c 1M /dev/urandom | dd of=sroot/data/sparse bs=1M seek=50 conv=notrunc
head -c 48M /dev/urandom > sroot/data/junk
mke2fs -q -t ext4 -L boot -d sboot -E offset=1048576 sparse.raw 32M
mke2fs -q -t ext4 -b 4096 -L sparse-root -d sroot sroot.img 300M
debugfs -w -R "rm /data/junk" sroot.img
dd if=sroot.img of=sparse.raw bs=1M seek=33 conv=sparse,notrunc
qemu-img convert -O qcow2 sparse.raw sparse.qcow2)") == 0);
  auto options = f.options("sparse-out.qcow2");
  options.input = f.path("sparse.qcow2");
  Progress quiet(nullptr);
  auto report = build_image(options, quiet);
  REQUIRE(report);
  CHECK(sh("qemu-img check -q " + f.path("sparse-out.qcow2")) == 0);

  struct stat in_st {}, out_st {};
  REQUIRE(::stat(f.path("sparse.qcow2").c_str(), &in_st) == 0);
  REQUIRE(::stat(options.output.c_str(), &out_st) == 0);
  const std::uint64_t in_bytes = static_cast<std::uint64_t>(in_st.st_blocks) * 512;
  const std::uint64_t out_bytes = static_cast<std::uint64_t>(out_st.st_blocks) * 512;
  INFO("allocated: input " << in_bytes << " B, output " << out_bytes << " B");
  // The deleted file's 48 MiB and the holes stay out; the live data (9 MiB), the metadata
  // and the keyslots come in.
  CHECK(out_bytes + (32u << 20) < in_bytes);
  CHECK(report->encrypted_bytes < (40u << 20));

  // Unlock with libcryptsetup and the bundle's key, decrypt with the test's own XTS.
  const Bytes bundle_bytes = read_all(options.bundle_path);
  rapidjson::Document bundle;
  bundle.Parse(reinterpret_cast<const char*>(bundle_bytes.data()), bundle_bytes.size());
  REQUIRE(bundle.IsObject());
  auto disk_key = base64_decode(bundle["disk_key"].GetString());
  REQUIRE(disk_key);
  REQUIRE(sh("qemu-img convert -f qcow2 -O raw " + options.output + " " + f.path("sparse-out.raw")) == 0);
  auto out = RawFile::open(f.path("sparse-out.raw"), RawFile::Mode::read_only);
  REQUIRE(out);
  auto table = read_gpt(*out);
  REQUIRE(table);
  const GptPartition* root = table->find(2);
  REQUIRE(root);
  REQUIRE(sh("dd if=" + f.path("sparse-out.raw") + " of=" + f.path("spart.img") + " bs=512 skip=" +
             std::to_string(root->first_lba) + " count=" + std::to_string(root->last_lba - root->first_lba + 1) +
             " conv=sparse") == 0);
  crypt_device* cd = nullptr;
  crypt_metadata_locking(nullptr, 0);
  REQUIRE(crypt_init(&cd, f.path("spart.img").c_str()) == 0);
  REQUIRE(crypt_load(cd, CRYPT_LUKS2, nullptr) == 0);
  Bytes volume_key(64);
  std::size_t volume_key_size = volume_key.size();
  REQUIRE(crypt_volume_key_get(cd, CRYPT_ANY_SLOT, reinterpret_cast<char*>(volume_key.data()), &volume_key_size,
                               reinterpret_cast<const char*>(disk_key->data()), disk_key->size()) >= 0);
  crypt_free(cd);
  Bytes part = read_all(f.path("spart.img"));
  Bytes plain(part.begin() + (16 << 20), part.end());
  xts_decrypt(volume_key, plain.data(), plain.size(), 0);
  std::ofstream(f.path("sdec.img"), std::ios::binary)
      .write(reinterpret_cast<const char*>(plain.data()), static_cast<std::streamsize>(plain.size()));
  CHECK(sh("e2fsck -fn " + f.path("sdec.img")) == 0);
  CHECK(run_script(f, "cmp <(debugfs -R \"cat /data/kept\" sdec.img) sroot/data/kept") == 0);
  CHECK(run_script(f, "cmp <(debugfs -R \"cat /data/sparse\" sdec.img) sroot/data/sparse") == 0);
  // The filesystem mounts and takes writes: e2fsck after a debugfs write (new inode and blocks
  // in the formerly unused areas) is still clean.
  CHECK(run_script(f, "head -c 3M /dev/urandom > new.bin && debugfs -w -R \"write new.bin /data/new\" sdec.img && "
                      "cmp <(debugfs -R \"cat /data/new\" sdec.img) new.bin") == 0);
  CHECK(sh("e2fsck -fn " + f.path("sdec.img")) == 0);
}
