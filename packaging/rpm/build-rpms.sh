#!/usr/bin/env bash
# Builds the openEuler RPMs of virtCCA FDE from this git tree (docs/install.md, "openEuler
# RPM"): a source tarball by git archive, rpmbuild -ba in a temporary _topdir, rpmlint on the
# spec and every package, and each binary package's file list.
#
#   packaging/rpm/build-rpms.sh [--out DIR] [--keep] [-- RPMBUILD-ARGS...]
#
#   --out DIR   copy the .rpm files (binary and source), the file lists (<package>.files) and
#               rpmlint's report (rpmlint.txt) to DIR (default: build-rpm/ in the tree)
#   --keep      keep the temporary _topdir (its path is printed)
#   RPMBUILD-ARGS are passed to rpmbuild, e.g. -- --with tests
#
# Exit status: 0 built and rpmlint clean; 1 the build failed; 2 usage or missing tools;
# 3 built, but rpmlint reported errors (the packages and file lists are written all the same).
#
# The tarball holds the committed tree plus uncommitted changes to tracked files (git stash
# create); untracked files are not in it.
#
# On openEuler (or any host whose rpm database has the build dependencies) rpmbuild checks
# BuildRequires as usual. On a host without an rpm database of its own, such as the Debian 12
# machines CI runs on, BuildRequires cannot be satisfied from the host's packages: there the
# script passes --nodeps (the libraries come from the Debian packages that
# scripts/install-deps.sh installs) and loads macros.non-rpm-host for the systemd macros that
# Debian's rpm lacks. It says so when it does.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../.." && pwd)
out="$src/build-rpm"
keep=0
rpmbuild_args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out=$2; shift 2 ;;
    --keep) keep=1; shift ;;
    --) shift; rpmbuild_args=("$@"); break ;;
    -h|--help) sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "build-rpms.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
for tool in git rpmbuild rpmspec rpmlint rpm; do
  command -v "$tool" >/dev/null || { echo "build-rpms.sh: $tool not found (scripts/install-deps.sh installs it)" >&2; exit 2; }
done

spec="$here/virtcca-fde.spec"
name=$(rpmspec -q --srpm --qf '%{name}' "$spec" 2>/dev/null)
version=$(rpmspec -q --srpm --qf '%{version}' "$spec" 2>/dev/null)
project_version=$(sed -n 's/^project(virtcca_fde VERSION \([0-9.]*\).*/\1/p' "$src/CMakeLists.txt")
if [ "$version" != "$project_version" ]; then
  echo "build-rpms.sh: the spec's Version ($version) is not the project's ($project_version, CMakeLists.txt)" >&2
  exit 1
fi

topdir=$(mktemp -d "${TMPDIR:-/tmp}/virtcca-fde-rpmbuild.XXXXXX")
cleanup() { if [ "$keep" = 1 ]; then echo "kept $topdir"; else rm -rf "$topdir"; fi; }
trap cleanup EXIT
mkdir -p "$topdir"/{SOURCES,SPECS,BUILD,RPMS,SRPMS}

# Source0: the tree as git has it; Source1: the sysusers.d file (read when the spec is parsed).
tree=$(git -C "$src" stash create 2>/dev/null || true)
git -C "$src" archive --format=tar.gz --prefix="$name-$version/" -o "$topdir/SOURCES/$name-$version.tar.gz" "${tree:-HEAD}"
cp "$src/packaging/sysusers.d/fde-verifierd.conf" "$topdir/SOURCES/fde-verifierd.sysusers.conf"
cp "$spec" "$topdir/SPECS/"

host_args=()
if ! rpm -q --quiet rpm 2>/dev/null; then
  echo "build-rpms.sh: this host's rpm database is empty (not an RPM distribution): building with" \
       "rpmbuild --nodeps, BuildRequires not checked; systemd macros from macros.non-rpm-host"
  host_args+=(--nodeps)
  if [ -z "$(rpm --eval '%{?systemd_post:1}')" ]; then
    host_args+=(--load "$here/macros.non-rpm-host")
  fi
fi
# ccache, where installed: a rebuild of an unchanged tree then takes a fraction of the time.
# The temporary _topdir changes every run, so paths are hashed relative to it.
if command -v ccache >/dev/null && [ -z "${CMAKE_CXX_COMPILER_LAUNCHER:-}" ]; then
  export CMAKE_C_COMPILER_LAUNCHER=ccache CMAKE_CXX_COMPILER_LAUNCHER=ccache
  export CCACHE_BASEDIR="$topdir" CCACHE_NOHASHDIR=true
fi

echo "== rpmbuild -ba $name-$version (topdir $topdir)"
start=$(date +%s)
if ! rpmbuild -ba --define "_topdir $topdir" "${host_args[@]}" "${rpmbuild_args[@]}" \
       "$topdir/SPECS/virtcca-fde.spec" >"$topdir/rpmbuild.log" 2>&1; then
  tail -n 60 "$topdir/rpmbuild.log" >&2
  echo "build-rpms.sh: rpmbuild failed (whole log: $topdir/rpmbuild.log; kept)" >&2
  keep=1
  exit 1
fi
echo "rpmbuild took $(( $(date +%s) - start )) s"

mapfile -t rpms < <(find "$topdir/RPMS" -name '*.rpm' | sort)
mapfile -t srpms < <(find "$topdir/SRPMS" -name '*.src.rpm')
mkdir -p "$out"
rm -f "$out"/*.rpm "$out"/*.files "$out"/rpmlint.txt

echo "== rpmlint"
lint_status=0
rpmlint -c "$here/rpmlint.toml" -r "$here/virtcca-fde.rpmlintrc" "$topdir/SPECS/virtcca-fde.spec" "${srpms[@]}" "${rpms[@]}" \
  >"$out/rpmlint.txt" 2>&1 || lint_status=$?
cat "$out/rpmlint.txt"

echo "== packages"
for r in "${rpms[@]}" "${srpms[@]}"; do
  cp "$r" "$out/"
done
for r in "${rpms[@]}"; do
  pkg=$(rpm -qp --qf '%{name}' "$r" 2>/dev/null)
  rpm -qlp "$r" 2>/dev/null >"$out/$pkg.files"
  echo "-- $(basename "$r") ($(du -k "$r" | cut -f1) KiB)"
  rpm -qlvp "$r" 2>/dev/null | awk '{ print "   " $1, $3, $4, $NF }'
done
if [ "$lint_status" -ne 0 ]; then
  echo "build-rpms.sh: rpmlint found errors (above); the packages and file lists are in $out" >&2
  exit 3
fi
echo "packages and file lists in $out"
