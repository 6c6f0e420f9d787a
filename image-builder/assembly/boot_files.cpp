// Boot file discovery, the straight-line grub.cfg, and the measurements of the boot it runs.
#include "image-builder/assembly/boot_files.hpp"

#include <zlib.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <sstream>

#include <openssl/evp.h>

#include "common/crypto/hash.hpp"
#include "common/crypto/random.hpp"
#include "common/util/secret_bytes.hpp"
#include "common/util/words.hpp"
#include "image-builder/pe/authenticode.hpp"

namespace fde::image {
namespace {

constexpr std::uint64_t max_boot_file = 512ull << 20;   // kernel or initramfs
constexpr std::uint64_t max_kernel_unpacked = 1ull << 30;
constexpr std::uint64_t max_grub_cfg = 4ull << 20;
// grub-mkpasswd-pbkdf2's default; the password is random, so the count only has to be valid.
constexpr unsigned grub_pbkdf2_iterations = 10000;

bool starts_with(std::string_view s, std::string_view p) { return s.substr(0, p.size()) == p; }

std::string base_name(const std::string& path) {
  const auto slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

// grub's word splitting, enough for linux lines: whitespace separates, quotes group.
std::vector<std::string> split_words(std::string_view line) {
  std::vector<std::string> words;
  std::string word;
  bool in_word = false;
  char quote = 0;
  for (char c : line) {
    if (quote) {
      if (c == quote) quote = 0;
      else word.push_back(c);
      continue;
    }
    if (c == '"' || c == '\'') {
      quote = c;
      in_word = true;
      continue;
    }
    if (c == ' ' || c == '\t') {
      if (in_word) words.push_back(word);
      word.clear();
      in_word = false;
      continue;
    }
    word.push_back(c);
    in_word = true;
  }
  if (in_word) words.push_back(word);
  return words;
}

// Kernel arguments that hand the console a shell, or run something other than the image's
// init, in the initramfs or the booted system. The host owns the console, so a reference
// set that allowed them would release the key to a boot that gives the host the open volume.
// Names are compared after normalise_argument_name(): the kernel's parameter parser and
// systemd's command-line reader both treat '-' and '_' in a name alike, so
// "systemd.debug-shell" is "systemd.debug_shell".
//
//  - dracut: rd.break (any value), rd.shell / rdshell (unless off), rd.emergency (unless
//    an action that ends the boot), rdbreak (the old spelling);
//  - the kernel: init=, rdinit= (another first program);
//  - systemd: the unit to start (systemd.unit=, rd.systemd.unit=), the debug shell on tty9
//    (systemd.debug_shell, rd.systemd.debug_shell, unless off), units pulled in or masked
//    (systemd.wants=, systemd.mask=, and their rd. forms: debug-shell.service, or masking
//    the agent's checks), systemd.run=;
//  - runlevel words the kernel passes on to init, which systemd maps to rescue.target or
//    emergency.target (a root shell on the console): emergency, rescue, single, s, S, 1, -s,
//    -b, and in the initramfs rd.emergency, rd.rescue.
constexpr std::array<std::string_view, 25> shell_arguments = {
    "rd.break",  "rdbreak",   "rd.shell",        "rdshell",           "rd.emergency",
    "rd.rescue", "init",      "rdinit",          "systemd.unit",      "rd.systemd.unit",
    "systemd.debug_shell",    "rd.systemd.debug_shell",               "systemd.wants",
    "rd.systemd.wants",       "systemd.mask",    "rd.systemd.mask",   "systemd.run",
    "emergency", "rescue",    "single",          "s",                 "S",
    "1",         "-s",        "-b"};

// '-' and '_' are the same character in a parameter name (the kernel's parameq(),
// systemd's proc_cmdline_key_streq()); quotes are dropped (the kernel strips the quotes
// around an argument or its value, so "init=/bin/sh" in quotes is still init=).
std::string normalise_argument_name(std::string_view name) {
  std::string out;
  out.reserve(name.size());
  for (char c : name) {
    if (c == '"') continue;
    out.push_back(c == '-' ? '_' : c);
  }
  return out;
}

bool is_shell_argument(std::string_view name) {
  const std::string normalised = normalise_argument_name(name);
  return std::any_of(shell_arguments.begin(), shell_arguments.end(),
                     [&](std::string_view listed) { return normalise_argument_name(listed) == normalised; });
}

// Values that switch an argument off, as the program that reads it parses them: dracut's
// getargbool takes 0, no and off; systemd's parse_boolean also n, false and f.
bool is_safe_value(std::string_view normalised_name, std::string_view value) {
  if (normalised_name == "rd.shell" || normalised_name == "rdshell")
    return value == "0" || value == "no" || value == "off";
  if (normalised_name == "systemd.debug_shell" || normalised_name == "rd.systemd.debug_shell")
    return value == "0" || value == "no" || value == "n" || value == "off" || value == "false" || value == "f";
  // dracut's action when the boot fails: these end the boot instead of opening a shell.
  if (normalised_name == "rd.emergency") return value == "poweroff" || value == "halt" || value == "reboot";
  return false;
}

}  // namespace

Result<void> check_kernel_cmdline(std::string_view cmdline) {
  std::size_t pos = 0;
  while (pos < cmdline.size()) {
    // The kernel splits its command line at any white space.
    const std::size_t found = cmdline.find_first_of(" \t\n\r\v\f", pos);
    const std::size_t end = std::min(found, cmdline.size());
    const std::string_view word = cmdline.substr(pos, end - pos);
    pos = end + 1;
    if (word.empty()) continue;
    const std::size_t equals = word.find('=');
    const std::string_view name = word.substr(0, equals);
    const bool has_value = equals != std::string_view::npos;
    if (!is_shell_argument(name)) continue;
    std::string value = has_value ? std::string(word.substr(equals + 1)) : std::string();
    value.erase(std::remove(value.begin(), value.end(), '"'), value.end());
    if (has_value && is_safe_value(normalise_argument_name(name), value)) continue;
    return fail(Errc::invalid_argument, "the kernel command line has '" + std::string(word) +
                                            "', which gives the host's console a shell or another init once the "
                                            "volume is open; remove it from grub.cfg (or --kernel-cmdline)");
  }
  return {};
}

std::map<std::string, std::string> parse_grub_cmdlines(std::string_view grub_cfg, std::vector<std::string>& warnings) {
  std::map<std::string, std::string> result;
  std::istringstream in{std::string(grub_cfg)};
  std::string line;
  while (std::getline(in, line)) {
    auto words = split_words(line);
    if (words.size() < 2 || (words[0] != "linux" && words[0] != "linuxefi")) continue;
    // grub_create_loader_cmdline joins the kernel path and its arguments with spaces.
    std::string cmdline;
    for (std::size_t i = 1; i < words.size(); ++i) {
      if (i > 1) cmdline.push_back(' ');
      cmdline += words[i];
    }
    if (cmdline.find('$') != std::string::npos)
      warnings.push_back("grub.cfg line \"" + line + "\" uses a variable; its measured command line may differ");
    const std::string file = base_name(words[1]);
    if (!result.count(file)) result[file] = cmdline;  // the first menu entry is the default
  }
  return result;
}

namespace {

// ---- boot volumes -----------------------------------------------------------------------

class ExtBootVolume final : public BootVolume {
 public:
  explicit ExtBootVolume(ExtFilesystem fs) : fs_(std::move(fs)) {}
  bool is_fat() const override { return false; }
  std::string uuid() const override { return fs_.uuid(); }
  Result<std::vector<BootDirEntry>> list_directory(const std::string& path) const override {
    auto listed = fs_.list_directory(path);
    if (!listed) return tl::unexpected(listed.error());
    std::vector<BootDirEntry> out;
    for (const auto& e : *listed) out.push_back({e.name, e.is_directory, e.is_regular});
    return out;
  }
  Result<bool> exists(const std::string& path) const override { return fs_.exists(path); }
  Result<Bytes> read_file(const std::string& path, std::uint64_t max_size) const override {
    return fs_.read_file(path, max_size);
  }

