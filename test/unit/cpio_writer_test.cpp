// The newc archive fde-image appends to an initramfs: what it refuses to emit (directory
// entries that would replace usr-merge symlinks), parent handling, the reader, and that GNU
// cpio reads the archive back to the same files.
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "image-builder/initramfs/cpio_writer.hpp"

using namespace fde;
using namespace fde::image;
namespace fsys = std::filesystem;

namespace {

const std::vector<std::string> refused_directories = {"/lib", "/lib32", "/lib64", "/libx32", "/bin", "/sbin", "/usr/sbin"};

ByteView text(const std::string& s) { return as_bytes(s); }

std::vector<CpioEntry> entries_of(CpioWriter& cpio) {
  static Bytes archive;  // list_appended_cpio's offsets point into it
  archive = cpio.finish();
  return list_appended_cpio(archive);
}

}  // namespace

TEST_CASE("a directory entry for /lib, /bin, /sbin or another usr-merge symlink is refused and adds nothing",
          "[cpio]") {
  for (const auto& path : refused_directories) {
    CAPTURE(path);
    CHECK(is_usr_merge_symlink(path));
    CpioWriter cpio;
    for (const auto& spelling : std::vector<std::string>{path, path.substr(1), path + "/", "/" + path}) {
      auto added = cpio.add_directory(spelling);
      REQUIRE_FALSE(added);
      CHECK(added.error().code == Errc::unsupported);
      CHECK(added.error().message.find("symlink") != std::string::npos);
    }
    CHECK(cpio.paths().empty());
  }
  for (const char* fine : {"/usr", "/usr/lib", "/usr/lib64", "/usr/bin", "/library", "/etc/lib", "/lib/x"})
    CHECK_FALSE(is_usr_merge_symlink(fine));
}

TEST_CASE("a file or symlink below /lib with automatic parents is refused, because /lib would be a parent entry",
          "[cpio]") {
  CpioWriter cpio;
  REQUIRE(cpio.add_file("/etc/fde/agent.conf", text("x"), 0644));
  const auto before = cpio.paths();
  auto file = cpio.add_file("/lib/dracut/hooks/initqueue/settled/40-x.sh", text("x"), 0755);
  REQUIRE_FALSE(file);
  CHECK(file.error().message.find("refusing a directory entry for /lib") != std::string::npos);
  CHECK_FALSE(cpio.add_symlink("/sbin/init", "../usr/lib/systemd/systemd"));
  CHECK_FALSE(cpio.add_file("/usr/sbin/fde-agent", text("x"), 0755));
  CHECK_FALSE(cpio.add_file("/bin/sh", text("x"), 0755));
  CHECK(cpio.paths() == before);
  for (const auto& entry : entries_of(cpio)) CHECK(entry.path.rfind("/lib", 0) != 0);
}

TEST_CASE("a file added without parent entries is the only entry, so lookup follows the base's symlinks", "[cpio]") {
  CpioWriter cpio;
  const std::string hook = "#!/bin/sh\necho settled\n";
  REQUIRE(cpio.add_file("/lib/dracut/hooks/initqueue/settled/40-fde-agent-settled.sh", text(hook), 0755,
                        Parents::assume_present));
  REQUIRE(cpio.add_file("/usr/sbin/fde-agent", text("agent"), 0755, Parents::assume_present));
  CHECK(cpio.paths() ==
        std::vector<std::string>{"/lib/dracut/hooks/initqueue/settled/40-fde-agent-settled.sh", "/usr/sbin/fde-agent"});
  const Bytes archive = cpio.finish();
  const auto entries = list_appended_cpio(archive);
  REQUIRE(entries.size() == 2);
  CHECK(entries[0].path == "/lib/dracut/hooks/initqueue/settled/40-fde-agent-settled.sh");
  CHECK(entries[0].mode == 0100755);
  CHECK(as_text(cpio_entry_content(archive, entries[0])) == hook);
  CHECK(as_text(cpio_entry_content(archive, entries[1])) == "agent");
}

