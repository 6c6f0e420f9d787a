// XtsEncryptor over OpenSSL's EVP aes-256-xts; the key schedule is set once and only the
// tweak changes per sector.
#include "image-builder/luks/xts_encryptor.hpp"

#include <openssl/evp.h>

#include <array>

namespace fde::image {

struct XtsEncryptor::State {
  EVP_CIPHER_CTX* ctx = nullptr;
  std::uint32_t sector_size = 0;
  ~State() { EVP_CIPHER_CTX_free(ctx); }
};

XtsEncryptor::XtsEncryptor(std::unique_ptr<State> state) : state_(std::move(state)) {}
XtsEncryptor::~XtsEncryptor() = default;
XtsEncryptor::XtsEncryptor(XtsEncryptor&&) noexcept = default;
XtsEncryptor& XtsEncryptor::operator=(XtsEncryptor&&) noexcept = default;

Result<XtsEncryptor> XtsEncryptor::create(const SecretBytes& key, std::uint32_t sector_size, Direction direction) {
  if (key.size() != 64) return fail(Errc::invalid_argument, "aes-xts-plain64 needs a 64-byte key");
  if (sector_size < 512 || sector_size > 4096 || (sector_size & (sector_size - 1)) != 0)
    return fail(Errc::invalid_argument, "sector size must be a power of two from 512 to 4096");
  auto state = std::make_unique<State>();
  state->sector_size = sector_size;
  state->ctx = EVP_CIPHER_CTX_new();
  if (!state->ctx) return fail(Errc::internal, "EVP_CIPHER_CTX_new failed");
  const int enc = direction == Direction::encrypt ? 1 : 0;
  // OpenSSL refuses XTS keys whose halves are equal; a random key never has them.
  if (EVP_CipherInit_ex(state->ctx, EVP_aes_256_xts(), nullptr, key.data(), nullptr, enc) != 1)
    return fail(Errc::internal, "AES-XTS key setup failed");
  return XtsEncryptor(std::move(state));
}

Result<void> XtsEncryptor::process(std::span<std::uint8_t> data, std::uint64_t offset) {
  const std::uint32_t sector = state_->sector_size;
  if (offset % sector != 0 || data.size() % sector != 0)
    return fail(Errc::internal, "XTS: unaligned request");
  for (std::size_t at = 0; at < data.size(); at += sector) {
    const std::uint64_t iv_sector = (offset + at) / 512;  // plain64: 512-byte units
    std::array<std::uint8_t, 16> tweak{};
    for (std::size_t i = 0; i < 8; ++i) tweak[i] = static_cast<std::uint8_t>(iv_sector >> (8 * i));
    int out_length = 0;
    if (EVP_CipherInit_ex(state_->ctx, nullptr, nullptr, nullptr, tweak.data(), -1) != 1 ||
        EVP_CipherUpdate(state_->ctx, data.data() + at, &out_length, data.data() + at, static_cast<int>(sector)) != 1 ||
        out_length != static_cast<int>(sector))
      return fail(Errc::internal, "AES-XTS failed");
  }
  return {};
}

}  // namespace fde::image
