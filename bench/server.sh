# Sourced by bench/auth.sh and bench/metrics.sh: one release tidewire on $TW_PORT
# at a time, stopped on exit. Needs $TW, $TW_PORT and $RESULTS.

PID=
stop() { [ -n "$PID" ] && kill -TERM "$PID" 2>/dev/null && wait "$PID" 2>/dev/null || true; PID=; }
trap stop EXIT INT TERM

# start NAME DATA_DIR CONFIG_FILE: the server at full synthetic speed, its log in
# $RESULTS/NAME-tidewire.log; returns once it answers /healthz.
start() {
    TIDEWIRE_DEFAULT_TOKENS_PER_SECOND=0 "$TW" serve --addr "127.0.0.1:$TW_PORT" --data-dir "$2" \
        --log warn --config "$3" >"$RESULTS/$1-tidewire.log" 2>&1 &
    PID=$!
    for _ in $(seq 1 100); do
        curl -sf "http://127.0.0.1:$TW_PORT/healthz" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "tidewire did not start" >&2
    return 1
}
