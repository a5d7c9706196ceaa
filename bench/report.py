#!/usr/bin/env python3
"""Writes BENCHMARKS.md from the JSON lines `tidewire bench --json` printed and from
criterion's estimates of the decoder benchmark. Used by bench/run.sh.

    report.py --check-paced FILE      exit 0 if that paced run met the bar
    report.py --median-idle DIR/idle SERVER   keep the median of that server's idle runs
    report.py --results DIR --out BENCHMARKS.md
"""

import argparse
import datetime
import glob
import json
import os
import platform
import re
import subprocess
import sys

PACED_BAR_MS = 100.0

# The servers compared, by the name in their result files, and their column labels.
# A peer with no result file (an older run, or no `node` on the machine) shows "–".
PEERS = [("peer", "sse-starlette"), ("node", "Node http")]
SERVERS = [("tidewire", "tidewire")] + PEERS
# The paced workload also runs against the smallest writer (`tidewire bench
# raw-peer`): the machine's own limit.
PACED_SERVERS = SERVERS + [("raw", "smallest writer")]


def load(path):
    try:
        with open(path) as f:
            text = f.read().strip()
        return json.loads(text) if text else None
    except (OSError, ValueError):
        return None


def paced_ok(result):
    if not result or result.get("errors", 1) != 0:
        return False
    p99 = (result.get("lateness") or {}).get("p99_ms")
    return p99 is not None and p99 < PACED_BAR_MS


def fmt(value, digits=1):
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}"


def ratio(ours, theirs, higher_is_better=True):
    if not ours or not theirs:
        return "–"
    r = ours / theirs if higher_is_better else theirs / ours
    return f"**{r:,.1f}×**"


def compare_header():
    """The header of a table with one column per server and tidewire's ratio to each peer."""
    labels = [label for _, label in SERVERS]
    vs = [f"tidewire vs {label}" for _, label in PEERS]
    return "| | " + " | ".join(labels + vs) + " |\n|---|" + "---:|" * (len(labels) + len(vs))


def compare_row(label, results, fn, digits, better):
    """One row of that table: `fn` of each server's results; the ratios when `better`
    (True: higher is better, False: lower is) is not None."""
    values = {server: (fn(results[server]) if results.get(server) else None) for server, _ in SERVERS}
    cells = [fmt(values[server], digits) for server, _ in SERVERS]
    cells += [ratio(values["tidewire"], values[server], better) if better is not None else "" for server, _ in PEERS]
    return f"| {label} | " + " | ".join(cells) + " |"


def machine():
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem_gib = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    mem_gib = int(line.split()[1]) / 1024 / 1024
    except OSError:
        pass
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    recorded = os.environ.get("BENCH_COMMIT")
    if recorded:
        commit = recorded
    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "memory": f"{mem_gib:.0f} GiB" if mem_gib else "unknown",
        "kernel": platform.release(),
        "commit": commit or "unknown",
        "date": datetime.date.today().isoformat(),
    }


def redis_burst_ratio(results):
    """Burst events/s with the Redis log, in % of the in-process log, from
    bench/cluster.sh's table."""
    try:
        rows = [line.split("|") for line in open(os.path.join(results, "cluster.md"))]
    except OSError:
        return None
    rates = {}
    for cells in rows:
        if len(cells) > 4 and cells[1].strip() == "burst":
            try:
                rates[cells[2].strip()] = float(cells[3].strip().replace(",", ""))
            except ValueError:
                pass
    if rates.get("in-process") and "Redis Streams" in rates:
        return 100 * rates["Redis Streams"] / rates["in-process"]
    return None


def idle_heap_bytes(results):
    """The heap per idle stream that the idle_memory benchmark counted, if it ran."""
    path = os.path.join(results, "idle-memory.md")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        for line in f:
            m = re.match(r"\| \*\*total per idle stream\*\* \| ([\d.]+) \|", line)
            if m:
                return float(m.group(1))
    return None


def metrics_ratio(results):
    """Burst events/s with metrics on, in % of off, from bench/metrics.sh's table."""
    try:
        text = open(os.path.join(results, "metrics.md")).read()
    except OSError:
        return None
    marker = "With metrics on: "
    at = text.find(marker)
    if at < 0:
        return None
    try:
        return float(text[at + len(marker):].split()[0])
    except ValueError:
        return None


def retrieval_p99(results):
    """(chunks, search p99 in ms) of the largest corpus the retrieval benchmark searched."""
    path = os.path.join(results, "retrieval.md")
    if not os.path.exists(path):
        return None
    rows = []
    with open(path) as f:
        for line in f:
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if len(cells) == 7 and cells[0].isdigit():
                rows.append((int(cells[0]), float(cells[5].split()[0])))
    return max(rows) if rows else None


