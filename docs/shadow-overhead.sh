#!/usr/bin/env bash
# What a shadow costs the requests it copies: two monolith fronts on
# loopback with the same config (split routed `local`, a pool `default` at
# a pod hosting split..recall), except that front S's rule also copies
# every call to split (rate 1.0) to that pool as a shadow. Open-loop load goes to one
# front at a time, in alternating rounds, so both see the same machine:
#
#   1. shadow down: the pod is SIGSTOPped (a hung shadow);
#   2. shadow up: the pod answers (copies compared; the pod's work shares
#      the machine's cores with the fronts).
#
# Prints each round's p99 and the ratio of the medians, and the shadow
# counters of front S. Usage (from the repository root, after
# `cargo build --release --locked -p feeds`):
#
#   docs/shadow-overhead.sh              # RATE=200 SECONDS_PER=15 ROUNDS=5
#
# Every process is stopped on exit. Loopback only.
set -euo pipefail

BIN=${BIN:-target/release/feeds}
RATE=${RATE:-200}
SECONDS_PER=${SECONDS_PER:-15}
ROUNDS=${ROUNDS:-5}
[ -x "$BIN" ] || { echo "error: $BIN not built (cargo build --release --locked -p feeds)" >&2; exit 2; }

dir=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill -CONT "$p" 2>/dev/null || true; kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
POD=$(port); A=$(port); S=$(port); M=$(port); MA=$(port)

cat >"$dir/pod.toml" <<EOF
[process]
listen = "127.0.0.1:$POD"
host = ["split", "rerank", "finerank", "recall"]
EOF
cat >"$dir/a.toml" <<EOF
[process]
listen = "127.0.0.1:$A"

[remote.split]
endpoints = ["http://127.0.0.1:$POD"]
health_interval_ms = 200

[[routes.split]]
target = "local"

[telemetry]
metrics_listen = "127.0.0.1:$MA"
EOF
cat >"$dir/s.toml" <<EOF
[process]
listen = "127.0.0.1:$S"

[remote.split]
endpoints = ["http://127.0.0.1:$POD"]
health_interval_ms = 200

[[routes.split]]
target = "local"
shadow = { target = "default", rate = 1.0, noise = 0.0 }

[telemetry]
metrics_listen = "127.0.0.1:$M"
EOF

for name in pod a s; do
    RUST_LOG=warn "$BIN" serve --config "$dir/$name.toml" 2>"$dir/$name.log" &
    pids+=($!)
done
POD_PID=${pids[0]}

for addr in "$POD" "$A" "$S"; do
    for _ in $(seq 1 120); do
        "$BIN" query --addr "http://127.0.0.1:$addr" --user 1 >/dev/null 2>&1 && break
        sleep 0.5
    done
done
# The pod serves split directly; ask it too, so all three are warm.
"$BIN" query --addr "http://127.0.0.1:$S" --user 1 >/dev/null

p99() { sed -n 's/.*p99 \([0-9.]*\) p99.9.*/\1/p' | head -1; }
errors() { sed -n 's/.*errors \(.*\)$/\1/p' | head -1; }
round() { # front label
    local out
    out=$("$BIN" load --addr "127.0.0.1:$1" --rate "$RATE" --seconds "$SECONDS_PER" 2>&1)
    echo "  $2: p99 $(echo "$out" | p99) ms, errors $(echo "$out" | errors)" >&2
    echo "$out" | p99
}
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
shadow_counters() {
    python3 - "$M" <<'EOF'
import sys, urllib.request
text = urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/metrics").read().decode()
for line in text.splitlines():
    if line.startswith(("feeds_shadow_dropped_total{", "feeds_shadow_compared_total{", "feeds_shadow_failed_total{")):
        print("  " + line)
EOF
}

run() { # label
    local a=() s=()
    echo "$1: $RATE requests/s, $SECONDS_PER s per round, $ROUNDS rounds" >&2
    for _ in $(seq 1 "$ROUNDS"); do
        a+=("$(round "$A" "no shadow  ")")
        s+=("$(round "$S" "with shadow")")
    done
    local ma ms
    ma=$(printf '%s\n' "${a[@]}" | median)
    ms=$(printf '%s\n' "${s[@]}" | median)
    echo "$1: median p99 without shadow $ma ms, with shadow $ms ms, ratio $(python3 -c "print(f'{$ms/$ma:.3f}')")"
}

kill -STOP "$POD_PID"
sleep 2
run "shadow down (SIGSTOP)"
shadow_counters
kill -CONT "$POD_PID"
sleep 2
run "shadow up"
shadow_counters
