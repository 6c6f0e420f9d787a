#!/usr/bin/env bash
# The man pages (docs/man/) lint clean and cannot drift from the programs:
#  - groff -man -ww and mandoc -Tlint report nothing for any page;
#  - every option a program's --help text names (for fde-admin: the top-level help and each
#    command's) is described in its page, and every fde-admin command has an entry;
#  - every option a page describes (an option in a .TP tag) exists in the program's help;
#  - fde-verifierd.toml(5) has every section and key of the daemon's TOML schema
#    (verifier-daemon/config/config.cpp) and of the annotated packaging/fde-verifierd.toml,
#    and describes no key that the schema lacks;
#  - fde-agent(8) has an entry for every key of the agent's configuration table
#    (guest-agent/config/agent_config.cpp), names the ones only the file may set, and
#    describes no other.
# usage: man_pages_test.sh --source DIR --verifierd BIN --admin BIN --image BIN --agent BIN
set -uo pipefail

source_dir="" verifierd="" admin="" image="" agent=""
while [ $# -gt 0 ]; do
  case "$1" in
    --source) source_dir=$2; shift 2 ;;
    --verifierd) verifierd=$2; shift 2 ;;
    --admin) admin=$2; shift 2 ;;
    --image) image=$2; shift 2 ;;
    --agent) agent=$2; shift 2 ;;
    *) echo "usage: $0 --source DIR --verifierd BIN --admin BIN --image BIN --agent BIN" >&2; exit 2 ;;
  esac
done
man_dir="$source_dir/docs/man"
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }

for tool in groff mandoc; do
  command -v "$tool" >/dev/null || { echo "FAIL: $tool is not installed (scripts/install-deps.sh installs it)"; exit 1; }
done

