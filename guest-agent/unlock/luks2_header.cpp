// Copying a LUKS2 header area into a private file and checking cryptsetup's view of it.
#include "guest-agent/unlock/luks2_header.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <filesystem>
#include <optional>
#include <utility>
#include <vector>

#include "common/util/bytes.hpp"
#include "common/util/strict_json.hpp"
#include "guest-agent/unlock/luks_device.hpp"

namespace fde::agent {

namespace {

std::uint64_t load_be64(const std::uint8_t* p) {
  std::uint64_t value = 0;
  for (int i = 0; i < 8; ++i) value = (value << 8) | p[i];
  return value;
}

std::string mib(std::uint64_t bytes) {
  return bytes % (1024 * 1024) == 0 ? std::to_string(bytes / (1024 * 1024)) + " MiB" : std::to_string(bytes) + " bytes";
}

// Reads up to buffer.size() bytes at `offset`; the count read (short only at end of file).
Result<std::size_t> read_at(int fd, std::span<std::uint8_t> buffer, std::uint64_t offset) {
  std::size_t got = 0;
  while (got < buffer.size()) {
    ssize_t n = ::pread(fd, buffer.data() + got, buffer.size() - got, static_cast<off_t>(offset + got));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return fail(Errc::io, std::string("read: ") + std::strerror(errno));
    if (n == 0) break;
    got += static_cast<std::size_t>(n);
  }
  return got;
}

struct Closer {
  int fd;
  ~Closer() { ::close(fd); }
};

std::optional<std::uint64_t> parse_decimal(std::string_view text) {
  std::uint64_t value = 0;
  auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || error != std::errc() || end != text.data() + text.size()) return std::nullopt;
  return value;
}

// A directory only this user can enter, whose parent nobody else can rename it in.
// Returns true when it was created here.
Result<bool> ensure_private_directory(const std::string& directory) {
  namespace fs = std::filesystem;
  const fs::path path(directory);
  if (!path.is_absolute() || !path.has_parent_path() || path.filename().empty())
    return fail(Errc::invalid_argument, "'" + directory + "' is not an absolute directory path");
  const std::string parent = path.parent_path().string();
  struct stat st {};
  if (::lstat(parent.c_str(), &st) != 0) {
    if (errno != ENOENT || ::mkdir(parent.c_str(), 0700) != 0 || ::lstat(parent.c_str(), &st) != 0)
      return fail(Errc::io, "cannot create " + parent + ": " + std::strerror(errno));
  }
  if (!S_ISDIR(st.st_mode) || (st.st_uid != 0 && st.st_uid != ::geteuid()) || (st.st_mode & 0022) != 0)
    return fail(Errc::io, parent + " is not a directory that only this user or root can write");
  bool created = false;
  if (::mkdir(directory.c_str(), 0700) == 0) {
    created = true;
  } else if (errno != EEXIST) {
    return fail(Errc::io, "cannot create " + directory + ": " + std::strerror(errno));
  }
  if (::lstat(directory.c_str(), &st) != 0) return fail(Errc::io, directory + ": " + std::strerror(errno));
  // mkdir's mode is filtered by the umask, which can only take permissions away.
  if (!S_ISDIR(st.st_mode) || st.st_uid != ::geteuid() || (st.st_mode & 0077) != 0)
    return fail(Errc::io, directory + " is not a private directory of this user (mode 0700, not a symbolic link)");
  return created;
}

}  // namespace

