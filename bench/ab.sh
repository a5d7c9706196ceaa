#!/usr/bin/env bash
# Same-session A/B of two tidewire binaries (an older build and this one), alternating
# runs so both see the same machine: burst x4, overhead x2, fan-out and paced x1.
# All traffic to 127.0.0.1, every load bounded; prints the figures side by side.
#   bash bench/ab.sh OLD_TIDEWIRE NEW_TIDEWIRE
ulimit -n 20000
rm -f ${TMPDIR:-/tmp}/tidewire-ab.*.json
OLD=${1:?usage: bench/ab.sh OLD_TIDEWIRE NEW_TIDEWIRE}
NEW=${2:?usage: bench/ab.sh OLD_TIDEWIRE NEW_TIDEWIRE}
printf '[llm]\ndefault = "synthetic"\n[pipeline]\nquery_analysis = false\nretrieval = false\nscoring = false\nfollow_ups = false\n' > ${TMPDIR:-/tmp}/tidewire-ab-engine.toml
run() { # bin port label workload args...
  local bin=$1 port=$2 label=$3 workload=$4; shift 4
  local extra=""; [ "$label" = new ] && extra="--config ${TMPDIR:-/tmp}/tidewire-ab-engine.toml"
  D=$(mktemp -d); $bin serve $extra --addr 127.0.0.1:$port --data-dir $D --log warn --max-concurrent-runs 100000 > /dev/null 2>&1 &
  local pid=$!; for _ in $(seq 50); do curl -sf localhost:$port/healthz >/dev/null && break; sleep 0.1; done
  $NEW bench $workload --url http://127.0.0.1:$port/api/chat --server-pid $pid --json "$@" 2>/dev/null | tail -1 > ${TMPDIR:-/tmp}/tidewire-ab.$label.$workload.$RANDOM.json
  kill $pid; wait $pid 2>/dev/null
}
for i in 1 2 3 4; do
  run $OLD 18700 old burst -c 100 -n 5000 --tokens 100
  run $NEW 18701 new burst -c 100 -n 5000 --tokens 100
done
for i in 1 2; do
  run $OLD 18700 old overhead -n 3000 --tokens 1
  run $NEW 18701 new overhead -n 3000 --tokens 1
done
run $OLD 18700 old fanout --subscribers 1000 --tokens 400 --rate 20 --max-time 60
run $NEW 18701 new fanout --subscribers 1000 --tokens 400 --rate 20 --max-time 60
run $OLD 18700 old paced -c 2500 --tokens 500 --rate 20 --max-time 60
run $NEW 18701 new paced -c 2500 --tokens 500 --rate 20 --max-time 60
python3 - <<'PY'
import json,glob,os,statistics
rows={}
for f in glob.glob(os.environ.get('TMPDIR','/tmp')+'/tidewire-ab.*.json'):
    _,label,workload,_,_=f.split('/')[-1].split('.')
    try: d=json.load(open(f))
    except Exception: continue
    rows.setdefault((workload,label),[]).append(d)
def med(xs): return statistics.median(xs) if xs else None
for w in ['burst','overhead','fanout','paced']:
    for label in ['old','new']:
        ds=rows.get((w,label),[])
        if w=='burst':
            print(w,label,'events/s',[round(d['events_per_s']) for d in ds],'median',round(med([d['events_per_s'] for d in ds]) or 0),'cpu us/ev median',round(med([d['server']['cpu_us_per_event'] for d in ds]) or 0,2))
        elif w=='overhead':
            print(w,label,'p50/p99 ms',[(d['overhead_p50_ms'],d['overhead_p99_ms']) for d in ds])
        elif w=='fanout':
            print(w,label,'lateness p99',[d['lateness']['p99_ms'] for d in ds],'cpu',[d['server']['cpu_us_per_event'] for d in ds])
        else:
            print(w,label,'lateness p99',[d['lateness']['p99_ms'] for d in ds],'cpu',[d['server']['cpu_us_per_event'] for d in ds])
PY