def codec_rows(target):
    """Events per second of each decoder in each group, from criterion's estimates."""
    groups = [
        ("llm-tokens_1KiB-chunks", "(a) LLM tokens, 1 KiB chunks"),
        ("llm-tokens_16KiB-chunks", "(a) LLM tokens, 16 KiB chunks"),
        ("large-events_64KiB-chunks", "(b) 64 KiB events, 64 KiB chunks"),
    ]
    decoders = ["tidewire-sse", "tidewire-sse-borrowed", "tidewire-sse-stream", "sseer", "eventsource-stream"]
    rows = []
    for directory, title in groups:
        rates = {}
        for decoder in decoders:
            base = os.path.join(target, directory, decoder, "new")
            estimates = load(os.path.join(base, "estimates.json"))
            info = load(os.path.join(base, "benchmark.json"))
            if not estimates or not info:
                continue
            elements = (info.get("throughput") or {}).get("Elements")
            nanos = estimates["mean"]["point_estimate"]
            if elements and nanos:
                rates[decoder] = elements / (nanos / 1e9)
        if rates:
            rows.append((title, rates))
    return rows


def write_report(results, out, quick):
    m = machine()
    r = lambda name, server: load(os.path.join(results, f"{name}.{server}.json"))
    lines = []
    add = lines.append

    def section(name, heading, intro, skip_headings=False):
        """A section made of `heading`, `intro` lines and the Markdown a benchmark
        wrote to `name` in the results (left out if it did not run)."""
        path = os.path.join(results, name)
        if not os.path.exists(path):
            return
        add(heading)
        add("")
        for line in intro:
            add(line)
        add("")
        with open(path) as f:
            for line in f.read().splitlines():
                if not (skip_headings and line.startswith("## ")):
                    add(line)
        add("")
    add("# Benchmarks")
    add("")
    add("Every figure below was printed by one run of `bash bench/run.sh` on the machine")
    add("described here, tidewire and the peers measured in the same run. Rerun the script")
    add("to reproduce them; this machine is noisy, so compare ratios, not absolute values.")
    if quick == "1":
        add("")
        add("> **QUICK run** (`QUICK=1`): small loads, a smoke test of the script. Not the reference table.")
    add("")
    add(f"- Machine: {m['cores']} cores ({m['cpu']}), {m['memory']} RAM, Linux {m['kernel']}")
    add(f"- Date: {m['date']}, commit `{m['commit']}`")
    add("- tidewire: `tidewire serve` (release build), SQLite in a fresh temporary directory,")
    add("  the synthetic backend; every turn is stored. A fresh server for each workload.")
    add("- sse-starlette: the peer `bench/peers/app.py`, FastAPI + sse-starlette on uvicorn")
    add("  (uvloop, httptools), 2 worker processes (1 for the fan-out, whose runs live in one")
    add("  process's memory), streaming the same events with the same design (a run task")
    add("  writing an in-memory log that every stream follows). It stores nothing.")
    node_version = None
    try:
        with open(os.path.join(results, "node-version.txt")) as f:
            node_version = f.read().strip() or None
    except OSError:
        pass
    if any(f.endswith(".node.json") for f in os.listdir(results)):
        add("- Node http: the peer `bench/peers/node/server.mjs`, the same contract and design on")
        add("  Node's built-in `http` module" + (f" (Node {node_version})" if node_version else "")
            + ", no npm dependency; 2 worker processes")
        add("  (`node:cluster`; 1 for the fan-out), as the Python peer. It stores nothing.")
    add("- Load: `tidewire bench` (decodes with tidewire-sse) on the same machine, to 127.0.0.1.")
    add("  Server CPU and memory are read from `/proc` (`--server-pid`, children included).")
    add("")

    # Summary against the bars and aims of the benchmark's specification.
    tb, pb, nb = r("burst", "tidewire"), r("burst", "peer"), r("burst", "node")
    ti, to, tu = r("idle", "tidewire"), r("overhead", "tidewire"), r("upstream", "tidewire")
    cs_all = sizes(results, "paced")
    paced_best = max([c for c in cs_all if paced_ok(r(f"paced-{c}", "tidewire"))], default=None)
    codec = dict(codec_rows(os.path.join(os.path.dirname(os.path.abspath(results)), "..", "target", "criterion")))
    def met(ok):
        return "met" if ok else "**not met**"
    add("## Summary")
    add("")
    add("| figure | target | measured | |")
    add("|---|---|---|---|")
    if tb and pb:
        ev = tb["events_per_s"] / pb["events_per_s"]
        cpu = pb["server"]["cpu_us_per_event"] / tb["server"]["cpu_us_per_event"]
        add(f"| burst events/s vs the peer | at least 10× (bar) | {ev:.1f}× | {met(ev >= 10)} |")
        add(f"| burst server CPU per event vs the peer | at most a tenth (bar) | a {cpu:.1f}th | {met(cpu >= 10)} |")
    if tb and nb:
        ev = tb["events_per_s"] / nb["events_per_s"]
        cpu = nb["server"]["cpu_us_per_event"] / tb["server"]["cpu_us_per_event"]
        add(f"| burst events/s vs Node http | ahead (aim) | {ev:.1f}× | {met(ev > 1)} |")
        add(f"| burst server CPU per event vs Node http | less (aim) | a {cpu:.1f}th | {met(cpu > 1)} |")
    td = r("burst-dialect", "tidewire")
    if tb and td:
        x = td["events_per_s"] / tb["events_per_s"]
        add(f"| burst events/s on a dialect route (seed 002's) vs the native route | within 10 % (bar) | {x * 100:.0f} % | {met(x >= 0.9)} |")
    held = lambda server: max([c for c in cs_all if paced_ok(r(f"paced-{c}", server))], default=None)
    paced_node, paced_raw = held("node"), held("raw")
    add(f"| paced streams (500 tokens at 20/s) held at p99 lateness under 100 ms | aim: 10,000 streams | {fmt(paced_best, 0)} streams | {met((paced_best or 0) >= 10000)} |")
    if paced_best and paced_node:
        x = paced_best / paced_node
        add(f"| paced streams held vs Node http (sweep: {', '.join(f'{c:,}' for c in cs_all)}) | at least 2× (goal) | {paced_best:,} vs {paced_node:,}: {x:.1f}× | {met(x >= 2)} |")
    if paced_best and paced_raw:
        add(f"| paced streams held vs the machine's limit (the smallest writer) | near it (goal) | {paced_best:,} of {paced_raw:,}: {paced_best / paced_raw * 100:.0f} % | {met(paced_best >= paced_raw)} |")
    ni = r("idle", "node")
    if ti and ti.get("server_bytes_per_stream"):
        ours = ti["server_bytes_per_stream"]
        if ni and ni.get("server_bytes_per_stream"):
            theirs = ni["server_bytes_per_stream"]
            add(f"| memory per idle stream | under 10 KiB and at most half of Node http's (goal) | {ours / 1024:.1f} KiB vs Node's {theirs / 1024:.1f} KiB ({ours / theirs * 100:.0f} %) | {met(ours < 10240 and ours * 2 <= theirs)} |")
        else:
            add(f"| memory per idle stream | under 10 KiB (goal) | {ours / 1024:.1f} KiB | {met(ours < 10240)} |")
    tf = r("fanout-10000", "tidewire")
    if tf and (tf.get("lateness") or {}).get("p99_ms") is not None:
        p99 = tf["lateness"]["p99_ms"]
        rf = r("fanout-10000", "raw")
        limit = f" (the smallest writer: {rf['lateness']['p99_ms']:.0f} ms)" if rf and (rf.get("lateness") or {}).get("p99_ms") is not None else ""
        add(f"| fan-out to 10,000 subscribers, p99 lateness | under 100 ms (goal) | {p99:.0f} ms{limit} | {met(p99 < 100 and not tf.get('errors'))} |")
    if to:
        add(f"| gateway overhead (time added before the first token), synthetic, p99 | under 0.5 ms (goal) | {to['overhead_p99_ms']:.3f} ms | {met(to['overhead_p99_ms'] < 0.5)} |")
    if tu:
        add(f"| gateway overhead in front of a model server, p99 | aim: under 1 ms | {tu['overhead_p99_ms']:.3f} ms | {met(tu['overhead_p99_ms'] < 1)} |")
    for title, rates in codec.items():
        if title.startswith("(a)") and rates.get("eventsource-stream"):
            x = rates["tidewire-sse"] / rates["eventsource-stream"]
            add(f"| decoder {title[4:]} vs eventsource-stream | at least 5× (bar) | {x:.1f}× | {met(x >= 5)} |")
    for title, rates in codec.items():
        if rates.get("sseer"):
            x = rates["tidewire-sse"] / rates["sseer"]
            add(f"| decoder {title} vs sseer | faster (bar) | {x:.1f}× | {met(x > 1)} |")
    opt, opl = load(os.path.join(results, "openai-proxy-burst-tidewire.json")), load(os.path.join(results, "openai-proxy-burst-litellm.json"))
    otu, oul = load(os.path.join(results, "openai-upstream-tidewire.json")), load(os.path.join(results, "openai-upstream-litellm.json"))
    if opt and opl:
        x = opt["events_per_s"] / opl["events_per_s"]
        add(f"| `/v1/chat/completions` events/s vs LiteLLM's proxy, same mock model | at least 10× (aim) | {x:,.0f}× | {met(x >= 10)} |")
    if otu and oul:
        x = oul["overhead_p50_ms"] / otu["overhead_p50_ms"]
        add(f"| time added before the first token vs LiteLLM's, p50 | a tenth or less (aim) | a {x:,.0f}th | {met(x >= 10)} |")
    metrics_pct = metrics_ratio(results)
    if metrics_pct is not None:
        add(f"| burst events/s with metrics on vs off | within 3 % (aim) | {metrics_pct:.1f} % | {met(abs(metrics_pct - 100) <= 3 or metrics_pct > 100)} |")
    redis_pct = redis_burst_ratio(results)
    if redis_pct is not None:
        add(f"| burst events/s with the run log in Redis vs in process | none set (measured) | {redis_pct:.0f} % | – |")
    search = retrieval_p99(results)
    if search:
        chunks, p99 = search
        add(f"| search p99 at {chunks:,} chunks | aim: under 10 ms at 100k | {p99:.2f} ms | {met(chunks >= 100000 and p99 < 10)} |")
    add("")
    missed = [c for c in cs_all if c > (paced_best or 0)]
    over = r(f"paced-{missed[0]}", "tidewire") if missed else None
    if over and over.get("server") and over.get("loadgen"):
        add(f"Where the paced aim is missed: at {missed[0]:,} streams the server spent "
            f"{over['server']['cpu_us_per_event']:.1f} µs of CPU per event and the load generator, on the same")
        add(f"two cores, {over['loadgen']['cpu_share_of_one_core'] * 100:.0f} % of one core: the machine is saturated. Every paced token")
        add("is a TCP write of its own, as in the smallest writer, whose own limit is in the paced table.")
        add("`perf record -g` on the server at 6,000 paced streams (commit `d444df0`): 52 % of its samples in the")
        add("kernel, nearly all of it the `writev` of each token (on loopback that write also delivers the")
        add("segment to the load generator and wakes it: 8.6 % is the lock of that wakeup alone); 3.9 % zeroing")
        add("fresh memory as the answers grow (a 500-token answer holds about 100 KB while it runs: its events,")
        add("their encoding, its text; 6.6 to 8.7 % while mimalloc still took transparent huge pages, each")
        add("fault zeroing 2 MiB); the SQLite writer thread 5.6 %; no item of tidewire's own above 3.5 %.")
        add("The smallest writer spends about as much in the kernel per event.")
        add("")
    if paced_best and paced_node and paced_raw and paced_best < 2 * paced_node and paced_raw < 2 * paced_node:
        add(f"Where the paced goal against Node is missed: twice Node's {paced_node:,} streams is {2 * paced_node:,}, and the")
        add(f"smallest writer itself holds {paced_raw:,} on these two cores with the load generator beside it;")
        add(f"tidewire holds {paced_best / paced_raw * 100:.0f} % of that limit, Node {paced_node / paced_raw * 100:.0f} %. Past it, the machine, not the")
        add("server, sets the figure: a faster machine, or the load generator on another one, is what would show more.")
        add("")
    elif paced_best and paced_node and paced_raw and paced_best < 2 * paced_node:
        ours = (r(f"paced-{paced_best}", "tidewire") or {}).get("server") or {}
        limit = (r(f"paced-{paced_best}", "raw") or {}).get("server") or {}
        add(f"Where the paced goal against Node is missed: twice Node's {paced_node:,} streams is {2 * paced_node:,}, and the")
        add(f"smallest writer holds {paced_raw:,} on these two cores with the load generator beside it, so here the")
        add(f"machine is not what stops tidewire: it holds {paced_best / paced_raw * 100:.0f} % of that figure, Node {paced_node / paced_raw * 100:.0f} %.")
        if ours.get("cpu_us_per_event") and limit.get("cpu_us_per_event"):
            add(f"At {paced_best:,} streams tidewire spent {ours['cpu_us_per_event']:.1f} µs of CPU per event, the smallest writer")
            add(f"{limit['cpu_us_per_event']:.1f}: about as much in the kernel's write, and on top of it tidewire's own work per token")
            add("(the answer's task woken by its timer, the event appended to the run's log and encoded, the")
            add("connection's task woken to write it, the answer's text flushed to SQLite every second).")
        add("")
    if tf and tf.get("server") and tf.get("loadgen") and (tf.get("lateness") or {}).get("p99_ms", 0) >= 100:
        cores = tf["server"]["cpu_us_per_event"] * tf["events_per_s"] / 1e6
        add(f"Where the fan-out goal is missed: 10,000 subscribers at 20 tokens/s are {tf['events_per_s']:,.0f} events/s, each its own")
        add(f"write; the server spent {tf['server']['cpu_us_per_event']:.1f} µs of CPU per event ({cores:.1f} cores' worth) and the load generator")
        add(f"{tf['loadgen']['cpu_share_of_one_core'] * 100:.0f} % of one core decoding them, on two cores: the work outgrows the machine and a backlog")
        nf = r("fanout-10000", "node")
        if nf and nf.get("errors"):
            add(f"builds. Node's lateness counts only its streams that did not fail ({nf['errors']:,} of 10,000 did).")
        else:
            add("builds.")
        rf = r("fanout-10000", "raw")
        if rf and (rf.get("lateness") or {}).get("p99_ms") is not None:
            add(f"The smallest writer, in the same run, had p99 {rf['lateness']['p99_ms']:.0f} ms (server {rf['server']['cpu_us_per_event']:.1f} µs of CPU per event,")
            add(f"load generator {rf['loadgen']['cpu_share_of_one_core'] * 100:.0f} % of one core): that is this machine's own figure for the workload.")
        add("")
    if to and to.get("overhead_p99_ms", 0) >= 0.5:
        add(f"Where the first-token goal is missed: p50 {to['overhead_p50_ms']:.2f} ms, p99 {to['overhead_p99_ms']:.2f} ms. Before its first token, each")
        add("request validates, commits its turn to SQLite (conversation, user message, `streaming` answer: one")
        add("write on the store's writer thread, timed alone under the first-token section) and starts the run.")
        add("")
    idle_heap = idle_heap_bytes(results)
    if ti and ti.get("server_bytes_per_stream"):
        ours = ti["server_bytes_per_stream"]
        theirs = (ni or {}).get("server_bytes_per_stream")
        if ours >= 10240 or (theirs and ours * 2 > theirs):
            add(f"Where the memory goal is missed: {ours / 1024:.1f} KiB of resident memory per idle stream" + (f", {ours / theirs * 100:.0f} % of Node's" if theirs else "") + ".")
            if idle_heap:
                add(f"Its heap is {idle_heap:,.0f} bytes (\"Where the memory of an idle stream goes\" below, by call stack); the rest")
                add("is the allocator's (size classes, partly used pages).")
            add("hyper's HTTP/1 buffers, 24 KiB per connection, are gone: tidewire serves HTTP/1 itself")
            add("(`crates/tidewire-http`), with no buffer held while a stream waits. What is left is tidewire's")
            add("own state: the run's task (the pipeline's future), the run and its log, the subscriber and")
            add("the connection's task, each under 3.5 KB. Going further means fewer, smaller allocations")
            add("in the run and its log, and a smaller pipeline future.")
            add("")

    # Burst.
    add("## Burst: streams as fast as possible")
    add("")
    if tb:
        add(f"`tidewire bench burst -c {tb['concurrency']} -n {tb['requests']} --tokens 100`: "
            f"{tb['concurrency']} concurrent streams, {tb['requests']} requests, 104 events each.")
    add("")
    add(compare_header())
    burst = {server: r("burst", server) for server, _ in SERVERS}
    def row(label, key, fn, better=True, digits=1):
        add(compare_row(label, burst, fn, digits, better if key else None))
    row("events/s", True, lambda x: x.get("events_per_s"), True, 0)
    row("requests/s", True, lambda x: x.get("requests_per_s"), True, 0)
    row("server CPU µs per event", True, lambda x: (x.get("server") or {}).get("cpu_us_per_event"), False, 2)
    row("time to first event p50 (ms)", False, lambda x: x["time_to_first_event"]["p50_ms"], digits=2)
    row("time to first event p99 (ms)", False, lambda x: x["time_to_first_event"]["p99_ms"], digits=2)
    row("time to last event p50 (ms)", False, lambda x: x["time_to_last_event"]["p50_ms"], digits=2)
    row("time to last event p99 (ms)", False, lambda x: x["time_to_last_event"]["p99_ms"], digits=2)
    row("errors", False, lambda x: x.get("errors"), digits=0)
    td = r("burst-dialect", "tidewire")
    if tb and td:
        add("")
        add("The same burst on the portfolio assistant's route (`POST /api/v1/chat/send`, seed 002:")
        add("`event:` and `id:` on every event, 102 events a stream), same run:")
        add("")
        add("| | native route | dialect route | dialect vs native |")
        add("|---|---:|---:|---:|")
        for label, fn, better, digits in [
            ("events/s", lambda x: x.get("events_per_s"), True, 0),
            ("requests/s", lambda x: x.get("requests_per_s"), True, 0),
            ("server CPU µs per event", lambda x: (x.get("server") or {}).get("cpu_us_per_event"), False, 2),
        ]:
            a, b = fn(tb), fn(td)
            add(f"| {label} | {fmt(a, digits)} | {fmt(b, digits)} | {ratio(b, a, better)} |")
    add("")

    # Paced.
    add("## Paced: concurrent streams of 500 tokens at 20 tokens/s")
    add("")
    add("Lateness of each token against its schedule (first token + k / 20 s), over every")
    add("token of every stream. The bar: p99 under 100 ms with no error.")
    add("")
    add("| concurrent streams | " + " | ".join(f"{label} p50 / p99 / max (ms) | errors" for _, label in PACED_SERVERS) + " |")
    add("|---:|" + "---|---:|" * len(PACED_SERVERS))
    best = {server: None for server, _ in PACED_SERVERS}
    cs = sizes(results, "paced")
    ran = {server: [c for c in cs if r(f"paced-{c}", server)] for server, _ in PACED_SERVERS}
    for c in cs:
        cells = []
        for server, _ in PACED_SERVERS:
            x = r(f"paced-{c}", server)
            if x:
                late = x.get("lateness") or {}
                cells.append(f"{fmt(late.get('p50_ms'), 2)} / {fmt(late.get('p99_ms'), 2)} / {fmt(late.get('max_ms'), 2)}")
                cells.append(fmt(x.get("errors"), 0))
                if paced_ok(x):
                    best[server] = c
            elif any(smaller < c for smaller in ran[server]):
                cells += ["not run (a smaller load missed the bar)", "–"]
            else:
                cells += ["–", "–"]
        add(f"| {c:,} | " + " | ".join(cells) + " |")
    add("")
    add("Largest concurrency meeting the bar: " + ", ".join(f"{label} **{fmt(best[server], 0)}**" for server, label in PACED_SERVERS) + ".")
    add("")
    add("The smallest writer (`tidewire bench raw-peer`) is the machine's limit: the chat route's")
    add("contract on raw sockets, pre-encoded bytes, one write per token on the same schedule,")
    add("no HTTP library, log or store. Server CPU µs per paced event at each server's largest")
    add("concurrency that met the bar: " + ", ".join(
        f"{label} {fmt(((r(f'paced-{best[server]}', server) or {}).get('server') or {}).get('cpu_us_per_event'), 1)}"
        for server, label in PACED_SERVERS if best[server]) + ".")
    add("")

    # Idle.
    idle = {server: r("idle", server) for server, _ in SERVERS}
    ti = idle["tidewire"]
    add("## Idle: open streams held")
    add("")
    if ti:
        add(f"`tidewire bench idle -c {ti['concurrency']} --hold {ti['hold_s']}`: each stream is a run that sent its first")
        add("token and waits for the next. A tenth of the streams open first and are held; the server's")
        add("resident memory is read; the rest open (at most 256 at a time) and are held as long; it is read")
        add("again. Memory per stream is the growth between the two readings divided by the streams opened")
        add("between them: what one more held stream costs, without what a server allocates once at its")
        add("start or on its first requests. The workload runs three times per server and the median is")
        add("shown; the three runs are listed below the table.")
    add("")
    add(compare_header())
    for label, fn, better in [
        ("streams opened", lambda x: x.get("opened"), True),
        ("still open after the hold", lambda x: x.get("still_open"), True),
        ("server memory per stream (bytes)", lambda x: x.get("server_bytes_per_stream"), False),
    ]:
        add(compare_row(label, idle, fn, 0, better if "memory" in label else None))
    add("")
    for server, name in SERVERS:
        runs = (idle.get(server) or {}).get("runs_bytes_per_stream")
        if runs:
            add(f"- {name}, the three runs: " + ", ".join(f"{b:,.0f}" for b in runs) + " bytes per stream.")
    add("")
    add("On hyper's HTTP/1 (before `crates/tidewire-http`, commit f1fdb24), this workload as it was then (every")
    add("stream opened at once, growth from before the first) measured 38.5 KiB per stream for tidewire and")
    add("19.7 KiB for Node http; on `b1e4cc3`, 12.2 KiB and 19.5 KiB.")
    add("")
    breakdown = os.path.join(results, "idle-memory.md")
    if os.path.exists(breakdown):
        with open(breakdown) as f:
            text = f.read().strip()
        # Its own heading becomes a sub-heading here.
        add(text.replace("## Memory of an idle stream, by part", "### Where the memory of an idle stream goes", 1))
        add("")

    # Fan-out.
    add("## Fan-out: one run, many subscribers")
    add("")
    add("One run of 400 tokens at 20 tokens/s; N clients attach to its events URL. Lateness")
    add("counts only the events produced after a subscriber attached (earlier ones are replay).")
    add("")
    add("The smallest writer (`tidewire bench raw-peer`) follows the run the same way: one task per")
    add("subscriber, woken through a watch channel, pre-encoded bytes, one write per token: the")
    add("machine's own limit for this workload.")
    add("")
    add("| subscribers | " + " | ".join(f"{label} events/s | lateness p50 / p99 (ms) | errors" for _, label in PACED_SERVERS) + " |")
    add("|---:|" + "---:|---|---:|" * len(PACED_SERVERS))
    ns = sizes(results, "fanout")
    for n in ns:
        cells = []
        for server, _ in PACED_SERVERS:
            x = r(f"fanout-{n}", server)
            if x:
                late = x.get("lateness") or {}
                cells += [fmt(x.get("events_per_s"), 0), f"{fmt(late.get('p50_ms'), 2)} / {fmt(late.get('p99_ms'), 2)}", fmt(x.get("errors"), 0)]
            else:
                cells += ["–", "–", "–"]
        add(f"| {n:,} | " + " | ".join(cells) + " |")
    add("")

    # Overhead.
    to = r("overhead", "tidewire")
    add("## Gateway overhead: time to first token")
    add("")
    add("Sequential requests (`tidewire bench overhead`), one token each: time from sending")
    add("the request to the first `token` event, minus the same synthetic generation started")
    add("inside the load generator's process (which is the bare cost of the generation).")
    add("Through tidewire this includes HTTP, validation, storing the turn in SQLite and")
    add("starting the run.")
    add("")
    add("| | p50 (ms) | p99 (ms) |")
    add("|---|---:|---:|")
    if to:
        add(f"| tidewire: first token over HTTP | {fmt(to['through_server']['p50_ms'], 3)} | {fmt(to['through_server']['p99_ms'], 3)} |")
        add(f"| the generation in process | {fmt(to['in_process']['p50_ms'], 3)} | {fmt(to['in_process']['p99_ms'], 3)} |")
        add(f"| **tidewire overhead** | **{fmt(to['overhead_p50_ms'], 3)}** | **{fmt(to['overhead_p99_ms'], 3)}** |")
    for server, label in PEERS:
        po = r("overhead", server)
        if po:
            add(f"| {label}: first token over HTTP | {fmt(po['through_server']['p50_ms'], 3)} | {fmt(po['through_server']['p99_ms'], 3)} |")
    add("")
    writes = os.path.join(results, "store-writes.md")
    if os.path.exists(writes):
        with open(writes) as f:
            text = f.read().strip()
        add("The turn's commit is the largest part: `cargo bench -p tidewire --bench store_writes`")
        add("times the store's writes alone.")
        add("")
        # Its own headings become sub-headings here.
        add(text.replace("### ", "#### ").replace("## Store writes", "### Store writes", 1))
        add("")

    # In front of a model server.
    tu = r("upstream", "tidewire")
    add("## Gateway overhead in front of a model server")
    add("")
    add("tidewire configured with `TIDEWIRE_LLM_URL` pointing at a zero-delay OpenAI-compatible")
    add("mock (`tidewire bench mock-upstream`); `tidewire bench upstream` alternates sequential")
    add("requests straight to the mock and through tidewire, timing the first token of each.")
    add("")
    add("| | p50 (ms) | p99 (ms) |")
    add("|---|---:|---:|")
    if tu:
        add(f"| first token through tidewire | {fmt(tu['through_server']['p50_ms'], 3)} | {fmt(tu['through_server']['p99_ms'], 3)} |")
        add(f"| first token straight from the model server | {fmt(tu['straight_from_upstream']['p50_ms'], 3)} | {fmt(tu['straight_from_upstream']['p99_ms'], 3)} |")
        add(f"| **tidewire overhead** | **{fmt(tu['overhead_p50_ms'], 3)}** | **{fmt(tu['overhead_p99_ms'], 3)}** |")
    add("")

    # Codec.
    rows = codec_rows(os.path.join(os.path.dirname(os.path.abspath(results)), "..", "target", "criterion"))
    add("## The decoder: tidewire-sse beside sseer and eventsource-stream")
    add("")
    add("`cargo bench -p tidewire-sse --features stream`, events decoded per second (mean of")
    add("criterion's samples). `tidewire-sse` is the sans-I/O decoder yielding owned events,")
    add("the same output the peers produce; `borrowed` yields events borrowed from the decoder")
    add("(no allocation); `stream` is the async `Stream` adapter, the peers' own API shape.")
    add("")
    add("| input | tidewire-sse | borrowed | stream | sseer | eventsource-stream | vs eventsource-stream | vs sseer |")
    add("|---|---:|---:|---:|---:|---:|---:|---:|")
    for title, rates in rows:
        t = rates.get("tidewire-sse")
        add(f"| {title} | {fmt(t, 0)} | {fmt(rates.get('tidewire-sse-borrowed'), 0)} | {fmt(rates.get('tidewire-sse-stream'), 0)} | "
            f"{fmt(rates.get('sseer'), 0)} | {fmt(rates.get('eventsource-stream'), 0)} | "
            f"{ratio(t, rates.get('eventsource-stream'))} | {ratio(t, rates.get('sseer'))} |")
    add("")

    # The OpenAI route, beside the native one and beside LiteLLM (bench/openai.sh).
    o = lambda name: load(os.path.join(results, f"openai-{name}.json"))
    bn, bv = o("burst-native"), o("burst-v1")
    un, ut, ul = o("upstream-native"), o("upstream-tidewire"), o("upstream-litellm")
    pt, pl = o("proxy-burst-tidewire"), o("proxy-burst-litellm")
    versions = o("versions") or {}
    if bn or bv or ut:
        add("## The OpenAI route: beside the native one, and beside LiteLLM")
        add("")
        def size(x):
            return f"{x['requests']:,} streams of 100 tokens, {x['concurrency']} at a time" if x else "–"
        add("`bash bench/openai.sh`: the same burst (" + size(bn or bv) + ", as fast as possible)")
        add("on `/api/chat` and on `/v1/chat/completions` with the synthetic backend; then")
        add("tidewire and LiteLLM's proxy" + (f" ({versions['litellm']}, 2 workers)" if versions.get("litellm") else "") + ", each in")
        add("front of the same zero-delay mock model server (`tidewire bench mock-upstream`):")
        add("a burst through each (" + size(pt or pl) + "), and the time each adds before the")
        add("first token (sequential requests of one token, alternating with requests straight")
        add("to the mock).")
        add("")
        add("| measurement | events/s | server CPU µs/event | first-token overhead p50 (ms) | p99 (ms) |")
        add("|---|---:|---:|---:|---:|")
        def row(title, burst, over):
            cpu = ((burst or {}).get("server") or {}).get("cpu_us_per_event")
            add(f"| {title} | {fmt((burst or {}).get('events_per_s'), 0)} | {fmt(cpu, 1)} | "
                f"{fmt((over or {}).get('overhead_p50_ms'), 3)} | {fmt((over or {}).get('overhead_p99_ms'), 3)} |")
        row("tidewire `/api/chat`, synthetic", bn, None)
        row("tidewire `/v1/chat/completions`, synthetic", bv, None)
        row("tidewire `/api/chat` in front of the mock", None, un)
        row("tidewire `/v1/chat/completions` in front of the mock", pt, ut)
        row("LiteLLM proxy in front of the mock", pl, ul)
        add("")
        if bn and bv:
            add(f"`/v1/chat/completions` streams at {bv['events_per_s'] / bn['events_per_s'] * 100:.0f} % of the native route's events/s.")
        if pt and pl:
            add(f"In front of the same model server, tidewire streams {ratio(pt['events_per_s'], pl['events_per_s'])} LiteLLM's events/s"
                + (f" and adds {ratio(ut['overhead_p50_ms'], ul['overhead_p50_ms'], False)} less time before the first token (p50)." if ut and ul else "."))
        elif not pl:
            add("LiteLLM did not install or run on this machine: its rows are empty.")
        add("")

    # Authentication: bench/auth.sh prints its own table.
    section("auth.md", "## The cost of authentication", [
        "`bash bench/auth.sh`: time to the first token of sequential one-token requests",
        "(`tidewire bench overhead`) with no authentication, an API key and an HS256 JWT,",
        "in alternating rounds on the same machine; the median of the rounds.",
    ])

    # Documents and retrieval: the benchmark prints its own Markdown.
    section("retrieval.md", "## Documents and retrieval", [
        "`cargo bench -p tidewire --bench retrieval` (`crates/tidewire/benches/retrieval.rs`):",
        "ingest and search on a generated corpus, the time the pipeline adds before the",
        "first token, and hit@3 on the labelled questions of `bench/retrieval-questions.tsv`.",
    ], skip_headings=True)

    # Metrics on and off: bench/metrics.sh writes its table.
    section("metrics.md", "## The cost of metrics", [
        "`bash bench/metrics.sh`: burst with `[metrics]` on and off, in alternating rounds",
        "on the same machine; the figure is the median of the rounds' ratios (a round with",
        "metrics on over the round with them off right after it), as the machine's speed",
        "drifts between rounds by more than the cost measured.",
    ])

    # The shared run log: bench/cluster.sh writes its table.
    section("cluster.md", "## More than one machine: the run log in Redis", [
        "`bash bench/cluster.sh`: burst (one node) and fan-out (the run produced on one node,",
        "its subscribers on a second: every event crosses Redis) with runs shared through",
        "Redis Streams, beside the same workloads with the in-process log, in alternating",
        "rounds of the same run; the median of the rounds. Redis's CPU is read from /proc,",
        "its commands from `INFO commandstats`; tidewire's CPU counts both nodes.",
    ])

    # Tool calls: the benchmark prints its own Markdown table.
    section("tools.md", "## Tool calls", [
        "`cargo bench -p tidewire-mcp-fixture --bench tool_call`: the fixture MCP server's `add`,",
        "called over stdio by a bare rmcp client and through tidewire's tool layer (lookup,",
        "argument parsing, schema check, timeout, result bound), in alternating rounds.",
    ])

    # The load generator.
    add("## Is the load generator the bottleneck?")
    add("")
    add("Its own CPU time, read from `/proc/self/stat`, as a share of one core over each")
    add("workload's wall time (the machine has two):")
    add("")
    add("| workload | " + " | ".join(f"{label} run" for _, label in SERVERS) + " |")
    add("|---|" + "---:|" * len(SERVERS))
    names = ["burst", "burst-dialect", "overhead"] + [f"paced-{c}" for c in cs] + ["idle"] + [f"fanout-{n}" for n in ns] + ["upstream"]
    for name in names:
        cells = []
        for server, _ in SERVERS:
            x = r(name, server)
            share = ((x or {}).get("loadgen") or {}).get("cpu_share_of_one_core")
            cells.append(f"{share * 100:.0f} %" if share is not None else "–")
        add(f"| {name} | " + " | ".join(cells) + " |")
    add("")
    add("The load generator decodes with tidewire-sse and keeps latencies in HDR histograms;")
    add("where its share stays well under one core, the server, not the client, sets the pace.")
    add("")
    add("## Commands")
    add("")
    add("```sh")
    add("bash bench/run.sh      # builds, installs the Python peer in bench/.venv, runs all, writes this file")
    add("bash bench/openai.sh   # the OpenAI route and LiteLLM alone (run.sh runs it too)")
    add("```")
    add("")
    add("Each workload is `target/release/tidewire bench WORKLOAD --url URL --server-pid PID --json ...`")
    add("with the parameters shown in `bench/run.sh`; raw results land in `bench/results/`.")
    add("")
    with open(out, "w") as f:
        f.write("\n".join(lines))


