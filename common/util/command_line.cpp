// Strict command-line option parsing.
#include "common/util/command_line.hpp"

#include <algorithm>

namespace fde {

std::optional<std::string> ParsedOptions::get(const std::string& name) const {
  auto it = values_.find(name);
  if (it == values_.end() || it->second.empty()) return std::nullopt;
  return it->second.back();
}

std::vector<std::string> ParsedOptions::get_all(const std::string& name) const {
  auto it = values_.find(name);
  return it == values_.end() ? std::vector<std::string>{} : it->second;
}

Result<ParsedOptions> parse_options(const std::vector<std::string>& args, const std::vector<OptionSpec>& specs) {
  ParsedOptions parsed;
  bool options_done = false;
  for (std::size_t i = 0; i < args.size(); ++i) {
    // -h is the one short option: the usual spelling of --help, where a program has --help.
    const bool short_help = !options_done && args[i] == "-h" &&
                            std::any_of(specs.begin(), specs.end(), [](const OptionSpec& s) { return s.name == "help"; });
    const std::string& arg = short_help ? std::string("--help") : args[i];
    if (options_done || arg.rfind("--", 0) != 0 || arg == "-") {
      parsed.positional_.push_back(arg);
      continue;
    }
    if (arg == "--") {
      options_done = true;
      continue;
    }
    std::string name = arg.substr(2);
    std::optional<std::string> inline_value;
    if (auto eq = name.find('='); eq != std::string::npos) {
      inline_value = name.substr(eq + 1);
      name = name.substr(0, eq);
    }
    auto spec = std::find_if(specs.begin(), specs.end(), [&](const OptionSpec& s) { return s.name == name; });
    if (spec == specs.end()) return fail(Errc::invalid_argument, "unknown option --" + name);
    if (!spec->repeatable && parsed.values_.count(name) > 0)
      return fail(Errc::invalid_argument, "--" + name + " given more than once");
    auto& slot = parsed.values_[name];
    if (!spec->takes_value) {
      if (inline_value) return fail(Errc::invalid_argument, "--" + name + " takes no value");
      slot.emplace_back();
      continue;
    }
    if (inline_value) {
      slot.push_back(*inline_value);
    } else {
      if (i + 1 >= args.size()) return fail(Errc::invalid_argument, "--" + name + " needs a value");
      slot.push_back(args[++i]);
    }
  }
  return parsed;
}

std::string options_help(const std::vector<OptionSpec>& specs) {
  std::string out;
  for (const auto& s : specs) {
    std::string left = "  --" + s.name + (s.takes_value ? " " + (s.value_name.empty() ? "VALUE" : s.value_name) : "");
    if (left.size() < 30) left.resize(30, ' ');
    else left += "\n" + std::string(30, ' ');
    out += left + s.help + (s.repeatable ? " (repeatable)" : "") + "\n";
  }
  return out;
}

}  // namespace fde
