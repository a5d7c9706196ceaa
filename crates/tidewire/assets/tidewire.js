/**
 * tidewire.js: the browser client of tidewire's native API.
 *
 * An ES module with no dependencies; it defines nothing global.
 *
 *   import { Tidewire } from '/tidewire.js';
 *
 *   const tw = new Tidewire({ token: localStorage.getItem('tidewire-key') });
 *   const answer = tw.ask('How do I cancel a run?', { conversationId })
 *     .on('text', (text) => { bubble.textContent = text; })     // once a frame at most
 *     .on('sources', ({ sources }) => showSources(sources))
 *     .on('reconnecting', ({ attempt, delayMs }) => notice(`reconnecting (${attempt})`));
 *   stopButton.onclick = () => answer.stop();                     // cancels the run
 *   const { status, text, error } = await answer.done;            // never rejects
 *
 *   for await (const { name, data, id } of tw.attach(runId)) { ... } // follow a run
 *
 * An answer survives its connection: after a network error, a 5xx, or a stream that
 * ends before its `done` event, it waits (exponential backoff with jitter), then
 * re-attaches with `Last-Event-ID`, or re-posts with the same `Idempotency-Key` while
 * the run's id is not known yet. Events already seen are dropped by their id, so the
 * text is exact: nothing lost, nothing repeated.
 *
 * REST helpers (`listConversations`, `messages`, ...) throw a {@link TidewireError}.
 */

/**
 * An event of the stream, as the parser dispatches it.
 * @typedef {{type: string, data: string, id: string}} ParsedEvent
 */

/**
 * An event of an answer: `data` is the parsed JSON (the raw string when not JSON).
 * @typedef {{name: string, data: any, id: string}} AnswerEvent
 */

const encoder = new TextEncoder();

/**
 * The WHATWG "event stream" parser (HTML, server-sent events), incremental over bytes.
 * Input may be split anywhere: in a UTF-8 sequence, between the CR and LF of a CRLF.
 * It decodes UTF-8 as the standard says (invalid bytes become U+FFFD, one leading BOM
 * is removed) and dispatches an event as soon as its blank line ends.
 */
export class EventStreamParser {
  constructor() {
    /** The last event ID string: what a reconnection sends as `Last-Event-ID`. */
    this.lastEventId = '';
    /** @type {number|null} The last valid `retry:` value, in milliseconds. */
    this.retry = null;
    this._reset();
  }

  /** @private Starts a new stream: keeps `lastEventId` and `retry`. */
  _reset() {
    this._decoder = new TextDecoder();
    this._parts = [];
    this._skipLF = false;
    this._data = '';
    this._type = '';
    this._idBuf = this.lastEventId;
  }

  /**
   * Feeds a chunk (bytes, or text, which is encoded to UTF-8 first).
   * @param {Uint8Array|string} chunk
   * @returns {ParsedEvent[]} the events this chunk completed, in order
   */
  push(chunk) {
    let text = this._decoder.decode(
      typeof chunk === 'string' ? encoder.encode(chunk) : chunk,
      { stream: true },
    );
    if (this._skipLF && text) {
      // The previous chunk ended with a CR: an LF right after it ends the same line.
      this._skipLF = false;
      if (text[0] === '\n') text = text.slice(1);
    }
    const out = [];
    // A piece without a line ending waits, unscanned and unjoined, for the rest of its
    // line: a long line in small chunks costs linear time.
    if (!/[\r\n]/.test(text)) {
      if (text) this._parts.push(text);
      return out;
    }
    const head = this._parts.join('');
    const buf = head + text;
    const re = /[\r\n]/g;
    let start = 0;
    re.lastIndex = head.length;
    for (let m; (m = re.exec(buf)); ) {
      let next = m.index + 1;
      if (buf[m.index] === '\r') {
        if (next === buf.length) this._skipLF = true;
        else if (buf[next] === '\n') next++;
      }
      const event = this._line(buf.slice(start, m.index));
      if (event) out.push(event);
      re.lastIndex = start = next;
    }
    this._parts = start < buf.length ? [buf.slice(start)] : [];
    return out;
  }