Result<Luks2HeaderArea> read_luks2_header_area(int fd) {
  std::vector<std::uint8_t> binary(luks2_binary_header_size);
  auto got = read_at(fd, binary, 0);
  if (!got) return tl::unexpected(got.error());
  auto info = parse_luks_header(ByteView(binary.data(), *got));
  if (!info) return fail(Errc::malformed, "it does not start with a LUKS header");
  if (info->version != 2) return fail(Errc::unsupported, "it is a LUKS1 header; the agent opens only LUKS2 volumes");
  if (*got < binary.size()) return fail(Errc::malformed, "the device ends inside the LUKS2 binary header");
  Luks2HeaderArea area;
  area.header_size = load_be64(binary.data() + luks2_hdr_size_offset);
  const std::uint64_t size = area.header_size;
  if (size < luks2_min_hdr_size || size > luks2_max_hdr_size || (size & (size - 1)) != 0)
    return fail(Errc::malformed, "the binary header's hdr_size is " + std::to_string(size) +
                                     " (LUKS2 allows 16 KiB to 4 MiB, a power of two)");
  if (load_be64(binary.data() + luks2_hdr_offset_offset) != 0)
    return fail(Errc::malformed, "the primary binary header does not say it is at offset 0");

  std::vector<std::uint8_t> json_area(size - luks2_binary_header_size);
  got = read_at(fd, json_area, luks2_binary_header_size);
  if (!got) return tl::unexpected(got.error());
  if (*got < json_area.size()) return fail(Errc::malformed, "the device ends inside the LUKS2 JSON area");
  const auto end = std::find(json_area.begin(), json_area.end(), 0);
  const std::string_view text(reinterpret_cast<const char*>(json_area.data()),
                              static_cast<std::size_t>(end - json_area.begin()));
  rapidjson::Document doc;
  if (auto parsed = json::parse(doc, text, json_area.size(), "the LUKS2 JSON area"); !parsed)
    return tl::unexpected(parsed.error());
  const json::Value* segments = doc.IsObject() ? json::find(doc, "segments") : nullptr;
  if (segments == nullptr || !segments->IsObject() || segments->MemberCount() == 0)
    return fail(Errc::malformed, "the LUKS2 JSON area lists no data segment");
  std::optional<std::uint64_t> lowest;
  for (auto it = segments->MemberBegin(); it != segments->MemberEnd(); ++it) {
    const json::Value* offset = it->value.IsObject() ? json::find(it->value, "offset") : nullptr;
    auto value = offset != nullptr && offset->IsString() ? parse_decimal(json::view(*offset)) : std::nullopt;
    if (!value)
      return fail(Errc::malformed, "data segment " + std::string(json::view(it->name)) + " has no decimal offset");
    lowest = std::min(lowest.value_or(*value), *value);
  }
  area.data_offset = *lowest;
  if (area.data_offset < 2 * size)
    return fail(Errc::malformed, "the data segment starts at byte " + std::to_string(area.data_offset) +
                                     ", inside the two LUKS2 headers");
  if (area.data_offset > max_luks2_header_area)
    return fail(Errc::too_large, "the header area before the data segment is " + mib(area.data_offset) +
                                     ", more than the " + mib(max_luks2_header_area) + " the agent accepts");
  return area;
}

HeaderCopy::HeaderCopy(HeaderCopy&& other) noexcept
    : path_(std::exchange(other.path_, {})),
      size_(other.size_),
      created_directory_(std::exchange(other.created_directory_, {})) {}

HeaderCopy& HeaderCopy::operator=(HeaderCopy&& other) noexcept {
  if (this != &other) {
    remove();
    path_ = std::exchange(other.path_, {});
    size_ = other.size_;
    created_directory_ = std::exchange(other.created_directory_, {});
  }
  return *this;
}

void HeaderCopy::remove() {
  if (!path_.empty()) ::unlink(path_.c_str());
  if (!created_directory_.empty()) ::rmdir(created_directory_.c_str());
  path_.clear();
  created_directory_.clear();
}

Result<HeaderCopy> copy_luks2_header(const std::string& device, const std::string& directory, const std::string& name) {
  auto created = ensure_private_directory(directory);
  if (!created) return tl::unexpected(created.error());
  // Owns the directory (if created here) from now on, and the file once it exists.
  HeaderCopy copy({}, 0, *created ? directory : std::string());

  const int in = ::open(device.c_str(), O_RDONLY | O_CLOEXEC);
  if (in < 0) return fail(Errc::io, "cannot open " + device + ": " + std::strerror(errno));
  Closer in_closer{in};
  struct stat st {};
  if (::fstat(in, &st) != 0 || !(S_ISBLK(st.st_mode) || S_ISREG(st.st_mode)))
    return fail(Errc::io, device + " is not a block device or an image file");
  auto area = read_luks2_header_area(in);
  if (!area) return tl::unexpected(area.error());

  const std::string path = directory + "/" + name + ".luks2-header";
  // A copy left by an earlier run that was killed; nobody else can write this directory.
  if (::unlink(path.c_str()) != 0 && errno != ENOENT)
    return fail(Errc::io, "cannot remove the old " + path + ": " + std::strerror(errno));
  const int out = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (out < 0) return fail(Errc::io, "cannot create " + path + ": " + std::strerror(errno));
  copy.path_ = path;
  copy.size_ = area->data_offset;
  Closer out_closer{out};

  // One pass over the device from byte 0: whatever cryptsetup later reads is this snapshot.
  std::vector<std::uint8_t> buffer(1024 * 1024);
  for (std::uint64_t offset = 0; offset < area->data_offset;) {
    const std::size_t want = static_cast<std::size_t>(std::min<std::uint64_t>(buffer.size(), area->data_offset - offset));
    auto got = read_at(in, std::span<std::uint8_t>(buffer.data(), want), offset);
    if (!got) return fail(Errc::io, "reading " + device + ": " + got.error().message);
    if (*got < want)
      return fail(Errc::malformed, "the device ends at byte " + std::to_string(offset + *got) +
                                       ", inside its LUKS2 header area of " + std::to_string(area->data_offset) +
                                       " bytes");
    for (std::size_t written = 0; written < want;) {
      ssize_t n = ::write(out, buffer.data() + written, want - written);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return fail(Errc::io, "writing " + path + ": " + std::strerror(errno));
      written += static_cast<std::size_t>(n);
    }
    offset += want;
  }
  return copy;
}

