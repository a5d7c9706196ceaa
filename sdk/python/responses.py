"""The official `openai` Python SDK against tidewire's /v1/responses: create
(plain and streamed), background, retrieve, resume with `starting_after` after a
cut, and cancel.

Run by crates/tidewire/tests/sdk.rs with TIDEWIRE_URL set to a server whose
default backend is `synthetic` at 30 tokens a second; exits non-zero on the first
failed check.
"""

import os
import sys
import time

import openai

BASE = os.environ["TIDEWIRE_URL"]
client = openai.OpenAI(base_url=f"{BASE}/v1", api_key="unused", max_retries=0)
MODEL = "synthetic"

EXPECTED = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
]
CLOSING = [
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
]


def check(condition, what):
    if not condition:
        print(f"FAILED: {what}", file=sys.stderr)
        sys.exit(1)
    print(f"ok: {what}")


def plain():
    response = client.responses.create(
        model=MODEL, input="What is a tide?", instructions="Be brief.", max_output_tokens=8
    )
    check(response.object == "response" and response.id.startswith("resp_"), "a response")
    check(response.status == "incomplete", f"cut by max_output_tokens: {response.status}")
    check(response.incomplete_details.reason == "max_output_tokens", "and says why")
    check(len(response.output_text.split()) == 8, f"its text: {response.output_text!r}")
    check(response.usage.output_tokens == 8, f"usage: {response.usage}")
    check(response.instructions == "Be brief.", "instructions echoed")
    again = client.responses.retrieve(response.id)
    check(again.output_text == response.output_text, "retrieve gives the same response")
    follow = client.responses.create(
        model=MODEL,
        input="And the moon?",
        previous_response_id=response.id,
        max_output_tokens=4,
    )
    check(follow.previous_response_id == response.id, "a follow-up on the previous response")


def streamed():
    stream = client.responses.create(
        model=MODEL,
        input=[{"role": "user", "content": [{"type": "input_text", "text": "Why is the sea salty?"}]}],
        max_output_tokens=6,
        stream=True,
    )
    events = list(stream)
    types = [event.type for event in events]
    check(types[:4] == EXPECTED, f"the opening events: {types[:4]}")
    check(types[4:10] == ["response.output_text.delta"] * 6, "six deltas")
    check(types[10:] == CLOSING + ["response.incomplete"], f"the closing events: {types[10:]}")
    numbers = [event.sequence_number for event in events]
    check(numbers == list(range(len(events))), "sequence numbers 0, 1, 2, ...")
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    check(events[-1].response.output_text == text, "the final response holds the deltas")


def resume_after_a_cut():
    stream = client.responses.create(
        model=MODEL,
        input="Tell me about the ocean.",
        max_output_tokens=40,
        stream=True,
        background=True,
    )
    seen = []
    for event in stream:
        seen.append(event)
        if len(seen) == 9:
            break
    stream.close()  # the cut: the background response goes on
    response_id = seen[0].response.id
    cursor = seen[-1].sequence_number
    rest = list(client.responses.retrieve(response_id, stream=True, starting_after=cursor))
    check(rest[0].sequence_number == cursor + 1, "the resumed stream starts right after the cursor")
    numbers = [e.sequence_number for e in seen + rest]
    check(numbers == list(range(len(numbers))), "no gap, no duplicate")
    text = "".join(e.delta for e in seen + rest if e.type == "response.output_text.delta")
    final = client.responses.retrieve(response_id)
    check(final.output_text == text and len(text.split()) == 40, "the text is whole")
    replay = list(client.responses.retrieve(response_id, stream=True))
    check([e.sequence_number for e in replay] == numbers, "a replay from the start is the same")
    after_end = list(client.responses.retrieve(response_id, stream=True, starting_after=numbers[-1]))
    check(after_end == [], "nothing after the last event")


def background_and_cancel():
    response = client.responses.create(
        model=MODEL, input="Write a long story.", max_output_tokens=2000, background=True
    )
    check(response.status == "in_progress" and response.background, "a background response runs")
    time.sleep(0.5)
    cancelled = client.responses.cancel(response.id)
    check(cancelled.status == "cancelled", f"cancelled: {cancelled.status}")
    partial = cancelled.output_text
    check(0 < len(partial.split()) < 2000, f"the partial text is kept ({len(partial.split())} words)")
    again = client.responses.cancel(response.id)
    check(again.status == "cancelled" and again.output_text == partial, "cancel is idempotent")


def errors():
    for kwargs, status, code in [
        (dict(model="nope", input="hi"), 404, "model_not_found"),
        (dict(model=MODEL, input=[{"role": "assistant", "content": "hi"}]), 400, "invalid_input"),
    ]:
        try:
            client.responses.create(**kwargs)
            check(False, f"{code}: no error")
        except openai.APIStatusError as error:
            check(error.status_code == status and error.code == code, f"{code}: {error.status_code}")
    try:
        client.responses.retrieve("resp_nothing")
        check(False, "an unknown response")
    except openai.NotFoundError:
        check(True, "an unknown response is NotFoundError")


plain()
streamed()
resume_after_a_cut()
background_and_cancel()
errors()
print("all checks passed")
