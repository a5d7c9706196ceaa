"""The official `openai` Python SDK against tidewire's /v1/chat/completions.

Run by crates/tidewire/tests/sdk.rs with TIDEWIRE_URL set to a server whose
default backend is `synthetic`; exits non-zero on the first failed check.
"""

import os
import sys

import httpx2 as httpx
import openai

BASE = os.environ["TIDEWIRE_URL"]
client = openai.OpenAI(base_url=f"{BASE}/v1", api_key="unused", max_retries=0)
MODEL = "synthetic"
QUESTION = [{"role": "user", "content": "What is a tide?"}]


def check(condition, what):
    if not condition:
        print(f"FAILED: {what}", file=sys.stderr)
        sys.exit(1)
    print(f"ok: {what}")


def models():
    ids = [model.id for model in client.models.list()]
    check("synthetic" in ids and "extractive" in ids, f"models list the backends: {ids}")


def non_streaming():
    completion = client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=12)
    check(completion.object == "chat.completion", "a chat.completion")
    check(completion.id.startswith("chatcmpl-"), f"its id {completion.id}")
    choice = completion.choices[0]
    check(choice.message.role == "assistant" and choice.message.content, "an assistant message")
    check(choice.finish_reason == "length", f"max_tokens gives length: {choice.finish_reason}")
    check(completion.usage.completion_tokens == 12, f"usage: {completion.usage}")
    check(completion.usage.total_tokens == completion.usage.prompt_tokens + 12, "usage adds up")
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=QUESTION, max_tokens=3
    )
    run_id = raw.headers.get("x-tidewire-run-id")
    check(bool(run_id), "the run id header")
    run = httpx.get(f"{BASE}/api/runs/{run_id}").json()
    check(run["status"] == "complete", f"the run, through the native API: {run['status']}")
    return completion.choices[0].message.content


def streaming(whole):
    stream = client.chat.completions.create(
        model=MODEL,
        messages=QUESTION,
        max_tokens=12,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    ids = {chunk.id for chunk in chunks}
    created = {chunk.created for chunk in chunks}
    check(len(ids) == 1 and len(created) == 1, "one id and one created on every chunk")
    check(chunks[0].choices[0].delta.role == "assistant", "role in the first delta")
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    check(finishes == ["length"], f"exactly one finish_reason: {finishes}")
    check(chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 12, "usage last")
    check(all(c.usage is None for c in chunks[:-1]), "usage null on the other chunks")
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    check(text == whole, "the streamed text is the non-streamed text (same question)")

    plain = list(
        client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=4, stream=True)
    )
    check(all(c.choices for c in plain), "no usage chunk without include_usage")


def stream_helper():
    # The offline answerer ends on its own (`stop`); with no documents it says so.
    with client.chat.completions.stream(model="extractive", messages=QUESTION) as stream:
        deltas = [event.delta for event in stream if event.type == "content.delta"]
        final = stream.get_final_completion()
    check(len(deltas) > 3, f"the stream helper's content.delta events: {len(deltas)}")
    check(final.choices[0].message.content == "".join(deltas), "its final completion")
    check(final.choices[0].finish_reason == "stop", "finished with stop")
    # An answer cut by max_tokens is one the helper refuses to parse, as it should.
    try:
        with client.chat.completions.stream(model=MODEL, messages=QUESTION, max_tokens=6) as s:
            s.get_final_completion()
        check(False, "a cut answer parsed")
    except openai.LengthFinishReasonError:
        check(True, "a cut answer raises LengthFinishReasonError in the helper")


def history_and_stop():
    completion = client.chat.completions.create(
        model=MODEL,
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hello"},
            {"role": "assistant", "content": "Hi."},
            {"role": "user", "content": [{"type": "text", "text": "What is a tide?"}]},
        ],
        max_tokens=40,
    )
    text = completion.choices[0].message.content
    stop = text.split()[3]
    stopped = client.chat.completions.create(
        model=MODEL,
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hello"},
            {"role": "assistant", "content": "Hi."},
            {"role": "user", "content": "What is a tide?"},
        ],
        max_tokens=40,
        stop=[stop],
    )
    cut = stopped.choices[0].message.content
    check(
        stop not in cut and text.startswith(cut) and len(cut) < len(text),
        f"stop {stop!r} cuts the answer: {cut!r}",
    )
    check(stopped.choices[0].finish_reason == "stop", "and finishes with stop")


def errors():
    cases = [
        (dict(model="gpt-nothing", messages=QUESTION), 404, "model_not_found"),
        (dict(model=MODEL, messages=QUESTION, n=2), 400, "unsupported_parameter"),
        (dict(model=MODEL, messages=[]), 400, "invalid_messages"),
        (dict(model=MODEL, messages=QUESTION, temperature=7), 400, "invalid_value"),
        (dict(model=MODEL, messages=QUESTION, max_tokens=0), 400, "invalid_max_tokens"),
    ]
    for kwargs, status, code in cases:
        try:
            client.chat.completions.create(**kwargs)
        except openai.APIStatusError as error:
            check(error.status_code == status, f"{code}: status {error.status_code}")
            check(error.code == code, f"{code}: code {error.code}")
            check(error.body and error.body.get("message"), f"{code}: a message")
            continue
        check(False, f"{code}: no error raised")
    try:
        list(client.chat.completions.create(model="gpt-nothing", messages=QUESTION, stream=True))
        check(False, "a streamed request for an unknown model raised nothing")
    except openai.NotFoundError:
        check(True, "a streamed request's error arrives before the stream, as NotFoundError")


models()
whole = non_streaming()
streaming(whole)
stream_helper()
history_and_stop()
errors()
print("all checks passed")