  /**
   * Ends the stream. The unfinished event is discarded, as the standard says, so this
   * always returns `[]`; the parser is then ready for another connection's bytes.
   * @returns {ParsedEvent[]}
   */
  end() {
    this._reset();
    return [];
  }

  /** @private Applies one line (without its ending). */
  _line(line) {
    if (!line) {
      this.lastEventId = this._idBuf;
      const data = this._data;
      const type = this._type;
      this._data = this._type = '';
      return data ? { type: type || 'message', data: data.slice(0, -1), id: this.lastEventId } : null;
    }
    const colon = line.indexOf(':');
    if (colon === 0) return null; // a comment
    let value = colon < 0 ? '' : line.slice(colon + 1);
    if (value[0] === ' ') value = value.slice(1);
    switch (colon < 0 ? line : line.slice(0, colon)) {
      case 'data': this._data += value + '\n'; break;
      case 'event': this._type = value; break;
      case 'id': if (!value.includes('\0')) this._idBuf = value; break;
      case 'retry': if (/^[0-9]+$/.test(value)) this.retry = Number(value); break;
    }
    return null;
  }
}

/** An HTTP error of the API: `status` (0 when unreachable), `code`, `message`. */
export class TidewireError extends Error {
  /**
   * @param {number} status the HTTP status, 0 for a network error
   * @param {string} code the server's `error.code`
   * @param {string} message the server's `error.message`
   */
  constructor(status, code, message) {
    super(message);
    this.name = 'TidewireError';
    this.status = status;
    this.code = code;
  }
}

/** Reads an error answer `{"error": {"code", "message"}}`. */
async function errorOf(res) {
  let code = 'http_' + res.status;
  let message = `HTTP ${res.status} ${res.statusText || ''}`.trim();
  try {
    const e = JSON.parse(await res.text()).error;
    code = e.code || code;
    message = e.message || message;
  } catch { /* not the API's JSON: keep the status */ }
  return new TidewireError(res.status, code, message);
}

/** A UUID v4, also where `crypto.randomUUID` is missing (pages over plain http). */
function uuid() {
  if (crypto.randomUUID) return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 15) | 64;
  b[8] = (b[8] & 63) | 128;
  const h = [...b].map((x) => x.toString(16).padStart(2, '0')).join('');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

const runPath = (id) => '/api/runs/' + encodeURIComponent(id);

/** The client of one tidewire server. */
export class Tidewire {
  /**
   * @param {object} [config]
   * @param {string} [config.baseUrl] the server's origin (and path prefix); '' for the page's own
   * @param {string|null} [config.token] sent as `Authorization: Bearer <token>`; settable later
   * @param {typeof fetch} [config.fetch]
   * @param {{initialMs: number, maxMs: number}} [config.backoff] reconnection delays
   * @param {number} [config.maxRetries] reconnection attempts in a row before an answer gives up
   * @param {'frame'|'none'} [config.batch] 'frame': `text` at most once per animation frame
   */
  constructor({
    baseUrl = '',
    token = null,
    fetch = globalThis.fetch.bind(globalThis),
    backoff = { initialMs: 500, maxMs: 8000 },
    maxRetries = 30,
    batch = 'frame',
  } = {}) {
    this.baseUrl = baseUrl.replace(/\/+$/, '');
    /** @type {string|null} */
    this.token = token;
    this.backoff = { initialMs: 500, maxMs: 8000, ...backoff };
    this.maxRetries = maxRetries;
    this.batch = batch;
    this._fetch = fetch;
  }

  /** @private A request with the token; network failures become TidewireError(0). */
  async _request(method, path, { body, headers = {}, signal } = {}) {
    if (this.token) headers.Authorization = 'Bearer ' + this.token;
    try {
      return await this._fetch(this.baseUrl + path, { method, headers, body, signal });
    } catch (e) {
      if (signal?.aborted) throw e;
      throw new TidewireError(0, 'network_error', e?.message || String(e));
    }
  }

