#!/usr/bin/env bash
# The peer of the benchmarks: Debian's Tang served as its socket unit (tangd.socket with
# Accept=true) serves it, one tangd process per connection, here by socat on a loopback port.
#
#   bench/tang_setup.sh start DIR   keys (tangd-keygen) in DIR/db, the server on 127.0.0.1, a
#                                   32-byte secret bound with `clevis encrypt tang` (DIR/secret.jwe)
#                                   and the body of the key-recovery request clevis would send for
#                                   it (DIR/rec-body.json); writes DIR/env (port, pid, kid)
#   bench/tang_setup.sh stop DIR    stops that server
#
# The recovery body is built the way clevis-decrypt-tang builds it: the JWE's ephemeral public
# key plus a fresh ephemeral key of our own (jose jwk exc), sent as POST /rec/<kid>.
set -euo pipefail
cmd=${1:-}
dir=${2:-}
[ -n "$cmd" ] && [ -n "$dir" ] || { echo "usage: $0 start|stop DIR" >&2; exit 2; }
tangd=${TANGD:-/usr/libexec/tangd}
keygen=${TANGD_KEYGEN:-/usr/libexec/tangd-keygen}
# shellcheck source=scripts/lib/free_tcp_port.sh
. "$(cd "$(dirname "$0")/.." && pwd)/scripts/lib/free_tcp_port.sh"

case "$cmd" in
stop)
  if [ -f "$dir/env" ]; then
    # shellcheck disable=SC1091
    . "$dir/env"
    kill "$tang_pid" 2>/dev/null || true
  fi
  exit 0
  ;;
start) ;;
*) echo "usage: $0 start|stop DIR" >&2; exit 2 ;;
esac

for tool in socat jose clevis curl "$tangd" "$keygen"; do
  command -v "$tool" >/dev/null || { echo "tang_setup: $tool is missing (apt-get install tang clevis socat curl)" >&2; exit 2; }
done
mkdir -p "$dir/db"
"$keygen" "$dir/db" >/dev/null

# A free loopback port: try random high ports until socat stays up.
pid=
for _ in $(seq 1 20); do
  port=$(free_tcp_port) || break
  socat "TCP-LISTEN:$port,bind=127.0.0.1,fork,reuseaddr,backlog=1024" \
    EXEC:"$tangd $dir/db",nofork 2>"$dir/socat.log" &
  pid=$!
  for _ in $(seq 1 50); do
    if curl -sf "http://127.0.0.1:$port/adv" -o "$dir/adv.jws" 2>/dev/null; then break 2; fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.05
  done
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  pid=
done
[ -n "$pid" ] || { echo "tang_setup: could not start socat + tangd on a loopback port" >&2; exit 1; }

head -c 32 /dev/urandom > "$dir/secret"
clevis encrypt tang "{\"url\":\"http://127.0.0.1:$port\",\"adv\":\"$dir/adv.jws\"}" < "$dir/secret" > "$dir/secret.jwe"
header=$(jose b64 dec -i- <<< "$(cut -d. -f1 "$dir/secret.jwe")")
kid=$(jose fmt -j- -Og kid -Su- <<< "$header")
client=$(jose fmt -j- -Og epk -Oo- <<< "$header")
ephemeral=$(jose jwk gen -i '{"alg":"ECMR","crv":"P-521"}')
jose jwk exc -i '{"alg":"ECMR"}' -l- -r- <<< "$client$ephemeral" > "$dir/rec-body.json"
# One recovery by hand, so a broken set-up fails here and not as a zero rate.
curl -sf -X POST -H "Content-Type: application/jwk+json" --data-binary "@$dir/rec-body.json" \
  "http://127.0.0.1:$port/rec/$kid" -o /dev/null || { echo "tang_setup: POST /rec/$kid failed" >&2; kill "$pid"; exit 1; }
printf 'tang_port=%s\ntang_pid=%s\ntang_kid=%s\n' "$port" "$pid" "$kid" > "$dir/env"
