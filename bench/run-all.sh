#!/usr/bin/env bash
# One command for the performance figures (docs/benchmarks.md): ours side by side with Tang
# and clevis, OpenSSL's own speeds as the bound, fde-image against qemu-img, and a boot storm.
#
#   bench/run-all.sh [--quick] [--out DIR] [--build DIR] [--reps N]
#
#   --quick      small counts, one repetition, a 1 GiB image and a 100-agent storm: about
#                3 minutes (the CTest bench-smoke runs it)
#   --out DIR    where results go (default bench/results/<UTC date>/): results.md (the table),
#                results.tsv (the same, tab-separated), chart.png, raw.txt (every measurement)
#   --build DIR  use the binaries of an existing build (with FDE_WITH_SIM) instead of building
#                fde-verifierd, fde-admin, fde-agent, fde-sim, fde-image and the benches
#                (Release) into build-bench/
#   --reps N     repetitions of each rate measurement (default 3, --quick 1); the table shows
#                the median
#
# Needs: tang, clevis, socat, curl, jose, hyperfine, gnuplot, qemu-utils, gdisk, e2fsprogs,
# cryptsetup, openssl (scripts/install-deps.sh installs them).
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=scripts/lib/free_tcp_port.sh
. "$here/scripts/lib/free_tcp_port.sh"
quick=0 out='' build='' reps=''
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick=1; shift ;;
    --out) out=$2; shift 2 ;;
    --build) build=$2; shift 2 ;;
    --reps) reps=$2; shift 2 ;;
    -h|--help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "run-all: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
[ -n "$reps" ] || reps=$((quick ? 1 : 3))
out=${out:-$here/bench/results/$(date -u +%Y-%m-%d)}
mkdir -p "$out"
out=$(realpath "$out")
raw=$out/raw.txt
: > "$raw"
log() { printf '%s\n' "$*" | tee -a "$raw" >&2; }
# calc DIGITS EXPRESSION: the value of a bc expression, rounded to DIGITS decimals.
calc() { LC_ALL=C printf '%.*f' "$1" "$(echo "scale=6; $2" | bc)"; }

if [ -z "$build" ]; then
  build=$here/build-bench
  log "building (Release) in $build"
  cmake -S "$here" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DFDE_WITH_SIM=ON >/dev/null
  ninja -C "$build" -j"${FDE_BENCH_JOBS:-2}" fde-verifierd fde-admin fde-agent fde-sim fde-image release_bench \
    storm_bench >/dev/null
fi
build=$(realpath "$build")
release_bench=$build/bench/release_bench
storm_bench=$build/bench/storm_bench
for b in "$release_bench" "$storm_bench" "$build/image-builder/fde-image" "$build/guest-agent/fde-agent"; do
  [ -x "$b" ] || { echo "run-all: $b is missing (build it, or drop --build)" >&2; exit 2; }
done