  /** @private A JSON call: the parsed answer, null when empty; throws TidewireError. */
  async _json(method, path, body) {
    const res = await this._request(method, path, body === undefined ? {}
      : body instanceof FormData ? { body }
        : { body: JSON.stringify(body), headers: { 'Content-Type': 'application/json' } });
    if (!res.ok) throw await errorOf(res);
    const text = await res.text();
    return text ? JSON.parse(text) : null;
  }

  /**
   * Asks a question: `POST /api/chat`, streamed.
   * @param {string} message
   * @param {{conversationId?: string, options?: object, idempotencyKey?: string}} [opts]
   *   `options` as the API's (`max_tokens`, `backend`, ...); without `conversationId`
   *   the server starts a conversation
   * @returns {Answer}
   */
  ask(message, { conversationId, options, idempotencyKey } = {}) {
    const body = { message };
    if (conversationId) body.conversation_id = conversationId;
    if (options) body.options = options;
    const answer = new Answer(this, { body: JSON.stringify(body), key: idempotencyKey || uuid() });
    answer.conversationId = conversationId || null;
    return answer;
  }

  /**
   * Follows a run: `GET /api/runs/{runId}/events`, after `lastEventId` (from the start
   * when null).
   * @param {string} runId
   * @param {{lastEventId?: string|number|null}} [opts]
   * @returns {Answer}
   */
  attach(runId, { lastEventId = null } = {}) {
    return new Answer(this, { runId, lastEventId: lastEventId == null ? null : String(lastEventId) });
  }

  /** `GET /api/conversations`: `{conversations: [...]}`, most recent first. */
  listConversations() {
    return this._json('GET', '/api/conversations');
  }

  /**
   * `GET /api/conversations/{id}/messages`: the messages, oldest first.
   * @returns {Promise<object[]>}
   */
  async messages(conversationId) {
    return (await this._json('GET', `/api/conversations/${encodeURIComponent(conversationId)}/messages`)).messages;
  }

  /** `DELETE /api/conversations/{id}`: stops its runs, deletes it. */
  async deleteConversation(conversationId) {
    await this._json('DELETE', '/api/conversations/' + encodeURIComponent(conversationId));
  }

  /**
   * `POST /api/documents`, `multipart/form-data` with one `file` part per file.
   * @param {File[]|FileList} files
   */
  uploadDocuments(files) {
    const form = new FormData();
    for (const file of files) form.append('file', file, file.name);
    return this._json('POST', '/api/documents', form);
  }

  /** `POST /api/runs/{id}/cancel`: the run's final state. */
  cancel(runId) {
    return this._json('POST', runPath(runId) + '/cancel');
  }
}

/**
 * One streamed answer (a run): its events, its text, its fate. Made by
 * {@link Tidewire#ask} and {@link Tidewire#attach}; it connects at once.
 */
export class Answer {
  /** @param {Tidewire} client */
  constructor(client, { body, key, runId = null, lastEventId = null }) {
    this._client = client;
    this._post = { body, key };
    this._handlers = {};
    this._waiters = [];
    this._seq = Number(lastEventId) || 0;
    this._failures = 0;
    this._shown = '';
    /** The answer's text so far. */
    this.text = '';
    /** @type {string|null} */
    this.runId = runId;
    /** @type {string|null} */
    this.conversationId = null;
    /** @type {string|null} */
    this.messageId = null;
    /** @type {string|null} The id of the last event received. */
    this.lastEventId = lastEventId;
    /** 'connecting' | 'streaming' | 'reconnecting', then 'complete' | 'cancelled' | 'failed' | 'interrupted'. */
    this.status = 'connecting';
    /** @type {object|null} The last `error` event's data (or why the answer gave up). */
    this.error = null;
    /** @type {AnswerEvent[]} Every event received, in order. */
    this.events = [];
    /**
     * Resolves when the answer ends; never rejects.
     * @type {Promise<{status: string, text: string, runId: string|null, conversationId: string|null, messageId: string|null, error: object|null}>}
     */
    this.done = new Promise((resolve) => { this._resolve = resolve; });
    this._loop().catch((e) => this._give({ code: 'client_error', error: String(e) }));
  }

