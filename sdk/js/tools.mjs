// The official `openai` npm package with a client's own tools: the model's call
// comes back (streamed deltas, the runTools-free stream helper, a whole answer),
// the client runs it and sends the result, and the model answers from it.
// Run by crates/tidewire/tests/sdk.rs against a server whose model `tool-model`
// asks for get_weather until it has a result, then answers
// "<temperature> degrees in Paris."; exits non-zero on the first failed check.
import OpenAI from 'openai';

const base = process.env.TIDEWIRE_URL;
const client = new OpenAI({ baseURL: `${base}/v1`, apiKey: 'unused', maxRetries: 0 });
const model = 'tool-model';

function check(condition, what) {
  if (!condition) {
    console.error(`FAILED: ${what}`);
    process.exit(1);
  }
  console.log(`ok: ${what}`);
}

const tools = [{
  type: 'function',
  function: {
    name: 'get_weather',
    description: 'Weather for a city',
    parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
  },
}];
const question = { role: 'user', content: 'Weather in Paris?' };

// Streamed: the deltas of each call joined by index.
const stream = await client.chat.completions.create({ model, messages: [question], tools, stream: true });
const calls = new Map();
const finishes = [];
for await (const chunk of stream) {
  for (const choice of chunk.choices) {
    for (const delta of choice.delta.tool_calls ?? []) {
      const call = calls.get(delta.index) ?? { id: null, name: '', args: '' };
      if (delta.id) call.id = delta.id;
      if (delta.function?.name) call.name += delta.function.name;
      if (delta.function?.arguments) call.args += delta.function.arguments;
      calls.set(delta.index, call);
    }
    if (choice.finish_reason) finishes.push(choice.finish_reason);
  }
}
check(finishes.length === 1 && finishes[0] === 'tool_calls', `one finish_reason, tool_calls: ${finishes}`);
check(calls.size === 1 && calls.get(0).name === 'get_weather', 'one call of get_weather');
check(JSON.parse(calls.get(0).args).city === 'Paris', 'its arguments parse');

// The stream helper assembles the same call.
const runner = client.chat.completions.stream({ model, messages: [question], tools });
const final = await runner.finalChatCompletion();
check(final.choices[0].finish_reason === 'tool_calls', "the helper's finish_reason");
check(final.choices[0].message.tool_calls[0].function.name === 'get_weather', "the helper's call");

// Not streamed; the client runs the tool and goes on.
const first = await client.chat.completions.create({ model, messages: [question], tools });
const message = first.choices[0].message;
check(first.choices[0].finish_reason === 'tool_calls', 'a whole answer that calls');
const answer = await client.chat.completions.create({
  model,
  tools,
  messages: [
    question,
    message,
    { role: 'tool', tool_call_id: message.tool_calls[0].id, content: JSON.stringify({ temperature: 18 }) },
  ],
});
check(answer.choices[0].message.content === '18 degrees in Paris.', 'the answer uses the result');
check(answer.choices[0].finish_reason === 'stop', 'and stops');

console.log('all checks passed');
