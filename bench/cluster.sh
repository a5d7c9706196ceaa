#!/usr/bin/env bash
# The shared run log's cost: burst and fan-out with runs in Redis Streams beside
# the in-process log, in alternating rounds of the same run, with Redis's own CPU
# (from /proc, the Redis at $REDIS_URL) and its commands per token (INFO
# commandstats) counted. Results: bench/results/cluster-*.json and the table in
# bench/results/cluster.md, which bench/report.py puts into BENCHMARKS.md.
# 127.0.0.1 only, bounded.
#
#   bash bench/cluster.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
RESULTS=${RESULTS:-$ROOT/bench/results}
TW_PORT=${TW_PORT:-18080}
ROUNDS=${ROUNDS:-3}
REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379}
REDIS_PORT=${REDIS_URL##*:}
BURST=(${BURST:--c 100 -n 3000 --tokens 100 --max-time 120})
FANOUT=(${FANOUT:---subscribers 1000 --tokens 100 --rate 20 --max-time 120})
mkdir -p "$RESULTS"
rm -f "$RESULTS"/cluster-*.json
log() { echo "== $*" >&2; }

cargo build --release --quiet -p tidewire-cli
TW="$ROOT/target/release/tidewire"
REDIS_PID=$(redis-cli -p "$REDIS_PORT" info server | tr -d '\r' | awk -F: '/^process_id/ {print $2}')
TICKS=$(getconf CLK_TCK)

. "$ROOT/bench/server.sh"

# A second node for the fan-out across nodes, on the next port.
PID2=
stop2() { [ -n "$PID2" ] && kill -TERM "$PID2" 2>/dev/null && wait "$PID2" 2>/dev/null || true; PID2=; }
trap 'stop; stop2' EXIT INT TERM

BASE='[llm]\ndefault = "synthetic"\n\n[pipeline]\nquery_analysis = false\nretrieval = false\nscoring = false\nfollow_ups = false\n\n[documents]\nseed_docs = false\n'
printf "$BASE" >"$RESULTS/cluster-config-local.toml"
printf "redis_url = \"$REDIS_URL\"\n$BASE\n[cluster]\nredis_prefix = \"tw_bench:\"\n" >"$RESULTS/cluster-config-redis.toml"

cpu_ticks() { if [ -n "$1" ]; then awk '{print $14 + $15}' "/proc/$1/stat"; else echo 0; fi; }
# Every command Redis ran (those inside scripts included), and the round trips of
# the log's appends (script calls).
redis_calls() {
    redis-cli -p "$REDIS_PORT" info commandstats | tr -d '\r' \
        | sed -n 's/.*:calls=\([0-9]*\),.*/\1/p' | awk '{s += $1} END {print s + 0}'
}
redis_scripts() {
    redis-cli -p "$REDIS_PORT" info commandstats | tr -d '\r' \
        | sed -n 's/^cmdstat_eval[a-z_]*:calls=\([0-9]*\),.*/\1/p' | awk '{s += $1} END {print s + 0}'
}

# measure NAME -- COMMAND...: runs the workload, then adds Redis's CPU and command
# count during it, and the second node's CPU, to the JSON line it printed.
measure() {
    local name=$1; shift 2
    local cpu0 calls0 scripts0 cpu1 calls1 scripts1 b0 b1
    cpu0=$(cpu_ticks "$REDIS_PID"); calls0=$(redis_calls); scripts0=$(redis_scripts); b0=$(cpu_ticks "$PID2")
    "$@" --json 2>"$RESULTS/$name.stderr" | tail -n 1 >"$RESULTS/$name.raw" || true
    cpu1=$(cpu_ticks "$REDIS_PID"); calls1=$(redis_calls); scripts1=$(redis_scripts); b1=$(cpu_ticks "$PID2")
    python3 - "$RESULTS/$name.raw" "$(( (cpu1 - cpu0) * 1000000 / TICKS ))" "$(( calls1 - calls0 ))" \
        "$(( (b1 - b0) * 1000000 / TICKS ))" "$(( scripts1 - scripts0 ))" >"$RESULTS/$name.json" <<'PY' || true
import json, sys
x = json.load(open(sys.argv[1]))
x["redis"] = {"cpu_us": int(sys.argv[2]), "commands": int(sys.argv[3]), "appends": int(sys.argv[5])}
x["node_b_cpu_us"] = int(sys.argv[4])
print(json.dumps(x))
PY
    rm -f "$RESULTS/$name.raw"
}

for round in $(seq 1 "$ROUNDS"); do
    for mode in local redis; do
        redis-cli -p "$REDIS_PORT" --scan --pattern 'tw_bench:*' | xargs -r redis-cli -p "$REDIS_PORT" del >/dev/null
        data=$(mktemp -d)
        start "cluster-$mode" "$data/a" "$RESULTS/cluster-config-$mode.toml"
        log "round $round: burst, $mode log"
        measure "cluster-burst-$mode-$round" -- "$TW" bench burst \
            --url "http://127.0.0.1:$TW_PORT/api/chat" "${BURST[@]}" --server-pid "$PID"
        follow=()
        if [ "$mode" = redis ]; then
            # Subscribers on a second node: every event crosses Redis.
            TIDEWIRE_DEFAULT_TOKENS_PER_SECOND=0 "$TW" serve --addr "127.0.0.1:$((TW_PORT + 1))" \
                --data-dir "$data/b" --log warn --config "$RESULTS/cluster-config-redis.toml" \
                >"$RESULTS/cluster-redis-b-tidewire.log" 2>&1 &
            PID2=$!
            for _ in $(seq 1 100); do
                curl -sf "http://127.0.0.1:$((TW_PORT + 1))/healthz" >/dev/null 2>&1 && break
                sleep 0.1
            done
            follow=(--follow-url "http://127.0.0.1:$((TW_PORT + 1))")
        fi
        log "round $round: fan-out, $mode log"
        measure "cluster-fanout-$mode-$round" -- "$TW" bench fanout \
            --url "http://127.0.0.1:$TW_PORT/api/chat" "${FANOUT[@]}" "${follow[@]}" --server-pid "$PID"
        stop
        stop2
        rm -rf "$data"
    done
done

python3 - "$RESULTS" "$ROUNDS" >"$RESULTS/cluster.md" <<'PY'
import json, os, statistics, sys
results, rounds = sys.argv[1], int(sys.argv[2])
def load(kind, mode):
    out = []
    for r in range(1, rounds + 1):
        try:
            out.append(json.load(open(os.path.join(results, f"cluster-{kind}-{mode}-{r}.json"))))
        except (OSError, ValueError):
            pass
    return out
med = lambda xs: statistics.median(xs) if xs else None
print("| workload | run log | events/s (median) | tidewire CPU per event | Redis CPU per event | Redis commands per token | appends (round trips) per token | rounds |")
print("|---|---|---:|---:|---:|---:|---:|---:|")
for kind in ("burst", "fanout"):
    for mode in ("local", "redis"):
        xs = load(kind, mode)
        if not xs:
            print(f"| {kind} | {mode} | – | – | – | – | – | 0 |")
            continue
        rate = med([x["events_per_s"] or 0 for x in xs])
        events = [x["events"] for x in xs]
        # tidewire's CPU: the node that produces, and the node that follows (fan-out
        # across nodes), per event delivered.
        cpu = med([(x["server"]["cpu_us_per_event"] * x["events"] + x.get("node_b_cpu_us", 0))
                   / max(x["events"], 1) for x in xs if x.get("server")])
        rcpu = med([x["redis"]["cpu_us"] / max(x["events"], 1) for x in xs])
        # Tokens of the answers: a burst's answers each have 4 events besides their
        # tokens (run, stage, metadata, done); a fan-out is one answer.
        tokens = [x["events"] - 4 * x["completed"] if kind == "burst" else x["tokens"] for x in xs]
        per_token = med([x["redis"]["commands"] / max(t, 1) for x, t in zip(xs, tokens)])
        appends = med([x["redis"].get("appends", 0) / max(t, 1) for x, t in zip(xs, tokens)])
        late = ""
        if kind == "fanout":
            late = f" (p99 lateness {med([x['lateness']['p99_ms'] for x in xs]):.0f} ms)"
        print(f"| {kind}{late} | {'Redis Streams' if mode == 'redis' else 'in-process'} | {rate:,.0f} | "
              + (f"{cpu:.2f} µs" if cpu is not None else "–")
              + f" | {rcpu:.2f} µs | {per_token:.3f} | {appends:.3f} | {len(xs)} |")
PY
cat "$RESULTS/cluster.md"
