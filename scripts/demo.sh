#!/usr/bin/env bash
# The main job, simulated end to end as far as the project goes today: a simulated virtCCA
# device (test CA -> P-521 device certificate) issues a full token for a verifier's
# challenge, and `fde-admin verify-token` checks it against the pinned CA; then a tampered
# token, a wrong challenge and an untrusted CA are each refused.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${BUILD_DIR:-build}
sim=$build/verifier-daemon/fde-sim
admin=$build/verifier-daemon/fde-admin
[ -x "$sim" ] && [ -x "$admin" ] || { echo "build first: scripts/build.sh" >&2; exit 2; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

step() { printf '\n== %s\n' "$*"; }

step "1. create a simulated virtCCA device (P-521 device key, certificate from a test CA)"
"$sim" device --out "$work/device" --type p521
openssl x509 -in "$work/device/device-cert.pem" -noout -subject -issuer

step "2. the verifier picks a fresh 64-byte challenge"
challenge=$(openssl rand -hex 64)
echo "challenge: ${challenge:0:32}..."

step "3. the device's TMM issues a full token (platform + CVM) for it"
rim=$(printf 'simulated firmware' | sha256sum | cut -d' ' -f1)
"$sim" token --device "$work/device" --challenge "$challenge" --rim "$rim" --out "$work/token.cbor"
echo "token: $(stat -c %s "$work/token.cbor") bytes"

step "4. fde-admin verify-token checks it against the pinned CA"
"$admin" verify-token --token "$work/token.cbor" --device-cert "$work/device/device-cert.pem" \
  --roots "$work/device/ca.pem" --challenge "$challenge"

expect_rejected() {
  local what=$1; shift
  set +e
  "$admin" verify-token "$@" >"$work/out.txt" 2>&1
  local status=$?
  set -e
  if [ "$status" -eq 0 ]; then echo "UNEXPECTED: $what was accepted" >&2; exit 1; fi
  echo "$what -> exit $status: $(grep -E '^Verdict|fde-admin' "$work/out.txt" | head -1)"
}

step "5. hostile variants are refused"
cp "$work/token.cbor" "$work/tampered.cbor"
# Flip one bit of the last byte (inside the CVM token's signature).
last=$(($(stat -c %s "$work/tampered.cbor") - 1))
byte=$(od -An -tu1 -j "$last" -N1 "$work/tampered.cbor" | tr -d ' ')
printf "\\$(printf %03o $((byte ^ 1)))" | dd of="$work/tampered.cbor" bs=1 seek="$last" conv=notrunc status=none
expect_rejected "one byte of the token changed" --token "$work/tampered.cbor" \
  --device-cert "$work/device/device-cert.pem" --roots "$work/device/ca.pem" --challenge "$challenge"
expect_rejected "another challenge" --token "$work/token.cbor" \
  --device-cert "$work/device/device-cert.pem" --roots "$work/device/ca.pem" --challenge "$(openssl rand -hex 64)"
"$sim" device --out "$work/other" --type p521 >/dev/null
expect_rejected "a CA the verifier does not trust" --token "$work/token.cbor" \
  --device-cert "$work/device/device-cert.pem" --roots "$work/other/ca.pem" --challenge "$challenge"
head -c 100 "$work/token.cbor" >"$work/truncated.cbor"
expect_rejected "a truncated token" --token "$work/truncated.cbor" --roots "$work/device/ca.pem"

printf '\ndemo finished: the genuine token verified and every hostile variant was refused\n'
