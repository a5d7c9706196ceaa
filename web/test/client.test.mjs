// The browser client's logic (Tidewire, Answer) against a fake fetch: no network.
// Run from the repository root: node --test web/test/
import { test, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';

/** Imports tidewire.js; an older Node that does not detect ES module syntax gets it as a data: URL. */
async function load() {
  const url = new URL('../../crates/tidewire/assets/tidewire.js', import.meta.url);
  try {
    return await import(url);
  } catch (e) {
    if (!(e instanceof SyntaxError)) throw e;
    const source = await readFile(url);
    return import('data:text/javascript;base64,' + source.toString('base64'));
  }
}

const { Tidewire, TidewireError, Answer } = await load();

const encoder = new TextEncoder();
const RUN = 'r-1';
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

/** One native event on the wire. */
const frame = (id, name, data) => `id: ${id}\nevent: ${name}\ndata: ${JSON.stringify(data)}\n\n`;
const run = (id = 1) =>
  frame(id, 'run', { run_id: RUN, conversation_id: 'c-1', message_id: 'm-1', events_url: `/api/runs/${RUN}/events` });
const token = (id, text) => frame(id, 'token', { token: text });
const done = (id, status = 'complete') => frame(id, 'done', { status });

/**
 * A fake server: `reply(fn)` queues the answer to the next request, `fn(request)`
 * returning a Response (or throwing, as a network error). Requests are recorded with
 * their headers lowercased.
 */
function fakeServer() {
  const requests = [];
  const replies = [];
  const waiting = [];
  const fetch = async (url, init = {}) => {
    const request = {
      url,
      method: init.method ?? 'GET',
      headers: Object.fromEntries(new Headers(init.headers)),
      body: init.body,
      signal: init.signal,
    };
    requests.push(request);
    waiting.shift()?.(request);
    await null;
    const reply = replies.shift();
    if (!reply) throw new Error(`no reply queued for ${request.method} ${url}`);
    return reply(request);
  };
  return {
    fetch,
    requests,
    reply(fn) {
      replies.push(fn);
      return this;
    },
    /** Resolves at the next request (or at once with the n-th one if it came). */
    request(n) {
      if (requests.length > n) return Promise.resolve(requests[n]);
      return new Promise((resolve) => waiting.push(() => resolve(this.request(n))));
    },
  };
}

/** An event stream that the test writes to; the request's abort errors it, as fetch does. */
function live(request, headers = {}) {
  let controller;
  const body = new ReadableStream({ start: (c) => { controller = c; } });
  request?.signal?.addEventListener('abort', () => {
    try { controller.error(new DOMException('aborted', 'AbortError')); } catch { /* closed */ }
  });
  return {
    response: new Response(body, { headers: { 'content-type': 'text/event-stream', ...headers } }),
    send: (text) => controller.enqueue(encoder.encode(text)),
    close: () => controller.close(),
    fail: (error = new TypeError('network error')) => controller.error(error),
  };
}

/** A finished event stream response. */
const stream = (...frames) => () => {
  const s = live();
  for (const f of frames) s.send(f);
  s.close();
  return s.response;
};

const json = (status, body, headers = {}) => () =>
  new Response(body === undefined ? null : typeof body === 'string' ? body : JSON.stringify(body), {
    status,
    headers: { 'content-type': 'application/json', ...headers },
  });

const apiError = (status, code, message, headers) => json(status, { error: { code, message } }, headers);

const networkError = () => () => { throw new TypeError('fetch failed'); };

const fast = { backoff: { initialMs: 1, maxMs: 4 }, batch: 'none' };

const tick = (ms = 0) => new Promise((r) => setTimeout(r, ms));

/** Records what an answer's listeners see, in order. */
function record(answer, types) {
  const log = [];
  for (const type of types) answer.on(type, (...args) => log.push([type, ...args]));
  return log;
}

const realRandom = Math.random;
afterEach(() => {
  Math.random = realRandom;
  delete globalThis.requestAnimationFrame;
  delete globalThis.cancelAnimationFrame;
});

test('ask posts the question and streams the answer', async () => {
  const server = fakeServer().reply(stream(
    ': keepalive\nretry: 1000\n\n',
    run(),
    frame(2, 'stage', { stage: 'generation' }),
    frame(3, 'sources', { sources: [{ document_name: 'README.md', score: 0.8 }] }),
    token(4, 'Hel'),
    token(5, 'lo'),
    frame(6, 'metadata', { model: 'extractive' }),
    done(7),
  ));
  const tw = new Tidewire({ baseUrl: 'http://h:8080/', token: 'tw_key', fetch: server.fetch, batch: 'none' });
  const answer = tw.ask('Hi?', { conversationId: 'c-1', options: { max_tokens: 5 } });
  assert.ok(answer instanceof Answer);
  assert.equal(answer.status, 'connecting');
  const log = record(answer, ['status', 'run', 'stage', 'sources', 'token', 'text', 'metadata', 'done']);
  const all = [];
  answer.on('event', (e) => all.push(e));
  const result = await answer.done;

  const [request] = server.requests;
  assert.equal(request.url, 'http://h:8080/api/chat');
  assert.equal(request.method, 'POST');
  assert.equal(request.headers['content-type'], 'application/json');
  assert.equal(request.headers.accept, 'text/event-stream');
  assert.equal(request.headers.authorization, 'Bearer tw_key');
  assert.match(request.headers['idempotency-key'], UUID);
  assert.equal(request.headers['last-event-id'], undefined);
  assert.deepEqual(JSON.parse(request.body), { message: 'Hi?', conversation_id: 'c-1', options: { max_tokens: 5 } });

  assert.deepEqual(result, { status: 'complete', text: 'Hello', runId: RUN, conversationId: 'c-1', messageId: 'm-1', error: null });
  assert.equal(answer.status, 'complete');
  assert.equal(answer.lastEventId, '7');
  assert.equal(answer.text, 'Hello');
  assert.deepEqual(answer.events.map((e) => [e.id, e.name]), [
    ['1', 'run'], ['2', 'stage'], ['3', 'sources'], ['4', 'token'], ['5', 'token'], ['6', 'metadata'], ['7', 'done'],
  ]);
  assert.deepEqual(all, answer.events);
  assert.deepEqual(answer.events[2].data, { sources: [{ document_name: 'README.md', score: 0.8 }] });
  const tokenEvent = answer.events[3];
  assert.deepEqual(log, [
    ['status', 'streaming'],
    ['run', answer.events[0].data, answer.events[0]],
    ['stage', { stage: 'generation' }, answer.events[1]],
    ['sources', answer.events[2].data, answer.events[2]],
    ['token', { token: 'Hel' }, tokenEvent],
    ['text', 'Hel'],
    ['token', { token: 'lo' }, answer.events[4]],
    ['text', 'Hello'],
    ['metadata', { model: 'extractive' }, answer.events[5]],
    ['status', 'complete'],
    ['done', { status: 'complete' }, answer.events[6]],
  ]);
});

test('a new conversation sends no conversation_id, and the token can change', async () => {
  const server = fakeServer().reply(stream(run(), done(2))).reply(stream(run(), done(2)));
  const tw = new Tidewire({ fetch: server.fetch, ...fast });
  const first = tw.ask('one', { idempotencyKey: 'key-1' });
  assert.equal(first.conversationId, null);
  await first.done;
  assert.equal(first.conversationId, 'c-1');
  tw.token = 'later';
  await tw.ask('two').done;
  const [a, b] = server.requests;
  assert.equal(a.url, '/api/chat');
  assert.deepEqual(JSON.parse(a.body), { message: 'one' });
  assert.equal(a.headers['idempotency-key'], 'key-1');
  assert.equal(a.headers.authorization, undefined);
  assert.equal(b.headers.authorization, 'Bearer later');
  assert.notEqual(b.headers['idempotency-key'], 'key-1');
});

test('a stream that ends before done re-attaches with Last-Event-ID, and replayed events are dropped', async () => {
  const server = fakeServer()
    .reply(stream(run(), token(2, 'a'), token(3, 'b')))
    // A server that replays from further back: the client keeps the text exact.
    .reply(stream(token(2, 'a'), token(3, 'b'), token(4, 'c'), done(5)));
  const answer = new Tidewire({ fetch: server.fetch, token: 't', ...fast }).ask('q');
  const log = record(answer, ['status', 'reconnecting', 'reconnected']);
  const result = await answer.done;

  assert.equal(result.text, 'abc');
  assert.equal(result.status, 'complete');
  assert.deepEqual(answer.events.map((e) => e.id), ['1', '2', '3', '4', '5']);
  const [, again] = server.requests;
  assert.equal(again.method, 'GET');
  assert.equal(again.url, `/api/runs/${RUN}/events`);
  assert.equal(again.headers['last-event-id'], '3');
  assert.equal(again.headers.accept, 'text/event-stream');
  assert.equal(again.headers.authorization, 'Bearer t');
  assert.equal(again.headers['idempotency-key'], undefined);
  assert.deepEqual(log.map(([type, arg]) => (type === 'status' ? arg : type)), [
    'streaming', 'reconnecting', 'reconnecting', 'reconnected', 'streaming', 'complete',
  ]);
  const reconnecting = log.find(([type]) => type === 'reconnecting')[1];
  assert.equal(reconnecting.attempt, 1);
  assert.ok(reconnecting.delayMs >= 0.5 && reconnecting.delayMs <= 1, `${reconnecting.delayMs}`);
  assert.equal(reconnecting.error.code, 'stream_ended');
  assert.deepEqual(log.find(([type]) => type === 'reconnected')[1], { attempt: 1 });
});

test('a network error before the run is known re-posts with the same Idempotency-Key', async () => {
  const server = fakeServer()
    .reply(networkError())
    .reply((request) => {
      // The connection breaks before the first event.
      const s = live(request);
      s.send(': keepalive\n\n');
      setTimeout(() => s.fail(), 5);
      return s.response;
    })
    .reply(stream(run(), token(2, 'x'), done(3)));
  const answer = new Tidewire({ fetch: server.fetch, ...fast }).ask('q', { options: { backend: 'synthetic' } });
  const attempts = [];
  answer.on('reconnecting', ({ attempt, error }) => attempts.push([attempt, error.message]));
  const result = await answer.done;
  assert.equal(result.text, 'x');
  assert.deepEqual(attempts.map(([n]) => n), [1, 2]);
  assert.equal(attempts[0][1], 'fetch failed');
  const [a, b, c] = server.requests;
  for (const r of [b, c]) {
    assert.equal(r.method, 'POST');
    assert.equal(r.url, '/api/chat');
    assert.equal(r.body, a.body);
    assert.equal(r.headers['idempotency-key'], a.headers['idempotency-key']);
  }
});

test('a connection that breaks mid-answer resumes after the last event: nothing lost, nothing repeated', async () => {
  const words = Array.from({ length: 20 }, (_, i) => `w${i} `);
  const wire = [run(), ...words.map((w, i) => token(i + 2, w)), done(words.length + 2)].join('');
  const server = fakeServer();
  // Every connection sends the run from the start (as a re-POST would), cut after a
  // few more bytes each time, even in the middle of a line.
  for (let cut = 60; cut < wire.length + 60; cut += 97) {
    server.reply((request) => {
      const s = live(request);
      s.send(wire.slice(0, Math.min(cut, wire.length)));
      if (cut >= wire.length) s.close();
      else setTimeout(() => s.fail(), 1);
      return s.response;
    });
  }
  const answer = new Tidewire({ fetch: server.fetch, ...fast, maxRetries: 3 }).ask('q');
  const texts = [];
  answer.on('text', (t) => texts.push(t));
  const result = await answer.done;
  assert.equal(result.status, 'complete');
  assert.equal(result.text, words.join(''));
  assert.deepEqual(answer.events.map((e) => Number(e.id)), Array.from({ length: 22 }, (_, i) => i + 1));
  assert.ok(server.requests.length > 10);
  // Re-posts until the run id is known, then re-attaches after the last event seen.
  const methods = server.requests.map((r) => r.method);
  const firstGet = methods.indexOf('GET');
  assert.ok(firstGet > 0);
  assert.ok(methods.slice(0, firstGet).every((m) => m === 'POST'));
  assert.ok(methods.slice(firstGet).every((m) => m === 'GET'));
  const ids = server.requests.slice(firstGet).map((r) => Number(r.headers['last-event-id']));
  assert.ok(ids.every((id, i) => id >= 1 && (i === 0 || id >= ids[i - 1])), `${ids}`);
  assert.ok(ids.at(-1) > ids[0]);
});

test('5xx, 408 and 429 are retried; 503 waits for its Retry-After', async () => {
  const server = fakeServer()
    .reply(apiError(500, 'internal_error', 'boom'))
    .reply(apiError(503, 'overloaded', 'too many runs', { 'retry-after': '0.05' }))
    .reply(apiError(429, 'rate_limited', 'slow down'))
    .reply(apiError(408, 'timeout', 'too slow'))
    .reply(stream(run(), done(2)));
  const answer = new Tidewire({ fetch: server.fetch, ...fast }).ask('q');
  const seen = [];
  answer.on('reconnecting', ({ attempt, delayMs, error }) => seen.push({ attempt, delayMs, status: error.status, code: error.code }));
  const result = await answer.done;
  assert.equal(result.status, 'complete');
  assert.equal(server.requests.length, 5);
  assert.deepEqual(seen.map((s) => [s.attempt, s.status, s.code]), [
    [1, 500, 'internal_error'], [2, 503, 'overloaded'], [3, 429, 'rate_limited'], [4, 408, 'timeout'],
  ]);
  assert.ok(seen[1].delayMs >= 50, `${seen[1].delayMs}`);
});

test('other 4xx are not retried: done resolves failed with the server error', async () => {
  const server = fakeServer().reply(apiError(422, 'invalid_request', 'the message is empty'));
  const answer = new Tidewire({ fetch: server.fetch, ...fast }).ask('');
  const statuses = [];
  answer.on('status', (s) => statuses.push(s));
  const result = await answer.done;
  assert.equal(server.requests.length, 1);
  assert.deepEqual(result, {
    status: 'failed', text: '', runId: null, conversationId: null, messageId: null,
    error: { code: 'invalid_request', error: 'the message is empty', status: 422 },
  });
  assert.deepEqual(statuses, ['failed']);
  assert.equal(answer.status, 'failed');
});

test('a run gone from memory (410) on re-attach ends the answer', async () => {
  const server = fakeServer()
    .reply(stream(run(), token(2, 'part')))
    .reply(apiError(410, 'run_gone', 'the run ended 2 h ago'));
  const result = await new Tidewire({ fetch: server.fetch, ...fast }).ask('q').done;
  assert.equal(result.status, 'failed');
  assert.equal(result.text, 'part');
  assert.deepEqual(result.error, { code: 'run_gone', error: 'the run ended 2 h ago', status: 410 });
});

test('it gives up after maxRetries reconnections in a row', async () => {
  const server = fakeServer().reply(networkError()).reply(networkError()).reply(networkError()).reply(networkError());
  const answer = new Tidewire({ fetch: server.fetch, ...fast, maxRetries: 2 }).ask('q');
  const attempts = [];
  answer.on('reconnecting', ({ attempt }) => attempts.push(attempt));
  const result = await answer.done;
  assert.equal(server.requests.length, 3);
  assert.deepEqual(attempts, [1, 2]);
  assert.equal(result.status, 'failed');
  assert.deepEqual(result.error, { code: 'connection_lost', error: 'fetch failed' });
  assert.equal(answer.status, 'failed');
});

test('the retry counter resets when an event arrives', async () => {
  const server = fakeServer()
    .reply(stream(run()))
    .reply(networkError())
    .reply(stream(token(2, 'a')))
    .reply(networkError())
    .reply(stream(token(3, 'b')))
    .reply(networkError())
    .reply(stream(done(4)));
  const answer = new Tidewire({ fetch: server.fetch, ...fast, maxRetries: 2 }).ask('q');
  const attempts = [];
  answer.on('reconnecting', ({ attempt }) => attempts.push(attempt));
  const result = await answer.done;
  assert.equal(result.status, 'complete');
  assert.equal(result.text, 'ab');
  assert.deepEqual(attempts, [1, 2, 1, 2, 1, 2]);
});

test('backoff doubles up to maxMs, with full jitter between half and the whole', async () => {
  const delays = async (random) => {
    Math.random = () => random;
    const server = fakeServer();
    for (let i = 0; i < 5; i++) server.reply(networkError());
    const answer = new Tidewire({ fetch: server.fetch, backoff: { initialMs: 2, maxMs: 9 }, maxRetries: 4 }).ask('q');
    const seen = [];
    answer.on('reconnecting', ({ delayMs }) => seen.push(delayMs));
    await answer.done;
    return seen;
  };
  assert.deepEqual(await delays(0.999999), [2, 4, 8, 9]);
  assert.deepEqual(await delays(0), [1, 2, 4, 5]);
});

test('the default backoff and retries', () => {
  const tw = new Tidewire({ fetch: async () => {} });
  assert.deepEqual(tw.backoff, { initialMs: 500, maxMs: 8000 });
  assert.equal(tw.maxRetries, 30);
  assert.equal(tw.batch, 'frame');
  assert.equal(new Tidewire({ fetch: async () => {}, backoff: { maxMs: 100 } }).backoff.initialMs, 500);
});

test('an error event then done: failed, with the error', async () => {
  const error = { error: 'the model is unreachable', code: 'upstream_unavailable', retryable: true };
  const server = fakeServer().reply(stream(run(), token(2, 'par'), frame(3, 'error', error), done(4, 'failed')));
  const answer = new Tidewire({ fetch: server.fetch, ...fast }).ask('q');
  const errors = [];
  answer.on('error', (data) => errors.push(data));
  const result = await answer.done;
  assert.deepEqual(errors, [error]);
  assert.equal(result.status, 'failed');
  assert.deepEqual(result.error, error);
  assert.equal(result.text, 'par');
  assert.equal(server.requests.length, 1);
});

test('stop() waits for the run id, cancels, and resolves with the done the stream delivers', async () => {
  const server = fakeServer();
  let s;
  server.reply((request) => {
    s = live(request);
    return s.response;
  });
  server.reply(json(200, { run_id: RUN, status: 'cancelled' }));
  const tw = new Tidewire({ fetch: server.fetch, token: 'k', ...fast });
  const answer = tw.ask('q');
  const stopped = answer.stop();
  await server.request(0);
  await tick(5);
  assert.equal(server.requests.length, 1, 'no cancel before the run id is known');
  s.send(run());
  s.send(token(2, 'half'));
  const cancel = await server.request(1);
  assert.equal(cancel.method, 'POST');
  assert.equal(cancel.url, `/api/runs/${RUN}/cancel`);
  assert.equal(cancel.headers.authorization, 'Bearer k');
  let resolved = false;
  stopped.then(() => { resolved = true; });
  await tick(5);
  assert.equal(resolved, false, 'stop() waits for the done event');
  s.send(done(3, 'cancelled'));
  const result = await stopped;
  assert.equal(result.status, 'cancelled');
  assert.equal(result.text, 'half');
  assert.deepEqual(await answer.done, result);
  assert.equal(answer.status, 'cancelled');
});

test('stop() retries a cancel that failed on the network or with a 5xx', async () => {
  const server = fakeServer();
  let s;
  server.reply((request) => {
    s = live(request);
    s.send(run());
    return s.response;
  });
  server.reply(networkError());
  server.reply(apiError(503, 'shutting_down', 'busy'));
  server.reply(json(200, { run_id: RUN, status: 'cancelled' }));
  const answer = new Tidewire({ fetch: server.fetch, ...fast }).ask('q');
  while (!answer.runId) await tick(1);
  const stopped = answer.stop();
  await server.request(3);
  s.send(done(2, 'cancelled'));
  assert.equal((await stopped).status, 'cancelled');
  assert.deepEqual(server.requests.slice(1).map((r) => r.url), Array(3).fill(`/api/runs/${RUN}/cancel`));
});

test('stop() after the end cancels nothing', async () => {
  const server = fakeServer().reply(stream(run(), done(2)));
  const answer = new Tidewire({ fetch: server.fetch, ...fast }).ask('q');
  await answer.done;
  assert.equal((await answer.stop()).status, 'complete');
  assert.equal(server.requests.length, 1);
});

test('stop() on an answer that failed before its run id resolves at once', async () => {
  const server = fakeServer().reply(apiError(401, 'unauthorized', 'no key'));
  const answer = new Tidewire({ fetch: server.fetch, ...fast }).ask('q');
  const result = await answer.stop();
  assert.equal(result.status, 'failed');
  assert.equal(result.error.code, 'unauthorized');
  assert.equal(server.requests.length, 1);
});

test("batch 'frame' calls 'text' once per frame, and flushes before done", async () => {
  const server = fakeServer();
  let s;
  server.reply((request) => {
    s = live(request);
    return s.response;
  });
  const answer = new Tidewire({ fetch: server.fetch, backoff: fast.backoff }).ask('q');
  const log = record(answer, ['text', 'done']);
  await server.request(0);
  await tick();
  s.send(run() + token(2, 'a') + token(3, 'b') + token(4, 'c'));
  await tick(1);
  assert.deepEqual(log, [], 'not before the frame');
  await tick(40);
  assert.deepEqual(log, [['text', 'abc']]);
  s.send(token(5, 'd') + token(6, 'e') + done(7));
  await answer.done;
  assert.deepEqual(log.map(([type, arg]) => (type === 'text' ? arg : type)), ['abc', 'abcde', 'done']);
  await tick(40);
  assert.equal(log.length, 3, 'no text after done');
});

test("batch 'frame' uses requestAnimationFrame when there is one", async () => {
  const frames = new Map();
  let next = 1;
  globalThis.requestAnimationFrame = (fn) => { frames.set(next, fn); return next++; };
  globalThis.cancelAnimationFrame = (id) => frames.delete(id);
  const server = fakeServer();
  let s;
  server.reply((request) => {
    s = live(request);
    return s.response;
  });
  const answer = new Tidewire({ fetch: server.fetch, backoff: fast.backoff }).ask('q');
  const texts = [];
  answer.on('text', (t) => texts.push(t));
  await server.request(0);
  await tick();
  s.send(run() + token(2, 'a'));
  await tick(5);
  s.send(token(3, 'b'));
  await tick(5);
  assert.equal(frames.size, 1, 'one frame requested for both tokens');
  assert.deepEqual(texts, []);
  const [[id, fn]] = frames;
  frames.delete(id);
  fn(performance.now());
  assert.deepEqual(texts, ['ab']);
  s.send(token(4, 'c') + done(5));
  await answer.done;
  assert.deepEqual(texts, ['ab', 'abc']);
  assert.equal(frames.size, 0, 'the pending frame was cancelled by the flush');
});

test("batch 'none' calls 'text' at every token", async () => {
  const server = fakeServer().reply(stream(run(), token(2, 'a'), token(3, 'b'), done(4)));
  const answer = new Tidewire({ fetch: server.fetch, ...fast }).ask('q');
  const texts = [];
  answer.on('text', (t) => texts.push(t));
  await answer.done;
  assert.deepEqual(texts, ['a', 'ab']);
});

test('the async iterator yields every event in order and ends after done', async () => {
  const server = fakeServer()
    .reply(stream(run(), token(2, 'a')))
    .reply(stream(token(3, 'b'), done(4)));
  const answer = new Tidewire({ fetch: server.fetch, ...fast }).ask('q');
  const names = [];
  for await (const event of answer) names.push(`${event.id}:${event.name}`);
  assert.deepEqual(names, ['1:run', '2:token', '3:token', '4:done']);
  // Iterating a finished answer yields its events again, then ends.
  const again = [];
  for await (const event of answer) again.push(event);
  assert.deepEqual(again, answer.events);
});

test('attach follows a run after lastEventId, or from the start', async () => {
  const server = fakeServer()
    .reply(stream(token(5, 'old'), token(6, 'new'), done(7)))
    .reply(stream(run(), token(2, 'all'), done(3)));
  const tw = new Tidewire({ fetch: server.fetch, baseUrl: 'https://x', ...fast });
  const answer = tw.attach('r/2', { lastEventId: 5 });
  assert.equal(answer.runId, 'r/2');
  assert.equal(answer.lastEventId, '5');
  const result = await answer.done;
  assert.equal(result.text, 'new', 'the event at the given id is not repeated');
  assert.equal(server.requests[0].method, 'GET');
  assert.equal(server.requests[0].url, 'https://x/api/runs/r%2F2/events');
  assert.equal(server.requests[0].headers['last-event-id'], '5');

  const fromStart = await tw.attach(RUN).done;
  assert.equal(fromStart.text, 'all');
  assert.equal(fromStart.conversationId, 'c-1');
  assert.equal(server.requests[1].headers['last-event-id'], undefined);
});

test('attach at the last event of a finished run (204) reads how the run ended', async () => {
  const server = fakeServer()
    .reply(() => new Response(null, { status: 204 }))
    .reply(json(200, { run_id: RUN, status: 'cancelled', last_event_id: 9, content: 'x' }));
  const result = await new Tidewire({ fetch: server.fetch, ...fast }).attach(RUN, { lastEventId: '9' }).done;
  assert.equal(result.status, 'cancelled');
  assert.equal(server.requests[1].url, `/api/runs/${RUN}`);
});

test('an answer that is not an event stream fails without retrying', async () => {
  const server = fakeServer().reply(() => new Response('<html>', { headers: { 'content-type': 'text/html' } }));
  const result = await new Tidewire({ fetch: server.fetch, ...fast }).ask('q').done;
  assert.equal(result.status, 'failed');
  assert.equal(result.error.code, 'bad_response');
  assert.equal(server.requests.length, 1);
});

test('close() aborts the connection without cancelling the run', async () => {
  const server = fakeServer();
  server.reply((request) => {
    const s = live(request);
    s.send(run() + token(2, 'a'));
    return s.response;
  });
  const answer = new Tidewire({ fetch: server.fetch, ...fast }).ask('q');
  while (answer.text !== 'a') await tick(1);
  answer.close();
  const result = await answer.done;
  assert.equal(result.status, 'failed');
  assert.equal(result.error.code, 'closed');
  assert.equal(result.text, 'a');
  assert.ok(server.requests[0].signal.aborted);
  await tick(10);
  assert.equal(server.requests.length, 1, 'no cancel, no reconnection');
});

test('close() during the backoff stops reconnecting', async () => {
  const server = fakeServer().reply(networkError());
  const answer = new Tidewire({ fetch: server.fetch, backoff: { initialMs: 10_000, maxMs: 10_000 } }).ask('q');
  await new Promise((resolve) => answer.on('reconnecting', resolve));
  answer.close();
  const result = await answer.done;
  assert.equal(result.error.code, 'closed');
  assert.equal(server.requests.length, 1);
});

test('REST helpers call the API and return its JSON', async () => {
  const conversations = { conversations: [{ id: 'c-1', title: 'Hi' }] };
  const messages = [{ id: 'm-1', role: 'user', content: 'Hi' }];
  const server = fakeServer()
    .reply(json(200, conversations))
    .reply(json(200, { conversation_id: 'c/1', messages }))
    .reply(() => new Response(null, { status: 204 }))
    .reply(json(201, { documents: [] }))
    .reply(json(200, { run_id: RUN, status: 'cancelled' }));
  const tw = new Tidewire({ fetch: server.fetch, baseUrl: 'http://h', token: 'k' });
  assert.deepEqual(await tw.listConversations(), conversations);
  assert.deepEqual(await tw.messages('c/1'), messages);
  assert.equal(await tw.deleteConversation('c-1'), undefined);
  const files = [new File(['# A'], 'a.md', { type: 'text/markdown' }), new File(['b'], 'b.txt')];
  assert.deepEqual(await tw.uploadDocuments(files), { documents: [] });
  assert.deepEqual(await tw.cancel(RUN), { run_id: RUN, status: 'cancelled' });

  assert.deepEqual(server.requests.map((r) => `${r.method} ${r.url}`), [
    'GET http://h/api/conversations',
    'GET http://h/api/conversations/c%2F1/messages',
    'DELETE http://h/api/conversations/c-1',
    'POST http://h/api/documents',
    `POST http://h/api/runs/${RUN}/cancel`,
  ]);
  assert.ok(server.requests.every((r) => r.headers.authorization === 'Bearer k'));
  const upload = server.requests[3];
  assert.ok(upload.body instanceof FormData);
  assert.equal(upload.headers['content-type'], undefined, 'fetch sets the multipart boundary');
  // tidewire reads every `file` part of the form.
  assert.deepEqual(upload.body.getAll('file').map((f) => f.name), ['a.md', 'b.txt']);
});

test('REST helpers throw a TidewireError from the error body, the status, or the network', async () => {
  const server = fakeServer()
    .reply(apiError(404, 'conversation_not_found', 'no conversation c-9'))
    .reply(json(502, '<html>bad gateway</html>'))
    .reply(networkError());
  const tw = new Tidewire({ fetch: server.fetch });
  const caught = async (promise) => {
    try {
      await promise;
    } catch (e) {
      return e;
    }
    assert.fail('no error');
  };
  const notFound = await caught(tw.messages('c-9'));
  assert.ok(notFound instanceof TidewireError);
  assert.ok(notFound instanceof Error);
  assert.deepEqual([notFound.status, notFound.code, notFound.message], [404, 'conversation_not_found', 'no conversation c-9']);
  const badGateway = await caught(tw.listConversations());
  assert.deepEqual([badGateway.status, badGateway.code], [502, 'http_502']);
  const offline = await caught(tw.deleteConversation('c-1'));
  assert.ok(offline instanceof TidewireError);
  assert.deepEqual([offline.status, offline.code, offline.message], [0, 'network_error', 'fetch failed']);
});
