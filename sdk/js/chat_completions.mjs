// The official `openai` npm package against tidewire's /v1/chat/completions.
// Run by crates/tidewire/tests/sdk.rs with TIDEWIRE_URL set to a server whose
// default backend is `synthetic`; exits non-zero on the first failed check.
import OpenAI from 'openai';

const base = process.env.TIDEWIRE_URL;
const client = new OpenAI({ baseURL: `${base}/v1`, apiKey: 'unused', maxRetries: 0 });
const model = 'synthetic';
const messages = [{ role: 'user', content: 'What is a tide?' }];

function check(condition, what) {
  if (!condition) {
    console.error(`FAILED: ${what}`);
    process.exit(1);
  }
  console.log(`ok: ${what}`);
}

const completion = await client.chat.completions.create({ model, messages, max_tokens: 12 });
check(completion.object === 'chat.completion', 'a chat.completion');
check(completion.choices[0].finish_reason === 'length', 'max_tokens gives length');
check(completion.usage.completion_tokens === 12, 'usage');

const stream = await client.chat.completions.create({
  model,
  messages,
  max_tokens: 12,
  stream: true,
  stream_options: { include_usage: true },
});
const chunks = [];
for await (const chunk of stream) chunks.push(chunk);
check(new Set(chunks.map((c) => c.id)).size === 1, 'one id on every chunk');
check(chunks[0].choices[0].delta.role === 'assistant', 'role in the first delta');
const finishes = chunks.filter((c) => c.choices[0]?.finish_reason).map((c) => c.choices[0].finish_reason);
check(finishes.length === 1 && finishes[0] === 'length', `one finish_reason: ${finishes}`);
const last = chunks[chunks.length - 1];
check(last.choices.length === 0 && last.usage.completion_tokens === 12, 'usage in the last chunk');
const text = chunks.map((c) => c.choices[0]?.delta?.content ?? '').join('');
check(text === completion.choices[0].message.content, 'streamed text equals the whole answer');

// The stream helper of the SDK.
const runner = client.chat.completions.stream({ model, messages, max_tokens: 5 });
let deltas = 0;
runner.on('content', () => deltas++);
const final = await runner.finalChatCompletion();
check(deltas === 5, `the runner's content events: ${deltas}`);
check(final.choices[0].finish_reason === 'length', 'its final completion');

// A stream the client aborts: the SDK's own way to stop.
const aborted = await client.chat.completions.create({
  model,
  messages,
  max_tokens: 500,
  stream: true,
});
let seen = 0;
for await (const _ of aborted) {
  if (++seen === 3) {
    aborted.controller.abort();
    break;
  }
}
check(seen === 3, 'a stream stopped by the client ends quietly');

for (const [body, status, code] of [
  [{ model: 'gpt-nothing', messages }, 404, 'model_not_found'],
  [{ model, messages, n: 3 }, 400, 'unsupported_parameter'],
  [{ model, messages: [{ role: 'assistant', content: 'hi' }] }, 400, 'invalid_messages'],
]) {
  try {
    await client.chat.completions.create(body);
    check(false, `${code}: no error`);
  } catch (error) {
    check(error instanceof OpenAI.APIError, `${code}: an APIError`);
    check(error.status === status && error.code === code, `${code}: ${error.status} ${error.code}`);
  }
}
console.log('all checks passed');
