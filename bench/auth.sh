#!/usr/bin/env bash
# The cost of authentication per request: time to the first token (`tidewire bench
# overhead`, sequential requests of one token) with no authentication, with an API
# key and with an HS256 JWT, in the same run, alternating rounds so all three see
# the same machine (the median of the rounds). Results: bench/results/auth-*.json and
# the table in bench/results/auth.md, which bench/report.py puts into BENCHMARKS.md.
# 127.0.0.1 only, bounded.
#
#   bash bench/auth.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
RESULTS=${RESULTS:-$ROOT/bench/results}
TW_PORT=${TW_PORT:-18080}
ROUNDS=${ROUNDS:-3}
REQUESTS=${REQUESTS:-1000}
mkdir -p "$RESULTS"
rm -f "$RESULTS"/auth-*.json
log() { echo "== $*" >&2; }

cargo build --release --quiet -p tidewire-cli
TW="$ROOT/target/release/tidewire"
SECRET="bench secret for HS256, not a real one"

. "$ROOT/bench/server.sh"

printf '[llm]\ndefault = "synthetic"\n\n[pipeline]\nquery_analysis = false\nretrieval = false\nscoring = false\nfollow_ups = false\n' \
    >"$RESULTS/auth-config.toml"
printf '\n[auth]\napi_keys = true\njwt_secret = "%s"\n' "$SECRET" >"$RESULTS/auth-config-on.toml"
cat "$RESULTS/auth-config.toml" "$RESULTS/auth-config-on.toml" >"$RESULTS/auth-config-both.toml"

OFF=$(mktemp -d)
ON=$(mktemp -d)
KEY=$("$TW" keys --data-dir "$ON" create --user bench --name bench 2>/dev/null)
JWT=$(python3 - "$SECRET" <<'PY'
import base64, hashlib, hmac, json, sys, time
b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
body = b64(json.dumps({"sub": "bench", "exp": int(time.time()) + 86400}).encode())
mac = hmac.new(sys.argv[1].encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
print(f"{head}.{body}.{b64(mac)}")
PY
)

for round in $(seq 1 "$ROUNDS"); do
    for mode in none key jwt; do
        if [ "$mode" = none ]; then
            start auth "$OFF" "$RESULTS/auth-config.toml"
            header=()
        else
            start auth "$ON" "$RESULTS/auth-config-both.toml"
            if [ "$mode" = key ]; then header=(--header "Authorization: Bearer $KEY"); else header=(--header "Authorization: Bearer $JWT"); fi
        fi
        log "round $round: $mode"
        "$TW" bench overhead --url "http://127.0.0.1:$TW_PORT/api/chat" -n "$REQUESTS" --tokens 1 \
            --server-pid "$PID" --json "${header[@]}" 2>"$RESULTS/auth-$mode-$round.stderr" \
            | tail -n 1 >"$RESULTS/auth-$mode-$round.json" || true
        stop
    done
done
python3 - "$RESULTS" "$ROUNDS" >"$RESULTS/auth.md" <<'PY'
import json, os, statistics, sys
results, rounds = sys.argv[1], int(sys.argv[2])
rows = {}
for mode in ("none", "key", "jwt"):
    p50, p99 = [], []
    for r in range(1, rounds + 1):
        try:
            x = json.load(open(os.path.join(results, f"auth-{mode}-{r}.json")))
        except (OSError, ValueError):
            continue
        p50.append(x["through_server"]["p50_ms"]); p99.append(x["through_server"]["p99_ms"])
    rows[mode] = (statistics.median(p50), statistics.median(p99)) if p50 else (None, None)
base = rows["none"][0]
print("| authentication | first token p50 (ms) | p99 (ms) | added at p50 |")
print("|---|---:|---:|---:|")
for mode, title in (("none", "none (one local user)"), ("key", "API key (SHA-256, one SQLite read)"), ("jwt", "JWT (HS256)")):
    a, b = rows[mode]
    added = "–" if mode == "none" or a is None or base is None else f"{(a - base) * 1000:+.0f} µs"
    print(f"| {title} | {a:.3f} | {b:.3f} | {added} |" if a is not None else f"| {title} | – | – | – |")
PY
cat "$RESULTS/auth.md"
