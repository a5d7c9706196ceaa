// The benchmark's Node.js peer: the contract of bench/peers/app.py (the FastAPI +
// sse-starlette peer) on Node's built-in `http` module, with no npm dependency, so
// tidewire is measured against Node's own HTTP server by the same load generator
// (`tidewire bench`) on the same work.
//
// The same design as the Python peer: a run is a task writing to an in-memory log
// of events, and every stream (the POST's included) follows that log. Followers are
// not polled: each run keeps the list of its followers and an append writes the new
// event to each of them (one `res.write` per event, the SSE frame encoded once per
// event and shared by every follower). A follower whose socket pushes back
// (`write` returns false) leaves the list until 'drain', then catches up from its
// cursor, as the Python peer's generator does when its send awaits.
//
//   POST /api/chat                {"message": "...", "options": {"max_tokens": 64,
//                                  "tokens_per_second": 30}}   events run, stage,
//                                  token x max_tokens, metadata, done; ids 1, 2, 3...
//   GET  /api/runs/{id}/events    the same run's events after Last-Event-ID
//   GET  /healthz                 {"status":"ok"}
//
// Like the Python peer it stores nothing, keeps a finished run attachable for 600 s,
// paces tokens against start + n / rate (as fast as possible when the rate is 0,
// yielding to the event loop every 32 tokens) and draws its words with the same
// LCG. One difference: the Python peer seeds the LCG with blake2b(message,
// digest_size=8), and Node's crypto (OpenSSL 3.0) has no variable-length BLAKE2b,
// so this peer takes the first 8 bytes of blake2b512 instead: the same work per
// request, but a given message yields other words than in the Python peer.
//
// Processes, as the Python peer: bench/run.sh starts uvicorn with `--workers 2`
// (`--workers 1` for the fan-out, whose subscribers must reach the one process
// holding the run), so this peer takes the same shape: `--workers N` (default 1)
// forks N workers with node:cluster, Node's default round-robin scheduling, and
// with 1 it serves from this single process (as uvicorn does with one worker).
// Runs live in one process's memory, as with uvicorn's workers.
//
//   node bench/peers/node/server.mjs --port 18082 [--workers 2]   (or PORT=18082)

import cluster from "node:cluster";
import { createHash, randomUUID } from "node:crypto";
import http from "node:http";

const WORDS = (
  "stream token answer river signal quiet bright model event ocean current steady " +
  "reply thread gentle swift wire harbor light value story source tide moment clear " +
  "simple detail context question useful pattern careful window result open measure " +
  "balance record echo path shore breeze compass anchor lantern meadow summit voyage " +
  "beacon harvest granite silver orbit canvas fabric rhythm horizon ember crystal " +
  "atlas journey garden thunder willow"
).split(" ");

const HOST = "127.0.0.1";
const KEEP_FINISHED_MS = 600_000;
const PING_MS = 15_000;
const MAX_BODY = 1 << 20;
const LCG_MUL = 6364136223846793005n;
const LCG_INC = 1442695040888963407n;
const PING = Buffer.from(": ping\n\n");
const SSE_HEADERS = {
  "Content-Type": "text/event-stream",
  "Cache-Control": "no-cache",
  "X-Accel-Buffering": "no",
};

function option(name) {
  const at = process.argv.indexOf(`--${name}`);
  return at >= 0 ? process.argv[at + 1] : undefined;
}

const port = Number(option("port") ?? process.env.PORT ?? 18082);
const workers = Number(option("workers") ?? 1);
if (!Number.isInteger(port) || port < 0 || port > 65535) {
  console.error(`bad port: ${option("port") ?? process.env.PORT}`);
  process.exit(2);
}
if (!Number.isInteger(workers) || workers < 1) {
  console.error(`bad worker count: ${option("workers")}`);
  process.exit(2);
}

/** @type {Map<string, Run>} */
const runs = new Map();

/** An append-only log of SSE frames and the streams following it. */
class Run {
  constructor(id) {
    this.id = id;
    /** @type {Buffer[]} frame i has the id i + 1 */
    this.frames = [];
    this.done = false;
    /** @type {Set<Follower>} followers waiting for the next event */
    this.followers = new Set();
  }

