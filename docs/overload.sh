#!/usr/bin/env bash
# Overload at a multiple of measured capacity, in one run: a monolith
# pinned to one core and sized to it (`worker_threads = 1`,
# `compute_threads = 1`), the load generator pinned to the other, so the
# generator's CPU is not the server's. In one server process:
#
#   1. warm-up, 5 s open loop at WARM requests/s;
#   2. capacity, 10 s closed loop (CONCURRENCY clients);
#   3. nominal, DURATION seconds, open loop at NOMINAL_PCT % of that capacity;
#   4. overload, DURATION seconds, open loop at MULTIPLE x that capacity;
#   5. nominal again, DURATION seconds, to show the limit recovers.
#
# Prints each phase's `feeds load` summary, the server's VmRSS and open
# descriptors around the overload, the admitted p99 over the nominal p99,
# and the process limit and refusal count from its metrics.
#
# Usage (from the repository root, after
# `cargo build --release --locked -p feeds`; needs two cores and taskset):
#
#   docs/overload.sh      # MULTIPLE=5 NOMINAL_PCT=60 DURATION=30 KB=16 CONCURRENCY=4 WARM=300
#
# EXTRA is appended to the server's `[process]` table, for example
# EXTRA='latency_tolerance = 100.0' to compare the bound switched off.
# LOG_FILTER='warn,feeds::overload=debug' SERVER_LOG=FILE keeps the
# server's log, with one line per closed window of the adaptive limit.
# Loopback only; the server is stopped on exit.
set -euo pipefail

BIN=${BIN:-target/release/feeds}
MULTIPLE=${MULTIPLE:-5}
NOMINAL_PCT=${NOMINAL_PCT:-60}
DURATION=${DURATION:-30}
KB=${KB:-16}
CONCURRENCY=${CONCURRENCY:-4}
WARM=${WARM:-300}
EXTRA=${EXTRA:-}
LOG_FILTER=${LOG_FILTER:-warn}
SERVER_LOG=${SERVER_LOG:-}
[ -x "$BIN" ] || { echo "error: $BIN not built (cargo build --release --locked -p feeds)" >&2; exit 2; }
command -v taskset >/dev/null || { echo "error: taskset not found (package util-linux)" >&2; exit 2; }
[ "$(nproc)" -ge 2 ] || { echo "error: needs two cores (server on one, load on the other)" >&2; exit 2; }
case "$MULTIPLE" in '' | *[!0-9]*) echo "error: MULTIPLE must be a whole number" >&2; exit 2 ;; esac
case "$NOMINAL_PCT" in '' | *[!0-9]*) echo "error: NOMINAL_PCT must be a whole number" >&2; exit 2 ;; esac
[ "$NOMINAL_PCT" -ge 1 ] && [ "$NOMINAL_PCT" -le 100 ] || { echo "error: NOMINAL_PCT must be 1..100" >&2; exit 2; }
[ "$DURATION" -ge 5 ] && [ "$DURATION" -le 600 ] || { echo "error: DURATION must be 5..600" >&2; exit 2; }

dir=$(mktemp -d)
server=""
cleanup() {
    [ -n "$server" ] && kill "$server" 2>/dev/null || true
    wait 2>/dev/null || true
    [ -n "$SERVER_LOG" ] && cp "$dir/serve.log" "$SERVER_LOG" || true
    rm -rf "$dir"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port=$(free_port)
mport=$(free_port)
cat >"$dir/feeds.toml" <<EOF
[process]
listen = "127.0.0.1:$port"
drain_ms = 0
worker_threads = 1
compute_threads = 1
$EXTRA

[telemetry]
metrics_listen = "127.0.0.1:$mport"
log_filter = "$LOG_FILTER"
EOF

taskset -c 0 "$BIN" serve --config "$dir/feeds.toml" >"$dir/serve.log" 2>&1 &
server=$!
metrics() { python3 -c "import urllib.request,sys; sys.stdout.write(urllib.request.urlopen('http://127.0.0.1:$mport/metrics', timeout=2).read().decode())" 2>/dev/null; }
for _ in $(seq 120); do
    metrics >/dev/null && break
    kill -0 "$server" 2>/dev/null || { cat "$dir/serve.log" >&2; exit 1; }
    sleep 0.5
done
metrics >/dev/null || { echo "error: the server did not come up" >&2; cat "$dir/serve.log" >&2; exit 1; }

load() { taskset -c 1 "$BIN" load --addr "127.0.0.1:$port" --kb "$KB" "$@"; }
rss() { awk '/VmRSS/ {print $2}' "/proc/$server/status"; }
fds() { ls "/proc/$server/fd" | wc -l; }
p99() { grep -oE "$1 p50 [0-9.]+ (p90 [0-9.]+ )?p99 [0-9.]+" | head -1 | awk '{print $NF}'; }

load --seconds 5 --rate "$WARM" >/dev/null
load --seconds 10 --concurrency "$CONCURRENCY" | tee "$dir/capacity.txt" | sed 's/^/capacity: /'
cap=$(grep -oE '\(([0-9]+)/s\)' "$dir/capacity.txt" | head -1 | tr -dc 0-9)
[ -n "$cap" ] && [ "$cap" -gt 0 ] || { echo "error: no capacity measured" >&2; exit 1; }
nominal=$((cap * NOMINAL_PCT / 100))
over=$((cap * MULTIPLE))
echo "capacity ${cap}/s: nominal ${nominal}/s (${NOMINAL_PCT}%), overload ${over}/s (${MULTIPLE}x)"

load --seconds "$DURATION" --rate "$nominal" | tee "$dir/nominal.txt" | sed 's/^/nominal: /'
rss0=$(rss) fd0=$(fds)
load --seconds "$DURATION" --rate "$over" | tee "$dir/over.txt" | sed 's/^/overload: /'
rss1=$(rss) fd1=$(fds)
load --seconds "$DURATION" --rate "$nominal" | sed 's/^/nominal after: /'
m=$(metrics)

nom99=$(p99 "latency ms" <"$dir/nominal.txt")
adm99=$(grep -E '^admitted' "$dir/over.txt" | p99 "ok: latency ms" || true)
[ -n "$adm99" ] || adm99=$(p99 "latency ms" <"$dir/over.txt")
echo "server RSS ${rss0} -> ${rss1} kB, open fds ${fd0} -> ${fd1} around the overload"
echo "admitted p99 ${adm99} ms / nominal p99 ${nom99} ms = $(python3 -c "print(f'{$adm99/$nom99:.2f}x')")"
echo "$m" | grep -E '^feeds_concurrency_(limit|rejected_total)\{scope="process"' || true
