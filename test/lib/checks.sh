# shellcheck shell=bash
# Counted checks for the shell tests (install layout, RPM and Debian packages): every check
# runs, a failed one is printed and counted, and the script ends with the totals.
#   check DESCRIPTION COMMAND...   runs COMMAND; counts it passed or failed
#   ok / bad DESCRIPTION           counts a check the caller made itself
passed=0
failed=0
ok() { passed=$((passed + 1)); }
bad() { echo "FAILED: $*"; failed=$((failed + 1)); }
check() {
  local what=$1
  shift
  if "$@"; then ok; else bad "$what"; fi
}
