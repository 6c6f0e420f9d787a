#!/usr/bin/env bash
# Checks a results folder of bench/run-all.sh: results.tsv has every row of the table, each
# with a number in the "ours" cell and in the "peer / bound" cell (rows without a peer: the
# storm's outcome and the RSS), no n/a anywhere; results.md and a PNG chart.png exist.
#   bench/check_results.sh RESULTS_DIR
set -euo pipefail
dir=${1:?usage: check_results.sh RESULTS_DIR}
tsv=$dir/results.tsv
fail() { echo "check_results: $*" >&2; exit 1; }
[ -s "$tsv" ] || fail "$tsv is missing or empty"
[ -s "$dir/results.md" ] || fail "$dir/results.md is missing"
file "$dir/chart.png" | grep -q 'PNG image' || fail "$dir/chart.png is not a PNG"
rows=(
  "key releases/s, new TLS connection per release"
  "server CPU per release, 64 clients"
  "crypto per attestation"
  "bound per boot"
  "worker threads 2 vs 1"
  "database on tmpfs vs disk"
  "agent start to key in hand"
  "fde-image build vs qemu-img convert"
  "output allocated size"
  "boot storm: time to the last key"
  "latency at half capacity"
)
# The one-core row needs a second CPU for the load client.
[ "$(nproc)" -lt 2 ] || rows+=("one core for the server")
no_peer_rows=("boot storm: " "daemon RSS: ")
number='[0-9]+(\.[0-9]+)?'
for row in "${rows[@]}" "${no_peer_rows[@]}"; do
  line=$(grep -F -- "$row" "$tsv" | head -n 1) || true
  [ -n "$line" ] || fail "no row '$row'"
  ours=$(cut -f2 <<<"$line")
  peer=$(cut -f3 <<<"$line")
  grep -Eq "$number" <<<"$ours" || fail "row '$row': no number for ours: '$ours'"
  if [[ " ${no_peer_rows[*]} " != *" $row "* ]]; then
    grep -Eq "$number" <<<"$peer" || fail "row '$row': no number for the peer or bound: '$peer'"
  fi
  ! grep -q 'n/a' <<<"$line" || fail "row '$row' has a missing figure: $line"
done
# Four figures each for ours and Tang in the rate row.
rates=$(grep -F "key releases/s" "$tsv")
[ "$(cut -f2 <<<"$rates" | grep -Eo "$number" | wc -l)" -eq 4 ] || fail "ours: not four rates: $rates"
[ "$(cut -f3 <<<"$rates" | grep -Eo "$number" | wc -l)" -ge 4 ] || fail "Tang: not four rates: $rates"
grep -q 'all unlocked\|boot storm: .* all unlocked' "$tsv" || fail "no storm outcome row"
grep -F "boot storm: " "$tsv" | grep -q $'\tyes (0, ' || fail "not every storm agent unlocked: $(grep -F 'boot storm: ' "$tsv" | head -n 1)"
echo "check_results: $tsv has every row with numbers"
