#!/usr/bin/env bash
# A soak: a topology under open-loop load above its capacity for DURATION
# seconds, sampling every process's resident memory (VmRSS) and open file
# descriptors every INTERVAL seconds, to show whether either grows. The
# load mixes admitted requests and RESOURCE_EXHAUSTED refusals (the rate is
# above what the machine serves) and checks health on its own connection.
#
# Usage (from the repository root, after
# `cargo build --release --locked -p feeds`):
#
#   docs/soak.sh          # TOPOLOGY=five-pod RATE=1200 KB=16 DURATION=1800 INTERVAL=30
#
# Writes OUT (default soak.csv: elapsed_s,process,rss_kib,fds), prints each
# load chunk's summary and, per process, RSS and descriptors at the end of
# the warm-up (WARMUP seconds, default 300), at the end, and their maximum.
# Every process is stopped on exit. Loopback only (`feeds up --free-ports`).
set -euo pipefail

BIN=${BIN:-target/release/feeds}
TOPOLOGY=${TOPOLOGY:-five-pod}
RATE=${RATE:-1200}
KB=${KB:-16}
DURATION=${DURATION:-1800}
INTERVAL=${INTERVAL:-30}
WARMUP=${WARMUP:-300}
OUT=${OUT:-soak.csv}
[ -x "$BIN" ] || { echo "error: $BIN not built (cargo build --release --locked -p feeds)" >&2; exit 2; }
[ "$DURATION" -ge 60 ] && [ "$DURATION" -le 86400 ] || { echo "error: DURATION must be 60..86400 seconds" >&2; exit 2; }
[ "$INTERVAL" -ge 1 ] || { echo "error: INTERVAL must be at least 1 second" >&2; exit 2; }

log=$(mktemp)
up=""
sampler=""
cleanup() {
    [ -n "$sampler" ] && kill "$sampler" 2>/dev/null || true
    [ -n "$up" ] && kill -INT "$up" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -f "$log"
}
trap cleanup EXIT

RUST_LOG=${RUST_LOG:-warn} "$BIN" up "$TOPOLOGY" --free-ports >"$log" 2>&1 &
up=$!
for _ in $(seq 120); do
    grep -q "^up: topology .* ready" "$log" && break
    kill -0 "$up" 2>/dev/null || { cat "$log" >&2; exit 1; }
    sleep 1
done
grep -q "^up: topology .* ready" "$log" || { echo "error: $TOPOLOGY did not become ready" >&2; cat "$log" >&2; exit 1; }
# The entry: the process hosting business (the only one in a monolith).
serving() { grep -E "^up: .* serving on " "$log" | sed -E 's/.* serving on ([0-9.:]+).*/\1/'; }
entry=$(grep -E "^up: .*(business|monolith|front)[^/]*\.toml serving on " "$log" | head -1 | sed -E 's/.* serving on ([0-9.:]+).*/\1/')
[ -n "$entry" ] || entry=$(serving | head -1)
[ -n "$entry" ] || { echo "error: no entry address in the output of feeds up" >&2; cat "$log" >&2; exit 1; }
pids=$(pgrep -P "$up" || true)
[ -n "$pids" ] || { echo "error: no processes under feeds up" >&2; exit 1; }
echo "soak: $TOPOLOGY, entry $entry, rate $RATE/s, $KB KB, ${DURATION}s, sampling every ${INTERVAL}s into $OUT"

echo "elapsed_s,process,rss_kib,fds" >"$OUT"
start=$(date +%s)
(
    while :; do
        now=$(( $(date +%s) - start ))
        for p in $pids; do
            [ -r "/proc/$p/status" ] || continue
            name=$(tr '\0' ' ' <"/proc/$p/cmdline" | awk '{print $NF}' | xargs basename)
            rss=$(awk '/^VmRSS:/{print $2}' "/proc/$p/status")
            fds=$(ls "/proc/$p/fd" | wc -l)
            echo "$now,$name,$rss,$fds" >>"$OUT"
        done
        sleep "$INTERVAL"
    done
) &
sampler=$!

# `feeds load` runs at most 600 s at a time: chunks until DURATION.
left=$DURATION
while [ "$left" -gt 0 ]; do
    chunk=$(( left < 600 ? left : 600 ))
    "$BIN" load --addr "$entry" --rate "$RATE" --kb "$KB" --seconds "$chunk" --health-ms 100
    left=$(( DURATION - ($(date +%s) - start) ))
done
sleep 1
kill "$sampler" 2>/dev/null || true
wait "$sampler" 2>/dev/null || true
sampler=""

echo
echo "per process: RSS (MiB) and open descriptors after the ${WARMUP}s warm-up, at the end, and the maximum"
awk -F, -v warm="$WARMUP" 'NR > 1 {
    p = $2
    if (!(p in first) && $1 >= warm) { first[p] = $3; ffd[p] = $4 }
    last[p] = $3; lfd[p] = $4
    if ($3 > max[p]) max[p] = $3
    if ($4 > mfd[p]) mfd[p] = $4
}
END {
    printf "%-16s %10s %10s %10s %8s %8s %8s\n", "process", "rss warm", "rss end", "rss max", "fd warm", "fd end", "fd max"
    for (p in last) printf "%-16s %10.1f %10.1f %10.1f %8d %8d %8d\n", p, first[p] / 1024, last[p] / 1024, max[p] / 1024, ffd[p], lfd[p], mfd[p]
}' "$OUT"
