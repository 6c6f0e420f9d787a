// Token envelope constants (docs/virtcca-platform.md a.1, b.1), in a header of their own so
// code without libcbor (the agent's framing check) can use them.
#pragma once

#include <cstddef>
#include <cstdint>

namespace fde::token {

// Section a.1: MAX_TOKEN_GRANULE_COUNT (2) x GRANULE_SIZE (4096).
constexpr std::size_t max_token_size = 8192;
// Section b.1: outer tag and collection keys.
constexpr std::uint64_t tag_cca_token = 399;
constexpr std::int64_t key_platform_token = 44234;
constexpr std::int64_t key_cvm_token = 44241;

}  // namespace fde::token
