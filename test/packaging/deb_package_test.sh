#!/usr/bin/env bash
# The Debian packages, built and installed as an administrator would (docs/install.md,
# "Debian packages"): dpkg-buildpackage on a copy of the source tree, lintian, then a clean
# Debian root made by debootstrap (minbase) in which the production packages are installed
# with dpkg -i and apt-get -f install, and checked there: files where the FHS and the unit
# expect them, the unit accepted by systemd-analyze verify and enabled but not started, the
# fde-verifier user and /etc/fde-verifier made by the maintainer scripts, the programs run,
# and dracut, with the installed module, builds an initramfs that holds the agent and its
# hooks. Needs root (debootstrap, chroot) and the Debian mirror; caches nothing.
#
# usage: deb_package_test.sh --source DIR
# Environment: FDE_DEBIAN_MIRROR (default http://deb.debian.org/debian), FDE_DEBIAN_SUITE
# (default bookworm), FDE_DEB_KEEP=1 keeps the work directory, FDE_DEB_WORK=DIR works in DIR
# (which must not exist) instead of a new temporary directory.
set -uo pipefail

source_dir=''
while [ $# -gt 0 ]; do
  case "$1" in
    --source) source_dir=${2:-}; shift 2 ;;
    *) echo "usage: $0 --source DIR" >&2; exit 2 ;;
  esac
