// Splitting a line into the words a shell-like reader (grub's) sees: runs of spaces and tabs
// separate, nothing groups.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace fde {

inline std::vector<std::string> split_on_blanks(std::string_view text) {
  std::vector<std::string> words;
  std::size_t at = 0;
  while (at < text.size()) {
    while (at < text.size() && (text[at] == ' ' || text[at] == '\t')) ++at;
    std::size_t end = at;
    while (end < text.size() && text[end] != ' ' && text[end] != '\t') ++end;
    if (end > at) words.emplace_back(text.substr(at, end - at));
    at = end;
  }
  return words;
}

}  // namespace fde
