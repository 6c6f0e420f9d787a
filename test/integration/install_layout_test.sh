#!/usr/bin/env bash
# `cmake --install` of this build tree into a temporary DESTDIR, checked the way a
# distribution would use it (docs/install.md): every path where the configured prefix says,
# the unit's ExecStart= and credentials pointing at installed files, sysusers.d and
# tmpfiles.d applied to the tree, the dracut module complete (every $moddir file that
# module-setup.sh uses is installed) and accepted by the real dracut, the executables
# stripped with their debug info in the debug component, no simulator in a FDE_WITH_SIM=OFF
# build. CTest passes the configured directories (test/CMakeLists.txt).
set -uo pipefail

usage() {
  echo "usage: $0 --build DIR --source DIR --prefix P --sbindir D --bindir D --sysconfdir D" \
       "--split-debug ON|OFF --with-sim ON|OFF" >&2
  exit 2
}
build='' source_dir='' prefix='' sbindir='' bindir='' sysconfdir='' split_debug='' with_sim=''
while [ $# -gt 0 ]; do
  case "$1" in
    --build) build=$2 ;; --source) source_dir=$2 ;; --prefix) prefix=$2 ;; --sbindir) sbindir=$2 ;;
    --bindir) bindir=$2 ;; --sysconfdir) sysconfdir=$2 ;; --split-debug) split_debug=$2 ;;
    --with-sim) with_sim=$2 ;;
    *) usage ;;
  esac
  shift 2 || usage
done
for v in build source_dir prefix sbindir bindir sysconfdir split_debug with_sim; do
  [ -n "${!v}" ] || usage
done

work=$(mktemp -d /tmp/fde-install-test-XXXXXX)
trap 'rm -rf "$work"' EXIT
dest=$work/root
debug_dest=$work/debug-root
# shellcheck source=test/lib/checks.sh
. "$(dirname "${BASH_SOURCE[0]}")/../lib/checks.sh"
is_set() { case "$1" in ON | on | TRUE | true | YES | yes | 1) return 0 ;; *) return 1 ;; esac }

# ---- the install ------------------------------------------------------------------------
if ! DESTDIR=$dest cmake --install "$build" >"$work/install.log" 2>&1; then
  cat "$work/install.log"
  echo "FAILED: cmake --install"
  exit 1
fi
# Installing under another prefix than the configured one is refused (the unit would run a
# binary that is not there).
if DESTDIR=$work/other cmake --install "$build" --prefix /opt/elsewhere >"$work/other.log" 2>&1; then
  bad "cmake --install --prefix /opt/elsewhere was accepted"
else
  check "the refusal names the configured prefix" grep -q "configured for prefix $prefix" "$work/other.log"
fi

confdir=$sysconfdir/fde-verifier
unit=$dest$prefix/lib/systemd/system/fde-verifierd.service
module=$dest$prefix/lib/dracut/modules.d/90fde-agent
programs=("$sbindir/fde-verifierd" "$sbindir/fde-admin" "$sbindir/fde-agent" "$bindir/fde-image")

# ---- paths ------------------------------------------------------------------------------
for p in "${programs[@]}"; do
  check "$p is an installed executable" test -f "$dest$p" -a -x "$dest$p"
done
for f in "$confdir/fde-verifierd.toml" "$prefix/lib/sysusers.d/fde-verifierd.conf" \
         "$prefix/lib/tmpfiles.d/fde-verifierd.conf" "$prefix/share/doc/fde-verifier/fde-verifierd.md" \
         "$prefix/share/doc/fde-verifier/install.md" "$prefix/share/doc/fde-verifier/operator-guide.md" \
         "$prefix/share/doc/fde-verifier/protocol.md" "$prefix/share/doc/fde-verifier/threat-model.md"; do
  check "$f is installed" test -f "$dest$f"
done
check "the unit is installed" test -f "$unit"
if [ "$prefix" = /usr ]; then
  check "prefix /usr puts the configuration in /etc, not /usr/etc" test "$confdir" = /etc/fde-verifier
  check "nothing is installed under /usr/etc" test ! -e "$dest/usr/etc"
fi
# Nothing of the simulator is installed, in any build; fde-sim is a test tool.
sim_files=$(cd "$dest" && find . -name '*sim*' | tr '\n' ' ')
check "no simulator file installed (found: $sim_files)" test -z "$sim_files"
version=$("$dest$sbindir/fde-agent" --version 2>&1)
if is_set "$with_sim"; then
  check "a FDE_WITH_SIM=ON agent says it has the sim platform ($version)" grep -q 'sim' <<<"$version"
