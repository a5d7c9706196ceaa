#!/usr/bin/env bash
# What recording metrics costs: burst events/s (`tidewire bench burst`) with
# [metrics] on and off, in alternating rounds on the same machine, and the
# server's CPU per event. The figure is the median of the rounds' ratios (each
# round with metrics on over the round with them off right after it): this
# machine's speed drifts by more than the cost measured, and a pair of rounds a
# few seconds apart sees the same drift. Results: bench/results/metrics-*.json
# and the table in bench/results/metrics.md, which bench/report.py puts into
# BENCHMARKS.md. 127.0.0.1 only, bounded.
#
#   bash bench/metrics.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
RESULTS=${RESULTS:-$ROOT/bench/results}
TW_PORT=${TW_PORT:-18080}
ROUNDS=${ROUNDS:-15}
# About 2 s a round: rounds of 3,000 requests lasted a quarter of a second, and
# their medians moved by 7 % from one run of this script to the next.
BURST=(${BURST:--c 100 -n 20000 --tokens 100 --max-time 120})
mkdir -p "$RESULTS"
rm -f "$RESULTS"/metrics-*.json
log() { echo "== $*" >&2; }

cargo build --release --quiet -p tidewire-cli
TW="$ROOT/target/release/tidewire"

. "$ROOT/bench/server.sh"

BASE='[llm]\ndefault = "synthetic"\n\n[pipeline]\nquery_analysis = false\nretrieval = false\nscoring = false\nfollow_ups = false\n'
printf "$BASE" >"$RESULTS/metrics-config-on.toml"
printf "$BASE\n[metrics]\nenabled = false\n" >"$RESULTS/metrics-config-off.toml"

for round in $(seq 1 "$ROUNDS"); do
    for mode in on off; do
        data=$(mktemp -d)
        start metrics "$data" "$RESULTS/metrics-config-$mode.toml"
        log "round $round: metrics $mode"
        "$TW" bench burst --url "http://127.0.0.1:$TW_PORT/api/chat" "${BURST[@]}" \
            --server-pid "$PID" --json 2>"$RESULTS/metrics-$mode-$round.stderr" \
            | tail -n 1 >"$RESULTS/metrics-$mode-$round.json" || true
        stop
        rm -rf "$data"
    done
done
python3 - "$RESULTS" "$ROUNDS" >"$RESULTS/metrics.md" <<'PY'
import json, os, statistics, sys
results, rounds = sys.argv[1], int(sys.argv[2])
rows, runs = {}, {}
for mode in ("on", "off"):
    rates, cpu = [], []
    for r in range(1, rounds + 1):
        try:
            x = json.load(open(os.path.join(results, f"metrics-{mode}-{r}.json")))
        except (OSError, ValueError):
            continue
        rates.append(x["events_per_s"]); cpu.append(x["server"]["cpu_us_per_event"])
        runs[(mode, r)] = x["events_per_s"]
    rows[mode] = (statistics.median(rates), statistics.median(cpu), len(rates)) if rates else None
print("| metrics | burst events/s (median) | server CPU per event | rounds |")
print("|---|---:|---:|---:|")
for mode in ("off", "on"):
    r = rows[mode]
    print(f"| {mode} | {r[0]:,.0f} | {r[1]:.2f} µs | {r[2]} |" if r else f"| {mode} | – | – | – |")
pairs = [runs[("on", r)] / runs[("off", r)] for r in range(1, rounds + 1)
         if ("on", r) in runs and ("off", r) in runs]
if pairs:
    print()
    print(f"With metrics on: {statistics.median(pairs) * 100:.1f} % of the events/s with them off "
          f"(the median of {len(pairs)} rounds' ratios, from {min(pairs) * 100:.0f} % to "
          f"{max(pairs) * 100:.0f} %; the ratio of the medians above: "
          f"{rows['on'][0] / rows['off'][0] * 100:.1f} %).")
PY
cat "$RESULTS/metrics.md"
