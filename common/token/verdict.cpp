// Verdict bookkeeping.
#include "common/token/verdict.hpp"

namespace fde {

void Verdict::add(std::string name, std::string expected, std::string found, bool passed) {
  checks_.push_back(Check{std::move(name), std::move(expected), std::move(found), passed});
}

void Verdict::append(const Verdict& other) {
  checks_.insert(checks_.end(), other.checks_.begin(), other.checks_.end());
}

bool Verdict::passed() const {
  if (checks_.empty()) return false;
  for (const auto& c : checks_)
    if (!c.passed) return false;
  return true;
}

const Check* Verdict::first_failure() const {
  for (const auto& c : checks_)
    if (!c.passed) return &c;
  return nullptr;
}

std::string Verdict::summary() const {
  if (const Check* f = first_failure())
    return f->name + ": expected " + f->expected + ", found " + f->found;
  if (checks_.empty()) return "no checks ran";
  return "all " + std::to_string(checks_.size()) + " checks passed";
}

}  // namespace fde