else
  check "a FDE_WITH_SIM=OFF agent has no sim platform ($version)" test "${version/sim/}" = "$version"
fi

# ---- the unit ---------------------------------------------------------------------------
exec_start=$(sed -n 's/^ExecStart=//p' "$unit")
read -r -a exec_words <<<"$exec_start"
check "ExecStart= ($exec_start) runs the installed fde-verifierd" test "${exec_words[0]:-}" = "$sbindir/fde-verifierd"
check "ExecStart='s binary exists in the tree" test -x "$dest${exec_words[0]:-/nonexistent}"
config_arg=''
for ((i = 1; i < ${#exec_words[@]}; i++)); do
  [ "${exec_words[$i]}" = --config ] && config_arg=${exec_words[$((i + 1))]:-}
done
check "ExecStart='s --config ($config_arg) is the installed configuration" test "$config_arg" = "$confdir/fde-verifierd.toml"
while read -r cred; do
  check "LoadCredential=$cred is under $confdir" test "$(dirname "${cred#*:}")" = "$confdir"
done < <(sed -n 's/^LoadCredential=//p' "$unit")
doc=$(sed -n 's|^Documentation=file://||p' "$unit")
check "Documentation= ($doc) is installed" test -f "$dest$doc"
if command -v systemd-analyze >/dev/null; then
  # The unit as systemd reads it, in a copy of the tree (hard links) with the host's targets
  # and kill(1) added, as an installed system has them: --root resolves ExecStart= and the
  # other commands inside the tree.
  analyze_root=$work/analyze-root
  cp -al "$dest" "$analyze_root"
  mkdir -p "$analyze_root/usr/lib/systemd/system" "$analyze_root/bin"
  cp /usr/lib/systemd/system/*.target "$analyze_root/usr/lib/systemd/system/"
  cp "$(type -P kill)" "$analyze_root/bin/kill"
  if systemd-analyze verify --root="$analyze_root" "${unit#"$dest"}" >"$work/analyze.log" 2>&1; then
    ok
  else
    bad "systemd-analyze verify refuses the unit: $(cat "$work/analyze.log")"
  fi
fi

# ---- sysusers.d and tmpfiles.d, applied to the installed tree ----------------------------
tmpfiles=$dest$prefix/lib/tmpfiles.d/fde-verifierd.conf
check "tmpfiles.d creates $confdir" grep -Eq "^d +$confdir +0750 +root +fde-verifier" "$tmpfiles"
if [ "$(id -u)" = 0 ] && command -v systemd-sysusers >/dev/null && command -v systemd-tmpfiles >/dev/null; then
  mkdir -p "$dest/etc"
  : >"$dest/etc/passwd"
  : >"$dest/etc/group"
  systemd-sysusers --root="$dest" >"$work/sysusers.log" 2>&1 || bad "systemd-sysusers: $(cat "$work/sysusers.log")"
  check "sysusers.d made the fde-verifier user" grep -q '^fde-verifier:' "$dest/etc/passwd"
  # A bare name is looked up in the tree's tmpfiles.d directories, as at boot.
  systemd-tmpfiles --root="$dest" --create fde-verifierd.conf >"$work/tmpfiles.log" 2>&1 ||
    bad "systemd-tmpfiles: $(cat "$work/tmpfiles.log")"
  # The tree's own group database gives the group's id (the host's does not know it).
  gid=$(awk -F: '$1 == "fde-verifier" { print $3 }' "$dest/etc/group")
  for d in "$confdir" "$confdir/tls" "$confdir/roots"; do
    check "$d is 0750 root:fde-verifier (gid ${gid:-none}; found $(stat -c '%a %u:%g' "$dest$d" 2>&1))" \
      test "$(stat -c '%a %u:%g' "$dest$d" 2>/dev/null)" = "750 0:${gid:-none}"
  done
else
  echo "note: not root or no systemd-sysusers/tmpfiles: sysusers.d and tmpfiles.d checked by content only"
fi

# ---- the dracut module ------------------------------------------------------------------
check "module-setup.sh is installed and executable" test -x "$module/module-setup.sh"
mapfile -t used < <(grep -oE '\$\{?moddir\}?/[A-Za-z0-9._-]+' "$module/module-setup.sh" | sed 's|.*/||' | sort -u)
check "module-setup.sh uses files from \$moddir" test "${#used[@]}" -gt 0
for f in "${used[@]}"; do
  check "dracut module file $f (used by module-setup.sh) is installed" test -f "$module/$f"
  case "$f" in *.sh) check "$f is executable" test -x "$module/$f" ;; esac
done
source_files=$(cd "$source_dir/guest-agent/dracut" && ls | sort | tr '\n' ' ')
installed_files=$(cd "$module" && ls | sort | tr '\n' ' ')
check "the installed module has the source module's files ($installed_files vs $source_files)" \
  test "$installed_files" = "$source_files"
agent_default=$(sed -n 's/.*\${FDE_AGENT_BINARY:-\([^}]*\)}.*/\1/p' "$module/module-setup.sh")
check "module-setup.sh looks for the agent where it is installed ($agent_default)" test "$agent_default" = "$sbindir/fde-agent"

# ---- stripped executables, debug info in the debug component ------------------------------
if is_set "$split_debug"; then
  if ! DESTDIR=$debug_dest cmake --install "$build" --component debug >"$work/debug.log" 2>&1; then
    cat "$work/debug.log"
    bad "cmake --install --component debug"
  fi
  for p in "${programs[@]}"; do
    name=$(basename "$p")
    sections=$(readelf -S -W "$dest$p" 2>/dev/null)
    check "$p has no symbol table or DWARF" test -z "$(grep -E '\.(symtab|debug_info|debug_line) ' <<<"$sections")"
    link=$(readelf -W --string-dump=.gnu_debuglink "$dest$p" 2>/dev/null | sed -n 's/^ *\[ *0\] *//p')
    check "$p links its debug file ($link)" test "$link" = "$name.debug"
    debug_file=$debug_dest$prefix/lib/debug$p.debug
    check "$debug_file is installed by the debug component" test -f "$debug_file"
    if [ -f "$debug_file" ]; then
      check "$name.debug carries the symbols" grep -q '\.symtab ' <(readelf -S -W "$debug_file" 2>/dev/null)
      # The link's CRC-32 must be the debug file's, or gdb ignores the file.
      check "$name's debuglink CRC matches $name.debug" python3 - "$dest$p" "$debug_file" <<'EOF'
import subprocess, sys, zlib
dump = subprocess.run(["objcopy", "--dump-section", ".gnu_debuglink=/dev/stdout", sys.argv[1], "/dev/null"],
                      capture_output=True, check=True).stdout
stored = int.from_bytes(dump[-4:], "little")
sys.exit(0 if stored == zlib.crc32(open(sys.argv[2], "rb").read()) else 1)
EOF
    fi
    echo "size: $name installed $(stat -c %s "$dest$p") bytes, debug file $(stat -c %s "$debug_file" 2>/dev/null || echo '?') bytes"
  done
  check "a plain install leaves the debug files out" test ! -e "$dest$prefix/lib/debug"
fi

# ---- dracut builds an initramfs with the installed module --------------------------------
if command -v dracut >/dev/null; then
  # shellcheck source=test/e2e/e2e_lib.sh
  . "$source_dir/test/e2e/e2e_lib.sh"
  e2e_messages install-test
  setup_error() { bad "$*"; }
  kver=$(ls /lib/modules | sort -V | tail -n 1)
  if [ -z "$kver" ]; then
    bad "no kernel in /lib/modules for dracut (linux-image-amd64, scripts/install-deps.sh)"
  else
    e2e_initramfs script "$work/initrd.img" "$module"
    if [ -s "$work/initrd.img" ]; then
      lsinitrd "$work/initrd.img" >"$work/initrd.list" 2>&1 || bad "lsinitrd failed"
      for f in usr/libexec/fde-agent/fde-unlock etc/cmdline.d/90fde-agent.conf \
               usr/lib/dracut/hooks/pre-pivot/10-fde-verify-root.sh \
               usr/lib/dracut/hooks/initqueue/settled/40-fde-agent-settled.sh \
               usr/lib/dracut/hooks/initqueue/finished/40-fde-agent-finished.sh; do
        check "the initramfs holds $f" grep -q " $f\$" "$work/initrd.list"
      done
    else
      bad "dracut made no initramfs from the installed module"
    fi
  fi
else
  bad "dracut is not installed (dracut-core, scripts/install-deps.sh): the installed module cannot be tried"
fi

echo "install layout: $passed checks passed, $failed failed"
[ "$failed" -eq 0 ]
