// The browser client's event stream parser, on the vectors the Rust decoder also runs
// (crates/tidewire-sse/tests/vectors.json), and on the rules a single stream cannot show.
// Run from the repository root: node --test web/test/
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';

const root = new URL('../../', import.meta.url);

/** Imports tidewire.js; an older Node that does not detect ES module syntax gets it as a data: URL. */
async function load() {
  const url = new URL('crates/tidewire/assets/tidewire.js', root);
  try {
    return await import(url);
  } catch (e) {
    if (!(e instanceof SyntaxError)) throw e;
    const source = await readFile(url);
    return import('data:text/javascript;base64,' + source.toString('base64'));
  }
}

const { EventStreamParser } = await load();
const vectors = JSON.parse(await readFile(new URL('crates/tidewire-sse/tests/vectors.json', root), 'utf8'));

/** Feeds the chunks one by one, then ends the stream; returns the parser and its events. */
function parse(chunks) {
  const parser = new EventStreamParser();
  const events = [];
  for (const chunk of chunks) events.push(...parser.push(chunk));
  events.push(...parser.end());
  return { parser, events };
}

function check(vector, how, chunks) {
  const { parser, events } = parse(chunks);
  const label = `${vector.name}: ${how}`;
  assert.deepEqual(events, vector.events, label);
  if ('last_event_id' in vector) assert.equal(parser.lastEventId, vector.last_event_id, `${label}: lastEventId`);
  if ('retry' in vector) assert.equal(parser.retry, vector.retry, `${label}: retry`);
}

test('the vectors file is there and has every rule', () => {
  assert.ok(vectors.length >= 60, `only ${vectors.length} vectors`);
  assert.equal(new Set(vectors.map((v) => v.name)).size, vectors.length, 'duplicate names');
});

for (const vector of vectors) {
  test(`vector: ${vector.name}`, () => {
    // Each character of the JSON string is one byte.
    const bytes = Uint8Array.from(Buffer.from(vector.input, 'latin1'));
    check(vector, 'whole input', [bytes]);
    check(vector, 'one byte at a time', Array.from(bytes, (b) => Uint8Array.of(b)));
    for (let at = 0; at <= bytes.length; at++) {
      check(vector, `split at ${at}`, [bytes.subarray(0, at), bytes.subarray(at)]);
    }
    // Valid UTF-8 may also be pushed as text, whole or one code point at a time.
    const text = Buffer.from(bytes).toString('utf8');
    if (Buffer.from(text, 'utf8').equals(Buffer.from(bytes))) {
      check(vector, 'as a string', [text]);
      check(vector, 'as one string per code point', [...text]);
    }
  });
}

const bytes = (s) => Uint8Array.from(Buffer.from(s, 'latin1'));
const message = (data, id = '') => ({ type: 'message', data, id });

test('push returns the events its chunk completed, as soon as the blank line ends', () => {
  const parser = new EventStreamParser();
  assert.deepEqual(parser.push('data: a\n'), []);
  assert.deepEqual(parser.push('\n'), [message('a')]);
  assert.deepEqual(parser.push('data: b\n\ndata: c\n\ndata: d'), [message('b'), message('c')]);
  assert.deepEqual(parser.push('\n\n'), [message('d')]);
});

test('a lone CR at the end of a chunk dispatches at once, and the LF after it is skipped', () => {
  const parser = new EventStreamParser();
  assert.deepEqual(parser.push(bytes('data: a\r\r')), [message('a')]);
  assert.deepEqual(parser.push(bytes('\ndata: b\r')), []);
  assert.deepEqual(parser.push(new Uint8Array(0)), []); // an empty chunk keeps the pending CR
  assert.deepEqual(parser.push(bytes('\n\r\n')), [message('b')]);
  assert.deepEqual(parser.end(), []);
});

test('a UTF-8 sequence split between chunks is decoded whole', () => {
  const parser = new EventStreamParser();
  const all = bytes(Buffer.from('data: 🌊\n\n', 'utf8').toString('latin1'));
  assert.deepEqual(parser.push(all.subarray(0, 8)), []);
  assert.deepEqual(parser.push(all.subarray(8)), [message('🌊')]);
});

test('retry applies without a blank line and dispatches nothing', () => {
  const parser = new EventStreamParser();
  assert.equal(parser.retry, null);
  assert.deepEqual(parser.push('retry: 250\n'), []);
  assert.equal(parser.retry, 250);
});

test('end() discards the unfinished event, keeps the id and retry, and strips a new BOM', () => {
  const parser = new EventStreamParser();
  assert.deepEqual(parser.push('retry: 10\nid: 4\ndata: a\n\nid: 5\ndata: half'), [message('a', '4')]);
  assert.deepEqual(parser.end(), []);
  assert.equal(parser.lastEventId, '4');
  assert.deepEqual(parser.push(bytes('\xEF\xBB\xBFdata: b\n\n')), [message('b', '4')]);
  assert.equal(parser.retry, 10);
});

test('a BOM pushed as text is stripped at the start only', () => {
  assert.deepEqual(parse(['\uFEFFdata: a\n\n']).events, [message('a')]);
  assert.deepEqual(parse(['data: a\n\n', '\uFEFFdata: b\n\n']).events, [message('a')]);
});

test('a large event in small chunks is decoded', () => {
  const line = 'data: ' + 'x'.repeat(1000) + '\n';
  const input = bytes(line.repeat(2000) + '\n');
  const parser = new EventStreamParser();
  const events = [];
  for (let i = 0; i < input.length; i += 64) events.push(...parser.push(input.subarray(i, i + 64)));
  assert.equal(events.length, 1);
  assert.equal(events[0].data.length, 2000 * 1001 - 1);
});

test('a long line in small chunks takes linear time', () => {
  const size = 8 * 1024 * 1024;
  const input = new Uint8Array(size + 2).fill(0x79); // 'y'
  input.set(bytes('data: '));
  input.set(bytes('\n\n'), size);
  const parser = new EventStreamParser();
  const started = performance.now();
  const events = [];
  for (let i = 0; i < input.length; i += 64) events.push(...parser.push(input.subarray(i, i + 64)));
  const elapsed = performance.now() - started;
  assert.equal(events.length, 1);
  assert.equal(events[0].data.length, size - 6);
  // Rescanning or re-joining the line at every chunk would take minutes.
  assert.ok(elapsed < 10_000, `${elapsed} ms`);
});