done
[ -n "$source_dir" ] || { echo "usage: $0 --source DIR" >&2; exit 2; }
source_dir=$(cd "$source_dir" && pwd)
mirror=${FDE_DEBIAN_MIRROR:-http://deb.debian.org/debian}
suite=${FDE_DEBIAN_SUITE:-bookworm}

if [ "$(id -u)" != 0 ]; then
  echo "FAILED: needs root (debootstrap and chroot)"
  exit 1
fi
for tool in dpkg-buildpackage lintian debootstrap chroot lsinitrd; do
  command -v "$tool" >/dev/null || { echo "FAILED: $tool is missing (scripts/install-deps.sh)"; exit 1; }
done

if [ -n "${FDE_DEB_WORK:-}" ]; then
  mkdir "$FDE_DEB_WORK" || { echo "FAILED: FDE_DEB_WORK=$FDE_DEB_WORK must be a new directory"; exit 1; }
  work=$(cd "$FDE_DEB_WORK" && pwd)
else
  work=$(mktemp -d /tmp/fde-deb-test-XXXXXX)
fi
root=$work/root
cleanup() {
  # Unmount before deleting, and never cross into another filesystem while deleting.
  for m in "$root/proc"; do
    mountpoint -q "$m" 2>/dev/null && umount -l "$m"
  done
  [ -n "${debootstrap_pid:-}" ] && kill "$debootstrap_pid" 2>/dev/null && wait "$debootstrap_pid" 2>/dev/null
  if [ "${FDE_DEB_KEEP:-0}" = 1 ]; then echo "kept $work"; else rm -rf --one-file-system "$work"; fi
}
trap cleanup EXIT

# shellcheck source=test/lib/checks.sh
. "$(dirname "${BASH_SOURCE[0]}")/../lib/checks.sh"
fatal() { echo "FAILED: $*"; echo "deb packages: $passed checks passed, $((failed + 1)) failed"; exit 1; }
t_start=$(date +%s)
elapsed() { echo "$(($(date +%s) - t_start)) s"; }
in_root() {  # a command in the root, with a clean environment
  chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LC_ALL=C.UTF-8 DEBIAN_FRONTEND=noninteractive "$@"
}

# ---- a clean root, made while the packages build -------------------------------------------
# debootstrap mostly waits for the network and the disk, the build for the CPU.
debootstrap --variant=minbase "$suite" "$root" "$mirror" >"$work/debootstrap.log" 2>&1 &
debootstrap_pid=$!

# ---- build ---------------------------------------------------------------------------------
# A copy of the tree as a clone has it: the files git tracks (and new ones it does not
# ignore), without build directories or an earlier package build (.gitignore, debian/.gitignore).
mkdir -p "$work/src"
if git -C "$source_dir" rev-parse --git-dir >/dev/null 2>&1; then
  (cd "$source_dir" && git ls-files -z --cached --others --exclude-standard |
     tar --null -T - --ignore-failed-read -cf -) | tar -C "$work/src" -xf -
else
  tar -C "$source_dir" --exclude=./.git --exclude='./build*' --exclude='./obj-*' -cf - . | tar -C "$work/src" -xf -
fi
[ -f "$work/src/debian/rules" ] || fatal "copying the source tree"
# nocheck: the unit tests run in scripts/run-tests.sh's own build; the packages here are built
# exactly as without it otherwise.
if ! (cd "$work/src" && DEB_BUILD_OPTIONS="nocheck parallel=$(nproc)" \
      dpkg-buildpackage -us -uc -b -Pnocheck) >"$work/build.log" 2>&1; then
  tail -n 60 "$work/build.log"
  fatal "dpkg-buildpackage"
fi
echo "built the packages ($(elapsed))"
arch=$(dpkg-architecture -qDEB_HOST_ARCH)
version=$(cd "$work/src" && dpkg-parsechangelog -SVersion)
deb() { echo "$work/${1}_${version}_${arch}.deb"; }
production=(fde-verifierd fde-agent fde-image)
for p in "${production[@]}" fde-sim; do
  check "$p built" test -f "$(deb "$p")"
  check "$p-dbgsym built" test -f "$(deb "$p-dbgsym")"
done
for p in "${production[@]}" fde-sim; do
  [ -f "$(deb "$p-dbgsym")" ] || continue
  listing=$(dpkg-deb -c "$(deb "$p-dbgsym")")
  check "$p-dbgsym holds debug files" grep -q '/usr/lib/debug/\.build-id/.*\.debug$' <<<"$listing"
  echo "size: $p $(stat -c %s "$(deb "$p")") bytes, $p-dbgsym $(stat -c %s "$(deb "$p-dbgsym")") bytes"
done

# Nothing of the simulator in the production packages; fde-sim alone carries it.
for p in "${production[@]}"; do
  sim=$(dpkg-deb -c "$(deb "$p")" | awk '{ print $6 }' | grep -i 'sim' | tr '\n' ' ')
  check "$p carries no simulator file (found: $sim)" test -z "$sim"
done
mkdir -p "$work/x-agent" "$work/x-sim"
dpkg-deb -x "$(deb fde-agent)" "$work/x-agent"
agent_version=$("$work/x-agent/usr/sbin/fde-agent" --version 2>&1)
check "the packaged agent has no simulated platform ($agent_version)" \
  test -n "$agent_version" -a "${agent_version/sim/}" = "$agent_version"
check "the packaged agent is static" bash -c "file '$work/x-agent/usr/sbin/fde-agent' | grep -q 'statically linked'"
check "the packaged agent is stripped" bash -c "! readelf -S -W '$work/x-agent/usr/sbin/fde-agent' | grep -q '\.symtab '"
dpkg-deb -x "$(deb fde-sim)" "$work/x-sim"
check "fde-sim runs from its package" "$work/x-sim/usr/bin/fde-sim" --version

# ---- the maintainer scripts ----------------------------------------------------------------
postinst=$(dpkg-deb -I "$(deb fde-verifierd)" postinst)
check "postinst runs systemd-sysusers" grep -q 'systemd-sysusers' <<<"$postinst"
check "postinst runs systemd-tmpfiles --create" grep -Eq 'systemd-tmpfiles .*--create' <<<"$postinst"
check "postinst enables the unit" grep -q 'deb-systemd-helper .*enable' <<<"$postinst"
check "postinst never starts the daemon" bash -c '! grep -Eq "deb-systemd-invoke .*(start|restart)" <<<"$1"' _ "$postinst"
sysusers_line=$(grep -n 'systemd-sysusers' <<<"$postinst" | head -n 1 | cut -d: -f1)
tmpfiles_line=$(grep -En 'systemd-tmpfiles .*--create' <<<"$postinst" | head -n 1 | cut -d: -f1)
check "postinst makes the user before the directories owned by its group" \
  test "${sysusers_line:-0}" -lt "${tmpfiles_line:-0}"

# ---- lintian -------------------------------------------------------------------------------
changes=$(ls "$work"/*.changes)
if lintian --fail-on error,warning,info --display-info --tag-display-limit 0 "$changes" >"$work/lintian.log" 2>&1; then
  ok
else
  bad "lintian: $(cat "$work/lintian.log")"
fi
echo "lintian done ($(elapsed))"

# ---- install on the clean root ---------------------------------------------------------------
wait "$debootstrap_pid"
status=$?
debootstrap_pid=''
if [ "$status" != 0 ]; then
  tail -n 30 "$work/debootstrap.log"
  tail -n 30 "$root/debootstrap/debootstrap.log" 2>/dev/null
  fatal "debootstrap --variant=minbase $suite"
fi
echo "debootstrap done ($(elapsed))"
mount -t proc proc "$root/proc" || fatal "mount proc in the root"
mkdir -p "$root/tmp/fde-debs"
for p in "${production[@]}"; do cp "$(deb "$p")" "$root/tmp/fde-debs/"; done
# dpkg -i stops at the missing dependencies (systemd, dracut, the shared libraries); apt-get
# -f install fetches them and configures the packages.
in_root dpkg -i /tmp/fde-debs/fde-verifierd_"${version}"_"$arch".deb /tmp/fde-debs/fde-agent_"${version}"_"$arch".deb \
  /tmp/fde-debs/fde-image_"${version}"_"$arch".deb >"$work/dpkg.log" 2>&1
in_root apt-get update -qq >"$work/apt.log" 2>&1 || { cat "$work/apt.log"; fatal "apt-get update in the root"; }
if ! in_root apt-get -f install -y -q --no-install-recommends >>"$work/apt.log" 2>&1; then
  cat "$work/dpkg.log" "$work/apt.log"
  fatal "apt-get -f install in the root"
fi
for p in "${production[@]}"; do
  check "$p is installed and configured" \
    test "$(in_root dpkg-query -W -f '${Status}' "$p" 2>/dev/null)" = "install ok installed"
done
check "fde-sim was not pulled in" test -z "$(in_root dpkg-query -W -f '${Status}' fde-sim 2>/dev/null)"
echo "installed in the root ($(elapsed))"

# ---- files where the FHS and the unit expect them ---------------------------------------------
for f in /usr/sbin/fde-verifierd /usr/sbin/fde-admin /usr/sbin/fde-agent /usr/bin/fde-image; do
  check "$f is an installed executable" test -f "$root$f" -a -x "$root$f"
done
unit=/usr/lib/systemd/system/fde-verifierd.service
for f in /etc/fde-verifier/fde-verifierd.toml "$unit" /usr/lib/sysusers.d/fde-verifierd.conf \
         /usr/lib/tmpfiles.d/fde-verifierd.conf /usr/share/doc/fde-verifier/fde-verifierd.md \
         /usr/share/doc/fde-verifier/operator-guide.md /usr/share/doc/fde-verifierd/copyright \
         /usr/share/man/man8/fde-verifierd.8.gz /usr/share/man/man8/fde-admin.8.gz \
         /usr/share/man/man8/fde-agent.8.gz /usr/share/man/man8/fde-image.8.gz \
         /usr/share/man/man5/fde-verifierd.toml.5.gz /usr/share/bash-completion/completions/fde-verifierd \
         /usr/share/bash-completion/completions/fde-admin /usr/share/bash-completion/completions/fde-image; do
  check "$f is installed" test -f "$root$f"
done
check "the configuration is a conffile" grep -qx ' /etc/fde-verifier/fde-verifierd.toml [0-9a-f]*' \
  <(in_root dpkg-query -W -f '${Conffiles}\n' fde-verifierd)
check "nothing under /usr/etc or /usr/local" test ! -e "$root/usr/etc" -a -z "$(find "$root/usr/local" -type f)"
doc=$(sed -n 's|^Documentation=file://||p' "$root$unit")
check "the unit's Documentation= ($doc) is installed uncompressed" test -f "$root$doc"
exec_bin=$(sed -n 's/^ExecStart=\([^ ]*\).*/\1/p' "$root$unit")
check "ExecStart= ($exec_bin) is the installed daemon" test "$exec_bin" = /usr/sbin/fde-verifierd
# The dracut module: everything module-setup.sh takes from $moddir, and the source's file set.
module=$root/usr/lib/dracut/modules.d/90fde-agent
check "module-setup.sh is installed and executable" test -x "$module/module-setup.sh"
mapfile -t used < <(grep -oE '\$\{?moddir\}?/[A-Za-z0-9._-]+' "$module/module-setup.sh" 2>/dev/null | sed 's|.*/||' | sort -u)
check "module-setup.sh uses files from \$moddir" test "${#used[@]}" -gt 0
for f in "${used[@]}"; do check "dracut module file $f is installed" test -f "$module/$f"; done
check "the installed module has the source module's files" \
  test "$(cd "$module" && ls | sort | tr '\n' ' ')" = "$(cd "$source_dir/guest-agent/dracut" && ls | sort | tr '\n' ' ')"

# ---- what the maintainer scripts did ----------------------------------------------------------
check "the fde-verifier user exists" grep -q '^fde-verifier:' "$root/etc/passwd"
gid=$(awk -F: '$1 == "fde-verifier" { print $3 }' "$root/etc/group")
for d in /etc/fde-verifier /etc/fde-verifier/tls /etc/fde-verifier/roots; do
  check "$d is 0750 root:fde-verifier (found $(stat -c '%a %u:%g' "$root$d" 2>&1))" \
    test "$(stat -c '%a %u:%g' "$root$d" 2>/dev/null)" = "750 0:${gid:-none}"
done
check "the unit is enabled" test -L "$root/etc/systemd/system/multi-user.target.wants/fde-verifierd.service"

# ---- the unit, as the root's systemd reads it ------------------------------------------------
if in_root systemd-analyze verify "$unit" >"$work/analyze.log" 2>&1; then
  ok
else
  bad "systemd-analyze verify $unit: $(cat "$work/analyze.log")"
fi

# ---- the installed programs ------------------------------------------------------------------
for p in fde-verifierd fde-admin fde-agent fde-image; do
  out=$(in_root "$p" --version 2>&1)
  check "$p --version from the package prints $version ($out)" grep -q "$version" <<<"$out"
done
# Unconfigured, as installed: --check-config refuses (exit 2, a configuration error) and
# says what is missing, so a start before the administrator's set-up fails the same way.
out=$(in_root fde-verifierd --config /etc/fde-verifier/fde-verifierd.toml --check-config 2>&1)
status=$?
check "--check-config of the unconfigured install exits 2 (got $status: $out)" test "$status" = 2
check "--check-config names what is missing ($out)" grep -Eqi 'tls|kek|credential|roots' <<<"$out"

# ---- dracut with the installed module ----------------------------------------------------------
# The agent configured on this "build host" (docs/fde-agent.md), so the module copies it in.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=fde-deb-test-ca \
  -keyout "$work/ca.key" -out "$root/etc/fde-verifier-ca.pem" -days 2 >/dev/null 2>&1 || fatal "openssl req"
mkdir -p "$root/etc/fde"
cat >"$root/etc/fde/agent.conf" <<'EOF'
image_id = deb-package-test
verifier = https://192.0.2.10:8443
ca_file = /etc/fde-verifier-ca.pem
luks_uuid = 493500c5-ec0f-4ce7-8ccf-1ae6f2168f3e
released_key_check = 0000000000000000000000000000000000000000000000000000000000000001
volume_key_check = 0000000000000000000000000000000000000000000000000000000000000002
EOF
check "the installed agent accepts the configuration" in_root sh -c 'fde-agent --config /etc/fde/agent.conf --check-config >/dev/null'
t0=$(date +%s)
# --no-kernel: the root has no kernel; the module's files and the agent are what is checked.
if in_root dracut --force --no-hostonly --no-kernel --no-early-microcode --gzip --add fde-agent \
     --kver 0.0.0-fde-test /tmp/initrd.img >"$work/dracut.log" 2>&1 && [ -s "$root/tmp/initrd.img" ]; then
  echo "dracut: $(stat -c %s "$root/tmp/initrd.img") bytes in $(($(date +%s) - t0)) s"
  in_root lsinitrd /tmp/initrd.img >"$work/initrd.list" 2>&1 || bad "lsinitrd"
  for f in usr/sbin/fde-agent etc/fde/agent.conf etc/fde-verifier-ca.pem usr/libexec/fde-agent/fde-unlock \
           etc/cmdline.d/90fde-agent.conf usr/lib/dracut/hooks/pre-pivot/10-fde-verify-root.sh \
           usr/lib/systemd/system/fde-agent.service usr/lib/systemd/system/initrd.target.wants/fde-agent.service \
           usr/sbin/cryptsetup; do
    check "the initramfs holds $f" grep -q " $f\( -> .*\)\?\$" "$work/initrd.list"
  done
  check "the initramfs's agent is the installed one" \
    cmp -s <(in_root lsinitrd -f usr/sbin/fde-agent /tmp/initrd.img) "$root/usr/sbin/fde-agent"
else
  tail -n 40 "$work/dracut.log"
  bad "dracut with the installed module"
fi

echo "deb packages: $passed checks passed, $failed failed ($(elapsed))"
[ "$failed" -eq 0 ]
