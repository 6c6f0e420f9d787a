// format_luks_volume / read_luks_summary over libcryptsetup. Error messages carry the
// library's own last error line, captured through its log callback.
#include "image-builder/luks/luks_volume.hpp"

#include <fcntl.h>
#include <libcryptsetup.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>

namespace fde::image {
namespace {

struct CryptContext {
  crypt_device* cd = nullptr;
  std::string last_error;
  ~CryptContext() {
    if (cd) crypt_free(cd);
  }
};

void log_to_context(int level, const char* message, void* usrptr) {
  if (level != CRYPT_LOG_ERROR || !message) return;
  auto* context = static_cast<CryptContext*>(usrptr);
  context->last_error = message;
  while (!context->last_error.empty() && context->last_error.back() == '\n') context->last_error.pop_back();
}

tl::unexpected<Error> crypt_error(const CryptContext& context, const std::string& what, int rc) {
  std::string message = what + ": " + std::strerror(-rc);
  if (!context.last_error.empty()) message += " (" + context.last_error + ")";
  return fail(Errc::io, message);
}

Result<std::unique_ptr<CryptContext>> init_context(const std::string& path) {
  // Locking would need /run/cryptsetup, which an unprivileged user cannot write; the
  // header file is ours alone while we work on it.
  crypt_metadata_locking(nullptr, 0);
  auto context = std::make_unique<CryptContext>();
  if (int rc = crypt_init(&context->cd, path.c_str()); rc < 0) return crypt_error(*context, "crypt_init " + path, rc);
  crypt_set_log_callback(context->cd, log_to_context, context.get());
  return context;
}

}  // namespace

Result<LuksVolumeInfo> format_luks_volume(const LuksFormatRequest& request) {
  if (!request.volume_key || request.volume_key->size() != volume_key_size || !request.machine_key ||
      request.machine_key->size() != machine_key_size)
    return fail(Errc::invalid_argument, "LUKS format: wrong key sizes");
  if (request.partition_size <= luks_data_offset || request.partition_size % request.sector_size != 0)
    return fail(Errc::invalid_argument, "LUKS format: partition size " + std::to_string(request.partition_size) +
                                            " is not a multiple of the sector size or too small");
  {
    const int fd = ::open(request.header_file.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) return fail(Errc::io, "cannot create " + request.header_file + ": " + std::strerror(errno));
    const int rc = ::ftruncate(fd, static_cast<off_t>(request.partition_size));
    const int err = errno;
    ::close(fd);
    if (rc != 0) return fail(Errc::io, "cannot size " + request.header_file + ": " + std::strerror(err));
  }
  auto context = init_context(request.header_file);
  if (!context) return tl::unexpected(context.error());
  crypt_device* cd = (*context)->cd;

  // The machine key has full entropy, so a slow KDF would only cost boot time (and memory
  // in the initramfs) without adding security: PBKDF2, 1000 iterations, no benchmark.
  crypt_pbkdf_type machine_pbkdf{};
  machine_pbkdf.type = CRYPT_KDF_PBKDF2;
  machine_pbkdf.hash = "sha256";
  machine_pbkdf.iterations = machine_keyslot_pbkdf2_iterations;
  machine_pbkdf.flags = CRYPT_PBKDF_NO_BENCHMARK;

  crypt_params_luks2 params{};
  params.pbkdf = &machine_pbkdf;
  params.sector_size = request.sector_size;
  params.data_alignment = luks_data_offset / 512;
  params.label = request.label ? request.label->c_str() : nullptr;
  const auto* key = reinterpret_cast<const char*>(request.volume_key->data());
  if (int rc = crypt_format(cd, CRYPT_LUKS2, "aes", "xts-plain64", nullptr, key, volume_key_size, &params); rc < 0)
    return crypt_error(**context, "LUKS2 format", rc);

  LuksVolumeInfo info;
  info.uuid = crypt_get_uuid(cd);
  info.data_offset = crypt_get_data_offset(cd) * 512;
  if (info.data_offset != luks_data_offset)
    return fail(Errc::internal, "libcryptsetup placed the data segment at byte " + std::to_string(info.data_offset) +
                                    ", expected " + std::to_string(luks_data_offset));
  if (int rc = crypt_set_pbkdf_type(cd, &machine_pbkdf); rc < 0) return crypt_error(**context, "set PBKDF2", rc);
  const auto* machine = reinterpret_cast<const char*>(request.machine_key->data());
  info.machine_keyslot =
      crypt_keyslot_add_by_volume_key(cd, CRYPT_ANY_SLOT, key, volume_key_size, machine, machine_key_size);
  if (info.machine_keyslot < 0) return crypt_error(**context, "add the machine keyslot", info.machine_keyslot);

  if (request.recovery_passphrase) {
    // A human passphrase needs the normal memory-hard cost (Argon2id, benchmarked).
    if (int rc = crypt_set_pbkdf_type(cd, crypt_get_pbkdf_default(CRYPT_LUKS2)); rc < 0)
      return crypt_error(**context, "set Argon2id", rc);
    const auto* passphrase = reinterpret_cast<const char*>(request.recovery_passphrase->data());
    info.recovery_keyslot = crypt_keyslot_add_by_volume_key(cd, CRYPT_ANY_SLOT, key, volume_key_size, passphrase,
                                                            request.recovery_passphrase->size());
    if (info.recovery_keyslot < 0) return crypt_error(**context, "add the recovery keyslot", info.recovery_keyslot);
  }
  return info;
}

Result<LuksSummary> read_luks_summary(const std::string& path) {
  auto context = init_context(path);
  if (!context) return tl::unexpected(context.error());
  crypt_device* cd = (*context)->cd;
  if (int rc = crypt_load(cd, CRYPT_LUKS2, nullptr); rc < 0) return crypt_error(**context, "no LUKS2 header", rc);
  LuksSummary summary;
  summary.uuid = crypt_get_uuid(cd);
  summary.cipher = std::string(crypt_get_cipher(cd)) + "-" + crypt_get_cipher_mode(cd);
  summary.volume_key_bits = static_cast<std::uint32_t>(crypt_get_volume_key_size(cd) * 8);
  summary.sector_size = static_cast<std::uint32_t>(crypt_get_sector_size(cd));
  summary.data_offset = crypt_get_data_offset(cd) * 512;
  if (const char* label = crypt_get_label(cd)) summary.label = label;
  for (int slot = 0; slot < crypt_keyslot_max(CRYPT_LUKS2); ++slot) {
    const crypt_keyslot_info status = crypt_keyslot_status(cd, slot);
    if (status != CRYPT_SLOT_ACTIVE && status != CRYPT_SLOT_ACTIVE_LAST) continue;
    crypt_pbkdf_type pbkdf{};
    std::string text = std::to_string(slot) + ": ";
    if (crypt_keyslot_get_pbkdf(cd, slot, &pbkdf) == 0 && pbkdf.type) {
      text += pbkdf.type;
      if (std::strcmp(pbkdf.type, CRYPT_KDF_PBKDF2) == 0)
        text += " (" + std::to_string(pbkdf.iterations) + " iterations)";
      else
        text += " (" + std::to_string(pbkdf.max_memory_kb) + " KiB, " + std::to_string(pbkdf.iterations) + " passes)";
    }
    summary.keyslots.push_back(text);
  }
  return summary;
}

}  // namespace fde::image