pages=("$man_dir"/*.[1-8])
[ ${#pages[@]} -ge 5 ] || fail "expected at least 5 man pages in $man_dir, found ${#pages[@]}"

# --- lint ---
for page in "${pages[@]}"; do
  out=$(groff -man -Tutf8 -ww -z "$page" 2>&1)
  [ -z "$out" ] || fail "groff -ww $(basename "$page"):"$'\n'"$out"
  out=$(mandoc -Tlint -Wstyle "$page" 2>&1)
  [ -z "$out" ] || fail "mandoc -Tlint $(basename "$page"):"$'\n'"$out"
done

# --- options ---
# The roff spelling of an option or name: each '-' written as '\-'.
roff() { printf '%s' "$1" | sed 's/-/\\-/g'; }
# The same as an extended regular expression.
roff_re() { printf '%s' "$1" | sed 's/-/\\\\-/g'; }
# Every --option a help text names.
options_in() { grep -oE -- '--[a-z][a-z0-9-]*' | sort -u; }
# Every --option in a .TP/.TQ tag (the line after the macro) of a page.
tagged_options() {
  awk '/^\.(TP|TQ)/ { tag = 1; next } tag { print; tag = 0 }' "$1" |
    grep -oE -- '\\-\\-[a-z][a-z0-9\\-]*' | sed 's/\\-/-/g' | sort -u
}

# check_page PAGE HELP_TEXT: both directions between the help's options and the page.
check_page() {
  local page=$1 help=$2 option
  local documented
  documented=$(tagged_options "$page")
  [ -n "$(options_in <<<"$help")" ] || fail "$(basename "$page"): no options found in the program's help"
  for option in $(options_in <<<"$help"); do
    grep -qF -- "$(roff "$option")" "$page" || fail "$(basename "$page"): $option (in --help) is not in the page"
    grep -qxF -- "$option" <<<"$documented" ||
      fail "$(basename "$page"): $option (in --help) has no entry (.TP tag) of its own"
  done
  for option in $documented; do
    grep -qxF -- "$option" <<<"$(options_in <<<"$help")" ||
      fail "$(basename "$page"): documents $option, which the program's help does not know"
  done
}

help_of() {  # BIN ARGS...: the help text on stdout and stderr, whatever the exit status
  "$@" 2>&1 || true
}

check_page "$man_dir/fde-verifierd.8" "$(help_of "$verifierd" --help)"
check_page "$man_dir/fde-agent.8" "$(help_of "$agent" --help)"
check_page "$man_dir/fde-image.8" "$(help_of "$image" --help)"

admin_help=$(help_of "$admin" --help)
# Commands: the indented "  name   summary" lines of the top-level help.
commands=$(grep -oE '^  [a-z][a-z-]+ ' <<<"$admin_help" | tr -d ' ')
[ "$(wc -w <<<"$commands")" -ge 10 ] || fail "fde-admin --help: expected at least 10 commands, found: $commands"
all_admin_help="$admin_help"$'\n'"--version"
for command in $commands; do
  grep -qE "^\.B[IR]? \"?$(roff_re "$command")( |\"|$)" "$man_dir/fde-admin.8" ||
    fail "fde-admin.8: command $command has no entry"
  all_admin_help+=$'\n'$(help_of "$admin" "$command" --help)
done
check_page "$man_dir/fde-admin.8" "$all_admin_help"

# --- fde-verifierd.toml(5) ---
toml_page="$man_dir/fde-verifierd.toml.5"
# Section and key names of the schema: the `{"name",` entries that end a line in schema().
schema=$(awk '/schema\(\) \{/ { inside = 1 } inside && /^}/ { inside = 0 } inside' \
           "$source_dir/verifier-daemon/config/config.cpp" | grep -oE '^ *\{"[a-z0-9_]+",$' | grep -oE '[a-z0-9_]+')
[ "$(wc -w <<<"$schema")" -ge 25 ] || fail "config.cpp: expected at least 25 sections and keys in schema(), found: $schema"
# Keys of the annotated example: "key = " at the start of a line, commented out or not.
example=$(grep -oE '^(#\s*)?[a-z0-9_]+ = ' "$source_dir/packaging/fde-verifierd.toml" | grep -oE '[a-z0-9_]+ =' | cut -d' ' -f1)
sections=$(grep -oE '^\[[a-z0-9_]+\]' "$source_dir/packaging/fde-verifierd.toml" | tr -d '[]')
for name in $schema $example; do
  if grep -qxF "$name" <<<"$sections"; then
    grep -qxF ".SH [$name]" "$toml_page" || fail "fde-verifierd.toml.5: section [$name] has no .SH heading"
  else
    grep -qE "^\.BR $(roff_re "$name") \" = " "$toml_page" || fail "fde-verifierd.toml.5: key $name has no entry"
  fi
done
for name in $(grep -oE '^\.BR [a-z0-9_]+ " = ' "$toml_page" | cut -d' ' -f2); do
  grep -qxF "$name" <<<"$schema" || fail "fde-verifierd.toml.5: documents $name, which config.cpp's schema does not know"
done

# --- fde-agent(8): the configuration keys of guest-agent/config/agent_config.cpp ---
agent_page="$man_dir/fde-agent.8"
# The keys[] table: {"name", Key::name, file_only},
agent_keys=$(grep -oE '^ *\{"[a-z0-9_]+", Key::[a-z0-9_]+, (true|false)\},' \
               "$source_dir/guest-agent/config/agent_config.cpp" | tr -d ' {}"' | tr ',' ' ')
[ "$(wc -l <<<"$agent_keys")" -ge 15 ] || fail "agent_config.cpp: expected 15 or more keys, found: $agent_keys"
# The page's CONFIGURATION entries: .TP tags that are one word, up to the next .SS or .SH.
agent_entries=$(awk '/^\.SH CONFIGURATION/ { on = 1; next } /^\.S[HS]/ { on = 0 }
                     on && /^\.TP/ { tag = 1; next } on && tag { print; tag = 0 }' "$agent_page" |
                  grep -oE '^\.B [a-z0-9_]+$' | cut -d' ' -f2)
# The "Kernel arguments" subsection names the keys that only the file may set.
kernel_section=$(awk '/^\.SS Kernel arguments/ { on = 1; next } /^\.S[HS]/ { on = 0 } on' "$agent_page")
while read -r key _ file_only; do
  grep -qxF "$key" <<<"$agent_entries" || fail "fde-agent.8: configuration key $key has no entry"
  if [ "$file_only" = true ]; then
    grep -qE "^\.BR? $(roff_re "$key")( ,)?$" <<<"$kernel_section" ||
      fail "fde-agent.8: $key can only be set in the file, which \"Kernel arguments\" does not say"
  fi
done <<<"$agent_keys"
for key in $agent_entries; do
  grep -qE "^$key " <<<"$agent_keys" || fail "fde-agent.8: documents configuration key $key, which agent_config.cpp does not know"
done

if [ "$failures" -gt 0 ]; then
  echo "$failures failure(s)"
  exit 1
fi
echo "man pages: ${#pages[@]} pages lint clean and match the programs"
