// `useChat` from @ai-sdk/react with `DefaultChatTransport` from `ai`, rendered
// under jsdom with @testing-library/react, against tidewire's /api/ui/chat: send,
// a follow-up in the same chat, stop() keeping the partial text, and resume.
// Run by crates/tidewire/tests/sdk.rs with TIDEWIRE_URL set to a server whose
// default backend is `synthetic` at 30 tokens a second.
import assert from 'node:assert/strict';

// jsdom's globals go in before React and the testing library are imported; only
// what Node lacks, so Node's own fetch (which the transport uses) stays.
const { JSDOM } = await import('jsdom');
const dom = new JSDOM('<!doctype html><html><body></body></html>', { url: 'http://localhost/' });
for (const key of Object.getOwnPropertyNames(dom.window)) {
  if (key in globalThis) continue;
  try {
    globalThis[key] = dom.window[key];
  } catch {}
}
globalThis.window = dom.window;
globalThis.document = dom.window.document;
globalThis.IS_REACT_ACT_ENVIRONMENT = true;

const React = await import('react');
const { render, act, waitFor, cleanup } = await import('@testing-library/react');
const { useChat } = await import('@ai-sdk/react');
const { DefaultChatTransport } = await import('ai');
const h = React.createElement;

const base = process.env.TIDEWIRE_URL;
const api = `${base}/api/ui/chat`;

function check(condition, what) {
  if (!condition) {
    console.error(`FAILED: ${what}`);
    process.exit(1);
  }
  console.log(`ok: ${what}`);
}

async function storedMessages(chatId) {
  const response = await fetch(`${base}/api/conversations/${encodeURIComponent(chatId)}/messages`);
  return (await response.json()).messages;
}

// One chat on screen; `helpers` is what useChat returned on the last render.
let helpers;
function Chat({ id, resume = false, transport }) {
  helpers = useChat({ id, transport, resume });
  return h(
    'div',
    null,
    h('p', { 'data-testid': 'status' }, helpers.status),
    ...helpers.messages.map((m) =>
      h('p', { key: m.id }, m.parts.filter((p) => p.type === 'text').map((p) => p.text).join('')),
    ),
  );
}
const text = (message) => message.parts.filter((p) => p.type === 'text').map((p) => p.text).join('');

// Send, and a follow-up in the same chat, with `options` in the transport body.
const transport = new DefaultChatTransport({ api, body: { options: { max_tokens: 6 } } });
const view = render(h(Chat, { id: 'ui-chat-1', transport }));
await act(async () => {
  await helpers.sendMessage({ text: 'What is a tide?' });
});
await waitFor(() => assert.equal(helpers.status, 'ready'));
let assistant = helpers.messages.at(-1);
check(assistant.role === 'assistant', 'an assistant message');
check(text(assistant).split(' ').length === 6, `options.max_tokens from the transport body: ${text(assistant)}`);
check(assistant.metadata?.run_id && assistant.metadata?.model === 'synthetic', 'run id and model in its metadata');
check(assistant.parts.some((p) => p.type === 'data-stage'), 'stages as data parts');

await act(async () => {
  await helpers.sendMessage({ text: 'And the moon?' });
});
await waitFor(() => assert.equal(helpers.status, 'ready'));
check(helpers.messages.length === 4, `a follow-up in the same chat: ${helpers.messages.length} messages`);
let stored = await storedMessages('ui-chat-1');
check(stored.length === 4 && stored[2].content === 'And the moon?', 'both turns stored in the chat');
check(stored[3].content === text(helpers.messages[3]), 'the stored answer is the one shown');

// stop(): the connection drops; after the grace the run is cancelled, its
// partial text stored.
const long = new DefaultChatTransport({ api, body: { options: { max_tokens: 2000 } } });
view.rerender(h(Chat, { id: 'ui-chat-2', transport: long }));
await act(async () => {
  helpers.sendMessage({ text: 'Tell me a long story.' });
});
await waitFor(
  () => {
    const last = helpers.messages.at(-1);
    assert.ok(last?.role === 'assistant' && text(last).split(' ').length >= 5);
  },
  { timeout: 10000 },
);
await act(async () => {
  await helpers.stop();
});
const shown = text(helpers.messages.at(-1));
check(helpers.messages.at(-1).role === 'assistant', 'the partial answer stays on screen');
check(helpers.status === 'ready', 'stop() leaves the chat ready');
let answer;
await waitFor(
  async () => {
    stored = await storedMessages('ui-chat-2');
    answer = stored[1];
    assert.equal(answer.status, 'cancelled');
  },
  { timeout: 10000 },
);
check(answer.content.startsWith(shown) && answer.content.split(' ').length < 2000, `the partial text is stored as cancelled: ${JSON.stringify(shown.slice(0, 80))} vs ${JSON.stringify(answer.content.slice(0, 80))}`);

// Resume: a page that reloads mid-answer reconnects and gets the whole answer.
const resumable = new DefaultChatTransport({ api, body: { options: { max_tokens: 40 } } });
const started = await fetch(api, {
  method: 'POST',
  headers: { 'content-type': 'application/json' },
  body: JSON.stringify({
    id: 'ui-chat-3',
    messages: [{ id: 'u1', role: 'user', parts: [{ type: 'text', text: 'Why is the sky blue?' }] }],
    trigger: 'submit-message',
    options: { max_tokens: 40 },
  }),
});
const reader = started.body.getReader();
await reader.read();
// The first page goes away within the grace; the reloaded one resumes.
await reader.cancel();
cleanup();
render(h(Chat, { id: 'ui-chat-3', transport: resumable, resume: true }));
await waitFor(() => assert.equal(helpers.status, 'ready'), { timeout: 10000 });
await waitFor(async () => assert.equal((await storedMessages('ui-chat-3'))[1]?.status, 'complete'), {
  timeout: 10000,
});
stored = await storedMessages('ui-chat-3');
assistant = helpers.messages.at(-1);
check(assistant?.role === 'assistant' && text(assistant) === stored[1].content, 'resume shows the whole answer');
check(text(assistant).split(' ').length === 40, 'all 40 tokens, none twice');

// A chat with nothing running: 204, and the chat stays as it was.
cleanup();
render(h(Chat, { id: 'ui-chat-none', transport: resumable, resume: true }));
await new Promise((resolve) => setTimeout(resolve, 300));
check(helpers.status === 'ready' && helpers.messages.length === 0, 'resume with nothing running changes nothing');

cleanup();
console.log('all checks passed');
process.exit(0);
