# shellcheck shell=bash
# free_tcp_port [EXCLUDED_PORT...]: prints a loopback TCP port that no socket uses, chosen
# below the kernel's ephemeral range (net.ipv4.ip_local_port_range). A port inside that range
# can be taken at any moment by the local end of an outgoing connection (a load client, a
# database client), and a listener cannot bind a port that a connected socket holds; CI saw
# exactly that ("Address already in use" right after a benchmark's thousands of connections).
# Returns 1 when 100 tries found nothing.
free_tcp_port() {
  local low=32768 high candidate excluded taken
  read -r low _ </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || low=32768
  high=$((low - 1))
  [ "$high" -gt 11000 ] || high=65000  # an unusual range; fall back to the top of the space
  for _ in $(seq 100); do
    candidate=$((10000 + RANDOM % (high - 10000)))
    taken=
    for excluded in "$@"; do [ "$candidate" = "$excluded" ] && taken=1; done
    [ -z "$taken" ] || continue
    # Any state counts (listening, connected, TIME-WAIT), not only listeners.
    if ! ss -Htan "( sport = :$candidate )" | grep -q .; then
      echo "$candidate"
      return 0
    fi
  done
  return 1
}
