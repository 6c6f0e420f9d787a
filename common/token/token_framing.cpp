// Framing check of a raw token (no libcbor: the static agent uses it).
#include "common/token/token_framing.hpp"

#include <string>

#include "common/cbor/cbor_head.hpp"
#include "common/token/token_limits.hpp"

namespace fde::token {

namespace {
// Reads a head at `offset` and advances past it.
Result<cbor::Head> next_head(ByteView token, std::size_t& offset, std::string_view what) {
  auto head = cbor::read_head(token.subspan(offset));
  if (!head) return fail(Errc::malformed, "token " + std::string(what) + ": " + head.error().message);
  offset += head->size;
  return head;
}
}  // namespace

Result<void> check_token_framing(ByteView token) {
  if (token.empty()) return fail(Errc::malformed, "token is empty");
  if (token.size() > max_token_size)
    return fail(Errc::too_large, "token of " + std::to_string(token.size()) + " bytes exceeds 8192");
  std::size_t offset = 0;
  auto tag = next_head(token, offset, "tag");
  if (!tag) return tl::unexpected(tag.error());
  if (tag->major_type != cbor::major::tag || tag->argument != tag_cca_token)
    return fail(Errc::malformed, "token does not start with CBOR tag 399");
  auto map = next_head(token, offset, "map");
  if (!map) return tl::unexpected(map.error());
  if (map->major_type != cbor::major::map || map->argument < 1 || map->argument > 2)
    return fail(Errc::malformed, "token collection is not a map of 1 or 2 entries");
  bool seen_platform = false, seen_cvm = false;
  for (std::uint64_t i = 0; i < map->argument; ++i) {
    auto key = next_head(token, offset, "key");
    if (!key) return tl::unexpected(key.error());
    bool is_platform = key->major_type == cbor::major::unsigned_integer && key->argument == key_platform_token;
    bool is_cvm = key->major_type == cbor::major::unsigned_integer && key->argument == key_cvm_token;
    if ((!is_platform && !is_cvm) || (is_platform && seen_platform) || (is_cvm && seen_cvm))
      return fail(Errc::malformed, "token collection has an unexpected or repeated key");
    (is_platform ? seen_platform : seen_cvm) = true;
    auto value = next_head(token, offset, "entry");
    if (!value) return tl::unexpected(value.error());
    if (value->major_type != cbor::major::byte_string)
      return fail(Errc::malformed, "token collection entry is not a byte string");
    if (value->argument > token.size() - offset)
      return fail(Errc::malformed, "token is truncated: an entry runs past the end (partial token from the device?)");
    ByteView sign1 = token.subspan(offset, static_cast<std::size_t>(value->argument));
    std::size_t inner = 0;
    auto cose_tag = next_head(sign1, inner, "COSE tag");
    auto cose_array = cose_tag ? next_head(sign1, inner, "COSE array") : cose_tag;
    if (!cose_tag || !cose_array || cose_tag->major_type != cbor::major::tag || cose_tag->argument != 18 ||
        cose_array->major_type != cbor::major::array || cose_array->argument != 4)
      return fail(Errc::malformed, "token collection entry is not a COSE_Sign1");
    offset += sign1.size();
  }
  if (!seen_cvm) return fail(Errc::malformed, "token has no CVM token (key 44241)");
  if (offset != token.size())
    return fail(Errc::malformed, std::to_string(token.size() - offset) + " bytes follow the token");
  return {};
}

}  // namespace fde::token
