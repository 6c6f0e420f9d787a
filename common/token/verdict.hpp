// A verdict is data: the list of checks that ran, each with what was expected and found.
// The release decision, log lines, audit records and `fde-admin explain` are all views of it.
#pragma once

#include <string>
#include <vector>

namespace fde {

struct Check {
  std::string name;      // stable identifier, e.g. "cvm.signature", "platform.rak_binding"
  std::string expected;  // human-readable expectation
  std::string found;     // what the evidence showed
  bool passed = false;
};

class Verdict {
 public:
  void add(std::string name, std::string expected, std::string found, bool passed);
  void add_pass(std::string name, std::string expected, std::string found) {
    add(std::move(name), std::move(expected), std::move(found), true);
  }
  void add_fail(std::string name, std::string expected, std::string found) {
    add(std::move(name), std::move(expected), std::move(found), false);
  }
  void append(const Verdict& other);

  const std::vector<Check>& checks() const { return checks_; }
  // True only when at least one check ran and every check passed.
  bool passed() const;
  // The first failed check, or nullptr.
  const Check* first_failure() const;
  // "cvm.signature: expected ..., found ..." for the first failure, or "all N checks passed".
  std::string summary() const;

 private:
  std::vector<Check> checks_;
};

}  // namespace fde
