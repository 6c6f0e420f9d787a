#!/usr/bin/env bash
# The openEuler RPMs (packaging/rpm/): builds them from this source tree with
# packaging/rpm/build-rpms.sh (rpmbuild, then rpmlint on the spec and every package) and
# checks what each package holds: the verifier's daemon, admin tool, unit, sysusers.d and
# tmpfiles.d files, its configuration as a %config(noreplace) file in /etc/fde-verifier and
# the directories' owner and mode; a complete dracut module and a static agent without the
# simulated platform; the image builder; man pages and bash completions; the simulator only
# in the -simulator test package; the debug info in -debuginfo; the scriptlets that create the user
# and hand the unit to systemd; rpmlint without errors or warnings.
#
#   test/packaging/rpm_packages_test.sh --source DIR
#
# It compiles a release tree and the simulator (CTest label packaging, run on its own). With a
# warm ccache it took 2.5 min of wall time on the shared 2-core machine (about 35 s of CPU);
# cold (no ccache), rpmbuild used 347 CPU seconds, about 3-4 min on 2 idle cores
# (docs/install.md, "openEuler RPM").
set -uo pipefail

source_dir=''
while [ $# -gt 0 ]; do
  case "$1" in
    --source) source_dir=$2; shift 2 ;;
    *) echo "usage: $0 --source DIR" >&2; exit 2 ;;
  esac
done
[ -n "$source_dir" ] || { echo "usage: $0 --source DIR" >&2; exit 2; }

work=$(mktemp -d /tmp/fde-rpm-test-XXXXXX)
trap 'rm -rf "$work"' EXIT
out=$work/out
# shellcheck source=test/lib/checks.sh
. "$(dirname "${BASH_SOURCE[0]}")/../lib/checks.sh"

"$source_dir/packaging/rpm/build-rpms.sh" --out "$out" >"$work/build.log" 2>&1
status=$?
if [ "$status" -ne 0 ] && [ "$status" -ne 3 ]; then  # 3: built, rpmlint found errors (checked below)
  cat "$work/build.log"
  echo "FAILED: packaging/rpm/build-rpms.sh (exit status $status)"
  exit 1
fi
grep -E '^(rpmbuild took|== |-- )' "$work/build.log"

# ---- the packages -----------------------------------------------------------------------
rpm_of() { find "$out" -maxdepth 1 -name "$1-[0-9]*.rpm" ! -name '*.src.rpm' | head -n 1; }
verifier=$(rpm_of virtcca-fde-verifier)
agent=$(rpm_of virtcca-fde-agent)
image=$(rpm_of virtcca-fde-image)
simulator=$(rpm_of virtcca-fde-simulator)
debuginfo=$(rpm_of virtcca-fde-debuginfo)
for p in verifier agent image simulator debuginfo; do
  check "a virtcca-fde-$p package was built" test -n "${!p}"
done
check "a source package was built" compgen -G "$out/virtcca-fde-*.src.rpm" >/dev/null
if [ "$failed" -gt 0 ]; then echo "$passed passed, $failed failed"; exit 1; fi

has() {  # has PACKAGE-FILE-LIST PATH-REGEX: some line matches the whole regex
  grep -E -q -x "$2" "$out/$1.files"
}
lacks() { ! grep -E -q -x "$2" "$out/$1.files"; }
man='(\.gz|\.xz|\.bz2)?'

# The verifier.
check "verifier: daemon in /usr/sbin" has virtcca-fde-verifier /usr/sbin/fde-verifierd
check "verifier: fde-admin in /usr/sbin" has virtcca-fde-verifier /usr/sbin/fde-admin
check "verifier: unit in /usr/lib/systemd/system" has virtcca-fde-verifier /usr/lib/systemd/system/fde-verifierd.service
check "verifier: sysusers.d file" has virtcca-fde-verifier /usr/lib/sysusers.d/fde-verifierd.conf
check "verifier: tmpfiles.d file" has virtcca-fde-verifier /usr/lib/tmpfiles.d/fde-verifierd.conf
check "verifier: configuration in /etc/fde-verifier" has virtcca-fde-verifier /etc/fde-verifier/fde-verifierd.toml
check "verifier: the configuration is its only %config file" \
  test "$(rpm -qcp "$verifier" 2>/dev/null)" = /etc/fde-verifier/fde-verifierd.toml
check "verifier: the configuration is %config(noreplace)" \
  bash -c "rpm -qp --qf '[%{FILENAMES} %{FILEFLAGS:fflags}\n]' '$verifier' 2>/dev/null | grep -E -q -x '/etc/fde-verifier/fde-verifierd.toml c?n'"
for d in /etc/fde-verifier /etc/fde-verifier/tls /etc/fde-verifier/roots; do
  check "verifier: $d is root:fde-verifier 0750 (as tmpfiles.d says)" \
    bash -c "rpm -qp --qf '[%{FILENAMES} %{FILEMODES:perms} %{FILEUSERNAME} %{FILEGROUPNAME}\n]' '$verifier' 2>/dev/null | grep -q -x '$d drwxr-x--- root fde-verifier'"
done
check "verifier: tmpfiles.d names the same directories" \
  bash -c "rpm2cpio '$verifier' | cpio -i --quiet --to-stdout ./usr/lib/tmpfiles.d/fde-verifierd.conf | grep -c '^d /etc/fde-verifier[a-z/]* *0750 root fde-verifier' | grep -q -x 3"
