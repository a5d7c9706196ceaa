#!/usr/bin/env bash
# The OpenAI-compatible route measured in one run:
#   1. burst events/s and first-token overhead on /v1/chat/completions beside the
#      native /api/chat (synthetic backend);
#   2. tidewire and LiteLLM's proxy, each in front of the same zero-delay mock model
#      server (`tidewire bench mock-upstream`): burst events/s through each, and
#      the time each adds before the first token.
# LiteLLM is installed into bench/.venv-litellm; if it cannot be, part 2 measures
# tidewire alone and says so. Results go to bench/results/openai-*.json, which
# bench/report.py puts into BENCHMARKS.md. Everything goes to 127.0.0.1, bounded.
#
#   bash bench/openai.sh            (about 5 minutes on 2 cores)
#   QUICK=1 bash bench/openai.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
RESULTS=${RESULTS:-$ROOT/bench/results}
TW_PORT=${TW_PORT:-18080}
LITELLM_PORT=${LITELLM_PORT:-18082}
MOCK_PORT=${MOCK_PORT:-18090}
QUICK=${QUICK:-0}
# The newest LiteLLM whose `[proxy]` extra resolves from the package registry here
# (later ones pin litellm-proxy packages it does not have).
LITELLM_VERSION=1.108.7
mkdir -p "$RESULTS"
rm -f "$RESULTS"/openai-*.json