work=$(mktemp -d "${TMPDIR:-/tmp}/fde-run-all.XXXXXX")
cleanup() {
  "$here/bench/tang_setup.sh" stop "$work/tang" 2>/dev/null || true
  [ -z "${tls_pid:-}" ] || kill "$tls_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

if [ "$quick" = 1 ]; then
  count=40 count1=20 scale_count=60 speed_seconds=1 hyper_runs=3 image_gib=1 image_mib=128 image_runs=3
  storm=(--agents 100 --capacity-agents 60 --capacity-clients 16 --half-seconds 3)
else
  count=1500 count1=300 scale_count=1200 speed_seconds=3 hyper_runs=10 image_gib=4 image_mib=1024 image_runs=5
  storm=(--agents 1000 --capacity-agents 600 --capacity-clients 64 --half-seconds 10)
fi
cores=$(nproc)
# The CPUs this run may use (a container's cpuset need not start at 0): the first one for the
# server of the one-core row, the second for its load client.
allowed_cpus=$(awk '/^Cpus_allowed_list:/ {print $2}' /proc/self/status)
read -r server_cpu client_cpu < <(awk -v list="$allowed_cpus" 'BEGIN {
  n = split(list, parts, ","); found = 0
  for (i = 1; i <= n && found < 2; i++) {
    m = split(parts[i], range, "-"); last = m == 2 ? range[2] : range[1]
    for (c = range[1]; c <= last && found < 2; c++) cpu[found++] = c
  }
  print cpu[0], (found > 1 ? cpu[1] : "")
}')
log "machine: $cores cores, $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo), load before: $(cut -d' ' -f1-3 /proc/loadavg)"
log "$(openssl version)"

# --- 1. OpenSSL's own speeds: the bound --------------------------------------------------
log "== openssl speed (${speed_seconds}s per primitive, 1 core)"
openssl speed -seconds "$speed_seconds" ecdsap521 ecdsap256 ecdhx25519 2>/dev/null > "$work/speed.txt"
p521_verify=$(awk '/521 bits ecdsa/{print $NF}' "$work/speed.txt")
p256_sign=$(awk '/256 bits ecdsa/{print $(NF-1)}' "$work/speed.txt")
x25519=$(awk '/ecdh \(X25519\)/{print $NF}' "$work/speed.txt")
log "speed p521_verify_per_s=$p521_verify p256_sign_per_s=$p256_sign x25519_per_s=$x25519"

# One TLS 1.3 handshake as the server side of `openssl s_server` pays it (P-256 certificate,
# X25519), from s_server's CPU (/proc/PID/schedstat: exact run time) over `s_time -new`.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$work/tls.key" -out "$work/tls.crt" \
  -subj /CN=bench -days 1 2>/dev/null
tls_port=
for _ in $(seq 20); do
  candidate=$(free_tcp_port) || break
  openssl s_server -accept "127.0.0.1:$candidate" -cert "$work/tls.crt" -key "$work/tls.key" -tls1_3 -quiet \
    -naccept 1000000 >/dev/null 2>&1 &
  tls_pid=$!
  sleep 0.3
  if kill -0 "$tls_pid" 2>/dev/null; then tls_port=$candidate; break; fi
done
[ -n "$tls_port" ] || { echo "run-all: openssl s_server did not start" >&2; exit 1; }
ns_before=$(cut -d' ' -f1 "/proc/$tls_pid/schedstat")
connections=$(openssl s_time -connect "127.0.0.1:$tls_port" -new -time "$speed_seconds" 2>/dev/null |
  awk '/connections in [0-9]+ real seconds/{print $1; exit}')
ns_after=$(cut -d' ' -f1 "/proc/$tls_pid/schedstat")
kill "$tls_pid"; tls_pid=
handshake_ms=$(calc 3 "($ns_after - $ns_before) / 1000000 / $connections")
log "speed tls_handshake_server_ms=$handshake_ms connections=$connections"
# Per attestation, as the issue that set the goals counted it (two TLS connections per boot):
# 3 P-521 verifications, 6 X25519 operations (2 per handshake, 2 for HPKE), 2 P-256
# signatures (one per handshake). The bound the goal is judged against is what a boot costs
# the server now that the agent uses one connection per boot: 3 verifications, 2 X25519 (the
# HPKE seal) and one handshake at its measured cost.
crypto_ms=$(calc 3 "1000 * (3 / $p521_verify + 6 / $x25519 + 2 / $p256_sign)")
crypto_rate=$(calc 0 "$cores * 1000 / $crypto_ms")
hs_ms=$(calc 3 "1000 * (3 / $p521_verify + 2 / $x25519) + $handshake_ms")
hs_rate=$(calc 0 "$cores * 1000 / $hs_ms")
hs_rate1=$(calc 0 "1000 / $hs_ms")
log "bound crypto_ms=$crypto_ms crypto_rate=$crypto_rate crypto_handshake_ms=$hs_ms crypto_handshake_rate=$hs_rate one_core_rate=$hs_rate1"

# --- 2. Key releases: Tang and ours, interleaved per repetition ---------------------------
"$here/bench/tang_setup.sh" start "$work/tang"
# shellcheck disable=SC1091
. "$work/tang/env"
disk_dir=$out/db-on-disk
mkdir -p "$disk_dir"
log "database filesystems: disk run in $disk_dir ($(stat -f -c %T "$disk_dir")), tmpfs run in /dev/shm ($(stat -f -c %T /dev/shm))"
for rep in $(seq "$reps"); do
  log "== repetition $rep of $reps: key releases with a new connection per request"
  "$release_bench" tang --port "$tang_port" --kid "$tang_kid" --body "$work/tang/rec-body.json" \
    --server-pid "$tang_pid" --clients 1,16,64,256 --count "$count" --count-single "$count1" | tee -a "$raw"
  "$release_bench" ours --clients 1,16,64,256 --count "$count" --count-single "$count1" | tee -a "$raw"
  log "== repetition $rep of $reps: worker threads and the database's filesystem (64 clients)"
  "$release_bench" ours --label threads1 --threads 1 --blocking-threads 1 --clients 64 --count "$scale_count" | tee -a "$raw"
  "$release_bench" ours --label threads2 --threads 2 --blocking-threads 2 --clients 64 --count "$scale_count" | tee -a "$raw"
  "$release_bench" ours --label db-disk --db-dir "$disk_dir" --clients 64 --count "$scale_count" | tee -a "$raw"
  "$release_bench" ours --label db-tmpfs --db-dir /dev/shm --clients 64 --count "$scale_count" | tee -a "$raw"
  if [ -n "$client_cpu" ]; then
    # The rate against the bound: the server alone on one CPU, the load client on another
    # (with both on the same cores, the client's own TLS and HPKE work takes what the server
    # would use).
    log "== repetition $rep of $reps: one core for the server (CPU $server_cpu), the load client on CPU $client_cpu (64 clients)"
    taskset -c "$client_cpu" "$release_bench" ours --label pinned --server-cpu "$server_cpu" --threads 1 --clients 64 \
      --count "$scale_count" | tee -a "$raw"
    taskset -a -p -c "$server_cpu" "$tang_pid" >/dev/null
    taskset -c "$client_cpu" "$release_bench" tang --label tang-pinned --port "$tang_port" --kid "$tang_kid" \
      --body "$work/tang/rec-body.json" --server-pid "$tang_pid" --clients 64 --count "$scale_count" | tee -a "$raw"
    taskset -a -p -c "$allowed_cpus" "$tang_pid" >/dev/null
  fi
done
rmdir "$disk_dir" 2>/dev/null || true

# --- 3. Agent start to key in hand against clevis decrypt --------------------------------
log "== fde-agent against clevis decrypt ($hyper_runs runs each, hyperfine)"
"$here/bench/agent_vs_clevis.sh" --build "$build" --tang-dir "$work/tang" --out "$work/agent.csv" --runs "$hyper_runs"
awk -F, 'NR > 1 {printf "agent-vs-clevis command=%s median_s=%s mean_s=%s min_s=%s max_s=%s user_s=%s system_s=%s\n", $1, $4, $2, $7, $8, $5, $6}' \
  "$work/agent.csv" | sed 's/command=clevis decrypt/command=clevis/' | tee -a "$raw"
"$here/bench/tang_setup.sh" stop "$work/tang"

# --- 4. fde-image build against qemu-img convert ------------------------------------------
log "== fde-image build against qemu-img convert (${image_gib} GiB image, ${image_mib} MiB of data)"
TMPDIR=$work "$here/bench/image_builder_bench.sh" "$build/image-builder/fde-image" "$image_gib" "$image_mib" "$image_runs" > "$work/image.txt"
cat "$work/image.txt" >> "$raw"
# image_builder_bench.sh prints "qemu-img convert qcow2->qcow2: W s wall, C s CPU ...",
# "fde-image build: W s wall, C s CPU ..." and "allocated input|qemu-img copy|fde-image output: N B".
qemu_s=$(awk '/^qemu-img convert qcow2/{print $4}' "$work/image.txt")
durable_s=$(awk '/^qemu-img convert \+ fsync/{print $5}' "$work/image.txt")
build_s=$(awk '/^fde-image build/{print $3}' "$work/image.txt")
mib() { awk -v key="$1" 'index($0, key) == 1 {printf "%.0f", $(NF-1) / 1048576}' "$work/image.txt"; }
in_mib=$(mib 'allocated input:') copy_mib=$(mib 'allocated qemu-img copy:') out_mib=$(mib 'allocated fde-image output:')
log "image qemu_s=$qemu_s qemu_fsync_s=$durable_s build_s=$build_s input_mib=$in_mib copy_mib=$copy_mib output_mib=$out_mib"

# --- 5. The boot storm ---------------------------------------------------------------------
log "== boot storm: ${storm[*]}"
storm_status=0
"$storm_bench" --label storm "${storm[@]}" | tee -a "$raw" || storm_status=$?
if [ "$quick" = 0 ]; then
  # The same storm against a connection cap below its size: the daemon refuses what it has
  # no slot for and the agents come back on their backoff schedule.
  log "== boot storm with max_connections = 200: ${storm[*]}"
  "$storm_bench" --label capped --max-connections 200 "${storm[@]}" | tee -a "$raw" || storm_status=$?
fi

# --- The table -----------------------------------------------------------------------------
# median FIELD of the result lines with label=LABEL clients=C
median() {
  awk -v label="$1" -v clients="$2" -v field="$3" '
    $1 == "result" {
      delete kv
      for (i = 2; i <= NF; i++) { split($i, p, "="); kv[p[1]] = p[2] }
      if (kv["label"] == label && kv["clients"] == clients) v[n++] = kv[field]
    }
    END {
      if (n == 0) { print "n/a"; exit }
      for (i = 0; i < n; i++) for (j = i + 1; j < n; j++) if (v[j] + 0 < v[i] + 0) { t = v[i]; v[i] = v[j]; v[j] = t }
      print v[int((n - 1) / 2)]
    }' "$raw"
}
# field LABEL KEY: KEY= of the last result-storm line with label=LABEL
field() {
  awk -v label="$1" -v key="$2" '$1 == "result-storm" && $2 == "label=" label {
    for (i = 2; i <= NF; i++) { split($i, p, "="); if (p[1] == key) v = p[2] } } END { print v }' "$raw"
}
ratio() { calc 2 "$1 / $2"; }
agent_field() { awk -v c="$1" -v key="$2" '$1 == "agent-vs-clevis" && $2 == "command=" c { for (i = 2; i <= NF; i++) { split($i, p, "="); if (p[1] == key) print p[2] } }' "$raw"; }