 private:
  ExtFilesystem fs_;
};

class FatBootVolume final : public BootVolume {
 public:
  explicit FatBootVolume(FatFilesystem fs) : fs_(std::move(fs)) {}
  bool is_fat() const override { return true; }
  std::string uuid() const override { return fs_.uuid(); }
  Result<std::vector<BootDirEntry>> list_directory(const std::string& path) const override {
    auto listed = fs_.list_directory(path);
    if (!listed) return tl::unexpected(listed.error());
    std::vector<BootDirEntry> out;
    for (const auto& e : *listed) out.push_back({e.name, e.is_directory, !e.is_directory});
    std::sort(out.begin(), out.end(), [](const BootDirEntry& a, const BootDirEntry& b) { return a.name < b.name; });
    return out;
  }
  Result<bool> exists(const std::string& path) const override {
    const auto slash = path.rfind('/');
    const std::string parent = slash == 0 || slash == std::string::npos ? "/" : path.substr(0, slash);
    const std::string name = slash == std::string::npos ? path : path.substr(slash + 1);
    auto listed = fs_.list_directory(parent);
    if (!listed) {
      if (listed.error().code == Errc::not_found) return false;
      return tl::unexpected(listed.error());
    }
    return std::any_of(listed->begin(), listed->end(), [&](const FatDirEntry& e) { return e.name == name; });
  }
  Result<Bytes> read_file(const std::string& path, std::uint64_t max_size) const override {
    return fs_.read_file(path, max_size);
  }