def sizes(results, workload):
    """The loads a swept workload ran at, from its result files (WORKLOAD-N.SERVER.json)."""
    found = (re.match(rf"{workload}-(\d+)\.", f) for f in os.listdir(results) if f.endswith(".json"))
    return sorted({int(m.group(1)) for m in found if m})


def median_idle(prefix, server):
    """Writes PREFIX.SERVER.json: the idle run (PREFIX-runK.SERVER.json) with the
    median memory per stream, and every run's figure beside it."""
    runs = []
    for path in sorted(glob.glob(f"{prefix}-run*.{server}.json")):
        result = load(path)
        if result and result.get("server_bytes_per_stream") is not None:
            runs.append(result)
    if not runs:
        return
    runs.sort(key=lambda r: r["server_bytes_per_stream"])
    median = dict(runs[len(runs) // 2])
    median["runs_bytes_per_stream"] = [r["server_bytes_per_stream"] for r in runs]
    with open(f"{prefix}.{server}.json", "w") as f:
        f.write(json.dumps(median) + "\n")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--check-paced")
    parser.add_argument("--median-idle", nargs=2, metavar=("PREFIX", "SERVER"))
    parser.add_argument("--results")
    parser.add_argument("--out")
    parser.add_argument("--quick", default="0")
    args = parser.parse_args()
    if args.check_paced:
        sys.exit(0 if paced_ok(load(args.check_paced)) else 1)
    if args.median_idle:
        median_idle(*args.median_idle)
        return
    write_report(args.results, args.out, args.quick)


if __name__ == "__main__":
    main()
