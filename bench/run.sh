#!/usr/bin/env bash
# Builds tidewire in release mode, installs the peer (FastAPI + sse-starlette) in a
# local venv, runs every workload against tidewire, that peer and the Node.js peer
# (bench/peers/node/server.mjs: Node's built-in http, nothing to install) in the
# same run, and writes BENCHMARKS.md from what it measured. All traffic goes to
# 127.0.0.1; every load is bounded in count and time; every process started here is
# stopped on exit.
#
#   bash bench/run.sh            # everything (about 15 minutes on 2 cores before
#                                # the Node peer was added; its workloads add to it)
#   QUICK=1 bash bench/run.sh    # smaller loads, for a smoke run (not for the table)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
RESULTS=${RESULTS:-$ROOT/bench/results}
TW_PORT=${TW_PORT:-18080}
PEER_PORT=${PEER_PORT:-18081}
NODE_PORT=${NODE_PORT:-18082}
RAW_PORT=${RAW_PORT:-18083}
MOCK_PORT=${MOCK_PORT:-18090}
QUICK=${QUICK:-0}
mkdir -p "$RESULTS"
rm -f "$RESULTS"/*.json "$RESULTS/node-version.txt"
RUN_COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
if [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then RUN_COMMIT="$RUN_COMMIT (with uncommitted changes)"; fi

PIDS=()
cleanup() {
    for pid in "${PIDS[@]:-}"; do
        [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null || true
    done
    wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

log() { echo "== $*" >&2; }

# The load generator and the servers each need one descriptor per stream.
HARD=$(ulimit -Hn)
if [ "$HARD" = "unlimited" ] || [ "$HARD" -gt 65536 ]; then HARD=65536; fi
ulimit -n "$HARD"
log "open files limit: $(ulimit -n)"

log "building tidewire (release)"
cargo build --release --quiet -p tidewire-cli
TW="$ROOT/target/release/tidewire"

log "installing the peer into bench/.venv"
if [ ! -x bench/.venv/bin/uvicorn ]; then
    python3 -m venv bench/.venv
    bench/.venv/bin/pip install --quiet --disable-pip-version-check -r bench/peers/requirements.txt
fi

SERVERS=(tidewire peer)
if command -v node >/dev/null 2>&1; then
    node --version >"$RESULTS/node-version.txt"
    log "the Node peer runs on $(cat "$RESULTS/node-version.txt")"
    SERVERS+=(node)
else
    log "node not found: the Node peer is left out"
fi

wait_healthy() {
    local url=$1
    for _ in $(seq 1 100); do
        if curl -sf "$url/healthz" >/dev/null 2>&1; then return 0; fi
        sleep 0.1
    done
    echo "server at $url did not start" >&2
    return 1
}

# The engine alone, as the peer does it: the synthetic backend and generation only
# (no retrieval, scoring or follow-ups), so the figures measure streaming.
ENGINE_CONFIG="$RESULTS/engine.toml"
printf '[llm]\ndefault = "synthetic"\n\n[pipeline]\nquery_analysis = false\nretrieval = false\nscoring = false\nfollow_ups = false\n' >"$ENGINE_CONFIG"

SERVER_PID=
# start_tidewire [VAR=value ...]: the extra environment goes to the server.
start_tidewire() {
    local data
    data=$(mktemp -d)
    env "$@" "$TW" serve --config "$ENGINE_CONFIG" --addr "127.0.0.1:$TW_PORT" --data-dir "$data" --log warn \
        --max-concurrent-runs 100000 >"$RESULTS/tidewire.log" 2>&1 &
    SERVER_PID=$!
    PIDS+=("$SERVER_PID")
    wait_healthy "http://127.0.0.1:$TW_PORT"
}

start_peer() {
    local workers=$1
    bench/.venv/bin/uvicorn --app-dir bench/peers app:app --host 127.0.0.1 --port "$PEER_PORT" \
        --workers "$workers" --log-level warning --no-access-log --timeout-keep-alive 30 \
        >"$RESULTS/peer.log" 2>&1 &
    SERVER_PID=$!
    PIDS+=("$SERVER_PID")
    wait_healthy "http://127.0.0.1:$PEER_PORT"
}

# The Node peer in the Python peer's shape: N worker processes (node:cluster).
start_node_peer() {
    local workers=$1
    node bench/peers/node/server.mjs --port "$NODE_PORT" --workers "$workers" \
        >"$RESULTS/node.log" 2>&1 &
    SERVER_PID=$!
    PIDS+=("$SERVER_PID")
    wait_healthy "http://127.0.0.1:$NODE_PORT"
}

# The smallest writer of the paced contract (tidewire bench raw-peer): the
# machine's own limit for the paced workload.
start_raw_peer() {
    "$TW" bench raw-peer --addr "127.0.0.1:$RAW_PORT" >"$RESULTS/raw.log" 2>&1 &
    SERVER_PID=$!
    PIDS+=("$SERVER_PID")
    wait_healthy "http://127.0.0.1:$RAW_PORT"
}

stop_server() {
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=
}

# bench NAME SERVER(tidewire|peer|node|raw) WORKLOAD ARGS...: a fresh server per
# workload, so one workload's leftovers never weigh on the next.
bench() {
    local name=$1 server=$2 workload=$3
    shift 3
    local url
    if [ "$server" = tidewire ]; then
        start_tidewire
        url="http://127.0.0.1:$TW_PORT/api/chat"
    elif [ "$server" = raw ]; then
        start_raw_peer
        url="http://127.0.0.1:$RAW_PORT/api/chat"
    elif [ "$server" = node ]; then
        # As the Python peer: 2 workers, 1 for the fan-out.
        if [ "$workload" = fanout ]; then start_node_peer 1; else start_node_peer 2; fi
        url="http://127.0.0.1:$NODE_PORT/api/chat"
    else
        # The fan-out needs every stream in one process (runs live in its memory).
        if [ "$workload" = fanout ]; then start_peer 1; else start_peer 2; fi
        url="http://127.0.0.1:$PEER_PORT/api/chat"
    fi
    log "$name: $server $workload $*"
    "$TW" bench "$workload" --url "$url" --server-pid "$SERVER_PID" --json "$@" \
        2>"$RESULTS/$name.$server.stderr" | tail -n 1 >"$RESULTS/$name.$server.json" || true
    stop_server
}

if [ "$QUICK" = 1 ]; then
    BURST=(-c 50 -n 500 --tokens 100)
    PACED_C=(200 500)
    PACED=(--tokens 100 --rate 20)
    IDLE=(-c 500 --hold 3)
    FANOUT_N=(100 500)
    FANOUT=(--tokens 100 --rate 20)
    OVERHEAD=(-n 300 --tokens 1)
    UPSTREAM=(-n 300)
else
    BURST=(-c 100 -n 5000 --tokens 100 --max-time 180)
    PACED_C=(1000 2000 3000 4000 5000 6000 7000 8000 9000 10000 12000)
    PACED=(--tokens 500 --rate 20 --max-time 180)
    IDLE=(-c 10000 --hold 10 --max-time 180)
    FANOUT_N=(1000 10000)
    FANOUT=(--tokens 400 --rate 20 --max-time 180)
    OVERHEAD=(-n 3000 --tokens 1)
    UPSTREAM=(-n 3000)
fi

for server in "${SERVERS[@]}"; do
    bench burst "$server" burst "${BURST[@]}"
    if [ "$server" = tidewire ]; then
        # The same burst on a dialect route (the portfolio assistant's, seed 002):
        # its requests carry no options, so the server's defaults set the answer.
        start_tidewire TIDEWIRE_DEFAULT_MAX_TOKENS=100 TIDEWIRE_DEFAULT_TOKENS_PER_SECOND=0
        log "burst-dialect: tidewire burst on /api/v1/chat/send"
        "$TW" bench burst --url "http://127.0.0.1:$TW_PORT/api/v1/chat/send" \
            --body '{"text": "benchmark question number {i}"}' --token-event message --done-event done \
            --server-pid "$SERVER_PID" --json "${BURST[@]}" \
            2>"$RESULTS/burst-dialect.tidewire.stderr" | tail -n 1 >"$RESULTS/burst-dialect.tidewire.json" || true
        stop_server
    fi
    bench overhead "$server" overhead "${OVERHEAD[@]}"
    for c in "${PACED_C[@]}"; do
        bench "paced-$c" "$server" paced -c "$c" "${PACED[@]}"
        # Stop the sweep at the first concurrency that misses the bar.
        if ! python3 bench/report.py --check-paced "$RESULTS/paced-$c.$server.json"; then break; fi
    done
    # Memory moves with when the allocator hands freed pages back: three runs, the
    # median kept (bench/results/idle-runK.SERVER.json hold all three).
    for k in 1 2 3; do bench "idle-run$k" "$server" idle "${IDLE[@]}"; done
    python3 bench/report.py --median-idle "$RESULTS/idle" "$server"
    for n in "${FANOUT_N[@]}"; do
        bench "fanout-$n" "$server" fanout --subscribers "$n" "${FANOUT[@]}"
    done
done

# The machine's limit for the paced and fan-out workloads: the same loads against the
# smallest writer.
for c in "${PACED_C[@]}"; do
    bench "paced-$c" raw paced -c "$c" "${PACED[@]}"
    if ! python3 bench/report.py --check-paced "$RESULTS/paced-$c.raw.json"; then break; fi
done
for n in "${FANOUT_N[@]}"; do
    bench "fanout-$n" raw fanout --subscribers "$n" "${FANOUT[@]}"
done

log "idle memory by part (cargo bench -p tidewire --bench idle_memory)"
if [ "$QUICK" = 1 ]; then
    TIDEWIRE_BENCH_STREAMS=300 cargo bench -p tidewire --bench idle_memory --quiet >"$RESULTS/idle-memory.md" 2>"$RESULTS/idle-memory.stderr" || log "the idle memory benchmark failed"
else
    cargo bench -p tidewire --bench idle_memory --quiet >"$RESULTS/idle-memory.md" 2>"$RESULTS/idle-memory.stderr" || log "the idle memory benchmark failed"
fi

log "store writes (cargo bench -p tidewire --bench store_writes)"
if [ "$QUICK" = 1 ]; then
    TIDEWIRE_BENCH_TURNS=500 cargo bench -p tidewire --bench store_writes --quiet >"$RESULTS/store-writes.md" 2>"$RESULTS/store-writes.stderr" || log "the store writes benchmark failed"
else
    cargo bench -p tidewire --bench store_writes --quiet >"$RESULTS/store-writes.md" 2>"$RESULTS/store-writes.stderr" || log "the store writes benchmark failed"
fi

log "upstream: tidewire in front of a zero-delay mock model server"
"$TW" bench mock-upstream --addr "127.0.0.1:$MOCK_PORT" >"$RESULTS/mock-upstream.log" 2>&1 &
MOCK_PID=$!
PIDS+=("$MOCK_PID")
for _ in $(seq 1 100); do
    if curl -s -o /dev/null -X POST -H 'content-type: application/json' -d '{"max_tokens":1}' \
        "http://127.0.0.1:$MOCK_PORT/v1/chat/completions"; then break; fi
    sleep 0.1
done
start_tidewire TIDEWIRE_LLM_URL="http://127.0.0.1:$MOCK_PORT/v1" TIDEWIRE_LLM_MODEL=mock
"$TW" bench upstream --url "http://127.0.0.1:$TW_PORT/api/chat" \
    --direct-url "http://127.0.0.1:$MOCK_PORT/v1/chat/completions" --server-pid "$SERVER_PID" --json \
    "${UPSTREAM[@]}" 2>"$RESULTS/upstream.tidewire.stderr" | tail -n 1 >"$RESULTS/upstream.tidewire.json" || true
stop_server
kill -TERM "$MOCK_PID" 2>/dev/null || true

log "the OpenAI route and LiteLLM (bench/openai.sh)"
RESULTS="$RESULTS" QUICK="$QUICK" bash bench/openai.sh || log "bench/openai.sh failed; its section is left out"

log "the cost of authentication (bench/auth.sh)"
RESULTS="$RESULTS" bash bench/auth.sh >/dev/null || log "bench/auth.sh failed; its section is left out"

log "decoder benchmark (cargo bench -p tidewire-sse)"
if [ "$QUICK" = 1 ]; then
    cargo bench -p tidewire-sse --features stream --bench decode --quiet -- --warm-up-time 1 --measurement-time 2 >"$RESULTS/codec.txt" 2>&1
else
    cargo bench -p tidewire-sse --features stream --bench decode --quiet >"$RESULTS/codec.txt" 2>&1
fi

log "retrieval benchmark (cargo bench -p tidewire --bench retrieval)"
if [ "$QUICK" = 1 ]; then
    TIDEWIRE_BENCH_CHUNKS=10000 cargo bench -p tidewire --bench retrieval --quiet >"$RESULTS/retrieval.md" 2>"$RESULTS/retrieval.stderr"
else
    cargo bench -p tidewire --bench retrieval --quiet >"$RESULTS/retrieval.md" 2>"$RESULTS/retrieval.stderr"
fi

log "metrics on and off (bench/metrics.sh)"
RESULTS="$RESULTS" bash bench/metrics.sh >/dev/null

log "the run log in Redis beside the in-process one (bench/cluster.sh)"
RESULTS="$RESULTS" bash bench/cluster.sh >/dev/null || log "bench/cluster.sh failed; its section is left out"

log "tool call benchmark (cargo bench -p tidewire-mcp-fixture --bench tool_call)"
cargo bench -p tidewire-mcp-fixture --bench tool_call --quiet >"$RESULTS/tools.md" 2>"$RESULTS/tools.stderr"

log "writing BENCHMARKS.md"
BENCH_COMMIT="$RUN_COMMIT" python3 bench/report.py --results "$RESULTS" --out BENCHMARKS.md --quick "$QUICK"
log "done: BENCHMARKS.md"