  /**
   * Adds a listener; returns the answer.
   * - 'event': every event, `fn({name, data, id})`
   * - an event name ('run', 'stage', 'sources', 'token', 'tool_started', 'tool_finished',
   *   'quality_score', 'follow_up_questions', 'metadata', 'error', 'done'): `fn(data, event)`
   * - 'text': `fn(textSoFar)`, at most once a frame with `batch: 'frame'`, always before 'done'
   * - 'reconnecting': `fn({attempt, delayMs, error})`; 'reconnected': `fn({attempt})`
   * - 'status': `fn(status)`
   * @param {string} type
   * @param {Function} fn
   * @returns {this}
   */
  on(type, fn) {
    (this._handlers[type] ||= []).push(fn);
    return this;
  }

  /**
   * Cancels the run (`POST /api/runs/{id}/cancel`, once its id is known) and resolves
   * with {@link Answer#done}: the stream itself delivers the `done` event.
   */
  async stop() {
    while (!this.runId && !this._final) await this._next();
    const { initialMs } = this._client.backoff;
    for (let i = 0; i < 3 && !this._final; i++) {
      try {
        await this._client.cancel(this.runId);
        break;
      } catch (e) {
        if (e.status >= 400 && e.status < 500) break;
        await new Promise((r) => setTimeout(r, initialMs * 2 ** i));
      }
    }
    return this.done;
  }

  /**
   * Stops following the run without cancelling it (it goes on on the server): the
   * connection is aborted and `done` resolves with status 'failed', error code 'closed'.
   */
  close() {
    this._give({ code: 'closed', error: 'closed by the client' });
  }

  /** Every event `{name, data, id}` in order (from the first), ending after `done`. */
  async *[Symbol.asyncIterator]() {
    for (let i = 0; ; ) {
      if (i < this.events.length) yield this.events[i++];
      else if (this._final) return;
      else await this._next();
    }
  }

  /** @private Resolves at the next event or at the end. */
  _next() {
    return new Promise((r) => this._waiters.push(r));
  }

  /** @private */
  _wake() {
    const waiters = this._waiters;
    this._waiters = [];
    for (const r of waiters) r();
  }

  /** @private Calls the listeners; one that throws does not break the stream. */
  _emit(type, ...args) {
    for (const fn of this._handlers[type] || []) {
      try {
        fn(...args);
      } catch (e) {
        queueMicrotask(() => { throw e; });
      }
    }
  }

  /** @private */
  _setStatus(status) {
    if (this.status !== status) this._emit('status', (this.status = status));
  }

  /** @private Connects, reads, and reconnects until `done` or giving up. */
  async _loop() {
    await null; // let the caller add its listeners
    const client = this._client;
    for (let reconnect = 0; !this._final; ) {
      let retryAfter = 0;
      let error;
      try {
        const res = await this._connect();
        if (this._final) return;
        if (res.status === 204 && this.runId) {
          // Nothing after our last event: the run is over. Ask how it ended.
          const run = await client._json('GET', runPath(this.runId)).catch(() => ({}));
          return this._end(run.status === 'streaming' ? 'interrupted' : run.status || 'complete');
        }
        if (!res.ok) {
          error = await errorOf(res);
          const s = res.status;
          if (s < 500 && s !== 408 && s !== 429) return this._give({ code: error.code, error: error.message, status: s });
          retryAfter = 1000 * Number(res.headers.get('retry-after')) || 0;
          throw error;
        }
        if (!/^text\/event-stream/i.test(res.headers.get('content-type') || '')) {
          return this._give({ code: 'bad_response', error: 'the answer is not an event stream', status: res.status });
        }
        if (reconnect) this._emit('reconnected', { attempt: reconnect });
        this._setStatus('streaming');
        await this._read(res);
        if (this._final) return;
        error = new TidewireError(0, 'stream_ended', 'the stream ended before its done event');
      } catch (e) {
        if (this._final) return;
        error = e;
      }
      reconnect = ++this._failures;
      if (reconnect > client.maxRetries) {
        return this._give({ code: 'connection_lost', error: error?.message || String(error) });
      }
      const { initialMs, maxMs } = client.backoff;
      const max = Math.min(maxMs, initialMs * 2 ** (reconnect - 1));
      const delayMs = Math.round(Math.max(retryAfter, max / 2 + (Math.random() * max) / 2));
      this._setStatus('reconnecting');
      this._emit('reconnecting', { attempt: reconnect, delayMs, error });
      await new Promise((r) => {
        this._timer = setTimeout(r, delayMs);
        this._wakeSleep = r;
      });
    }
  }