for c in 1 16 64 256; do
  eval "ours_$c=\$(median ours $c rate); tang_$c=\$(median tang $c rate)"
done
ours_cpu=$(median ours 64 server_cpu_ms); tang_cpu=$(median tang 64 server_cpu_ms)
ours_best=$(printf '%s\n' "$ours_16" "$ours_64" "$ours_256" | sort -g | tail -n 1)
t1=$(median threads1 64 rate); t2=$(median threads2 64 rate)
t1_cpu=$(median threads1 64 server_cpu_ms); t2_cpu=$(median threads2 64 server_cpu_ms)
t1_lock=$(median threads1 64 lock_held_pct); t2_lock=$(median threads2 64 lock_held_pct)
disk=$(median db-disk 64 rate); shm=$(median db-tmpfs 64 rate)
pinned=$(median pinned 64 rate); pinned_cpu=$(median pinned 64 server_cpu_ms)
pinned_busy=$(median pinned 64 server_cores); tang_pinned=$(median tang-pinned 64 rate)
pct() { if [ "$1" = n/a ] || [ "$2" = n/a ]; then echo n/a; else calc 1 "100 * $1 / $2"; fi; }
agent_ms=$(calc 0 "$(agent_field fde-agent median_s) * 1000")
clevis_ms=$(calc 0 "$(agent_field clevis median_s) * 1000")
hwm_mib=$(calc 1 "$(field storm hwm_kib) / 1024")
idle_mib=$(calc 1 "$(field storm idle_rss_kib) / 1024")
peak_release_mib=$(awk '$1 == "result" { for (i = 2; i <= NF; i++) { split($i, p, "="); if (p[1] == "server_hwm_kib" && $3 == "side=ours" && p[2] > m) m = p[2] } } END { printf "%.1f", m / 1024 }' "$raw")