TEST_CASE("parent directories are added once, before their first entry, and refused paths fail cleanly", "[cpio]") {
  CpioWriter cpio;
  REQUIRE(cpio.add_file("/etc/fde/agent.conf", text("a"), 0644));
  REQUIRE(cpio.add_file("etc/fde/verifier-ca.pem", text("b"), 0644));
  REQUIRE(cpio.add_symlink("/usr/lib/systemd/system/initrd.target.wants/fde-agent.service", "../fde-agent.service"));
  REQUIRE(cpio.add_directory("/etc/fde"));  // exists: no second entry
  CHECK(cpio.paths() == std::vector<std::string>{"/etc", "/etc/fde", "/etc/fde/agent.conf", "/etc/fde/verifier-ca.pem",
                                                 "/usr", "/usr/lib", "/usr/lib/systemd", "/usr/lib/systemd/system",
                                                 "/usr/lib/systemd/system/initrd.target.wants",
                                                 "/usr/lib/systemd/system/initrd.target.wants/fde-agent.service"});
  SECTION("the same path twice") {
    auto again = cpio.add_file("/etc/fde/agent.conf", text("c"), 0644);
    REQUIRE_FALSE(again);
    CHECK(again.error().message.find("already in the archive") != std::string::npos);
    CHECK_FALSE(cpio.add_directory("/etc/fde/agent.conf"));
  }
  SECTION("a file below a file") { CHECK_FALSE(cpio.add_file("/etc/fde/agent.conf/x", text("c"), 0644)); }
  SECTION("'.', '..' and empty components, the empty path and the trailer's name") {
    for (const char* bad : {"/etc/../lib/x", "/etc/./x", "/etc//x", "", "/", "TRAILER!!!"}) {
      CAPTURE(bad);
      CHECK_FALSE(cpio.add_file(bad, text("c"), 0644));
    }
    CHECK_FALSE(cpio.add_symlink("/etc/empty-target", ""));
  }
  CHECK(cpio.paths().size() == 10);
  const Bytes archive = cpio.finish();
  const auto entries = list_appended_cpio(archive);
  REQUIRE(entries.size() == 10);
  CHECK(entries[0].mode == 040755);
  CHECK(entries[9].mode == 0120777);
  CHECK(as_text(cpio_entry_content(archive, entries[9])) == "../fde-agent.service");
}

TEST_CASE("the reader finds the archive appended after a compressed one", "[cpio]") {
  CpioWriter cpio;
  REQUIRE(cpio.add_file("/etc/fde/agent.conf", text("image_id = x\n"), 0644));
  const Bytes ours = cpio.finish();
  // A stand-in for a compressed initramfs that happens to contain the newc magic.
  Bytes data = to_bytes(text(std::string("\x1f\x8b\x08\x00") + "0707010000garbage070701" + std::string(13, 'z')));
  while (data.size() % 4 != 0) data.push_back(0);
  const std::size_t start = data.size();
  data.insert(data.end(), ours.begin(), ours.end());
  const auto entries = list_appended_cpio(data);
  REQUIRE(entries.size() == 3);
  CHECK(entries[2].path == "/etc/fde/agent.conf");
  CHECK(entries[2].data_offset > start);
  CHECK(as_text(cpio_entry_content(data, entries[2])) == "image_id = x\n");
  CHECK(list_appended_cpio(text("no archive here")).empty());
  const Bytes truncated(ours.begin(), ours.begin() + 150);
  CHECK(list_appended_cpio(truncated).empty());
}

TEST_CASE("GNU cpio reads the archive back to the same files, modes and symlink", "[cpio]") {
  CpioWriter cpio;
  const std::string unlock = "#!/bin/sh\nexit 0\n";
  REQUIRE(cpio.add_file("/usr/libexec/fde-agent/fde-unlock", text(unlock), 0755));
  REQUIRE(cpio.add_file("/etc/cmdline.d/90fde-agent.conf", text("rd.neednet=1\n"), 0644));
  REQUIRE(cpio.add_symlink("/usr/lib/systemd/system/initrd.target.wants/fde-agent.service", "../fde-agent.service"));
  const Bytes archive = cpio.finish();
  CHECK(archive.size() % 512 == 0);

  char pattern[] = "/tmp/fde-cpio-test-XXXXXX";
  const std::string dir = ::mkdtemp(pattern);
  std::ofstream(dir + "/a.cpio", std::ios::binary)
      .write(reinterpret_cast<const char*>(archive.data()), static_cast<std::streamsize>(archive.size()));
  const int status = std::system(("cd " + dir + " && mkdir out && cd out && umask 022 && "
                                  "cpio -i --quiet --make-directories --no-absolute-filenames < ../a.cpio")
                                     .c_str());
  const std::string out = dir + "/out";
  CHECK(status == 0);
  std::ifstream in(out + "/usr/libexec/fde-agent/fde-unlock", std::ios::binary);
  CHECK(std::string(std::istreambuf_iterator<char>(in), {}) == unlock);
  struct stat st {};
  REQUIRE(::stat((out + "/usr/libexec/fde-agent/fde-unlock").c_str(), &st) == 0);
  CHECK((st.st_mode & 07777) == 0755);
  REQUIRE(::stat((out + "/etc/cmdline.d/90fde-agent.conf").c_str(), &st) == 0);
  CHECK((st.st_mode & 07777) == 0644);
  const auto link = out + "/usr/lib/systemd/system/initrd.target.wants/fde-agent.service";
  CHECK(fsys::is_symlink(link));
  CHECK(fsys::read_symlink(link) == "../fde-agent.service");
  fsys::remove_all(dir);
}