  append(name, data) {
    const id = this.frames.length + 1;
    this.frames.push(Buffer.from(`id: ${id}\nevent: ${name}\ndata: ${JSON.stringify(data)}\n\n`));
    if (name === "done") this.done = true;
    for (const follower of this.followers) follower.pump();
  }
}

/** One SSE response reading a run's log from its cursor. */
class Follower {
  constructor(run, res, after) {
    this.run = run;
    this.res = res;
    this.cursor = after;
    this.closed = false;
    this.timer = setTimeout(() => this.ping(), PING_MS);
    res.on("close", () => this.close());
    res.writeHead(200, SSE_HEADERS);
    run.followers.add(this);
    // Headers go out with the first event; a follower with nothing to send yet
    // sends them now, so the client sees the stream open.
    if (!this.pump() && !this.closed) res.flushHeaders();
  }

  /** Writes every event past the cursor, and ends the response after `done`;
   * true if it wrote any event. */
  pump() {
    const { frames } = this.run;
    if (this.cursor >= frames.length && !this.run.done) return false;
    let wrote = false;
    while (this.cursor < frames.length) {
      wrote = true;
      if (!this.res.write(frames[this.cursor++])) {
        // The socket pushes back: wait for it to drain, then catch up.
        this.run.followers.delete(this);
        this.res.once("drain", () => {
          if (this.closed) return;
          this.run.followers.add(this);
          this.pump();
        });
        this.timer.refresh();
        return wrote;
      }
    }
    if (this.run.done) {
      this.close();
      this.res.end();
    } else if (wrote) {
      this.timer.refresh();
    }
    return wrote;
  }

  /** The keepalive comment, after PING_MS with nothing written. */
  ping() {
    if (this.closed) return;
    this.res.write(PING);
    this.timer.refresh();
  }

  close() {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.timer);
    this.run.followers.delete(this);
  }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const yieldToLoop = () => new Promise((resolve) => setImmediate(resolve));

async function generate(run, message, maxTokens, rate) {
  // See the header: blake2b512 truncated to 8 bytes, not blake2b(digest_size=8).
  let seed = createHash("blake2b512").update(message).digest().readBigUInt64LE(0);
  const conversationId = randomUUID();
  const messageId = randomUUID();
  run.append("run", {
    run_id: run.id,
    conversation_id: conversationId,
    message_id: messageId,
    events_url: `/api/runs/${run.id}/events`,
  });
  run.append("stage", { stage: "generation" });
  const start = performance.now();
  for (let n = 0; n < maxTokens; n++) {
    if (rate > 0) {
      const delay = start + (n * 1000) / rate - performance.now();
      if (delay > 0) await sleep(delay);
    } else if (n % 32 === 0) {
      await yieldToLoop();
    }
    seed = BigInt.asUintN(64, seed * LCG_MUL + LCG_INC);
    const word = WORDS[Number(seed >> 33n) % WORDS.length];
    run.append("token", { token: n === 0 ? word : " " + word });
  }
  const totalMs = Math.floor(performance.now() - start);
  const promptTokens = message.split(/\s+/).filter(Boolean).length;
  run.append("metadata", {
    message_id: messageId,
    model: "synthetic",
    usage: { prompt_tokens: promptTokens, completion_tokens: maxTokens, total_tokens: promptTokens + maxTokens },
    timing: { ttft_ms: 0, total_ms: totalMs },
  });
  run.append("done", { status: "complete" });
  // Finished runs stay attachable for a while, as in tidewire.
  setTimeout(() => runs.delete(run.id), KEEP_FINISHED_MS).unref();
}

function sendJson(res, status, body) {
  const text = JSON.stringify(body);
  res.writeHead(status, { "Content-Type": "application/json", "Content-Length": Buffer.byteLength(text) });
  res.end(text);
}

const error = (res, status, code, message) => sendJson(res, status, { error: { code, message } });