{
  printf 'figure\tours\tpeer / bound\n'
  printf 'key releases/s, new TLS connection per release, 1 / 16 / 64 / 256 clients\t%s / %s / %s / %s\tTang (tangd per connection, socat) %s / %s / %s / %s\n' \
    "$ours_1" "$ours_16" "$ours_64" "$ours_256" "$tang_1" "$tang_16" "$tang_64" "$tang_256"
  printf 'server CPU per release, 64 clients (/proc)\t%s ms\tTang %s ms (socat + tangd children)\n' "$ours_cpu" "$tang_cpu"
  printf 'crypto per attestation: 3 P-521 verify, 6 X25519, 2 P-256 sign (openssl speed)\t%s %% of bound (best of 16-256 clients, load client on the same cores)\t%s ms -> %s/s on %s cores\n' \
    "$(calc 1 "100 * $ours_best / $crypto_rate")" "$crypto_ms" "$crypto_rate" "$cores"
  printf 'bound per boot: 3 P-521 verify, 2 X25519 (HPKE), 1 measured TLS 1.3 handshake (s_server %s ms)\t%s %% of bound by server CPU (%s ms per release, 64 clients)\t%s ms -> %s/s on %s cores, %s/s on 1\n' \
    "$handshake_ms" "$(pct "$hs_ms" "$ours_cpu")" "$ours_cpu" "$hs_ms" "$hs_rate" "$cores" "$hs_rate1"
  printf 'one core for the server (CPU %s), load client on CPU %s, 64 clients: releases/s\t%s = %s %% of the one-core bound (%s ms server CPU per release, server busy %s cores)\tTang %s; bound %s/s\n' \
    "$server_cpu" "$client_cpu" "$pinned" "$(pct "$pinned" "$hs_rate1")" "$pinned_cpu" "$pinned_busy" "$tang_pinned" "$hs_rate1"
  printf 'worker threads 2 vs 1, 64 clients: rate ratio (CPU per release; store lock held, share of the time)\t%sx (%s vs %s ms; %s %% vs %s %%)\t%s vs %s releases/s\n' \
    "$(ratio "$t2" "$t1")" "$t2_cpu" "$t1_cpu" "$t2_lock" "$t1_lock" "$t2" "$t1"
  printf 'database on tmpfs vs disk, 64 clients: rate ratio\t%sx\t%s vs %s releases/s\n' "$(ratio "$shm" "$disk")" "$shm" "$disk"
  printf 'agent start to key in hand (sim token, loopback; hyperfine median)\t%s ms\tclevis decrypt %s ms\n' "$agent_ms" "$clevis_ms"
  printf 'fde-image build vs qemu-img convert + fsync of its output (the same durability), %s GiB image, %s MiB data\t%s s\tqemu-img + fsync %s s (%sx); without the fsync %s s (%sx)\n' \
    "$image_gib" "$image_mib" "$build_s" "$durable_s" "$(ratio "$build_s" "$durable_s")" "$qemu_s" "$(ratio "$build_s" "$qemu_s")"
  printf 'output allocated size\t%s MiB\tinput %s MiB (%sx)\n' "$out_mib" "$in_mib" "$(ratio "$out_mib" "$in_mib")"
  printf 'boot storm: %s agents within %s ms, all unlocked (failed, retried)\t%s (%s, %s)\t\n' \
    "$(field storm agents)" "$(field storm window_ms)" "$(field storm all_unlocked)" \
    "$(field storm failed)" "$(field storm retried)"
  printf 'boot storm: time to the last key\t%s s\tbound 1.5 x agents / %s per s = %s s: within %s\n' \
    "$(field storm last_key_s)" "$(field storm capacity)" "$(field storm bound_s)" "$(field storm within)"
  if [ "$quick" = 0 ]; then
    printf 'boot storm, max_connections = 200: all unlocked (failed, retried), time to the last key\t%s (%s, %s), %s s\tbound %s s: within %s\n' \
      "$(field capped all_unlocked)" "$(field capped failed)" "$(field capped retried)" "$(field capped last_key_s)" \
      "$(field capped bound_s)" "$(field capped within)"
  fi
  printf 'latency at half capacity (%s/s Poisson), start to key p50 / p99\t%s / %s ms\tgoal p99 < 50 ms\n' \
    "$(field storm half_rate)" "$(field storm half_p50_ms)" "$(field storm half_p99_ms)"
  printf 'daemon RSS: idle / peak in the storm (VmHWM) / peak in the release runs\t%s / %s / %s MiB\t\n' \
    "$idle_mib" "$hwm_mib" "$peak_release_mib"
} > "$out/results.tsv"