check "verifier: man pages fde-verifierd(8), fde-admin(8), fde-verifierd.toml(5)" \
  bash -c "grep -E -q -x '/usr/share/man/man8/fde-verifierd\.8$man' '$out/virtcca-fde-verifier.files' &&
           grep -E -q -x '/usr/share/man/man8/fde-admin\.8$man' '$out/virtcca-fde-verifier.files' &&
           grep -E -q -x '/usr/share/man/man5/fde-verifierd\.toml\.5$man' '$out/virtcca-fde-verifier.files'"
check "verifier: bash completions" \
  bash -c "grep -q -x /usr/share/bash-completion/completions/fde-verifierd '$out/virtcca-fde-verifier.files' &&
           grep -q -x /usr/share/bash-completion/completions/fde-admin '$out/virtcca-fde-verifier.files'"
check "verifier: the documentation the unit's Documentation= names" \
  has virtcca-fde-verifier /usr/share/doc/fde-verifier/fde-verifierd.md
scripts=$(rpm -qp --scripts "$verifier" 2>/dev/null)
check "verifier: %pre creates the fde-verifier user" grep -q -E 'useradd .*fde-verifier|fde-verifier.*useradd|sysusers' <<<"$scripts"
check "verifier: %post applies the unit's preset" grep -q 'preset fde-verifierd.service' <<<"$scripts"
check "verifier: %preun disables and stops the unit on removal" grep -q -E 'disable (--now )?fde-verifierd.service' <<<"$scripts"
check "verifier: %postun restarts the unit after an upgrade" grep -q 'try-restart fde-verifierd.service' <<<"$scripts"

# The agent and its dracut module: every file the source module has, module-setup.sh and
# the hooks executable, and every $moddir file that module-setup.sh uses is in the package.
check "agent: fde-agent in /usr/sbin" has virtcca-fde-agent /usr/sbin/fde-agent
check "agent: man page fde-agent(8)" has virtcca-fde-agent "/usr/share/man/man8/fde-agent\.8$man"
module=/usr/lib/dracut/modules.d/90fde-agent
for f in "$source_dir"/guest-agent/dracut/*; do
  n=$(basename "$f")
  check "agent: dracut module has $n" has virtcca-fde-agent "$module/$n"
done
check "agent: the dracut module has nothing else" \
  test "$(grep -c "^$module/" "$out/virtcca-fde-agent.files")" = "$(find "$source_dir/guest-agent/dracut" -type f | wc -l)"
extract=$work/agent-root
mkdir -p "$extract"
(cd "$extract" && rpm2cpio "$agent" | cpio -idm --quiet)
check "agent: module-setup.sh is executable" test -x "$extract$module/module-setup.sh"
for ref in $(grep -o -E '\$\{?moddir\}?/[A-Za-z0-9._-]+' "$extract$module/module-setup.sh" | sed 's|.*/||' | sort -u); do
  check "agent: module-setup.sh's \$moddir/$ref is in the package" test -f "$extract$module/$ref"
done
check "agent: the packaged agent is static (no program interpreter)" \
  bash -c "! readelf -l '$extract/usr/sbin/fde-agent' | grep -q INTERP"
check "agent: the packaged agent has no simulated platform" \
  bash -c "'$extract/usr/sbin/fde-agent' --version | grep -F -q '(platforms: tsi;'"
check "agent: the packaged agent is stripped (debug info in -debuginfo)" \
  bash -c "! readelf -S '$extract/usr/sbin/fde-agent' | grep -q '\.debug_info'"
requires=$(rpm -qp --requires "$agent" 2>/dev/null)
check "agent: requires dracut and cryptsetup" bash -c "grep -q -x dracut <<<'$requires' && grep -q -x cryptsetup <<<'$requires'"

# The image builder.
check "image: fde-image in /usr/bin" has virtcca-fde-image /usr/bin/fde-image
check "image: man page fde-image(8)" has virtcca-fde-image "/usr/share/man/man8/fde-image\.8$man"
check "image: bash completion" has virtcca-fde-image /usr/share/bash-completion/completions/fde-image

# The simulator only in the test package.
for p in virtcca-fde-verifier virtcca-fde-agent virtcca-fde-image; do
  check "$p: no simulator file" bash -c "! grep -q -i -E 'fde-sim|/sim/|simulat' '$out/$p.files'"
done
check "simulator: fde-sim in /usr/bin, and nothing else" \
  test "$(grep -v -E '^/usr/(share/(doc|licenses)|lib/\.build-id)(/|$)' "$out/virtcca-fde-simulator.files")" = /usr/bin/fde-sim
check "simulator: says it is for tests" bash -c "rpm -qp --qf '%{SUMMARY}' '$simulator' 2>/dev/null | grep -q -i test"

# Debug info for every program, found by build id.
for p in fde-verifierd fde-admin fde-agent fde-image fde-sim; do
  check "debuginfo: $p" bash -c "grep -E -q '^/usr/lib/debug/usr/s?bin/$p-.*\.debug$' '$out/virtcca-fde-debuginfo.files'"
done

# rpmlint: each remaining finding is filtered in virtcca-fde.rpmlintrc with its reason.
check "rpmlint: no errors and no warnings" grep -E -q '[0-9]+ packages and [0-9]+ specfiles checked; 0 errors, 0 warnings' "$out/rpmlint.txt"
check "build-rpms.sh: exit status 0" test "$status" -eq 0
grep -E -q '0 errors, 0 warnings' "$out/rpmlint.txt" || cat "$out/rpmlint.txt"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
