#!/usr/bin/env bash
# One long run of one fuzz target, at the lowest CPU priority, bounded in
# executions and time; its figures are appended to OUT/runs.tsv.
#
#   fuzz/long-run.sh OUT TARGET RUNS MAX_SECONDS
#
# Build the targets first (see fuzz/README.md). New inputs go to
# OUT/corpus/TARGET (the committed corpus is only read), crashing inputs
# to OUT/artifacts/TARGET, libFuzzer's output to OUT/logs/TARGET.log.
set -euo pipefail
if [ $# -ne 4 ]; then
    echo "usage: $0 OUT TARGET RUNS MAX_SECONDS" >&2
    exit 2
fi
out=$1 target=$2 runs=$3 secs=$4
root=$(cd "$(dirname "$0")/.." && pwd)
bin=$root/target/fuzz/x86_64-unknown-linux-gnu/release/$target
mkdir -p "$out/corpus/$target" "$out/artifacts/$target" "$out/logs"
log=$out/logs/$target.log
start=$(date +%s)
status=0
# With the kernel's autogroups, a nice value only ranks a process within
# its session: a run sharing a session with nothing else would still take a
# full share of the CPU from every other session. So the run gets a session
# of its own (setsid) and that session's group is lowered too.
setsid nice -n 19 "$bin" "$out/corpus/$target" "$root/fuzz/corpus/$target" \
    -runs="$runs" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix="$out/artifacts/$target/" \
    2>"$log" &
pid=$!
# Only once it leads its own session: before that its group is this one's.
leads() { [ "$(ps -o sid= -p "$pid" 2>/dev/null | tr -d ' ')" = "$pid" ]; }
for _ in $(seq 100); do
    leads && break
    sleep 0.01
done
if leads && [ -w "/proc/$pid/autogroup" ]; then
    echo 19 >"/proc/$pid/autogroup" 2>/dev/null || true
fi
wait "$pid" || status=$?
wall=$(($(date +%s) - start))
stat() { grep -o "stat::$1: *[0-9]*" "$log" | grep -o '[0-9]*$' || echo '?'; }
last() { grep -o "$1: [0-9]*" "$log" | tail -1 | grep -o '[0-9]*$' || echo '?'; }
if [ ! -s "$out/runs.tsv" ]; then
    printf 'target\texit\texecutions\texec_per_s\twall_s\tcorpus\tcov\tft\tpeak_rss_mb\tcrashes\n' >"$out/runs.tsv"
fi
printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$target" "$status" \
    "$(stat number_of_executed_units)" "$(stat average_exec_per_sec)" "$wall" \
    "$(last corp)" "$(last cov)" "$(last ft)" "$(stat peak_rss_mb)" \
    "$(find "$out/artifacts/$target" -type f | wc -l)" | tee -a "$out/runs.tsv"