 private:
  FatFilesystem fs_;
};

// ---- grub.cfg ---------------------------------------------------------------------------

constexpr std::string_view grub_cfg_header =
    "# Written by fde-image build. grub measures each command below into the event log, and\n"
    "# the verifier releases the disk key only for exactly these commands: do not edit.\n";

// Characters grub's script reader takes literally in an unquoted word; everything else
// (quotes, `$`, `\`, `;`, `|`, `&`, `<`, `>`, braces, wildcards, `#`) changes what grub runs
// or measures, and is refused.
bool is_literal_char(char c) {
  if (c <= ' ' || c > '~') return false;
  return std::string_view("\"'\\$;|&<>{}*?[]#`").find(c) == std::string_view::npos;
}

Result<void> check_literal_words(std::string_view what, std::string_view text) {
  for (char c : text)
    if (c != ' ' && !is_literal_char(c))
      return fail(Errc::invalid_argument,
                  std::string(what) + " \"" + std::string(text) + "\" has the character '" + std::string(1, c) +
                      "', which grub's script reader does not take literally; fde-image writes only plain words");
  return {};
}

std::string join(const std::vector<std::string>& words, std::size_t from = 0) {
  std::string out;
  for (std::size_t i = from; i < words.size(); ++i) {
    if (i > from) out.push_back(' ');
    out += words[i];
  }
  return out;
}

std::string upper_hex(ByteView bytes) {
  std::string text = hex_encode(bytes);
  for (auto& c : text) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return text;
}

}  // namespace

Result<std::unique_ptr<BootVolume>> open_boot_volume(const std::string& image_path, std::uint64_t offset,
                                                     std::uint64_t size) {
  auto file = RawFile::open(image_path, RawFile::Mode::read_only);
  if (!file) return tl::unexpected(file.error());
  return open_boot_volume(std::make_shared<RawFile>(std::move(*file)), offset, size);
}

Result<std::unique_ptr<BootVolume>> open_boot_volume(std::shared_ptr<const DiskReader> disk, std::uint64_t offset,
                                                     std::uint64_t size) {
  auto ext = has_ext_magic(*disk, offset);
  if (!ext) return tl::unexpected(ext.error());
  if (*ext) {
    auto fs = ExtFilesystem::open(disk, offset);
    if (!fs) return tl::unexpected(fs.error());
    return std::unique_ptr<BootVolume>(new ExtBootVolume(std::move(*fs)));
  }
  auto fat = FatFilesystem::open(std::move(disk), offset, size);
  if (!fat) return fail(Errc::not_found, "neither an ext nor a FAT filesystem (" + fat.error().message + ")");
  return std::unique_ptr<BootVolume>(new FatBootVolume(std::move(*fat)));
}

Result<BootLayout> discover_boot_files(const BootVolume& fs) {
  BootLayout layout;
  std::vector<BootDirEntry> entries;
  for (std::string prefix : {"", "/boot"}) {
    auto listed = fs.list_directory(prefix.empty() ? "/" : prefix);
    if (!listed) {
      if (listed.error().code == Errc::not_found) continue;
      return tl::unexpected(listed.error());
    }
    if (std::any_of(listed->begin(), listed->end(),
                    [](const BootDirEntry& e) { return e.is_regular && starts_with(e.name, "vmlinuz-"); })) {
      layout.prefix = prefix;
      entries = std::move(*listed);
      break;
    }
  }
  if (entries.empty()) return layout;
  auto has = [&](const std::string& name) {
    return std::any_of(entries.begin(), entries.end(), [&](const BootDirEntry& e) { return e.is_regular && e.name == name; });
  };
  for (const auto& entry : entries) {
    if (!entry.is_regular || !starts_with(entry.name, "vmlinuz-")) continue;
    BootKernel kernel;
    kernel.version = entry.name.substr(8);
    kernel.kernel_path = layout.prefix + "/" + entry.name;
    for (const std::string& candidate : {"initramfs-" + kernel.version + ".img", "initrd.img-" + kernel.version})
      if (has(candidate)) {
        kernel.initramfs_path = layout.prefix + "/" + candidate;
        break;
      }
    layout.kernels.push_back(std::move(kernel));
  }
  std::vector<std::string> cfgs = {layout.prefix + "/grub/grub.cfg", layout.prefix + "/grub2/grub.cfg"};
  std::vector<std::string> efi_dirs = {layout.prefix + "/efi/EFI"};
  if (fs.is_fat()) efi_dirs.push_back("/EFI");
  for (const auto& efi_dir : efi_dirs) {
    auto efi = fs.list_directory(efi_dir);
    if (!efi) {
      if (efi.error().code == Errc::not_found) continue;
      return tl::unexpected(efi.error());
    }
    for (const auto& vendor : *efi)
      if (vendor.is_directory) cfgs.push_back(efi_dir + "/" + vendor.name + "/grub.cfg");
  }
  for (const auto& cfg : cfgs) {
    auto found = fs.exists(cfg);
    if (!found) return tl::unexpected(found.error());
    if (*found && std::find(layout.grub_cfg_paths.begin(), layout.grub_cfg_paths.end(), cfg) == layout.grub_cfg_paths.end())
      layout.grub_cfg_paths.push_back(cfg);
  }
  // grub.cfg's own arguments for each kernel: the first file that names it wins.
  for (const auto& path : layout.grub_cfg_paths) {
    auto text = fs.read_file(path, max_grub_cfg);
    if (!text) return tl::unexpected(text.error());
    auto cmdlines = parse_grub_cmdlines(as_text(*text), layout.warnings);
    for (auto& kernel : layout.kernels)
      if (auto it = cmdlines.find(base_name(kernel.kernel_path)); !kernel.cmdline && it != cmdlines.end())
        kernel.cmdline = it->second;
  }
  return layout;
}

int compare_versions(std::string_view a, std::string_view b) {
  auto is_digit = [](char c) { return c >= '0' && c <= '9'; };
  std::size_t i = 0, j = 0;
  while (i < a.size() && j < b.size()) {
    if (is_digit(a[i]) && is_digit(b[j])) {
      std::size_t ei = i, ej = j;
      while (ei < a.size() && is_digit(a[ei])) ++ei;
      while (ej < b.size() && is_digit(b[ej])) ++ej;
      std::string_view da = a.substr(i, ei - i), db = b.substr(j, ej - j);
      while (da.size() > 1 && da.front() == '0') da.remove_prefix(1);
      while (db.size() > 1 && db.front() == '0') db.remove_prefix(1);
      if (da.size() != db.size()) return da.size() < db.size() ? -1 : 1;
      if (da != db) return da < db ? -1 : 1;
      i = ei;
      j = ej;
      continue;
    }
    if (a[i] != b[j]) return a[i] < b[j] ? -1 : 1;
    ++i;
    ++j;
  }
  if (i < a.size()) return 1;
  if (j < b.size()) return -1;
  return 0;
}

Result<BootKernel> choose_kernel(const BootLayout& layout, const std::optional<std::string>& wanted) {
  if (layout.kernels.empty()) return fail(Errc::not_found, "no kernel on the boot filesystem");
  if (wanted) {
    for (const auto& kernel : layout.kernels)
      if (kernel.version == *wanted) return kernel;
    std::string known;
    for (const auto& kernel : layout.kernels) known += (known.empty() ? "" : ", ") + kernel.version;
    return fail(Errc::invalid_argument, "--kernel-version " + *wanted + ": no such kernel on the boot filesystem (" +
                                            known + ")");
  }
  const BootKernel* newest = &layout.kernels.front();
  for (const auto& kernel : layout.kernels)
    if (compare_versions(kernel.version, newest->version) > 0) newest = &kernel;
  return *newest;
}

Result<std::optional<Bytes>> decompress_kernel(ByteView kernel) {
  if (kernel.size() < 2 || kernel[0] != 0x1f || kernel[1] != 0x8b) return std::optional<Bytes>{};
  z_stream stream{};
  if (inflateInit2(&stream, 16 + MAX_WBITS) != Z_OK) return fail(Errc::internal, "zlib init failed");
  stream.next_in = const_cast<Bytef*>(kernel.data());
  stream.avail_in = static_cast<uInt>(kernel.size());
  Bytes out;
  Bytes chunk(1 << 20);
  int rc = Z_OK;
  while (rc != Z_STREAM_END) {
    stream.next_out = chunk.data();
    stream.avail_out = static_cast<uInt>(chunk.size());
    rc = inflate(&stream, Z_NO_FLUSH);
    if (rc != Z_OK && rc != Z_STREAM_END) {
      inflateEnd(&stream);
      return fail(Errc::malformed, "kernel: corrupt gzip data");
    }
    out.insert(out.end(), chunk.begin(), chunk.end() - stream.avail_out);
    if (out.size() > max_kernel_unpacked) {
      inflateEnd(&stream);
      return fail(Errc::too_large, "kernel: decompresses to more than 1 GiB");
    }
    if (rc == Z_OK && stream.avail_in == 0 && stream.avail_out != 0) {
      inflateEnd(&stream);
      return fail(Errc::malformed, "kernel: truncated gzip data");
    }
  }
  inflateEnd(&stream);
  return std::optional<Bytes>{std::move(out)};
}

Result<Bytes> measure_kernel(ByteView kernel) {
  auto unpacked = decompress_kernel(kernel);
  if (!unpacked) return tl::unexpected(unpacked.error());
  return crypto::sha256(*unpacked ? ByteView(**unpacked) : kernel);
}

Result<std::string> prepare_kernel_arguments(std::string_view arguments) {
  std::vector<std::string> words = split_on_blanks(arguments);
  if (!words.empty() && starts_with(words.front(), "/"))
    return fail(Errc::invalid_argument, "kernel arguments \"" + std::string(arguments) +
                                            "\" start with a path: give the arguments only (fde-image writes the "
                                            "kernel path into grub.cfg)");
  bool has_ima_rot = false;
  for (const auto& word : words) {
    if (auto ok = check_literal_words("the kernel argument", word); !ok) return tl::unexpected(ok.error());
    if (!starts_with(word, "ima_rot=")) continue;
    if (word != "ima_rot=tpm")
      return fail(Errc::invalid_argument,
                  "the kernel command line has '" + word +
                      "': IMA would use the virtCCA root of trust and extend REM[0] while the kernel starts, "
                      "before the agent asks for a token, so REM[0] would no longer match the event log and "
                      "the verifier would deny every boot; remove it (fde-image adds ima_rot=tpm, which keeps "
                      "IMA off the REMs)");
    has_ima_rot = true;
  }
  if (!has_ima_rot) words.push_back("ima_rot=tpm");
  std::string joined = join(words);
  if (auto ok = check_kernel_cmdline(joined); !ok) return tl::unexpected(ok.error());
  return joined;
}

Result<GrubConfig> make_grub_config(const GrubConfigRequest& request) {
  for (const auto& [what, value] : {std::pair<std::string_view, std::string_view>{"the grub superuser", request.superuser},
                                    {"the password hash", request.password_hash},
                                    {"the filesystem UUID", request.fs_uuid},
                                    {"the kernel path", request.kernel_path}}) {
    if (value.empty()) return fail(Errc::invalid_argument, "grub.cfg: " + std::string(what) + " is empty");
    if (value.find(' ') != std::string_view::npos)
      return fail(Errc::invalid_argument, "grub.cfg: " + std::string(what) + " \"" + std::string(value) + "\" has a space");
    if (auto ok = check_literal_words(what, value); !ok) return tl::unexpected(ok.error());
  }
  if (request.initramfs_path)
    if (auto ok = check_literal_words("the initramfs path", *request.initramfs_path);
        !ok || request.initramfs_path->find(' ') != std::string::npos || request.initramfs_path->empty())
      return fail(Errc::invalid_argument, "grub.cfg: the initramfs path \"" + *request.initramfs_path +
                                              "\" is not a plain word");
  if (auto ok = check_literal_words("the kernel arguments", request.kernel_arguments); !ok)
    return tl::unexpected(ok.error());
  std::vector<std::string> commands = {
      "set superusers=" + request.superuser,
      "password_pbkdf2 " + request.superuser + " " + request.password_hash,
      "search --no-floppy --fs-uuid --set=root " + request.fs_uuid,
  };
  std::string cmdline = join(split_on_blanks(request.kernel_path + " " + request.kernel_arguments));
  commands.push_back("linux " + cmdline);
  if (request.initramfs_path) commands.push_back("initrd " + *request.initramfs_path);
  commands.push_back("boot");
  std::string text(grub_cfg_header);
  for (const auto& command : commands) text += command + "\n";
  // What is written must read back to the same commands: one implementation of the form.
  auto parsed = parse_grub_config(text);
  if (!parsed) return fail_with_context("grub.cfg written by fde-image", parsed.error());
  if (parsed->commands != commands) return fail(Errc::internal, "grub.cfg does not read back to its commands");
  return parsed;
}

Result<GrubConfig> parse_grub_config(std::string_view text) {
  GrubConfig config;
  config.text = std::string(text);
  auto refuse = [](const std::string& why) {
    return fail(Errc::unsupported, "grub.cfg is not in the straight-line form fde-image build writes (" + why +
                                       "): its measured commands cannot be predicted");
  };
  std::size_t at = 0;
  bool booted = false;
  while (at < text.size()) {
    std::size_t end = text.find('\n', at);
    if (end == std::string_view::npos) return refuse("the last line has no newline");
    const std::string_view line = text.substr(at, end - at);
    at = end + 1;
    if (line.empty() || line.front() == '#') continue;
    if (booted) return refuse("a command after boot");
    for (char c : line)
      if (c != ' ' && !is_literal_char(c)) return refuse("the character '" + std::string(1, c) + "'");
    const auto words = split_on_blanks(line);
    if (join(words) != line) return refuse("a line with other spacing than single spaces between words");
    const std::string& name = words.front();
    if (name == "linux") {
      if (words.size() < 2 || !config.kernel_path.empty()) return refuse("not exactly one linux command with a path");
      config.kernel_path = words[1];
      config.kernel_cmdline = join(words, 1);
    } else if (name == "initrd") {
      if (words.size() != 2 || config.initramfs_path || config.kernel_path.empty())
        return refuse("an initrd command that is not one path after linux");
      config.initramfs_path = words[1];
    } else if (name == "boot") {
      if (words.size() != 1) return refuse("boot with arguments");
      booted = true;
    } else if (name != "set" && name != "password_pbkdf2" && name != "search") {
      return refuse("the command " + name);
    }
    config.commands.emplace_back(line);
  }
  if (config.kernel_path.empty()) return refuse("no linux command");
  if (!booted) return refuse("no boot command at the end");
  return config;
}

Result<std::string> grub_password_hash(ByteView password, ByteView salt, unsigned iterations) {
  Bytes hash(64);
  if (PKCS5_PBKDF2_HMAC(reinterpret_cast<const char*>(password.data()), static_cast<int>(password.size()), salt.data(),
                        static_cast<int>(salt.size()), static_cast<int>(iterations), EVP_sha512(),
                        static_cast<int>(hash.size()), hash.data()) != 1)
    return fail(Errc::internal, "PBKDF2-HMAC-SHA512 failed");
  return "grub.pbkdf2.sha512." + std::to_string(iterations) + "." + upper_hex(salt) + "." + upper_hex(hash);
}

Result<std::string> unusable_grub_password_hash() {
  // The password exists only in this function's memory (wiped when it returns).
  const SecretBytes password = crypto::random_secret(32);
  const Bytes salt = crypto::random_bytes(64);
  return grub_password_hash(password.view(), salt, grub_pbkdf2_iterations);
}

Result<reference::ReferenceValues> measure_boot(const BootVolume& fs, const BootLayout& layout,
                                                const MeasureOptions& options, std::vector<std::string>& warnings) {
  reference::ReferenceValues values;
  values.image_id = options.image_id;
  values.firmware_rims = options.firmware_rims;
  std::vector<Bytes> grub = options.grub_efi_digests;
  if (layout.grub_cfg_paths.empty()) return fail(Errc::not_found, "no grub.cfg on the boot filesystem");
  // Every copy must be the same file: grub reads whichever its prefix names.
  auto cfg = fs.read_file(layout.grub_cfg_paths.front(), max_grub_cfg);
  if (!cfg) return tl::unexpected(cfg.error());
  for (const auto& path : layout.grub_cfg_paths) {
    auto other = fs.read_file(path, max_grub_cfg);
    if (!other) return tl::unexpected(other.error());
    if (*other != *cfg)
      return fail(Errc::unsupported, path + " differs from " + layout.grub_cfg_paths.front() +
                                         ": the boot configuration is not the one fde-image build writes");
  }
  auto config = parse_grub_config(as_text(*cfg));
  if (!config) return fail_with_context(layout.grub_cfg_paths.front(), config.error());
  const BootKernel* kernel = nullptr;
  for (const auto& k : layout.kernels)
    if (k.kernel_path == config->kernel_path) kernel = &k;
  if (!kernel) return fail(Errc::not_found, "grub.cfg boots " + config->kernel_path + ", which is not on the boot filesystem");

  std::map<std::string, Bytes> imported_kernels;
  if (options.reference_in_json) {
    reference::ImageReferenceImport import;
    import.firmware_rims = options.firmware_rims;
    import.image_id = options.image_id;
    // The importer wants a command line and commands for each of its kernels; ours come from
    // grub.cfg, so give it placeholders and keep only grub and the kernel digests.
    for (const auto& k : layout.kernels) {
      import.kernel_cmdlines[k.version] = "placeholder";
      import.grub_commands[k.version] = {"placeholder"};
    }
    auto imported = reference::import_image_reference_measurement(*options.reference_in_json, import);
    if (!imported) return fail_with_context("--reference-in", imported.error());
    for (const auto& set : imported->sets) {
      for (const auto& digest : set.grub.efi_applications)
        if (std::find(grub.begin(), grub.end(), digest) == grub.end()) grub.push_back(digest);
      if (set.kernel_version) imported_kernels[*set.kernel_version] = set.grub.kernel;
    }
  }
  if (grub.empty())
    return fail(Errc::invalid_argument,
                "grub's Authenticode digest is needed for the reference values: pass --grub-efi-digest, or a "
                "--reference-in (image_reference_measurement.json) that has \"grub\", or neither to compute it "
                "from the image's EFI System Partition");

  reference::ReferenceSet set;
  set.name = "kernel-" + kernel->version;
  set.kernel_version = kernel->version;
  set.boot = reference::BootMode::grub;
  set.grub.efi_applications = grub;
  set.grub.grub_cfgs = {crypto::sha256(*cfg)};
  auto image = fs.read_file(kernel->kernel_path, max_boot_file);
  if (!image) return tl::unexpected(image.error());
  auto unpacked = decompress_kernel(*image);
  if (!unpacked) return fail_with_context(kernel->kernel_path, unpacked.error());
  const ByteView pe = *unpacked ? ByteView(**unpacked) : ByteView(*image);
  set.grub.kernel = crypto::sha256(pe);
  if (*unpacked) set.grub.kernel_alternatives = {crypto::sha256(*image)};
  if (auto it = imported_kernels.find(kernel->version); it != imported_kernels.end() && it->second != set.grub.kernel)
    return fail(Errc::verification_failed, "--reference-in: kernel " + kernel->version +
                                               " has a different digest than the image's: wrong reference file?");
  // The kernel as an EFI application (its EFI stub's PE image): shim measures it under
  // Secure Boot, and arm64 grub starts it through the firmware's LoadImage.
  if (auto efi = authenticode_sha256(pe))
    set.grub.kernel_efi = {std::move(*efi)};
  else
    warnings.push_back("kernel " + kernel->version + " is not a PE/COFF EFI image (" + efi.error().message +
                       "): the reference values have no kernel_efi, so a boot that starts it as an EFI "
                       "application will be denied");
  if (config->initramfs_path) {
    auto initramfs = fs.read_file(*config->initramfs_path, max_boot_file);
    if (!initramfs) return tl::unexpected(initramfs.error());
    set.grub.initramfs = crypto::sha256(*initramfs);
    // An initramfs rebuilt for the same kernel (a dracut, cryptsetup or agent update) gets a
    // set name of its own, so it can be added next to (or in place of) the running one.
    set.name += "-initrd-" + hex_encode(ByteView(*set.grub.initramfs).first(4));
  }
  set.grub.kernel_cmdline = config->kernel_cmdline;
  set.grub.grub_commands = config->commands;
  if (auto ok = check_kernel_cmdline(config->kernel_cmdline); !ok)
    return fail_with_context("kernel " + kernel->version, ok.error());
  values.sets.push_back(std::move(set));
  if (auto ok = reference::validate_reference_values(values); !ok) return fail_with_context("reference values", ok.error());
  return values;
}

}  // namespace fde::image
