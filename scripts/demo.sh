#!/usr/bin/env bash
# The main job, simulated as far as the project goes today (no QEMU boot yet):
#  part 1: a simulated virtCCA device (test CA -> P-521 device certificate) issues a full
#          token for a challenge; `fde-admin verify-token` checks it offline and refuses
#          tampered variants;
#  part 2: `fde-verifierd` runs on 127.0.0.1 with TLS 1.3 and a fresh SQLite store; a LUKS2
#          volume's key is enrolled with `fde-admin`; `fde-agent --platform sim` attests over
#          TLS, receives the key sealed to its ephemeral key and checks that it opens the
#          volume's keyslot; a boot with other measurements is denied, and the audit log and
#          `fde-admin explain` show why.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${BUILD_DIR:-build}
sim=$build/verifier-daemon/fde-sim
admin=$build/verifier-daemon/fde-admin
daemon=$build/verifier-daemon/fde-verifierd
agent=$build/guest-agent/fde-agent
for b in "$sim" "$admin" "$daemon" "$agent"; do
  [ -x "$b" ] || { echo "build first: scripts/build.sh ($b missing)" >&2; exit 2; }
done
work=$(mktemp -d)
daemon_pid=
cleanup() {
  if [ -n "$daemon_pid" ]; then kill "$daemon_pid" 2>/dev/null || true; wait "$daemon_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

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

printf '\npart 1 finished: the genuine token verified and every hostile variant was refused\n'

step "6. start fde-verifierd on 127.0.0.1 (TLS 1.3, fresh SQLite store, the simulator CA trusted)"
umask 077
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/CN=demo TLS CA" \
  -keyout "$work/tls-ca.key" -out "$work/tls-ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=127.0.0.1" \
  -keyout "$work/server.key" -out "$work/server.csr" 2>/dev/null
openssl x509 -req -in "$work/server.csr" -CA "$work/tls-ca.pem" -CAkey "$work/tls-ca.key" -CAcreateserial \
  -days 2 -extfile <(printf 'subjectAltName=IP:127.0.0.1\n') -out "$work/server.crt" 2>/dev/null
head -c 32 /dev/urandom >"$work/kek"
head -c 32 /dev/urandom >"$work/nonce-secret"
printf '%s\n' '[server]' 'listen = ["127.0.0.1:0"]' '[tls]' 'certificate = "server.crt"' \
  'private_key = "server.key"' '[attestation]' 'trusted_roots = ["device/ca.pem"]' '[nonce]' \
  'secret_file = "nonce-secret"' '[store]' 'database = "verifier.db"' 'kek_file = "kek"' '[admin]' \
  'socket = "admin.sock"' >"$work/verifier.toml"
"$daemon" --config "$work/verifier.toml" --ready-file "$work/ready" 2>"$work/verifierd.log" &
daemon_pid=$!
for _ in $(seq 100); do [ -s "$work/ready" ] && break; sleep 0.1; done
[ -s "$work/ready" ] || { echo "fde-verifierd did not start:" >&2; cat "$work/verifierd.log" >&2; exit 1; }
address=$(cat "$work/ready")
echo "fde-verifierd is listening on $address"
adm() { "$admin" --socket "$work/admin.sock" "$@"; }

step "7. an image: a LUKS2 volume with a machine keyslot, and its enrollment bundle"
truncate -s 32M "$work/disk.img"
key_b64=$(head -c 32 /dev/urandom | base64 -w0)
printf '%s' "$key_b64" | base64 -d | cryptsetup luksFormat --batch-mode --type luks2 --pbkdf pbkdf2 \
  --pbkdf-force-iterations 1000 --key-file=- "$work/disk.img"
uuid=$(cryptsetup luksUUID "$work/disk.img")
echo "LUKS2 volume $uuid"
# Direct kernel boot: the RIM covers kernel, initramfs and command line (design.md 6a).
boot_rim=$(printf 'kernel + initramfs + dtb of demo-image' | sha256sum | cut -d' ' -f1)
reference='{"version": 1, "image_id": "demo-image", "hash_alg": "sha-256", "sets": [{"name": "direct", "boot": "direct", "rims": ["'$boot_rim'"]}]}'
printf '{"format": "virtcca-fde-enrollment/v1", "image_id": "demo-image", "luks_uuid": "%s", "disk_key": "%s", "reference": %s}\n' \
  "$uuid" "$key_b64" "$reference" >"$work/bundle.json"
key_b64=
adm enroll --bundle "$work/bundle.json"
rm -f "$work/bundle.json"  # the key now exists only in the verifier (wrapped) and in the keyslot
adm list

step "8. fde-agent --platform sim attests over TLS and tests the released key on the volume"
mkdir -p "$work/simboot"
cp "$work/device/"*.pem "$work/simboot/"
echo "$boot_rim" >"$work/simboot/rim"
printf '%s\n' "image_id = demo-image" "verifier = https://$address" "ca_file = $work/tls-ca.pem" \
  "luks_uuid = $uuid" "platform = sim" "sim_dir = $work/simboot" "attempt_timeout = 10s" "overall_timeout = 20s" >"$work/agent.conf"
: >"$work/cmdline"
"$agent" --config "$work/agent.conf" --cmdline "$work/cmdline" --device "$work/disk.img" --test-passphrase

step "9. the same image booted with other measurements is denied, and the verifier says why"
printf 'a tampered kernel' | sha256sum | cut -d' ' -f1 >"$work/simboot/rim"
set +e
"$agent" --config "$work/agent.conf" --cmdline "$work/cmdline" --device "$work/disk.img" --test-passphrase
status=$?
set -e
[ "$status" -ne 0 ] || { echo "UNEXPECTED: the tampered boot was released a key" >&2; exit 1; }
echo "fde-agent gave up with exit $status (failure policy poweroff)"
adm audit
adm explain demo-image | grep -E "FAIL" | head -5

printf '\ndemo finished: verified, enrolled, attested and unlocked; the tampered boot was denied\n'