/** The chat request's fields, or a string saying what is wrong with it. */
function parseChat(text) {
  let body;
  try {
    body = JSON.parse(text);
  } catch (e) {
    return `the body is not JSON: ${e.message}`;
  }
  if (body === null || typeof body !== "object" || Array.isArray(body)) return "the body is not a JSON object";
  if (typeof body.message !== "string") return "`message` must be a string";
  const options = body.options ?? {};
  if (options === null || typeof options !== "object" || Array.isArray(options)) return "`options` must be an object";
  const maxTokens = options.max_tokens ?? 64;
  const rate = options.tokens_per_second ?? 30;
  if (!Number.isInteger(maxTokens) || maxTokens < 0) return "`options.max_tokens` must be a non-negative integer";
  if (typeof rate !== "number" || !Number.isFinite(rate) || rate < 0) {
    return "`options.tokens_per_second` must be a non-negative number";
  }
  return { message: body.message, maxTokens, rate };
}

function chat(req, res) {
  const chunks = [];
  let size = 0;
  let tooLarge = false;
  req.on("data", (chunk) => {
    size += chunk.length;
    if (size > MAX_BODY) tooLarge = true;
    else chunks.push(chunk);
  });
  req.on("end", () => {
    if (tooLarge) return error(res, 413, "body_too_large", `the body is over ${MAX_BODY} bytes`);
    const parsed = parseChat(Buffer.concat(chunks, size).toString("utf8"));
    if (typeof parsed === "string") return error(res, 400, "bad_request", parsed);
    const run = new Run(randomUUID());
    runs.set(run.id, run);
    // The run writes its first events at once; the follower, attached after,
    // sends them with the headers in one write to the socket.
    generate(run, parsed.message, parsed.maxTokens, parsed.rate);
    new Follower(run, res, 0);
  });
}

function events(req, res, runId) {
  const run = runs.get(runId);
  if (run === undefined) return error(res, 404, "run_not_found", runId);
  const header = req.headers["last-event-id"];
  const after = header ? Number(header) : 0;
  if (!Number.isInteger(after) || after < 0) {
    return error(res, 400, "bad_request", "Last-Event-ID must be a non-negative integer");
  }
  new Follower(run, res, after);
}

const EVENTS = /^\/api\/runs\/([^/]+)\/events$/;

function handle(req, res) {
  const q = req.url.indexOf("?");
  const path = q < 0 ? req.url : req.url.slice(0, q);
  if (path === "/api/chat") {
    if (req.method === "POST") return chat(req, res);
    return error(res, 405, "method_not_allowed", "POST only");
  }
  if (path === "/healthz") {
    if (req.method === "GET") return sendJson(res, 200, { status: "ok" });
    return error(res, 405, "method_not_allowed", "GET only");
  }
  const match = EVENTS.exec(path);
  if (match !== null) {
    if (req.method === "GET") return events(req, res, match[1]);
    return error(res, 405, "method_not_allowed", "GET only");
  }
  error(res, 404, "not_found", path);
}

function serve() {
  // uvicorn's defaults in bench/run.sh: keep-alive 30 s, a backlog of 2048.
  const server = http.createServer({ keepAliveTimeout: 30_000 }, handle);
  server.listen(port, HOST, 2048);
  // Open streams are not waited for: the benchmark stops a server between workloads.
  process.on("SIGTERM", () => process.exit(0));
  process.on("SIGINT", () => process.exit(0));
}

if (workers > 1 && cluster.isPrimary) {
  const live = new Set();
  for (let i = 0; i < workers; i++) live.add(cluster.fork());
  let stopping = false;
  let failed = false;
  const stop = () => {
    if (stopping) return;
    stopping = true;
    for (const worker of live) worker.process.kill("SIGTERM");
  };
  // Exit once every worker has, so the port is free when the primary is gone.
  cluster.on("exit", (worker, code, signal) => {
    live.delete(worker);
    if (!stopping) {
      console.error(`worker ${worker.process.pid} exited (${signal ?? code}); stopping`);
      failed = true;
      stop();
    }
    if (live.size === 0) process.exit(failed ? 1 : 0);
  });
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
} else {
  serve();
}