PIDS=()
cleanup() {
    for pid in "${PIDS[@]:-}"; do
        [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null || true
    done
    wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM
log() { echo "== $*" >&2; }

# ENGINE_BURST: the two routes of one server (long enough to measure: a second or
# more); BURST: through the gateways, sized for the slower one to finish.
if [ "$QUICK" = 1 ]; then
    ENGINE_BURST=(-c 50 -n 2000 --tokens 100 --max-time 120)
    BURST=(-c 20 -n 200 --tokens 100 --max-time 120)
    OVERHEAD=(-n 100)
else
    ENGINE_BURST=(-c 100 -n 20000 --tokens 100 --max-time 300)
    BURST=(-c 50 -n 1000 --tokens 100 --max-time 300)
    OVERHEAD=(-n 1000)
fi

log "building tidewire (release)"
cargo build --release --quiet -p tidewire-cli
TW="$ROOT/target/release/tidewire"

wait_for() {
    local url=$1
    for _ in $(seq 1 900); do
        if curl -sf "$url" >/dev/null 2>&1; then return 0; fi
        sleep 0.1
    done
    echo "nothing answered at $url" >&2
    return 1
}

SERVER_PID=
start_tidewire() {
    local data
    data=$(mktemp -d)
    env "$@" "$TW" serve --addr "127.0.0.1:$TW_PORT" --data-dir "$data" --log warn \
        --max-concurrent-runs 100000 >"$RESULTS/openai-tidewire.log" 2>&1 &
    SERVER_PID=$!
    PIDS+=("$SERVER_PID")
    wait_for "http://127.0.0.1:$TW_PORT/healthz"
}
stop_server() {
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=
}

# run NAME WORKLOAD URL ARGS...: one measurement of the server at SERVER_PID.
run() {
    local name=$1 workload=$2 url=$3
    shift 3
    log "$name: $workload $url"
    "$TW" bench "$workload" --url "$url" --server-pid "$SERVER_PID" --json "$@" \
        2>"$RESULTS/openai-$name.stderr" | tail -n 1 >"$RESULTS/openai-$name.json" || true
}

openai_body() {
    printf '{"model": "%s", "stream": true, "max_tokens": 100, "messages": [{"role": "user", "content": "benchmark question number {i}"}]}' "$1"
}
OPENAI_EVENTS=(--token-event message --done-data '[DONE]')

# 1. The same engine on both routes, synthetic backend, generation only.
ENGINE_CONFIG="$RESULTS/openai-engine.toml"
printf '[llm]\ndefault = "synthetic"\n\n[pipeline]\nquery_analysis = false\nretrieval = false\nscoring = false\nfollow_ups = false\n' >"$ENGINE_CONFIG"
start_tidewire TIDEWIRE_CONFIG="$ENGINE_CONFIG" TIDEWIRE_DEFAULT_TOKENS_PER_SECOND=0
run burst-native burst "http://127.0.0.1:$TW_PORT/api/chat" "${ENGINE_BURST[@]}"
stop_server
start_tidewire TIDEWIRE_CONFIG="$ENGINE_CONFIG" TIDEWIRE_DEFAULT_TOKENS_PER_SECOND=0
run burst-v1 burst "http://127.0.0.1:$TW_PORT/v1/chat/completions" \
    --body "$(openai_body synthetic)" "${OPENAI_EVENTS[@]}" "${ENGINE_BURST[@]}"
stop_server

# 2. Gateways in front of the same mock model server.
"$TW" bench mock-upstream --addr "127.0.0.1:$MOCK_PORT" >"$RESULTS/openai-mock.log" 2>&1 &
PIDS+=("$!")
for _ in $(seq 1 100); do
    if curl -s -o /dev/null -X POST -H 'content-type: application/json' -d '{"max_tokens":1}' \
        "http://127.0.0.1:$MOCK_PORT/v1/chat/completions"; then break; fi
    sleep 0.1
done
UPSTREAM_CONFIG="$RESULTS/openai-upstream.toml"
printf '[pipeline]\nquery_analysis = false\nretrieval = false\nscoring = false\nfollow_ups = false\n' >"$UPSTREAM_CONFIG"
for route in native v1; do
    start_tidewire TIDEWIRE_CONFIG="$UPSTREAM_CONFIG" TIDEWIRE_LLM_URL="http://127.0.0.1:$MOCK_PORT/v1" TIDEWIRE_LLM_MODEL=mock
    if [ "$route" = native ]; then
        run "upstream-native" upstream "http://127.0.0.1:$TW_PORT/api/chat" \
            --direct-url "http://127.0.0.1:$MOCK_PORT/v1/chat/completions" "${OVERHEAD[@]}"
    else
        run "upstream-tidewire" upstream "http://127.0.0.1:$TW_PORT/v1/chat/completions" \
            --direct-url "http://127.0.0.1:$MOCK_PORT/v1/chat/completions" "${OVERHEAD[@]}"
        stop_server
        start_tidewire TIDEWIRE_CONFIG="$UPSTREAM_CONFIG" TIDEWIRE_LLM_URL="http://127.0.0.1:$MOCK_PORT/v1" TIDEWIRE_LLM_MODEL=mock
        run "proxy-burst-tidewire" burst "http://127.0.0.1:$TW_PORT/v1/chat/completions" \
            --body "$(openai_body default)" "${OPENAI_EVENTS[@]}" "${BURST[@]}"
    fi
    stop_server
done

log "installing LiteLLM $LITELLM_VERSION into bench/.venv-litellm"
if [ ! -x bench/.venv-litellm/bin/litellm ]; then
    python3 -m venv bench/.venv-litellm
    bench/.venv-litellm/bin/pip install --quiet --disable-pip-version-check "litellm[proxy]==$LITELLM_VERSION" \
        || log "LiteLLM did not install: it is left out"
fi
if [ -x bench/.venv-litellm/bin/litellm ]; then
    cat >"$RESULTS/openai-litellm.yaml" <<EOF
model_list:
  - model_name: default
    litellm_params:
      model: openai/mock
      api_base: http://127.0.0.1:$MOCK_PORT/v1
      api_key: unused
litellm_settings:
  telemetry: false
EOF
    # Two workers: both cores, as tidewire's runtime uses them. No master key, no
    # database, the bundled cost map (no download); a worker takes over 5 s to boot
    # here, hence the longer health check of uvicorn's supervisor.
    LITELLM_LOG=ERROR LITELLM_DANGEROUSLY_PERMIT_WEAK_OR_UNSET_MASTER_KEY=true LITELLM_LOCAL_MODEL_COST_MAP=True \
        bench/.venv-litellm/bin/litellm --config "$RESULTS/openai-litellm.yaml" \
        --host 127.0.0.1 --port "$LITELLM_PORT" --num_workers 2 --timeout_worker_healthcheck 120 \
        >"$RESULTS/openai-litellm.log" 2>&1 &
    SERVER_PID=$!
    PIDS+=("$SERVER_PID")
    wait_for "http://127.0.0.1:$LITELLM_PORT/health/liveliness"
    # Each worker's first request is slow (it loads the model list): warm both up.
    for _ in 1 2 3 4 5 6; do
        curl -s -o /dev/null -X POST -H 'content-type: application/json' \
            -d '{"model": "default", "stream": true, "max_tokens": 1, "messages": [{"role": "user", "content": "warm"}]}' \
            "http://127.0.0.1:$LITELLM_PORT/v1/chat/completions" || true
    done
    run upstream-litellm upstream "http://127.0.0.1:$LITELLM_PORT/v1/chat/completions" \
        --direct-url "http://127.0.0.1:$MOCK_PORT/v1/chat/completions" "${OVERHEAD[@]}"
    run proxy-burst-litellm burst "http://127.0.0.1:$LITELLM_PORT/v1/chat/completions" \
        --body "$(openai_body default)" "${OPENAI_EVENTS[@]}" "${BURST[@]}"
    pip_version=$(bench/.venv-litellm/bin/pip show litellm 2>/dev/null | sed -n 's/^Version: //p')
    echo "{\"litellm\": \"$pip_version\"}" >"$RESULTS/openai-versions.json"
    stop_server
fi
log "done: bench/results/openai-*.json"
