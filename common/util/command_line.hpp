// A small, strict command-line option parser shared by the project's executables.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "common/util/error.hpp"

namespace fde {

struct OptionSpec {
  std::string name;           // without the leading "--"
  bool takes_value = true;    // false: a flag
  bool repeatable = false;    // may be given several times
  std::string value_name;     // for help output ("FILE", "HEX")
  std::string help;
};

class ParsedOptions {
 public:
  bool has(const std::string& name) const { return values_.count(name) > 0; }
  std::optional<std::string> get(const std::string& name) const;
  std::vector<std::string> get_all(const std::string& name) const;
  const std::vector<std::string>& positional() const { return positional_; }

 private:
  friend Result<ParsedOptions> parse_options(const std::vector<std::string>&, const std::vector<OptionSpec>&);
  std::map<std::string, std::vector<std::string>> values_;
  std::vector<std::string> positional_;
};

// Accepts "--name value" and "--name=value"; "--" ends options. Unknown options, a missing
// value, a value given to a flag and a repeated non-repeatable option are errors.
Result<ParsedOptions> parse_options(const std::vector<std::string>& args, const std::vector<OptionSpec>& specs);

// Two-column help text for the given options.
std::string options_help(const std::vector<OptionSpec>& specs);

}  // namespace fde
