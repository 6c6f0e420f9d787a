#!/bin/bash
# Every program answers -h, --help and --version with exit status 0 and text on stdout, and
# prints error messages without internal error-code names ("invalid_argument: ...").
# usage: help_version_test.sh NAME=BINARY...
set -uo pipefail
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }
[ $# -ge 1 ] || { echo "usage: $0 NAME=BINARY..." >&2; exit 2; }
for pair in "$@"; do
  name=${pair%%=*} bin=${pair#*=}
  [ -x "$bin" ] || { fail "$name: $bin is not an executable"; continue; }
  for flag in -h --help --version; do
    out=$("$bin" "$flag" 2>/dev/null); status=$?
    [ "$status" -eq 0 ] || fail "$name $flag: exit status $status"
    [ -n "$out" ] || fail "$name $flag: nothing on stdout"
    case $flag in
      --version) grep -qE '[0-9]+\.[0-9]+\.[0-9]+' <<<"$out" || fail "$name --version: no version number in: $out" ;;
      *) grep -qi 'usage' <<<"$out" || fail "$name $flag: no usage text" ;;
    esac
  done
done
# One error from each program that reports one without a daemon: no code names.
codes='(invalid_argument|malformed|too_large|unsupported|verification_failed|not_found|internal|io): '
for pair in "$@"; do
  name=${pair%%=*} bin=${pair#*=}
  case $name in
    fde-image) err=$("$bin" build --input /nonexistent.qcow2 --output /nonexistent/o.qcow2 --image-id 'bad id' \
                 --verifier https://192.0.2.1 --verifier-ca /nonexistent.pem --rim "$(printf '1%.0s' {1..64})" \
                 --no-agent 2>&1 >/dev/null) ;;
    fde-verifierd) err=$("$bin" --config /nonexistent.toml --check-config 2>&1 >/dev/null) ;;
    fde-admin) err=$("$bin" verify-token --token /nonexistent.cbor 2>&1 >/dev/null) ;;
    *) continue ;;
  esac
  [ -n "$err" ] || fail "$name: no error message for a bad invocation"
  if grep -qE "$codes" <<<"$err"; then fail "$name: the error shows an internal code: $err"; fi
done
if [ "$failures" -eq 0 ]; then echo "PASS"; else echo "$failures failure(s)"; exit 1; fi
