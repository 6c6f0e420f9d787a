#!/usr/bin/env bash
# The bash completions (docs/completion/) work and cannot drift from the programs: each file
# is sourced in a fresh bash, its function is called with COMP_WORDS/COMP_CWORD set as bash
# would set them, and COMPREPLY is compared with
#  - the options each program's (and each command's) --help prints, exactly: none missing,
#    none that does not exist;
#  - fixed choices (--log-level, --decision, formats), file and directory names;
#  - for fde-admin, the image ids the daemon lists (through a stand-in fde-admin that prints
#    what `fde-admin --json list` prints).
# usage: bash_completion_test.sh --source DIR --verifierd BIN --admin BIN --image BIN
set -uo pipefail

source_dir="" verifierd="" admin="" image=""
while [ $# -gt 0 ]; do
  case "$1" in
    --source) source_dir=$2; shift 2 ;;
    --verifierd) verifierd=$2; shift 2 ;;
    --admin) admin=$2; shift 2 ;;
    --image) image=$2; shift 2 ;;
    *) echo "usage: $0 --source DIR --verifierd BIN --admin BIN --image BIN" >&2; exit 2 ;;
  esac
done
completions="$source_dir/docs/completion"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }

# complete PROGRAM WORD...: COMPREPLY, sorted, one per line, for the command line WORD...
# with the cursor at the end of the last word (give "" to complete a new word).
complete_line() {
  local program=$1
  shift
  bash --norc --noprofile -c '
    source "$1" || exit 1
    spec=$(complete -p "$2") || exit 1
    function=$(sed -n "s/.* -F \([^ ]*\) .*/\1/p" <<<"$spec")
    shift 2
    COMP_WORDS=("$@")
    COMP_CWORD=$(($# - 1))
    COMP_LINE="$*"
    COMP_POINT=${#COMP_LINE}
    "$function" || exit 1
    printf "%s\n" "${COMPREPLY[@]}"
  ' completion "$completions/$program" "$program" "$@" | sed '/^$/d' | sort
}

# expect DESCRIPTION EXPECTED ACTUAL: both are lists of words (no test name has a space).
expect() {
  local expected actual
  expected=$(tr ' ' '\n' <<<"$2" | sed '/^$/d' | sort -u)
  actual=$(tr ' ' '\n' <<<"$3" | sed '/^$/d' | sort -u)
  if [ "$expected" != "$actual" ]; then
    fail "$1"$'\n'"  expected: $(tr '\n' ' ' <<<"$expected")"$'\n'"  got:      $(tr '\n' ' ' <<<"$actual")"
  fi
}
options_in() { grep -oE -- '--[a-z][a-z0-9-]*' | sort -u; }
# The options of an options_help() table: its indented "  --name" lines.
table_options() { grep -oE -- '^  --[a-z][a-z0-9-]*' | tr -d ' ' | sort -u; }

for program in fde-verifierd fde-admin fde-image; do
  [ -f "$completions/$program" ] || fail "$completions/$program is missing"
done

# --- fde-verifierd ---
expect "fde-verifierd --: every option of --help" \
  "$("$verifierd" --help | table_options)" "$(complete_line fde-verifierd fde-verifierd --)"
expect "fde-verifierd --log-level" "error warning info debug" \
  "$(complete_line fde-verifierd fde-verifierd --log-level "")"
mkdir -p "$work/dir1"
: >"$work/verifier.toml"
expect "fde-verifierd --config FILE" "$work/verifier.toml" \
  "$(complete_line fde-verifierd fde-verifierd --config "$work/ver")"
expect "fde-verifierd --config=FILE (split at =)" "$work/verifier.toml" \
  "$(complete_line fde-verifierd fde-verifierd --config = "$work/ver")"
expect "fde-verifierd --threads: no choices" "" "$(complete_line fde-verifierd fde-verifierd --threads "")"

# --- fde-image ---
image_help=$("$image" --help)
build_options=$(sed -n '/^build options:/,/^measure options:/p' <<<"$image_help" | table_options)
measure_options=$(sed -n '/^measure options:/,/^rebind options:/p' <<<"$image_help" | table_options)
rebind_options=$(sed -n '/^rebind options:/,$p' <<<"$image_help" | table_options)
inspect_options=$( (grep 'fde-image inspect' <<<"$image_help"; echo --help) | options_in)
[ "$(wc -l <<<"$build_options")" -ge 20 ] || fail "fde-image --help: expected 20 or more build options"
expect "fde-image: commands" "build help --help --version inspect measure rebind" \
  "$(complete_line fde-image fde-image "")"
expect "fde-image build --" "$build_options" "$(complete_line fde-image fde-image build --)"
expect "fde-image measure --" "$measure_options" "$(complete_line fde-image fde-image measure IMAGE --)"
expect "fde-image inspect --" "$inspect_options" "$(complete_line fde-image fde-image inspect --)"
expect "fde-image rebind --" "$rebind_options" "$(complete_line fde-image fde-image rebind IMAGE --)"
expect "fde-image build --input-format q" "qcow2" "$(complete_line fde-image fde-image build --input-format q)"
expect "fde-image build --agent-platform" "sim tsi" \
  "$(complete_line fde-image fde-image build --agent-platform "")"
: >"$work/file1"
expect "fde-image build --work-dir: directories only" "$work/dir1" \
  "$(complete_line fde-image fde-image build --work-dir "$work/")"
expect "fde-image inspect IMAGE: files" "$work/file1" "$(complete_line fde-image fde-image inspect "$work/fi")"
expect "fde-image rebind IMAGE: files" "$work/file1" "$(complete_line fde-image fde-image rebind "$work/fi")"

# --- fde-admin ---
admin_help=$("$admin" --help)
commands=$(grep -oE '^  [a-z][a-z-]+ ' <<<"$admin_help" | tr -d ' ')
expect "fde-admin: commands" "$commands"$'\n'"help" "$(complete_line fde-admin fde-admin "")"
expect "fde-admin --: global options" "--socket"$'\n'"--json"$'\n'"--help"$'\n'"--version" \
  "$(complete_line fde-admin fde-admin --)"
for command in $commands; do
  expect "fde-admin $command --" "$("$admin" "$command" --help | table_options)" \
    "$(complete_line fde-admin fde-admin --json "$command" --)"
done
expect "fde-admin audit --decision" "release deny admin" \
  "$(complete_line fde-admin fde-admin audit --decision "")"
expect "fde-admin enroll --bundle FILE" "$work/file1" "$(complete_line fde-admin fde-admin enroll --bundle "$work/fi")"

# Image ids come from the daemon: a stand-in fde-admin answers `--socket S --json list` (and
# only that) the way the real one prints the daemon's response.
cat >"$work/fake-admin" <<'FAKE'
#!/usr/bin/env bash
[ "$*" = "--socket /tmp/test.sock --json list" ] || exit 2
cat <<'JSON'
{
  "ok": true,
  "result": {
    "images": [
      {
        "image_id": "web-01",
        "luks_uuid": "493500c5-ec0f-4ce7-8ccf-1ae6f2168f3e",
        "status": "active"
      },
      {
        "image_id": "db-02",
        "status": "revoked"
      }
    ]
  }
}
JSON
FAKE
chmod +x "$work/fake-admin"
expect "fde-admin show IMAGE (from the daemon)" "db-02 web-01" \
  "$(complete_line fde-admin "$work/fake-admin" --socket /tmp/test.sock show "")"
# bash splits --socket=PATH at '=' (COMP_WORDBREAKS); without '=' there, the word stays whole.
expect "fde-admin revoke --socket=S w (from the daemon)" "web-01" \
  "$(complete_line fde-admin "$work/fake-admin" revoke --socket = /tmp/test.sock w)"
expect "fde-admin revoke --socket=S w, unsplit (from the daemon)" "web-01" \
  "$(complete_line fde-admin "$work/fake-admin" revoke --socket=/tmp/test.sock w)"
expect "fde-admin audit --image (from the daemon)" "db-02 web-01" \
  "$(complete_line fde-admin "$work/fake-admin" --socket /tmp/test.sock audit --image "")"
expect "fde-admin show IMAGE given: options" "--socket"$'\n'"--json"$'\n'"--help" \
  "$(complete_line fde-admin "$work/fake-admin" --socket /tmp/test.sock show web-01 "")"
expect "fde-admin show: daemon unreachable gives nothing" "" \
  "$(complete_line fde-admin "$work/fake-admin" --socket /tmp/other.sock show "")"

if [ "$failures" -gt 0 ]; then
  echo "$failures failure(s)"
  exit 1
fi
echo "bash completion: fde-verifierd, fde-admin and fde-image complete as their --help says"