namespace {
Bytes bytes_of(const std::string& s) { return Bytes(s.begin(), s.end()); }
}  // namespace

TEST_CASE("rewrite_appended_cpio writes the archive again entry for entry, with only the named files exchanged",
          "[cpio][rebind]") {
  CpioWriter cpio;
  REQUIRE(cpio.add_file("/usr/sbin/fde-agent", text("agent"), 0755, Parents::assume_present));
  REQUIRE(cpio.add_file("/etc/fde/agent.conf", text("verifier = https://192.0.2.1:8443\n"), 0644));
  REQUIRE(cpio.add_file("/etc/fde/verifier-ca.pem", text("CA ONE"), 0644));
  REQUIRE(cpio.add_file("/lib/dracut/hooks/pre-pivot/10-x.sh", text("#!/bin/sh\n"), 0755, Parents::assume_present));
  REQUIRE(cpio.add_symlink("/usr/lib/systemd/system/initrd.target.wants/a.service", "../a.service"));
  REQUIRE(cpio.add_directory("/etc/extra", 0700));
  const Bytes archive = cpio.finish();
  // A base initramfs (here: bytes that are no cpio) padded to 4, then the archive.
  const std::string base = "compressed base!";
  Bytes initramfs(base.begin(), base.end());
  initramfs.insert(initramfs.end(), archive.begin(), archive.end());

  auto found = find_appended_cpio(initramfs);
  REQUIRE(found);
  CHECK(found->offset == 16);
  CHECK(found->entries.size() == list_appended_cpio(initramfs).size());
  auto same = rewrite_appended_cpio(initramfs, *found, {});
  REQUIRE(same);
  CHECK(*same == initramfs);  // nothing replaced: byte for byte

  auto changed = rewrite_appended_cpio(initramfs, *found, {{"/etc/fde/verifier-ca.pem", bytes_of("CA TWO, longer")}});
  REQUIRE(changed);
  CHECK(std::equal(initramfs.begin(), initramfs.begin() + 16, changed->begin()));
  const auto entries = list_appended_cpio(*changed);
  REQUIRE(entries.size() == found->entries.size());
  for (std::size_t i = 0; i < entries.size(); ++i) {
    CHECK(entries[i].path == found->entries[i].path);
    CHECK(entries[i].mode == found->entries[i].mode);
    const std::string content(as_text(cpio_entry_content(*changed, entries[i])));
    if (entries[i].path == "/etc/fde/verifier-ca.pem")
      CHECK(content == "CA TWO, longer");
    else
      CHECK(content == std::string(as_text(cpio_entry_content(initramfs, found->entries[i]))));
  }

  // Refused: a directory or a path not in the archive as a replacement, data after the archive.
  CHECK_FALSE(rewrite_appended_cpio(initramfs, *found, {{"/etc/extra", bytes_of("x")}}));
  CHECK_FALSE(rewrite_appended_cpio(initramfs, *found, {{"/etc/fde/other", bytes_of("x")}}));
  Bytes more = initramfs;
  more.push_back('x');
  auto after = find_appended_cpio(more);
  REQUIRE(after);
  auto refused = rewrite_appended_cpio(more, *after, {});
  REQUIRE_FALSE(refused);
  CHECK(refused.error().message.find("data follows the appended archive") != std::string::npos);
}