bool is_null_cipher(std::string_view cipher) {
  // No real cipher has "null" in its name; the kernel's is cipher_null (ecb(cipher_null)).
  std::string lower(cipher);
  for (auto& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return lower.find("null") != std::string::npos;
}

Result<void> check_luks2_metadata(std::string_view dump_json, std::string_view expected_cipher,
                                  std::uint64_t header_area_size) {
  rapidjson::Document doc;
  if (auto parsed = json::parse(doc, dump_json, max_luks_dump_output, "cryptsetup luksDump's JSON"); !parsed)
    return tl::unexpected(parsed.error());
  if (!doc.IsObject()) return fail(Errc::malformed, "cryptsetup luksDump's JSON is not an object");
  auto object_member = [&](std::string_view name) -> Result<const json::Value*> {
    const json::Value* value = json::find(doc, name);
    if (value == nullptr || !value->IsObject())
      return fail(Errc::malformed, "the LUKS2 metadata has no '" + std::string(name) + "' object");
    return value;
  };
  auto segments = object_member("segments");
  if (!segments) return tl::unexpected(segments.error());
  auto keyslots = object_member("keyslots");
  if (!keyslots) return tl::unexpected(keyslots.error());
  auto string_of = [](const json::Value& object, std::string_view name) -> std::optional<std::string_view> {
    const json::Value* value = object.IsObject() ? json::find(object, name) : nullptr;
    if (value == nullptr || !value->IsString()) return std::nullopt;
    return json::view(*value);
  };

  // A null cipher anywhere first: it is the attack this check exists for.
  for (auto it = (*segments)->MemberBegin(); it != (*segments)->MemberEnd(); ++it) {
    auto encryption = string_of(it->value, "encryption");
    if (encryption && is_null_cipher(*encryption))
      return fail(Errc::unsupported, "data segment " + std::string(json::view(it->name)) + " uses cipher_null ('" +
                                         std::string(*encryption) + "'): the data would not be encrypted");
  }
  if ((*keyslots)->MemberCount() == 0) return fail(Errc::malformed, "it has no keyslots");
  for (auto it = (*keyslots)->MemberBegin(); it != (*keyslots)->MemberEnd(); ++it) {
    const std::string slot(json::view(it->name));
    const json::Value* area = it->value.IsObject() ? json::find(it->value, "area") : nullptr;
    auto encryption = area != nullptr ? string_of(*area, "encryption") : std::nullopt;
    if (!encryption || encryption->empty())
      return fail(Errc::unsupported, "keyslot " + slot + " has no area encryption");
    if (is_null_cipher(*encryption))
      return fail(Errc::unsupported, "keyslot " + slot + " uses cipher_null ('" + std::string(*encryption) +
                                         "'): any passphrase would open it");
  }

  // The hashes that turn the key into the keyslot key and the volume key into its digest:
  // a null one would make either check meaningless.
  auto check_hash = [](const json::Value* object, std::string_view what, bool required) -> Result<void> {
    const json::Value* hash = object != nullptr && object->IsObject() ? json::find(*object, "hash") : nullptr;
    if (hash == nullptr && !required) return {};
    if (hash == nullptr || !hash->IsString() || hash->GetStringLength() == 0)
      return fail(Errc::unsupported, std::string(what) + " has no hash");
    if (is_null_cipher(json::view(*hash)))
      return fail(Errc::unsupported, std::string(what) + " uses the null hash ('" + std::string(json::view(*hash)) + "')");
    return {};
  };
  for (auto it = (*keyslots)->MemberBegin(); it != (*keyslots)->MemberEnd(); ++it) {
    const std::string slot = "keyslot " + std::string(json::view(it->name));
    const json::Value* kdf = json::find(it->value, "kdf");
    // pbkdf2 names its hash; argon2i and argon2id have none.
    auto kdf_type = kdf != nullptr ? string_of(*kdf, "type") : std::nullopt;
    if (auto checked = check_hash(kdf, slot + " kdf", kdf_type == "pbkdf2"); !checked) return checked;
    if (auto checked = check_hash(json::find(it->value, "af"), slot + " af", true); !checked) return checked;
  }
  auto digests = object_member("digests");
  if (!digests) return tl::unexpected(digests.error());
  for (auto it = (*digests)->MemberBegin(); it != (*digests)->MemberEnd(); ++it)
    if (auto checked = check_hash(&it->value, "digest " + std::string(json::view(it->name)), true); !checked)
      return checked;

  // What cryptsetup would do beyond decrypting, decided by the host. fde-image writes no
  // tokens, no persistent flags and no requirements, so any of them means a header it did
  // not make (docs/fde-agent.md, "The LUKS2 header").
  auto tokens = object_member("tokens");
  if (!tokens) return tl::unexpected(tokens.error());
  if ((*tokens)->MemberCount() != 0) {
    // cryptsetup tries its built-in token handlers (luks2-keyring) even with
    // --disable-external-tokens.
    const auto count = (*tokens)->MemberCount();
    const auto& token = *(*tokens)->MemberBegin();
    return fail(Errc::unsupported, "it has " + (count == 1 ? std::string("a token") : std::to_string(count) + " tokens") +
                                       " (token " + std::string(json::view(token.name)) + ", type '" +
                                       std::string(string_of(token.value, "type").value_or("?")) +
                                       "'): a volume made by fde-image has none");
  }
  auto config = object_member("config");
  if (!config) return tl::unexpected(config.error());
  if (const json::Value* flags = json::find(**config, "flags"); flags != nullptr) {
    // cryptsetup applies them on every open: "allow-discards" passes TRIM through, which
    // shows the host which blocks are in use.
    if (!flags->IsArray() || !flags->Empty())
      return fail(Errc::unsupported, "its config sets persistent flags " + json::to_string(*flags) +
                                         ": a volume made by fde-image has none");
  }
  if (const json::Value* requirements = json::find(**config, "requirements"); requirements != nullptr) {
    // Any member counts, even an empty "mandatory" list (cryptsetup never leaves one).
    if (!requirements->IsObject() || requirements->MemberCount() != 0)
      return fail(Errc::unsupported, "its config sets requirements " + json::to_string(*requirements) +
                                         ": a volume made by fde-image has none");
  }

  if ((*segments)->MemberCount() != 1)
    return fail(Errc::unsupported, "it has " + std::to_string((*segments)->MemberCount()) +
                                       " data segments, expected exactly one (a reencryption in progress?)");
  const auto& segment = *(*segments)->MemberBegin();
  const std::string id(json::view(segment.name));
  auto type = string_of(segment.value, "type");
  if (!type || *type != "crypt")
    return fail(Errc::unsupported, "data segment " + id + " is of type '" + std::string(type.value_or("")) +
                                       "', expected 'crypt'");
  auto encryption = string_of(segment.value, "encryption");
  if (!encryption || *encryption != expected_cipher)
    return fail(Errc::unsupported, "data segment " + id + " uses '" + std::string(encryption.value_or("")) +
                                       "', expected '" + std::string(expected_cipher) + "' (luks_cipher)");
  auto offset_text = string_of(segment.value, "offset");
  auto offset = offset_text ? parse_decimal(*offset_text) : std::nullopt;
  if (!offset || *offset != header_area_size)
    return fail(Errc::malformed, "data segment " + id + " starts at byte " + std::string(offset_text.value_or("?")) +
                                     ", not where the header area copied from the device ends (" +
                                     std::to_string(header_area_size) + "): the header changed while it was read");
  return {};
}

}  // namespace fde::agent
