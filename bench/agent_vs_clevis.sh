#!/usr/bin/env bash
# Agent start to key in hand against `clevis decrypt` of a Tang-bound secret, both timed as
# whole processes by hyperfine on loopback.
#
#   bench/agent_vs_clevis.sh --build DIR --tang-dir DIR --out CSV [--runs N]
#
# Ours: the fde-agent of DIR (built with the simulated platform) runs from its start to the
# released key opening a LUKS2 keyslot (--test-passphrase: cryptsetup checks the key against
# a real LUKS2 file formatted with cheap PBKDF2, nothing is mapped), against fde-verifierd on
# 127.0.0.1 with the image enrolled by fde-admin (a direct-boot RIM). Every run is a full
# boot's exchange: config, device and header checks, challenge, a simulated token, attest,
# HPKE open, the key checks, cryptsetup.
# The peer: `clevis decrypt < secret.jwe` against the Tang of bench/tang_setup.sh.
# Writes hyperfine's CSV (mean, median, min, max in seconds) to CSV.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
build='' tang_dir='' out='' runs=10
while [ $# -gt 0 ]; do
  case "$1" in
    --build) build=$2; shift 2 ;;
    --tang-dir) tang_dir=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    *) echo "usage: $0 --build DIR --tang-dir DIR --out CSV [--runs N]" >&2; exit 2 ;;
  esac
done
[ -n "$build" ] && [ -n "$tang_dir" ] && [ -n "$out" ] || { echo "usage: $0 --build DIR --tang-dir DIR --out CSV" >&2; exit 2; }
build=$(realpath "$build")
agent=$build/guest-agent/fde-agent
command -v hyperfine >/dev/null || { echo "agent_vs_clevis: hyperfine is missing" >&2; exit 2; }
"$agent" --version | grep -q sim || { echo "agent_vs_clevis: $agent was built without the sim platform" >&2; exit 2; }

work=$(mktemp -d "${TMPDIR:-/tmp}/fde-agent-bench.XXXXXX")
# shellcheck source=../test/e2e/e2e_lib.sh
. "$here/test/e2e/e2e_lib.sh"
e2e_messages agent_vs_clevis
cleanup() { stop_verifier; rm -rf "$work"; }
trap cleanup EXIT
# shellcheck disable=SC2034  # used by e2e_lib.sh
daemon=$build/verifier-daemon/fde-verifierd
admin=$build/verifier-daemon/fde-admin
sim=$build/verifier-daemon/fde-sim
umask 077  # the daemon refuses secrets that others may read
e2e_verifier >/dev/null

# The volume and its key; the check values fde-image would write (common/crypto/key_check.hpp).
head -c 32 /dev/urandom > "$work/disk.key"
truncate -s 17M "$work/disk.luks"
cryptsetup luksFormat -q --type luks2 --pbkdf pbkdf2 --pbkdf-force-iterations 1000 --key-file "$work/disk.key" \
  "$work/disk.luks"
uuid=$(cryptsetup luksUUID "$work/disk.luks")
cryptsetup luksDump -q --dump-volume-key --volume-key-file "$work/volume.key" --key-file "$work/disk.key" \
  "$work/disk.luks" >/dev/null
check() { { printf '%s' "$1"; cat "$2"; } | sha256sum | cut -c1-64; }
rim=$(head -c 32 /dev/urandom | sha256sum | cut -c1-64)
mkdir -p "$work/sim"
cp "$work/device/"*.pem "$work/sim/"
echo "$rim" > "$work/sim/rim"
printf '{"format": "virtcca-fde-enrollment/v1", "image_id": "bench", "luks_uuid": "%s", "disk_key": "%s", "reference": {"version": 1, "image_id": "bench", "hash_alg": "sha-256", "sets": [{"name": "direct", "boot": "direct", "rims": ["%s"]}]}}' \
  "$uuid" "$(base64 -w0 < "$work/disk.key")" "$rim" > "$work/bundle.json"
adm enroll --bundle "$work/bundle.json" >/dev/null
rm -f "$work/bundle.json"
umask 022
cat > "$work/agent.conf" <<EOF
image_id = bench
verifier = https://127.0.0.1:$port
ca_file = $work/tls-ca.pem
luks_uuid = $uuid
sim_dir = $work/sim
failure_policy = poweroff
released_key_check = $(check "virtcca-fde released-key check v1" "$work/disk.key")
volume_key_check = $(check "virtcca-fde volume-key check v1" "$work/volume.key")
EOF
mkdir -m 0700 "$work/hdr"
agent_cmd="$agent --platform sim --config $work/agent.conf --cmdline /dev/null --device $work/disk.luks --header-dir $work/hdr --test-passphrase"
$agent_cmd 2>"$work/agent.log" || { cat "$work/agent.log" >&2; fail "the agent did not unlock"; }
clevis_cmd="clevis decrypt < $tang_dir/secret.jwe > /dev/null"
clevis decrypt < "$tang_dir/secret.jwe" | cmp -s - "$tang_dir/secret" || fail "clevis decrypt did not recover the secret"
hyperfine -N --warmup 1 --runs "$runs" --export-csv "$out" -n fde-agent "$agent_cmd" >/dev/null 2>&1 ||
  hyperfine --warmup 1 --runs "$runs" --export-csv "$out" -n fde-agent "$agent_cmd" >/dev/null
hyperfine --warmup 1 --runs "$runs" --export-csv "$out.clevis" -n "clevis decrypt" "$clevis_cmd" >/dev/null
tail -n +2 "$out.clevis" >> "$out"
rm -f "$out.clevis"