{
  echo "# Benchmark results, $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  echo "Machine: $cores cores, $(openssl version | cut -d' ' -f1-2), $( [ "$quick" = 1 ] && echo "quick mode" || echo "full mode"), $reps repetition(s), medians. Load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)."
  echo "Build: $build. The load client runs on the same cores (except in the one-core row, where the server has CPU 0 and the client CPU 1): read the server CPU per release beside the rates."
  echo
  awk -F'\t' 'NR == 1 { print "| " $1 " | " $2 " | " $3 " |"; print "|---|---|---|"; next } { print "| " $1 " | " $2 " | " $3 " |" }' "$out/results.tsv"
} > "$out/results.md"

# The chart: releases/s by client count, ours and Tang.
{
  printf '# clients\tours\ttang\n'
  for c in 1 16 64 256; do eval "printf '%s\t%s\t%s\n' $c \"\$ours_$c\" \"\$tang_$c\""; done
} > "$out/chart.dat"
gnuplot <<EOF
set terminal pngcairo size 800,480 noenhanced
set output "$out/chart.png"
set title "Key releases per second, a new connection per release ($cores cores, load client included)"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set key below horizontal
set ylabel "releases/s"
set xlabel "concurrent clients"
set yrange [0:*]
plot "$out/chart.dat" using 2:xtic(1) title "fde-verifierd" lc rgb "#2a6fb0", '' using 3 title "Tang (tangd per connection)" lc rgb "#c0504d"
EOF

cat "$out/results.md"
echo
echo "results: $out/results.md, $out/results.tsv, $out/chart.png, $out/raw.txt"
exit "$storm_status"
