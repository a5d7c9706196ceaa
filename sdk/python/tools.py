"""The openai Python package with a client's own tools: the model's call comes
back (streamed, through the stream helper, and whole), the client runs it and
sends the result, and the model answers from it.

Against a server whose model `tool-model` asks for get_weather until it has a
result, then answers "<temperature> degrees in Paris."
"""

import json
import os
import sys

from openai import OpenAI

BASE = os.environ["TIDEWIRE_URL"]
client = OpenAI(base_url=f"{BASE}/v1", api_key="unused", max_retries=0)
failures = 0


def check(condition, what):
    global failures
    if not condition:
        failures += 1
        print(f"FAILED: {what}")
        sys.exit(1)
    print(f"ok: {what}")


TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]
CHOICE = {"type": "function", "function": {"name": "get_weather"}}
question = {"role": "user", "content": "Weather in Paris?"}

# Streamed, read by hand: the deltas of each call joined by index.
calls = {}
finish = []
for chunk in client.chat.completions.create(
    model="tool-model", messages=[question], tools=TOOLS, tool_choice=CHOICE, stream=True
):
    for choice in chunk.choices:
        for delta in choice.delta.tool_calls or []:
            call = calls.setdefault(delta.index, {"id": None, "name": "", "arguments": ""})
            if delta.id:
                call["id"] = delta.id
            if delta.function and delta.function.name:
                call["name"] += delta.function.name
            if delta.function and delta.function.arguments:
                call["arguments"] += delta.function.arguments
        if choice.finish_reason:
            finish.append(choice.finish_reason)
check(finish == ["tool_calls"], f"one finish_reason, tool_calls: {finish}")
check(len(calls) == 1, f"one call: {calls}")
check(calls[0]["name"] == "get_weather", "the call names get_weather")
check(json.loads(calls[0]["arguments"]) == {"city": "Paris"}, "its arguments parse")

# The stream helper assembles the same call.
with client.chat.completions.stream(
    model="tool-model", messages=[question], tools=TOOLS
) as stream:
    for _ in stream:
        pass
    final = stream.get_final_completion()
message = final.choices[0].message
check(final.choices[0].finish_reason == "tool_calls", "the helper's finish_reason")
check(message.tool_calls[0].function.name == "get_weather", "the helper's call")

# Not streamed; the client runs the tool and goes on.
first = client.chat.completions.create(model="tool-model", messages=[question], tools=TOOLS)
call = first.choices[0].message.tool_calls[0]
check(first.choices[0].finish_reason == "tool_calls", "a whole answer that calls")
history = [
    question,
    first.choices[0].message.model_dump(exclude_none=True),
    {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"temperature": 18})},
]
answer = client.chat.completions.create(model="tool-model", messages=history, tools=TOOLS)
check(answer.choices[0].message.content == "18 degrees in Paris.", "the answer uses the result")
check(answer.choices[0].finish_reason == "stop", "and stops")

print("all checks passed")