  /** @private Opens the stream: re-attaches once the run is known, else (re-)posts. */
  _connect() {
    const headers = { Accept: 'text/event-stream' };
    if (this.lastEventId != null) headers['Last-Event-ID'] = this.lastEventId;
    this._abort = new AbortController();
    const signal = this._abort.signal;
    if (this.runId) return this._client._request('GET', runPath(this.runId) + '/events', { headers, signal });
    headers['Content-Type'] = 'application/json';
    headers['Idempotency-Key'] = this._post.key;
    return this._client._request('POST', '/api/chat', { body: this._post.body, headers, signal });
  }

  /** @private Reads one response's events until its end or `done`. */
  async _read(res) {
    if (!res.body) return;
    const parser = new EventStreamParser();
    const reader = res.body.getReader();
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done || this._final) return;
        for (const event of parser.push(value)) {
          this._event(event);
          if (this._final) return;
        }
      }
    } finally {
      reader.cancel().catch(() => {});
    }
  }

  /** @private One event: drop it if already seen, else record and dispatch it. */
  _event({ type, data, id }) {
    if (/^\d+$/.test(id)) {
      if (Number(id) <= this._seq) return;
      this._seq = Number(id);
      this.lastEventId = id;
    }
    this._failures = 0;
    let d = data;
    try { d = JSON.parse(data); } catch { /* keep the string */ }
    const o = Object(d);
    const event = { name: type, data: d, id };
    this.events.push(event);
    if (type === 'done') return this._end(o.status || 'complete', event);
    if (type === 'run') {
      this.runId = o.run_id ?? this.runId;
      this.conversationId = o.conversation_id ?? this.conversationId;
      this.messageId = o.message_id ?? this.messageId;
    } else if (type === 'token') {
      this.text += o.token ?? '';
    } else if (type === 'error') {
      this.error = d;
    }
    this._emit('event', event);
    this._emit(type, d, event);
    if (type === 'token') this._text();
    this._wake();
  }

  /** @private Schedules the 'text' listeners. */
  _text() {
    if (this._client.batch !== 'frame') return this._flush();
    if (this._frame) return;
    const run = () => { this._frame = null; this._flush(); };
    this._frame = typeof requestAnimationFrame === 'function'
      ? { id: requestAnimationFrame(run), raf: true }
      : { id: setTimeout(run, 16) };
  }

  /** @private Calls the 'text' listeners now if the text changed. */
  _flush() {
    if (this._frame) {
      (this._frame.raf ? cancelAnimationFrame : clearTimeout)(this._frame.id);
      this._frame = null;
    }
    if (this._shown !== this.text) this._emit('text', (this._shown = this.text));
  }

  /** @private Gives up: status 'failed' with this error. */
  _give(error) {
    if (this._final) return;
    this.error = error;
    this._end('failed');
  }

  /** @private The end, once: the final status, then the `done` event's listeners. */
  _end(status, done) {
    if (this._final) return;
    this._final = true;
    this._flush();
    this._abort?.abort();
    clearTimeout(this._timer);
    this._wakeSleep?.();
    this._setStatus(status);
    if (done) {
      this._emit('event', done);
      this._emit('done', done.data, done);
    }
    this._wake();
    const { text, runId, conversationId, messageId, error } = this;
    this._resolve({ status, text, runId, conversationId, messageId, error });
  }
}
