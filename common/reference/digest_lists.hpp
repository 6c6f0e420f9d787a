// Small helpers the reference matchers share for digest lists in checks and verdict text.
#pragma once

#include <algorithm>
#include <string>
#include <vector>

#include "common/util/bytes.hpp"

namespace fde::reference {

inline bool contains(const std::vector<Bytes>& list, ByteView item) {
  return std::any_of(list.begin(), list.end(), [&](const Bytes& b) {
    return b.size() == item.size() && std::equal(b.begin(), b.end(), item.begin());
  });
}

// "aa.., bb.." for a verdict, or "(none)".
inline std::string join_hex(const std::vector<Bytes>& list) {
  if (list.empty()) return "(none)";
  std::string out;
  for (const auto& b : list) out += (out.empty() ? "" : ", ") + hex_encode(b);
  return out;
}

}  // namespace fde::reference
